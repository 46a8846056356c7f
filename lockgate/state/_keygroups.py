"""Key groups: the unit in which keyed state is partitioned, assigned and moved.

A key's key group is ``stable_key_hash(key) % max_parallelism``. Key groups are assigned to subtasks in
contiguous ranges with Flink's formula, so that rescaling moves whole key groups and never splits one.
"""

from __future__ import annotations

import array
import struct
import sys
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, Generic, TypeVar

from lockgate._errors import ConfigurationError
from lockgate.state._serialization import canonical_key_bytes

#: The largest max parallelism: key groups are stored in two bytes (as in Flink, 2**15).
UPPER_BOUND_MAX_PARALLELISM = 1 << 15

_MASK32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    # The finaliser of MurmurHash3: CRC32 alone is linear, so its low bits cluster for similar keys;
    # this mixes every input bit into the low bits that pick a key group.
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def uncached_key_hash(key: Any) -> int:
    """:func:`stable_key_hash` without its cache, for passes over every key of a state."""
    return _fmix32(zlib.crc32(canonical_key_bytes(key)))


def hash_of_key_bytes(data: bytes) -> int:
    """:func:`stable_key_hash` of the key whose canonical bytes are ``data``: for a caller that needs
    the bytes anyway (a RocksDB key), so they are made once."""
    return _fmix32(zlib.crc32(data))


V = TypeVar("V")

#: What the key-hash cache may hold, in bytes (see :class:`_KeyHashCache`).
KEY_HASH_CACHE_BYTES: Final = 16 * 1024 * 1024
#: What one entry of the key-hash cache is charged besides its key object: its slot in the dict and
#: the int it maps to (70 bytes an entry measured with tracemalloc, 100 k str keys).
_HASH_ENTRY_BYTES: Final = 72


class KeyCache(Generic[V]):
    """Values made from keys (their hashes, their RocksDB keys) for recent keys, bounded in bytes.

    Reads are plain ``entries.get``. :meth:`add` charges an entry what the caller says it takes; one
    that would take the cache past ``limit`` empties it first (cheaper than an LRU's bookkeeping on
    every hit; it refills with the keys in use), so :attr:`charged` never exceeds ``limit``, and an
    entry over ``limit`` alone is not kept. Not thread-safe: a cache that several threads fill adds
    under a lock (:class:`_KeyHashCache`).
    """

    __slots__ = ("charged", "entries", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: dict[Any, V] = {}
        #: The bytes the entries are charged for.
        self.charged = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} [{len(self.entries)} keys, {self.charged}/{self.limit} bytes]>"

    def add(self, key: Any, value: V, charge: int) -> None:
        """Keep ``value`` for ``key`` (which the cache does not hold), charged ``charge`` bytes."""
        if charge > self.limit:
            return
        if self.charged + charge > self.limit:
            self.entries.clear()
            self.charged = 0
        self.entries[key] = value
        self.charged += charge

    def clear(self) -> None:
        self.entries.clear()
        self.charged = 0


class _KeyHashCache(KeyCache[int]):
    """The hashes of recent keys: partitioning by key group hashes every record's key, and keys
    repeat, so a hit spares encoding and hashing the key (about a microsecond).

    An entry is charged :data:`_HASH_ENTRY_BYTES` plus the size of its key object (for a key other than
    a str, bytes, int or float, plus its canonical bytes' length, standing for the objects it holds:
    ``sys.getsizeof`` of a tuple leaves its items out). A miss adds under a lock, so threads that hash
    keys too (restores, queries) cannot make the count drift from what the dict holds.
    """

    __slots__ = ("lock",)

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.lock = threading.Lock()

    def miss(self, key: Any) -> int:
        """The hash of ``key``, which the cache does not hold: computed, and cached if it fits.

        Raises:
            KeySerializationError: A key of an unsupported type.
            TypeError: An unhashable key (computed first, so a key that cannot be one says so).
        """
        data = canonical_key_bytes(key)
        value = _fmix32(zlib.crc32(data))
        charge = _HASH_ENTRY_BYTES + sys.getsizeof(key)
        if type(key) not in _FLAT_KEY_TYPES:
            charge += len(data)
        with self.lock:
            if key not in self.entries:  # another thread may have cached it meanwhile
                self.add(key, value, charge)
        return value

    def clear(self) -> None:
        with self.lock:
            super().clear()


