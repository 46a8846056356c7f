"""Sizes and limits of a RocksDB backend: memory budget bounds, memtable sizes, the budget's split."""

from __future__ import annotations

from typing import Final

_MIB = 1024 * 1024
#: The smallest memory budget: below it RocksDB's own fixed costs dominate.
MIN_MEMORY_BUDGET: Final = 4 * _MIB
#: RocksDB refuses values of 4 GiB or more (their length is a 32-bit number).
MAX_VALUE_SIZE_LIMIT: Final = (1 << 32) - 1

# Keys repeat across batches, so their RocksDB keys are cached (see _store._Store.key_bytes), within
# a quarter of the memory budget in bytes, on top of it: about as many small keys as one entry per
# 512 bytes of budget, as before it was bounded in bytes (27 k keys like "k1234567" at 16 MiB).
_KEY_CACHE_SHARE = 0.25
# What one entry of that cache is charged besides its key object and its bytes object: its slot in
# the dict (32 to 64 bytes, as full as the dict is).
_KEY_CACHE_ENTRY_BYTES = 48

# The share of the memory budget that the value caches of a subtask's states take (see _store._Space):
# decoded values of recent keys, which spare RocksDB a read and a write per record while they fit.
_VALUE_CACHE_SHARE = 0.375

# The memtable of a point-lookup column family: a hash table of linked lists keyed by the first
# bytes of the key (which hold the key group and, for usual keys, the whole key), updated in place.
_HASH_PREFIX_LEN = 64
# Flink's split of the managed memory: the share of it that memtables may take.
_WRITE_BUFFER_RATIO = 0.5
# The largest memtable of a state. A RocksDB checkpoint flushes the memtables, holding the GIL: 2 MiB
# of changed entries flush in about 20 ms (W2: a 10 MiB memtable of 100 k hot keys paused the stream
# 140-200 ms per checkpoint); an actor's snapshot lets RocksDB flush them in its own threads first.
# RocksDB flushes fuller ones on its own threads meanwhile, at some cost to throughput (W1b about 10 %
# slower).
_MAX_MEMTABLE = 2 * _MIB


def _memory_split(budget: int) -> tuple[int, int]:
    """(block cache capacity, write buffer manager capacity) for ``budget`` bytes.

    As Flink's RocksDB memory controller does: memtables are charged to the block cache through the
    write buffer manager, which may overshoot its capacity by up to half; the capacities leave room
    for that, so the total stays within ``budget`` (RocksDBMemoryControllerUtils).
    """
    cache = int(budget * (3 - _WRITE_BUFFER_RATIO) / 3)
    write_buffers = int(2 * budget * _WRITE_BUFFER_RATIO / 3)
    return cache, write_buffers
