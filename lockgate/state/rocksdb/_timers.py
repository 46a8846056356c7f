"""The RocksDB backend's timers: a column family ordered by key group and timestamp, and in memory the
earliest timestamp of each key group and a bounded cache of each polled key group's first timers.

Layout
    The timers of a domain are the state ``timer_state_name(domain)``, in its own column family (a skip
    list memtable: it is read in order). A timer's RocksDB key is ``key group (2 bytes, big endian) +
    timestamp (8 bytes, big endian, its sign bit flipped, so that keys sort by timestamp, negative ones
    first) + canonical_key_bytes(key) + canonical_key_bytes(namespace)``; its value is empty when key
    and namespace decode exactly from their canonical bytes (see ``_encoding``), and the pickled
    ``(key, namespace)`` otherwise (a window namespace, a dataclass or integral float key).

Finding the earliest
    ``heads`` holds the earliest timestamp of each key group that holds timers, and ``order`` a binary
    heap of ``(timestamp, key group)`` over it: an entry is current while ``heads`` still says so, and
    :meth:`RocksDBTimerQueue.peek` and :meth:`~RocksDBTimerQueue.poll` drop the others as they reach
    them. A poll takes the first timer of the key group at the top. For that, a key group once polled
    keeps a cache of its first timers in RocksDB order (``cache_limit`` of them, read with one seek to
    its earliest timestamp, past the deletions of the timers polled before) and whether the cache holds
    all of them; adds and removes keep the cache exact (an add below the cache's last goes in, a remove
    comes out), and a poll reads RocksDB again only when the cache runs out. An add that is earlier
    than its key group's head, and a remove or a poll of the head, update ``heads``. So neither peek
    nor poll scans the column family; opening the queue seeks once per key group that holds timers.

Writes go to RocksDB at once (WAL off, as every write), outside the batches of the other states: an
add or a remove reads the timer's key once (whether it is held) and writes it once.
"""

from __future__ import annotations

import pickle
import struct
from bisect import bisect_left, insort
from collections.abc import Iterator
from heapq import heapify, heappop, heappush
from typing import Any, Final

from rocksdict import Rdict

from lockgate.state._serialization import canonical_key_bytes
from lockgate.state._serializers import DEFAULT_SERIALIZER
from lockgate.state._snapshot import Entry
from lockgate.state._states import DEFAULT_NAMESPACE
from lockgate.state._timers import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    TimerQueue,
    check_timestamp,
    decode_timestamp,
    encode_timestamp,
)
from lockgate.state.rocksdb._encoding import _DEFAULT_NS_BYTES, CF_PREFIX, _decode_key, _decodes_exactly
from lockgate.state.rocksdb._store import _Store, _Table

_TIMESTAMP: Final = struct.Struct(">Q")
#: Added to a timestamp for its key bytes: the two's complement with its sign bit flipped.
_OFFSET: Final = 1 << 63
#: Where the timestamp ends in a timer's RocksDB key; the key begins there.
_KEY_START: Final = 10
#: The first timers of a key group that a poll reads into the cache at once, by default.
DEFAULT_CACHE_LIMIT: Final = 32
#: Namespaces whose canonical bytes are kept, at most (windows repeat across keys).
_NAMESPACE_CACHE_LIMIT: Final = 4096
#: Left-behind entries of ``order`` tolerated beyond the key groups that hold timers.
_SLACK: Final = 64

#: A cached timer: its RocksDB key and value.
_Cached = tuple[bytes, bytes]


def timestamp_bytes(timestamp: int) -> bytes:
    """A timestamp as its 8 bytes in a timer's RocksDB key (they sort as the timestamps do)."""
    return _TIMESTAMP.pack(timestamp + _OFFSET)


def timer_key(key_group_bytes: bytes, timestamp: int, key: Any, namespace: Any) -> bytes:
    """The RocksDB key of a timer."""
    return (
        key_group_bytes
        + timestamp_bytes(timestamp)
        + canonical_key_bytes(key)
        + canonical_key_bytes(namespace)
    )


def timer_value(key: Any, namespace: Any) -> bytes:
    """The RocksDB value of a timer of ``key`` and ``namespace``: empty when both decode from its key."""
    if (type(key) is str or _decodes_exactly(key)) and (namespace is None or _decodes_exactly(namespace)):
        return b""
    return DEFAULT_SERIALIZER.dumps((key, namespace))


def decode_timer(raw_key: bytes, raw_value: bytes) -> tuple[int, Any, Any]:
    """The ``(timestamp, key, namespace)`` of a timer stored in RocksDB."""
    timestamp = _TIMESTAMP.unpack_from(raw_key, 2)[0] - _OFFSET
    if raw_value:
        key, namespace = pickle.loads(raw_value)
    else:
        key, end = _decode_key(raw_key, _KEY_START)
        namespace, _ = _decode_key(raw_key, end)
    return timestamp, key, namespace