#: Key types whose object holds all its data (``sys.getsizeof`` counts it whole).
_FLAT_KEY_TYPES: Final = frozenset({str, bytes, int, float, bool, type(None)})

# One cache for the process: a key's hash is the same for every edge and subtask that routes it.
_key_hashes = _KeyHashCache(KEY_HASH_CACHE_BYTES)
_cached_hashes_get = _key_hashes.entries.get


def stable_key_hash(key: Any) -> int:
    """A 32-bit hash of ``key`` that is the same in every process, machine and Python version.

    It hashes the canonical key bytes, never Python's built-in hash, which is salted per process.
    Recent keys' hashes are cached (:data:`KEY_HASH_CACHE_BYTES` for the whole process).
    Raises :class:`~lockgate.KeySerializationError` for a key of an unsupported type.
    """
    try:
        value = _cached_hashes_get(key)
    except TypeError:  # unhashable, so not cacheable: encode it, which names what is wrong
        return uncached_key_hash(key)
    return _key_hashes.miss(key) if value is None else value


#: Types whose values always have a canonical form: a key of one needs no check.
CANONICAL_KEY_TYPES: Final = frozenset({str, int, bytes, float, bool, type(None)})


def check_key(key: Any) -> None:
    """Raise :class:`~lockgate.KeySerializationError` unless ``key`` can be stored, checkpointed and
    moved to another subtask (it has canonical bytes); cached for keys of other types than
    :data:`CANONICAL_KEY_TYPES`."""
    if type(key) not in CANONICAL_KEY_TYPES:
        stable_key_hash(key)


def key_groups_of(keys: Sequence[Any], max_parallelism: int) -> list[int]:
    """The key group of each of ``keys`` (as :func:`key_group_for` gives it), for passes over a whole
    state: the canonical bytes of str keys, their CRC-32 and the finaliser run in C-level loops, about
    twice as fast as a call per key.

    Raises:
        KeySerializationError: A key of an unsupported type.
    """
    if set(map(type, keys)) <= _STR:
        # crc32(b"S" + u32(len) + data) continues the CRC of the prefix, which depends on the length only.
        data = list(map(str.encode, keys, repeat("utf-8"), repeat("surrogatepass")))
        crcs = list(map(zlib.crc32, data, map(_STR_PREFIXES.__getitem__, map(len, data))))
    else:
        crcs = list(map(zlib.crc32, map(canonical_key_bytes, keys)))
    if not max_parallelism & (max_parallelism - 1):  # a power of two: the modulo is a mask, of all lanes
        return _fmix32_all(crcs, max_parallelism - 1).tolist()
    return list(map(max_parallelism.__rmod__, _fmix32_all(crcs)))


_LENGTH = struct.Struct(">I")
_STR = {str}


class _Prefixes(dict[int, int]):
    """The CRC-32 of a str key's canonical prefix, ``b"S" + u32(length)``, by length: made on the first
    lookup of a length, a dict lookup after."""

    def __missing__(self, length: int) -> int:
        crc = self[length] = zlib.crc32(b"S" + _LENGTH.pack(length))
        return crc


_STR_PREFIXES: Final = _Prefixes()


