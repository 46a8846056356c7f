"""The heap backend's timers: a copy-on-write table of timers, which snapshots freeze as they freeze
every state, and a binary heap over it that finds the earliest.

The table (one :class:`CowTable`, the state named ``timer_state_name(domain)``) maps each timer
``(timestamp, key, namespace)`` to True: it is what the queue holds, and all that a snapshot reads
(frozen in O(1); an incremental snapshot writes the timers added and removed since). The heap holds
``(timestamp, sequence, timer)`` of every timer added, and is only an index: removing a timer leaves
its heap entry behind, and :meth:`HeapTimerQueue.poll` and :meth:`~HeapTimerQueue.peek` drop entries
whose timer the table no longer holds as they reach them. A timer removed and added again has two
heap entries, but the table holds it once: the first entry polled returns it and removes it, the
other is dropped. When left-behind entries outnumber the timers, the heap is rebuilt from the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from typing import Any, Final

from lockgate.state._snapshot import Entry
from lockgate.state._timers import MAX_TIMESTAMP, MIN_TIMESTAMP, TimerQueue, check_timestamp, decode_timestamp
from lockgate.state.heap._cow import ABSENT, TOMBSTONE, CowTable, frozen_get

#: Left-behind heap entries tolerated beyond the number of timers before the heap is rebuilt.
_SLACK: Final = 64


class HeapTimerQueue(TimerQueue):
    """The timers of one domain of a heap backend: a copy-on-write table and a heap index over it."""

    __slots__ = ("_heap", "_sequence", "_size", "_table")

    def __init__(self, table: CowTable, restored: Iterable[list[Entry]] = ()) -> None:
        self._table = table
        for entries in restored:
            for key, namespace, data in entries:
                table.put((decode_timestamp(data), key, namespace), True)
        self._sequence = itertools.count()
        self._heap: list[tuple[int, int, tuple[int, Any, Any]]] = []
        self._size = 0
        self._rebuild()

    def __repr__(self) -> str:
        return f"<HeapTimerQueue {self._size} timers, earliest {self.peek()}>"

    def _rebuild(self) -> None:
        """The heap anew from the table: an entry per timer held, none left behind."""
        sequence = self._sequence
        heap = [(timer[0], next(sequence), timer) for timer, _ in self._table.items()]
        heapify(heap)
        self._heap = heap
        self._size = len(heap)

    def _holds(self, timer: tuple[int, Any, Any]) -> bool:
        table = self._table
        value = table.top.get(timer, ABSENT)
        if value is ABSENT:
            if not table.frozen:
                return False
            value = frozen_get(table.frozen, timer)
            return value is not ABSENT and value is not TOMBSTONE
        return value is not TOMBSTONE

    def add(self, timestamp: int, key: Any, namespace: Any) -> bool:
        if type(timestamp) is not int or not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
            check_timestamp(timestamp)
        timer = (timestamp, key, namespace)
        table = self._table
        top = table.top
        held = top.get(timer, ABSENT)
        # Held: True in the top layer, or (under a snapshot) in a frozen one and not deleted since.
        if held is True or (held is ABSENT and table.frozen and self._holds(timer)):
            return False
        top[timer] = True
        heappush(self._heap, (timestamp, next(self._sequence), timer))
        self._size += 1
        return True

    def remove(self, timestamp: int, key: Any, namespace: Any) -> bool:
        # Only a remove leaves a heap entry behind (a poll takes its own): the heap is rebuilt here.
        if type(timestamp) is not int or not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
            check_timestamp(timestamp)
        timer = (timestamp, key, namespace)
        if not self._holds(timer):
            return False
        self._table.delete(timer)
        self._size -= 1
        if len(self._heap) > 2 * self._size + _SLACK:
            self._rebuild()
        return True

    def peek(self) -> int | None:
        heap = self._heap
        while heap:
            entry = heap[0]
            if self._holds(entry[2]):
                return entry[0]
            heappop(heap)  # removed since it was added
        return None

    def poll(self, upto: int) -> tuple[int, Any, Any] | None:
        heap = self._heap
        table = self._table
        while heap:
            entry = heap[0]
            if entry[0] > upto:  # held or not, nothing earlier is due; peek() drops it if removed
                return None
            timer = entry[2]
            heappop(heap)
            if table.top.get(timer, ABSENT) is True or (table.frozen and self._holds(timer)):
                table.delete(timer)
                self._size -= 1
                return timer
            # removed since it was added: dropped, as peek() would
        return None

    def __len__(self) -> int:
        return self._size