def _timestamp_of(raw_key: bytes) -> int:
    return int(_TIMESTAMP.unpack_from(raw_key, 2)[0]) - _OFFSET


def stored_timer_groups(database: Rdict, state: str) -> dict[int, list[Entry]]:
    """The timers of a timer state's column family as snapshot entries, ``(key, namespace, timestamp
    bytes)``, by key group."""
    family: Any = database.get_column_family(CF_PREFIX + state)  # raw mode: bytes in and out
    groups: dict[int, list[Entry]] = {}
    for raw_key, raw_value in family.items():
        timestamp, key, namespace = decode_timer(raw_key, raw_value)
        groups.setdefault(int.from_bytes(raw_key[:2], "big"), []).append(
            (key, namespace, encode_timestamp(timestamp))
        )
    return groups


def restored_timers(key_group_bytes: list[bytes], groups: dict[int, list[Entry]]) -> Iterator[list[_Cached]]:
    """Restored timer entries as RocksDB keys and values, a list per key group (its key group is the
    one the entry is filed under, as for every state)."""
    for key_group, entries in groups.items():
        prefix = key_group_bytes[key_group]
        yield [
            (timer_key(prefix, decode_timestamp(data), key, namespace), timer_value(key, namespace))
            for key, namespace, data in entries
        ]


class _Head:
    """The first timers of a key group, in RocksDB order: the ``len(timers)`` smallest it holds, or all
    of them when ``complete``; never empty unless complete."""

    __slots__ = ("complete", "timers")

    def __init__(self, timers: list[_Cached], complete: bool) -> None:
        self.timers = timers
        self.complete = complete