def _fmix32_all(hashes: list[int], low_bits: int = _MASK32) -> array.array[int]:
    """:func:`_fmix32` of each of ``hashes`` (32-bit), computed on all at once: each is a 64-bit lane
    of one big int, whose multiplications and shifts are C loops. A lane's upper half takes the
    carries of its own products and what shifts bring in from the lane above; masking clears it after
    each step, so no lane ever affects another. The last mask keeps ``low_bits`` (at most 32 bits) of
    each result: ``2**n - 1`` gives each result modulo ``2**n``."""
    count = len(hashes)
    if not count:
        return array.array("Q")
    lanes = int.from_bytes(array.array("Q", hashes).tobytes(), sys.byteorder)
    mask = int.from_bytes(_LOW_HALVES * count, sys.byteorder)
    h = lanes
    h = (h ^ (h >> 16)) & mask
    h = (h * 0x85EBCA6B) & mask
    h = (h ^ (h >> 13)) & mask
    h = (h * 0xC2B2AE35) & mask
    if low_bits != _MASK32:
        mask = int.from_bytes(low_bits.to_bytes(8, sys.byteorder) * count, sys.byteorder)
    h = (h ^ (h >> 16)) & mask
    mixed = array.array("Q")
    mixed.frombytes(h.to_bytes(8 * count, sys.byteorder))
    return mixed


_LOW_HALVES = (0xFFFFFFFF).to_bytes(8, sys.byteorder)


def key_group_for(key: Any, max_parallelism: int) -> int:
    """The key group of ``key`` among ``max_parallelism`` key groups."""
    return stable_key_hash(key) % max_parallelism


def check_parallelism(parallelism: int, max_parallelism: int, what: str = "parallelism") -> None:
    """Raise :class:`ConfigurationError` unless ``1 <= parallelism <= max_parallelism <= 2**15``."""
    if not isinstance(max_parallelism, int) or not 1 <= max_parallelism <= UPPER_BOUND_MAX_PARALLELISM:
        raise ConfigurationError(
            f"max_parallelism must be an int from 1 to {UPPER_BOUND_MAX_PARALLELISM}, got {max_parallelism!r}"
        )
    if not isinstance(parallelism, int) or parallelism < 1:
        raise ConfigurationError(f"{what} must be a positive int, got {parallelism!r}")
    if parallelism > max_parallelism:
        raise ConfigurationError(
            f"{what} {parallelism} is above max_parallelism {max_parallelism}: a keyed operator cannot "
            "have more subtasks than key groups; raise max_parallelism or lower the parallelism"
        )


@dataclass(frozen=True, slots=True)
class KeyGroupRange:
    """The inclusive range of key groups ``start..end`` owned by one subtask."""

    start: int
    end: int

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and self.start <= key_group <= self.end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def __len__(self) -> int:
        return max(0, self.end - self.start + 1)

    def intersection(self, other: KeyGroupRange) -> KeyGroupRange:
        """The key groups both ranges hold (an empty range, of length 0, if none)."""
        return KeyGroupRange(max(self.start, other.start), min(self.end, other.end))

    @classmethod
    def for_subtask(cls, max_parallelism: int, parallelism: int, subtask_index: int) -> KeyGroupRange:
        """The key groups of subtask ``subtask_index`` (Flink's range assignment)."""
        check_parallelism(parallelism, max_parallelism)
        if not 0 <= subtask_index < parallelism:
            raise ValueError(f"subtask_index {subtask_index} is outside 0..{parallelism - 1}")
        start = -(-subtask_index * max_parallelism // parallelism)
        end = -(-(subtask_index + 1) * max_parallelism // parallelism) - 1
        return cls(start, end)


def subtask_for_key_group(max_parallelism: int, parallelism: int, key_group: int) -> int:
    """The index of the subtask that owns ``key_group`` at ``parallelism``."""
    return key_group * parallelism // max_parallelism


def key_group_owners(max_parallelism: int, parallelism: int) -> list[int]:
    """``owners[kg]`` is the subtask that owns key group ``kg``: a table for the hot path."""
    return [subtask_for_key_group(max_parallelism, parallelism, kg) for kg in range(max_parallelism)]
