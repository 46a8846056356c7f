"""Timers in keyed state: the interface of one keyed operator subtask's queue of timers of one domain.

A timer is ``(timestamp, key, namespace)``: it fires for ``key`` once the watermark (event time) or the
clock (processing time) reaches ``timestamp``; ``namespace`` is the window it belongs to, or
:data:`~lockgate.state.DEFAULT_NAMESPACE` for a process function's own. A queue holds each timer at
most once. Timers are keyed state: grouped by the key group of their key, they are snapshotted with
the backend's other states (copy-on-write on the heap, in their own column family in RocksDB),
restored, rescaled with their key groups and written into savepoints.

In a snapshot a queue is the state named by :func:`timer_state_name` with kind :data:`TIMER_KIND`:
one entry per timer, ``(key, namespace, timestamp as 8 bytes, big endian, signed)``, grouped by key
group like any state's entries (docs/savepoint-format.md).
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from typing import Any, Final

from lockgate.state._descriptors import StateDescriptor

#: The kind of a timer queue's state in snapshots.
TIMER_KIND: Final = "timers"

#: The domains a keyed subtask keeps timers in: event time and processing time.
TIMER_DOMAINS: Final = ("event", "processing")

_TIMESTAMP = struct.Struct(">q")
#: The range of a timestamp: what 8 signed bytes hold.
MIN_TIMESTAMP: Final = -(1 << 63)
MAX_TIMESTAMP: Final = (1 << 63) - 1


def timer_state_name(domain: str) -> str:
    """The name of the state that holds the timers of ``domain`` ("event" or "processing")."""
    return f"_timers/{domain}"


def encode_timestamp(timestamp: int) -> bytes:
    """A timer's timestamp as a snapshot entry's value."""
    return _TIMESTAMP.pack(timestamp)


def decode_timestamp(data: bytes) -> int:
    """The timestamp of a timer's snapshot entry."""
    return int(_TIMESTAMP.unpack(data)[0])


def check_timestamp(timestamp: Any) -> None:
    """Refuse a timestamp that is not an int of 8 signed bytes (milliseconds).

    Raises:
        TypeError: Not an int.
        ValueError: Outside ``MIN_TIMESTAMP..MAX_TIMESTAMP``.
    """
    if type(timestamp) is not int:
        raise TypeError(f"a timer's timestamp is an int of milliseconds, got {timestamp!r}")
    if not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"a timer's timestamp must fit in 8 signed bytes, got {timestamp}")


class TimerStateDescriptor(StateDescriptor[Any]):
    """The state that holds the timers of one domain: kind :data:`TIMER_KIND`, the default serializer
    (what its meta info names; a timer's entry is its timestamp's 8 bytes), no TTL."""

    kind = TIMER_KIND
    __slots__ = ("domain",)

    def __init__(self, domain: str) -> None:
        if domain not in TIMER_DOMAINS:
            raise ValueError(f"timers are kept in the domains {TIMER_DOMAINS}, not {domain!r}")
        super().__init__(timer_state_name(domain))
        self.domain = domain


class TimerQueue(ABC):
    """The timers of one domain of a keyed operator subtask, earliest first.

    Synchronous: the backends that hold timers are local. A timer added while the queue is being
    polled is seen by the next :meth:`poll` if it is due.
    """

    @abstractmethod
    def add(self, timestamp: int, key: Any, namespace: Any) -> bool:
        """Hold the timer; False if it was held already (nothing changes)."""

    @abstractmethod
    def remove(self, timestamp: int, key: Any, namespace: Any) -> bool:
        """Drop the timer; False if it was not held."""

    @abstractmethod
    def peek(self) -> int | None:
        """The earliest timestamp held, or None when the queue is empty."""

    @abstractmethod
    def poll(self, upto: int) -> tuple[int, Any, Any] | None:
        """Remove and return the earliest timer whose timestamp is at most ``upto`` (ties in any order),
        or None if there is none."""

    @abstractmethod
    def __len__(self) -> int:
        """How many timers the queue holds."""