class RocksDBTimerQueue(TimerQueue):
    """The timers of one domain of a RocksDB backend (see the module's documentation).

    Args:
        store: The backend's database and what its states share (``_Store``).
        table: The timer state's table (``_Table``): its column family.

    Attributes:
        cache_limit: How many first timers of a key group a poll reads at once and keeps.
    """

    __slots__ = (
        "_count",
        "_heads",
        "_heads_cache",
        "_namespaces",
        "_order",
        "_store",
        "_table",
        "cache_limit",
    )

    def __init__(self, store: _Store, table: _Table) -> None:
        self._store = store
        self._table = table
        self.cache_limit = DEFAULT_CACHE_LIMIT
        self._heads: dict[int, int] = {}
        self._order: list[tuple[int, int]] = []
        self._heads_cache: dict[int, _Head] = {}
        # How many timers are held: counted on the first len() (a restore need not read them all).
        self._count: int | None = None
        self._namespaces: dict[Any, tuple[bytes, bool]] = {}
        self._find_heads()

    def __repr__(self) -> str:
        return f"<RocksDBTimerQueue {len(self._heads)} key groups with timers, earliest {self.peek()}>"

    # ---- keys

    def _timer_key(self, timestamp: int, key: Any, namespace: Any) -> tuple[bytes, int, bool]:
        """The RocksDB key of a timer, its key group, and whether key and namespace decode from it."""
        key_bytes = self._store.key_bytes(key)  # key group + key + the default namespace, cached
        key_group = key_bytes[0] << 8 | key_bytes[1]
        stamp = _TIMESTAMP.pack(timestamp + _OFFSET)
        plain = type(key) is str or _decodes_exactly(key)
        if namespace is DEFAULT_NAMESPACE:
            return key_bytes[:2] + stamp + key_bytes[2:], key_group, plain
        ns_bytes, ns_plain = self._namespace(namespace)
        raw_key = key_bytes[:2] + stamp + key_bytes[2 : -len(_DEFAULT_NS_BYTES)] + ns_bytes
        return raw_key, key_group, plain and ns_plain

    def _namespace(self, namespace: Any) -> tuple[bytes, bool]:
        """The canonical bytes of ``namespace`` and whether it decodes from them, cached."""
        namespaces = self._namespaces
        try:
            known = namespaces.get(namespace)
        except TypeError:  # unhashable: not cacheable
            return canonical_key_bytes(namespace), _decodes_exactly(namespace)
        if known is None:
            if len(namespaces) >= _NAMESPACE_CACHE_LIMIT:
                namespaces.clear()
            known = namespaces[namespace] = (canonical_key_bytes(namespace), _decodes_exactly(namespace))
        return known

    # ---- the heads of key groups

    def _find_heads(self) -> None:
        """The earliest timestamp of every key group that holds timers: one seek per such group."""
        store = self._store
        iterator = self._table.cf.iter(store.read_all)
        heads, last = self._heads, store.max_parallelism - 1
        iterator.seek_to_first()
        while iterator.valid():
            raw_key: bytes = iterator.key()
            key_group = raw_key[0] << 8 | raw_key[1]
            heads[key_group] = _timestamp_of(raw_key)
            if key_group >= last:
                break
            iterator.seek(store.key_group_bytes[key_group + 1])
        del iterator
        self._order = [(timestamp, key_group) for key_group, timestamp in heads.items()]
        heapify(self._order)

    def _load(self, key_group: int, start: int) -> _Head:
        """Read the first timers of ``key_group``, none of which is earlier than ``start``, into its
        cache: one seek, past the deletions of earlier timers."""
        prefix = self._store.key_group_bytes[key_group]
        iterator = self._table.cf.iter(self._store.read_all)
        iterator.seek(prefix + timestamp_bytes(start))
        timers: list[_Cached] = []
        complete, limit = True, self.cache_limit
        while iterator.valid():
            raw_key: bytes = iterator.key()
            if raw_key[:2] != prefix:
                break
            if len(timers) >= limit:
                complete = False
                break
            timers.append((raw_key, iterator.value()))
            iterator.next()
        del iterator
        head = _Head(timers, complete)
        if timers or not complete:
            self._heads_cache[key_group] = head
        return head

    def _refresh(self, key_group: int, start: int) -> None:
        """Set the head of ``key_group`` anew after its earliest timer (at ``start``) went."""
        head = self._heads_cache.get(key_group)
        if head is None:
            head = self._load(key_group, start)
        heads = self._heads
        if not head.timers:  # complete and empty: the key group holds no timer
            heads.pop(key_group, None)
            self._heads_cache.pop(key_group, None)
            return
        timestamp = _timestamp_of(head.timers[0][0])
        if heads.get(key_group) != timestamp:
            heads[key_group] = timestamp
            self._push(timestamp, key_group)

    def _push(self, timestamp: int, key_group: int) -> None:
        order = self._order
        heappush(order, (timestamp, key_group))
        if len(order) > 2 * len(self._heads) + _SLACK:
            order[:] = [(head, group) for group, head in self._heads.items()]
            heapify(order)

    # ---- the queue

    def add(self, timestamp: int, key: Any, namespace: Any) -> bool:
        if type(timestamp) is not int or not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
            check_timestamp(timestamp)
        raw_key, key_group, plain = self._timer_key(timestamp, key, namespace)
        cf = self._table.cf
        if cf.get(raw_key) is not None:
            return False
        value = b"" if plain else DEFAULT_SERIALIZER.dumps((key, namespace))
        self._store.settle()
        cf.put(raw_key, value, self._store.write_options)
        if self._count is not None:
            self._count += 1
        head = self._heads_cache.get(key_group)
        if head is not None and (head.complete or raw_key < head.timers[-1][0]):
            timers = head.timers
            insort(timers, (raw_key, value))
            if len(timers) > self.cache_limit:
                timers.pop()
                head.complete = False
        earliest = self._heads.get(key_group)
        if earliest is None or timestamp < earliest:
            self._heads[key_group] = timestamp
            self._push(timestamp, key_group)
        return True

    def remove(self, timestamp: int, key: Any, namespace: Any) -> bool:
        if type(timestamp) is not int or not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
            check_timestamp(timestamp)
        raw_key, key_group, _ = self._timer_key(timestamp, key, namespace)
        cf = self._table.cf
        if cf.get(raw_key) is None:
            return False
        self._store.settle()
        cf.delete(raw_key, self._store.write_options)
        if self._count is not None:
            self._count -= 1
        head = self._heads_cache.get(key_group)
        if head is not None:
            timers = head.timers
            index = bisect_left(timers, (raw_key,))
            if index < len(timers) and timers[index][0] == raw_key:
                del timers[index]
                if not timers and not head.complete:
                    del self._heads_cache[key_group]  # read again when needed
        if self._heads.get(key_group) == timestamp:
            self._refresh(key_group, timestamp)
        return True

    def peek(self) -> int | None:
        order, heads = self._order, self._heads
        while order:
            timestamp, key_group = order[0]
            if heads.get(key_group) == timestamp:
                return timestamp
            heappop(order)  # the key group's head has changed since
        return None

    def poll(self, upto: int) -> tuple[int, Any, Any] | None:
        order, heads = self._order, self._heads
        while order:
            timestamp, key_group = order[0]
            if heads.get(key_group) != timestamp:
                heappop(order)  # the key group's head has changed since
                continue
            if timestamp > upto:
                return None
            head = self._heads_cache.get(key_group)
            if head is None:
                head = self._load(key_group, timestamp)
            if not head.timers or _timestamp_of(head.timers[0][0]) != timestamp:
                self._refresh(key_group, timestamp)  # the head was not what RocksDB holds: set it again
                continue
            raw_key, value = head.timers.pop(0)
            self._store.settle()
            self._table.cf.delete(raw_key, self._store.write_options)
            if self._count is not None:
                self._count -= 1
            if not head.timers and not head.complete:
                del self._heads_cache[key_group]  # read again from here
            self._refresh(key_group, timestamp)
            return decode_timer(raw_key, value)
        return None

    def __len__(self) -> int:
        count = self._count
        if count is None:
            iterator = self._table.cf.iter(self._store.read_all)
            iterator.seek_to_first()
            count = 0
            while iterator.valid():
                count += 1
                iterator.next()
            del iterator
            self._count = count
        return count
