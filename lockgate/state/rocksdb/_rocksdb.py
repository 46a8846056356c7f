"""The RocksDB state backend: live keyed state in an embedded RocksDB (through rocksdict), one database
per keyed operator subtask, in a working directory of its own that is deleted when the subtask ends.

Layout
    One column family per state (named ``state:<name>``), created when the state is registered. A
    RocksDB key is ``key group (2 bytes, big endian) + canonical_key_bytes(key) +
    canonical_key_bytes(namespace)`` (the default namespace is None), so a key group's entries are
    contiguous and can move between subtasks on rescale. A RocksDB value is the descriptor's serializer
    output (value state without TTL) or :class:`StateCodec` bytes (other kinds, TTL), then a trailer.
    Every write has the write-ahead log off: a restore rebuilds the database from a checkpoint.

Getting keys back
    :meth:`RocksDBKeyedStateBackend.items` has to return the original keys. Where the canonical key
    bytes decode to an object of the same type and value (None, int, non-integral float, str, bytes and
    tuples of those: what keys nearly always are), the key is decoded from the RocksDB key and the
    trailer is ``b"\\x00"``, or nothing at all when the value already ends with pickle's STOP byte
    (``"."``; a trailer never does), as the default serializer's values do. Otherwise (bool, integral
    float, dataclasses, subclasses, which canonical encoding folds into what they equal) the trailer
    holds the pickled key: the pickle, its length (4 bytes, big endian), ``b"\\x01"``. The trailer is
    at the end so pickled values load without slicing: pickle ignores the bytes past its own end.

Batches
    The runtime announces each batch's keys (:meth:`~RocksDBKeyedStateBackend.prepare_batch`) and its
    end (:meth:`~RocksDBKeyedStateBackend.finish_batch`). In between, the first read of a state fetches
    the values of all the batch's distinct keys with one multi-get into a per-batch cache of
    deserialised values (on first use rather than in ``prepare_batch``, so states a batch does not
    touch cost nothing); reads are served from it. Writes and deletes are serialised at once (so a size
    error points at the write) and buffered, and the batch's end writes them all with one atomic
    ``WriteBatch``. A read after a write or a delete of the same key in the same batch sees it. Values
    read inside a batch are the cache's objects: as on the heap, a value changed in place without
    ``update`` is seen by later reads of the same batch; unlike the heap, it is not stored.

    If a function raises in the middle of a batch, ``finish_batch`` is not called. The buffered writes
    then stay visible to reads through this backend, and are written (all at once, never half) when
    the next batch is announced, as the heap backend would have kept them; :meth:`dispose` drops them
    with the database. RocksDB itself only ever holds whole batches. Outside a batch every call goes
    straight to RocksDB; ``get_many`` is one multi-get and ``put_many`` one ``WriteBatch``.

Memory
    One LRU block cache per subtask, shared by all its column families (the default one too), and a
    write buffer manager that charges memtable memory to that cache: ``memory_budget`` bounds the block
    cache, the index and filter blocks and the memtables together (Flink's managed-memory scheme; see
    :func:`_memory_split`). On the Python side, a cache of the RocksDB keys of recent keys (one entry,
    about 85 bytes plus the key object, per 512 bytes of budget) and the per-batch cache come on top.
    A state's memtable holds at most 2 MiB, whatever the budget: a checkpoint flushes it while the
    stream waits, so its size bounds that pause.

Snapshots
    The synchronous part writes the open batch, flushes and takes a RocksDB checkpoint (hard links to
    the immutable SST files, in a directory of its own). Incremental checkpoints then upload only the
    SST files that the last checkpoint this backend knows complete did not hold already, into the
    storage's shared area, and reference the others; the few other files (MANIFEST, CURRENT,
    OPTIONS) go into the checkpoint's own manifest (:class:`RocksDBManifest`). Full snapshots
    (savepoints, ``incremental=False``) read the checkpoint entry by entry instead. A restore
    downloads the files, opens them and takes the entries of its key groups.

Not yet: list and map state are stored as one value per key (no merge operator, no per-entry keys).
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
import re
import shutil
import struct
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    MemtableFactory,
    Options,
    Rdict,
    ReadOptions,
    SliceTransform,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from lockgate._errors import (
    ConfigurationError,
    CorruptCheckpointError,
    StateSerializationError,
    StateValueTooLargeError,
)
from lockgate._processes import process_alive
from lockgate._threads import run_sync
from lockgate.snapshots import SharedStateHandle, storage_for
from lockgate.state._backend import H, KeyedStateBackend
from lockgate.state._descriptors import StateDescriptor, ValueStateDescriptor
from lockgate.state._handles import DEFAULT_NAMESPACE, MISSING, ValueState
from lockgate.state._keygroups import KeyGroupRange, key_group_for
from lockgate.state._presets import StatePreset
from lockgate.state._serialization import canonical_key_bytes
from lockgate.state._serializers import DEFAULT_SERIALIZER, PICKLE_PROTOCOL, PickleSerializer
from lockgate.state._snapshot import (
    Entry,
    IncrementalKeyedState,
    IncrementalSnapshotResources,
    KeyedStateManifest,
    KeyedStateSnapshot,
    PreparedKeyedState,
    SharedStateWriter,
    SnapshotResources,
    StateCodec,
    StateMetaInfo,
)

T = TypeVar("T")

_MIB = 1024 * 1024
#: The smallest memory budget: below it RocksDB's own fixed costs dominate.
MIN_MEMORY_BUDGET: Final = 4 * _MIB
#: RocksDB refuses values of 4 GiB or more (their length is a 32-bit number).
MAX_VALUE_SIZE_LIMIT: Final = (1 << 32) - 1

#: Column families of states are named with this prefix (RocksDB reserves the name "default").
CF_PREFIX: Final = "state:"

#: Value trailer: the key decodes exactly from the RocksDB key.
_PLAIN: Final = b"\x00"
#: Value trailer tag: the pickled key and its 4-byte length precede it.
_PICKLED_KEY: Final = 1
#: Pickle's last byte (STOP): a value ending with it has no trailer, and a plain key.
_STOP: Final = ord(".")

_LEN = struct.Struct(">I")
_FLOAT = struct.Struct(">d")

# Keys repeat across batches, so their bytes are cached: one entry per 512 bytes of memory budget
# (an entry takes about 85 bytes besides the key object itself).
_KEY_CACHE_BUDGET_PER_ENTRY = 512
#: The canonical bytes of the default namespace, None: the last byte of most RocksDB keys.
_DEFAULT_NS_BYTES: Final = canonical_key_bytes(DEFAULT_NAMESPACE)

# What the batch cache holds for a key it has not read yet (MISSING means "read, and absent").
_UNKNOWN: Final = object()

# The memtable of a point-lookup column family: a hash table of linked lists keyed by the first
# bytes of the key (which hold the key group and, for usual keys, the whole key), updated in place.
_HASH_PREFIX_LEN = 64
# Flink's split of the managed memory: the share of it that memtables may take.
_WRITE_BUFFER_RATIO = 0.5
# The largest memtable of a state. A checkpoint flushes the memtables in its synchronous part, so their
# size bounds the pause: 2 MiB of changed entries flush in about 20 ms (W2: a 10 MiB memtable of
# 100 k hot keys paused the stream 140-200 ms per checkpoint). RocksDB flushes fuller ones on its own
# threads meanwhile, at some cost to throughput (W1b about 10 % slower).
_MAX_MEMTABLE = 2 * _MIB

logger = logging.getLogger("lockgate")


def _memory_split(budget: int) -> tuple[int, int]:
    """(block cache capacity, write buffer manager capacity) for ``budget`` bytes.

    As Flink's RocksDB memory controller does: memtables are charged to the block cache through the
    write buffer manager, which may overshoot its capacity by up to half; the capacities leave room
    for that, so the total stays within ``budget`` (RocksDBMemoryControllerUtils).
    """
    cache = int(budget * (3 - _WRITE_BUFFER_RATIO) / 3)
    write_buffers = int(2 * budget * _WRITE_BUFFER_RATIO / 3)
    return cache, write_buffers


class RocksDBStateBackend(StatePreset):
    """Keeps live keyed state in RocksDB on local disk: state larger than memory, bounded memory use.

    With a ``checkpoint_url`` it is also a preset: ``env.set_state_backend`` then sends checkpoints
    to a :class:`~lockgate.FileCheckpointStorage` there; without one the environment's storage stays.

    Args:
        checkpoint_url: Where checkpoints go, such as ``"file:///data/ckpts"``, or None.
        incremental: Whether checkpoints upload only the SST files that are new since the last
            complete checkpoint, and reference the others (savepoints are always whole).
        local_dir: The directory under which each subtask makes its working directory (created if
            missing); the system temporary directory if None.
        memory_budget: Bytes of native memory each keyed subtask's RocksDB may use: block cache,
            index and filter blocks and memtables together.
        max_value_size: The largest serialised value in bytes; a larger one fails the job with
            :class:`~lockgate.StateValueTooLargeError` rather than slowing RocksDB down.
        native_metrics: Whether RocksDB collects its own statistics (a small cost on every access).

    Raises:
        ConfigurationError: An argument of the wrong type or out of range; the message says which.
    """

    def __init__(
        self,
        checkpoint_url: str | None = None,
        *,
        incremental: bool = True,
        local_dir: str | os.PathLike[str] | None = None,
        memory_budget: int = 64 * _MIB,
        max_value_size: int = 64 * _MIB,
        native_metrics: bool = False,
    ) -> None:
        if checkpoint_url is not None and (not isinstance(checkpoint_url, str) or not checkpoint_url):
            raise ConfigurationError(
                "checkpoint_url must be None or the URL of a checkpoint directory such as "
                f"'file:///data/ckpts', got {checkpoint_url!r}"
            )
        for name, flag in (("incremental", incremental), ("native_metrics", native_metrics)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
        if local_dir is not None:
            if not isinstance(local_dir, str | os.PathLike) or not os.fspath(local_dir):
                raise ConfigurationError(
                    f"local_dir must be None or the path of a local directory, got {local_dir!r}"
                )
            local_dir = os.path.abspath(os.fspath(local_dir))
            if os.path.exists(local_dir) and not os.path.isdir(local_dir):
                raise ConfigurationError(f"local_dir {local_dir!r} exists but is not a directory")
        if type(memory_budget) is not int or memory_budget < MIN_MEMORY_BUDGET:
            raise ConfigurationError(
                f"memory_budget must be an int of at least {MIN_MEMORY_BUDGET} bytes (4 MiB), "
                f"got {memory_budget!r}"
            )
        if type(max_value_size) is not int or not 1 <= max_value_size <= MAX_VALUE_SIZE_LIMIT:
            raise ConfigurationError(
                f"max_value_size must be an int from 1 to {MAX_VALUE_SIZE_LIMIT} bytes (RocksDB stores "
                f"no value of 4 GiB or more), got {max_value_size!r}"
            )
        super().__init__(checkpoint_storage=None if checkpoint_url is None else storage_for(checkpoint_url))
        self.checkpoint_url = checkpoint_url
        self.incremental = incremental
        self.local_dir: str | None = local_dir
        self.memory_budget = memory_budget
        self.max_value_size = max_value_size
        self.native_metrics = native_metrics

    def __repr__(self) -> str:
        return (
            f"RocksDBStateBackend({self.checkpoint_url!r}, incremental={self.incremental}, "
            f"local_dir={self.local_dir!r}, memory_budget={self.memory_budget}, "
            f"max_value_size={self.max_value_size}, native_metrics={self.native_metrics})"
        )

    def prepare_restore(
        self, manifest: KeyedStateManifest, shared: Mapping[str, tuple[bytes, str]]
    ) -> PreparedKeyedState | None:
        """Download an incremental RocksDB checkpoint's files, for a subtask to open as its database."""
        return manifest.download(shared) if isinstance(manifest, RocksDBManifest) else None

    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> RocksDBKeyedStateBackend:
        return RocksDBKeyedStateBackend(
            operator_uid,
            key_group_range,
            max_parallelism,
            local_dir=self.local_dir,
            memory_budget=self.memory_budget,
            max_value_size=self.max_value_size,
            native_metrics=self.native_metrics,
            incremental=self.incremental,
        )


class _ClosedFamily:
    """Stands for a column family after :meth:`RocksDBKeyedStateBackend.dispose`: any use says so."""

    def __init__(self, operator_uid: str) -> None:
        self._operator_uid = operator_uid

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"the RocksDB state of operator {self._operator_uid!r} is disposed: its subtask has ended"
        )


class _Table:
    """One state: its column family, how its values become bytes, and its buffers."""

    __slots__ = (
        "cf",
        "decode_raw",
        "default",
        "descriptor",
        "encode",
        "encode_slow",
        "extra",
        "handle",
        "name",
    )

    def __init__(
        self,
        store: _Store,
        descriptor: StateDescriptor[Any],
        cf: Any,
        handle: Any,
        encode: Callable[[Any], bytes],
        decode_raw: Callable[[bytes], Any],
        encode_slow: Callable[[Any], bytes] | None = None,
    ) -> None:
        self.name = descriptor.name
        self.descriptor = descriptor
        self.cf = cf
        self.handle = handle
        self.encode = encode
        #: Decodes a stored value, trailer included.
        self.decode_raw = decode_raw
        #: What to call when ``encode`` (a fast path) raises, if anything.
        self.encode_slow = encode_slow
        #: The default namespace's buffers live as long as the table, so handles can hold them.
        self.default = _Space(store, self, DEFAULT_NAMESPACE)
        #: Other namespaces' buffers, for the open batch only.
        self.extra: dict[Any, _Space] = {}


class _Space:
    """The entries of one state and namespace, with their buffers while a batch is open.

    Outside a batch ``values`` and ``writes`` are None and every access goes to RocksDB. Inside one,
    ``values`` maps keys to deserialised values (MISSING if absent) and ``writes`` maps keys to the
    bytes to store (None to delete).
    """

    __slots__ = (
        "cf",
        "decode_raw",
        "encode",
        "is_default",
        "limit",
        "loaded",
        "ns_bytes",
        "store",
        "table",
        "values",
        "writes",
    )

    def __init__(self, store: _Store, table: _Table, namespace: Any) -> None:
        self.store = store
        self.table = table
        self.cf = table.cf
        self.encode = table.encode
        self.decode_raw = table.decode_raw
        self.limit = store.max_value_size
        self.ns_bytes = canonical_key_bytes(namespace)
        self.is_default = namespace is DEFAULT_NAMESPACE
        self.values: dict[Any, Any] | None = None
        self.writes: dict[Any, bytes | None] | None = None
        self.loaded = False

    def open(self) -> None:
        self.values = {}
        self.writes = {}
        self.loaded = False

    def close(self) -> None:
        self.values = self.writes = None
        self.loaded = False

    # ---- reads

    def read(self, key: Any) -> Any:
        """The value of ``key`` (MISSING if absent), from the batch cache or from RocksDB."""
        values = self.values
        if values is None:
            return self.read_direct(key)
        value = values.get(key, _UNKNOWN)
        return self.miss(key) if value is _UNKNOWN else value

    def key_bytes(self, key: Any) -> bytes:
        """The RocksDB key of ``key`` in this namespace."""
        key_bytes = self.store.key_bytes(key)
        return key_bytes if self.is_default else key_bytes[:-1] + self.ns_bytes

    def read_direct(self, key: Any) -> Any:
        raw = self.cf.get(self.key_bytes(key))
        return MISSING if raw is None else self.decode_raw(raw)

    def miss(self, key: Any) -> Any:
        """A read of a key the batch cache does not hold: fetch the whole batch's keys once (one
        multi-get), then, for a key outside the batch, the key alone."""
        values = self.values
        assert values is not None
        if not self.loaded:
            self.loaded = True
            if values:  # not the keys written already
                keys = [k for k in self.store.batch_keys if k not in values]
                values.update(zip(keys, self.fetch(keys), strict=True))
            else:
                keys = self.store.batch_keys
                values = self.values = dict(zip(keys, self.fetch(keys), strict=True))
            value = values.get(key, _UNKNOWN)
            if value is not _UNKNOWN:
                return value
        value = values[key] = self.read_direct(key)
        return value

    def fetch(self, keys: Sequence[Any]) -> list[Any]:
        """The values of ``keys`` in RocksDB (MISSING where absent), with one multi-get."""
        store = self.store
        if keys is store.batch_keys and self.is_default:
            key_bytes = store.batch_key_bytes()
        elif self.is_default:
            key_bytes = [store.key_bytes(key) for key in keys]
        else:
            key_bytes = [self.key_bytes(key) for key in keys]
        raws: list[bytes | None] = self.cf.get(key_bytes)
        decode_raw = self.decode_raw
        return [MISSING if raw is None else decode_raw(raw) for raw in raws]

    # ---- writes

    def check(self, key: Any, data: bytes) -> bytes:
        """``data``, unless it is larger than ``max_value_size``."""
        if len(data) > self.limit:
            raise StateValueTooLargeError(
                self.store.operator_uid, self.table.name, key, len(data), self.limit
            )
        return data

    def encode_again(self, key: Any, value: Any, error: Exception) -> bytes:
        """What to do when the fast path of ``encode`` raised ``error``: the slow path, if any; a
        value that cannot be written at all is an error naming the state and the key."""
        encode_slow = self.table.encode_slow
        try:
            if encode_slow is None:
                raise error
            return encode_slow(value)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise StateSerializationError(self.store.operator_uid, self.table.name, key, reason) from exc

    def encode_checked(self, key: Any, value: Any) -> bytes:
        try:
            return self.encode(value)
        except Exception as error:
            return self.encode_again(key, value, error)

    def put(self, key: Any, value: Any) -> None:
        try:
            data = self.encode(value)
        except Exception as error:
            data = self.encode_again(key, value, error)
        if len(data) > self.limit:
            self.check(key, data)
        writes = self.writes
        if writes is None:
            self.put_direct(key, data)
        else:
            writes[key] = data
            self.values[key] = value  # type: ignore[index]

    def put_direct(self, key: Any, data: bytes) -> None:
        store = self.store
        self.cf.put(self.key_bytes(key), store.stored(key, data), store.write_options)

    def delete(self, key: Any) -> None:
        writes = self.writes
        if writes is None:
            self.cf.delete(self.key_bytes(key), self.store.write_options)
        else:
            writes[key] = None
            self.values[key] = MISSING  # type: ignore[index]


class _Store:
    """The database of one subtask and what its states share: key bytes, the open batch.

    It holds no reference to the backend, so the backend's finalizer can release it (see
    :meth:`release`) should :meth:`RocksDBKeyedStateBackend.dispose` never be called.
    """

    def __init__(
        self,
        operator_uid: str,
        max_parallelism: int,
        max_value_size: int,
        key_cache_limit: int,
        path: str,
        db: Rdict,
    ) -> None:
        self.operator_uid = operator_uid
        self.max_parallelism = max_parallelism
        self.max_value_size = max_value_size
        self.path = path
        self.db: Rdict | None = db
        self.tables: dict[str, _Table] = {}
        # RocksDB holds the state of this run only, rebuilt from a checkpoint on restore: no WAL.
        self.write_options = WriteOptions()
        # The stub declares disable_wal a method; rocksdict 0.3 has a property.
        self.write_options.disable_wal = True  # type: ignore[method-assign, assignment]
        self.read_all = ReadOptions()
        self.read_all.set_total_order_seek(True)  # hash memtables iterate in key order only so
        self.key_group_bytes = [group.to_bytes(2, "big") for group in range(max_parallelism)]
        #: The RocksDB key of each recent key in the default namespace.
        self.keys: dict[Any, bytes] = {}
        self.key_cache_limit = key_cache_limit
        self.batch_keys: list[Any] = []
        self._batch_key_bytes: list[bytes] | None = None
        self.in_batch = False

    def require_db(self) -> Rdict:
        db = self.db
        if db is None:
            raise RuntimeError(
                f"the RocksDB state of operator {self.operator_uid!r} is disposed: its subtask has ended"
            )
        return db

    # ---- keys

    def key_bytes(self, key: Any) -> bytes:
        """The RocksDB key of ``key`` in the default namespace (cached: keys repeat)."""
        keys = self.keys
        try:
            key_bytes = keys.get(key)
        except TypeError:  # an unhashable key (a mutable dataclass) is not cacheable
            return self.make_key_bytes(key)
        if key_bytes is None:
            key_bytes = self.make_key_bytes(key)
            if len(keys) >= self.key_cache_limit:
                keys.clear()  # cheaper than an LRU on every access; refills with the keys in use
            keys[key] = key_bytes
        return key_bytes

    def make_key_bytes(self, key: Any) -> bytes:
        group = self.key_group_bytes[key_group_for(key, self.max_parallelism)]
        return group + canonical_key_bytes(key) + _DEFAULT_NS_BYTES

    @staticmethod
    def stored(key: Any, data: bytes) -> bytes:
        """What RocksDB stores for ``key`` with the serialised value ``data``: ``data`` and a trailer
        that tells how to get the key back (none for a plain key if ``data`` ends with pickle's STOP)."""
        if type(key) is str or _decodes_exactly(key):
            return data if data[-1:] == b"." else data + _PLAIN
        pickled = DEFAULT_SERIALIZER.dumps(key)
        return data + pickled + _LEN.pack(len(pickled)) + bytes((_PICKLED_KEY,))

    # ---- batches

    def open_batch(self, keys: Sequence[Any]) -> None:
        if self.in_batch:  # the last batch did not finish (its function raised): keep its writes
            self.commit()
        self.require_db()
        self.batch_keys = list(dict.fromkeys(keys))
        self._batch_key_bytes = None
        self.in_batch = True
        for table in self.tables.values():
            table.default.open()

    def commit(self) -> None:
        """Write the open batch's buffered writes with one atomic WriteBatch, and close the batch."""
        batch = WriteBatch(raw_mode=True)
        put, delete, stored = batch.put, batch.delete, self.stored
        try:
            for table in self.tables.values():
                handle = table.handle
                for space in (table.default, *table.extra.values()):
                    writes = space.writes
                    if not writes:
                        continue
                    if space.is_default:
                        known = dict(zip(self.batch_keys, self.batch_key_bytes(), strict=True)).get
                        key_bytes_of = self.key_bytes
                        for key, data in writes.items():
                            key_bytes = known(key) or key_bytes_of(key)
                            if data is None:
                                delete(key_bytes, handle)
                            elif type(key) is str and data[-1:] == b".":  # the usual case, inline
                                put(key_bytes, data, handle)
                            else:
                                put(key_bytes, stored(key, data), handle)
                    else:
                        for key, data in writes.items():
                            if data is None:
                                delete(space.key_bytes(key), handle)
                            else:
                                put(space.key_bytes(key), stored(key, data), handle)
        finally:
            self.close_batch()
        if len(batch):
            self.require_db().write(batch, self.write_options)

    def batch_key_bytes(self) -> list[bytes]:
        """The RocksDB keys of the batch's keys in the default namespace, in order (computed once)."""
        key_bytes = self._batch_key_bytes
        if key_bytes is None:
            cached, key_bytes_of = self.keys.get, self.key_bytes
            key_bytes = self._batch_key_bytes = [cached(key) or key_bytes_of(key) for key in self.batch_keys]
        return key_bytes

    def close_batch(self) -> None:
        self.in_batch = False
        self.batch_keys = []
        self._batch_key_bytes = None
        for table in self.tables.values():
            table.default.close()
            table.extra.clear()

    # ---- the end

    def detach(self) -> tuple[Rdict | None, list[str]]:
        """Drop the open batch and every reference to the database's column families, and hand over
        the database and the names of the states' column families, to close. Idempotent."""
        db, self.db = self.db, None
        self.close_batch()
        closed = _ClosedFamily(self.operator_uid)
        for table in self.tables.values():
            # Column family handles must go before their database closes: rocksdict stalls for a
            # second dropping one of a closed database. Handles in users' hands keep only the space.
            table.cf = table.handle = closed
            table.default.cf = closed
        self.keys.clear()
        return db, [CF_PREFIX + name for name in self.tables]

    def release(self) -> None:
        """Close the database and delete the working directory here and now (the finalizer's way)."""
        db, names = self.detach()
        _close_and_remove(db, names, self.path)


#: A working directory's name starts with this and the id of the process that made it.
_WORKING_PREFIX = "lockgate-rocksdb-p"
_WORKING_NAME = re.compile(re.escape(_WORKING_PREFIX) + r"(\d+)-")
_reclaimed: set[str] = set()  # the directories swept by this process already


def reclaim_working_directories(local_dir: str | None) -> list[str]:
    """Delete the working directories under ``local_dir`` (the system temporary directory if None)
    that processes no longer running left behind: a process killed with SIGKILL never deletes its own.
    Done once per directory and process; returns what it deleted. A directory whose process id is
    alive, or that lockgate did not name, is never touched."""
    where = local_dir if local_dir is not None else tempfile.gettempdir()
    if where in _reclaimed:
        return []
    _reclaimed.add(where)
    deleted = []
    try:
        names = os.listdir(where)
    except OSError:
        return []
    for name in names:
        match = _WORKING_NAME.match(name)
        if match is None or process_alive(int(match[1])):
            continue
        shutil.rmtree(os.path.join(where, name), ignore_errors=True)
        deleted.append(name)
    if deleted:
        logger.info(
            "deleted %d RocksDB working director(ies) in %s left by processes no longer running",
            len(deleted),
            where,
        )
    return deleted


def _close_and_remove(db: Rdict | None, column_families: list[str], path: str) -> None:
    try:
        if db is not None:
            # Dropping the states' column families first spares the flush of their memtables that
            # closing a database without a WAL does (rocksdict has no avoid_flush_during_shutdown).
            for name in column_families:
                db.drop_column_family(name)
            db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
        # Snapshot checkpoints whose asynchronous part never ran (the job ended first).
        for leftover in glob.glob(glob.escape(path) + ".snapshot-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _decoder(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode_raw(raw: bytes) -> Any:
        return decode(_payload(raw))

    return decode_raw


def _payload(raw: bytes) -> bytes:
    """A stored value without its trailer."""
    tag = raw[-1]
    if tag == _STOP:
        return raw
    if tag == 0:
        return raw[:-1]
    (length,) = _LEN.unpack_from(raw, len(raw) - 5)
    return raw[: -5 - length]


def _stored_key(raw: bytes) -> Any:
    """The pickled key in a stored value's trailer, or _PLAIN if the trailer has none."""
    if raw[-1] != _PICKLED_KEY:
        return _PLAIN
    (length,) = _LEN.unpack_from(raw, len(raw) - 5)
    return pickle.loads(raw[-5 - length : -5])


class RocksDBKeyedStateBackend(KeyedStateBackend):
    """The keyed state of one subtask in its own RocksDB database (see the module's documentation).

    Args:
        operator_uid: The operator whose state this is.
        key_group_range: The key groups this subtask owns.
        max_parallelism: The number of key groups of the job.
        local_dir: Where to make the working directory (the system temporary directory if None).
        memory_budget: Bytes of memory the database may use (see :class:`RocksDBStateBackend`).
        max_value_size: The largest serialised value in bytes.
        native_metrics: Whether RocksDB collects statistics (see :meth:`native_metrics`).
        incremental: Whether checkpoints upload only new SST files (see the module's documentation).

    Attributes:
        working_dir: The database's directory, deleted by :meth:`dispose`.
    """

    supports_nowait = True

    def __init__(
        self,
        operator_uid: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        *,
        local_dir: str | None = None,
        memory_budget: int = 64 * _MIB,
        max_value_size: int = 64 * _MIB,
        native_metrics: bool = False,
        incremental: bool = False,
    ) -> None:
        super().__init__(operator_uid, key_group_range, max_parallelism)
        self.incremental = incremental
        # Incremental checkpoints: the shared SST files written for each checkpoint, by local file
        # name, and those of the newest checkpoint known complete, which later ones reuse.
        self._written: dict[int, dict[str, SharedStateHandle]] = {}
        self._confirmed_files: dict[str, SharedStateHandle] = {}
        # States of a database opened from a checkpoint (a native restore) that no function has
        # registered yet: their column families exist; snapshots keep them.
        self._native_states: dict[str, StateMetaInfo] = {}
        self.memory_budget = memory_budget
        self.max_value_size = max_value_size
        self.native_metrics_enabled = native_metrics
        cache_capacity, write_buffer_capacity = _memory_split(memory_budget)
        key_cache_limit = max(4096, memory_budget // _KEY_CACHE_BUDGET_PER_ENTRY)
        self._block_cache = Cache(cache_capacity)  # LRU, shared by every column family
        self._block_cache_capacity = cache_capacity
        # Memtables are charged to the block cache: one budget for both.
        self._write_buffer_manager = WriteBufferManager.new_write_buffer_manager_with_cache(
            write_buffer_capacity, False, self._block_cache
        )
        self._write_buffer_size = max(_MIB, min(_MAX_MEMTABLE, write_buffer_capacity // 2))
        self._db_options = self._options_for_db()

        if local_dir is not None:
            os.makedirs(local_dir, exist_ok=True)
        reclaim_working_directories(local_dir)
        safe_uid = "".join(c if c.isalnum() or c in "-_" else "_" for c in operator_uid)[:40]
        self.working_dir = tempfile.mkdtemp(
            prefix=f"{_WORKING_PREFIX}{os.getpid()}-{safe_uid}-kg{key_group_range.start}-{key_group_range.end}-",
            dir=local_dir,
        )
        try:
            db = Rdict(self.working_dir, self._db_options)
        except BaseException:
            shutil.rmtree(self.working_dir, ignore_errors=True)
            raise
        self._store = _Store(
            operator_uid, max_parallelism, max_value_size, key_cache_limit, self.working_dir, db
        )
        # Should dispose() never be called (the subtask never ran), the directory still goes, when the
        # backend is collected or at the latest when the process exits.
        self._finalizer = weakref.finalize(self, self._store.release)
        self._snapshots_taken = 0

    def __repr__(self) -> str:
        store = self._store
        states = ", ".join(store.tables) or "no state"
        status = "disposed" if store.db is None else ("in a batch" if store.in_batch else "open")
        return (
            f"<RocksDBKeyedStateBackend {self.operator_uid!r} key groups {self.key_group_range.start}.."
            f"{self.key_group_range.end} [{states}] {status} at {self.working_dir}>"
        )

    # ---- options

    def _options_for_db(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_manager(self._write_buffer_manager)
        # In-place memtable updates (see _options_for_state) need writes from one thread at a time.
        options.set_allow_concurrent_memtable_write(False)
        options.set_block_based_table_factory(self._table_options())
        options.set_write_buffer_size(self._write_buffer_size)  # the default column family (unused)
        options.set_keep_log_file_num(1)
        if self.native_metrics_enabled:
            options.enable_statistics()
        else:
            options.set_stats_dump_period_sec(0)
            options.set_stats_persist_period_sec(0)
        return options

    def _table_options(self) -> BlockBasedOptions:
        table = BlockBasedOptions()
        table.set_block_cache(self._block_cache)  # one cache for every column family
        table.set_cache_index_and_filter_blocks(True)  # so they count against the budget too
        table.set_bloom_filter(10, False)
        return table

    def _options_for_state(self) -> Options:
        """The options of a state's column family, chosen by its kind.

        Every kind so far stores one value per key and is read by point lookups, so every column
        family gets a hash-indexed memtable (a hash of the key's first bytes, which hold the key group
        and, for usual keys, the whole key: O(1) lookups instead of a skip list's O(log n) key
        comparisons) that updates a value in place where the new one is not longer, which keeps the
        memtable from filling with old versions of hot keys. Iterating such a memtable takes a total
        order seek (see ``_Store.read_all``). A kind stored as one RocksDB entry per element (a map
        with prefix scans) will want a skip list: choose here by ``descriptor.kind``.

        In-place updates mean a RocksDB snapshot does not isolate entries still in the memtable; a
        checkpoint must flush first (as RocksDB checkpoints do).
        """
        options = Options(raw_mode=True)
        options.set_block_based_table_factory(self._table_options())
        options.set_write_buffer_size(self._write_buffer_size)
        options.set_prefix_extractor(SliceTransform.create_max_len_prefix(_HASH_PREFIX_LEN))
        buckets = max(1024, self._write_buffer_size // 128)
        # The stub declares no argument, but rocksdict requires the bucket count.
        options.set_memtable_factory(MemtableFactory.hash_link_list(buckets))  # type: ignore[call-arg]
        options.set_inplace_update_support(True)
        return options

    # ---- states

    def _create_state(self, descriptor: StateDescriptor[Any]) -> None:
        store = self._store
        name = descriptor.name
        known = store.tables.get(name)
        if known is not None:
            first = known.descriptor
            if first.serializer.snapshot() != descriptor.serializer.snapshot() or (first.ttl is None) != (
                descriptor.ttl is None
            ):
                raise ConfigurationError(
                    f"operator {self.operator_uid!r} declares state {name!r} again with another "
                    f"serializer or TTL ({descriptor!r} after {first!r}); RocksDB stores the values of "
                    "one state in one format: declare it the same way everywhere"
                )
            return
        db = store.require_db()
        cf_name = CF_PREFIX + name
        native = self._native_states.get(name)
        if native is not None:  # restored natively: the column family is there, with its entries
            self.check_restored_meta(native, descriptor)
            del self._native_states[name]
            cf = db.get_column_family(cf_name)
        else:
            cf = db.create_column_family(cf_name, self._options_for_state())
        handle = db.get_column_family_handle(cf_name)
        encode: Callable[[Any], bytes]
        decode: Callable[[bytes], Any]
        decode_raw: Callable[[bytes], Any]
        encode_slow: Callable[[Any], bytes] | None = None
        serializer = descriptor.serializer
        if descriptor.kind == ValueStateDescriptor.kind and descriptor.ttl is None:
            # What is stored is the user's value: the serializer's bytes, nothing around them.
            encode, decode = serializer.dumps, serializer.loads
            if type(serializer) is PickleSerializer:
                # The same bytes without a Python frame; what plain pickle refuses goes the slow way.
                # pickle.loads ignores the trailer (bytes past the pickle's end): no slicing.
                encode, encode_slow = partial(pickle.dumps, protocol=PICKLE_PROTOCOL), serializer.dumps
                decode_raw = pickle.loads
            else:
                decode_raw = _decoder(decode)
        else:  # a list, a map, an accumulator, or entries with their TTL timestamps
            codec = StateCodec(descriptor, self.clock)
            encode, decode_raw = codec.encode, _decoder(codec.decode)
        table = _Table(store, descriptor, cf, handle, encode, decode_raw, encode_slow)
        store.tables[name] = table
        if store.in_batch:
            table.default.open()

    def create_state(self, descriptor: StateDescriptor[Any], handle_type: type[H]) -> H:
        handle = super().create_state(descriptor, handle_type)
        if type(descriptor) is ValueStateDescriptor and descriptor.ttl is None and handle_type is ValueState:
            space = self._store.tables[descriptor.name].default
            return RocksDBValueState(self, descriptor, space)  # type: ignore[return-value]
        return handle

    def _restore_state(self, descriptor: StateDescriptor[Any], groups: dict[int, list[Entry]]) -> None:
        """Write the restored entries as they are: the bytes of an entry are what this state stores
        (same serializer and TTL, checked on registration), so nothing is decoded or encoded again,
        the key group is the one the entry is filed under, and each key group is one WriteBatch."""
        store = self._store
        table = store.tables[descriptor.name]
        handle, stored, limit = table.handle, store.stored, store.max_value_size
        db = store.require_db()
        namespaces: dict[Any, bytes] = {}
        for key_group, entries in groups.items():
            prefix = store.key_group_bytes[key_group]
            batch = WriteBatch(raw_mode=True)
            put = batch.put
            for key, namespace, data in entries:
                ns_bytes = namespaces.get(namespace)
                if ns_bytes is None:
                    ns_bytes = namespaces[namespace] = canonical_key_bytes(namespace)
                if len(data) > limit:
                    raise StateValueTooLargeError(self.operator_uid, descriptor.name, key, len(data), limit)
                put(prefix + canonical_key_bytes(key) + ns_bytes, stored(key, data), handle)
            db.write(batch, store.write_options)

    def restore(self, snapshots: Iterable[KeyedStateSnapshot | PreparedKeyedState]) -> None:
        """Take the state of this subtask's key groups. A RocksDB checkpoint downloaded for a native
        restore is opened as this subtask's database: the one that covers most of its key groups (its
        files hard-linked, no entry read), with the key groups this subtask does not own deleted by
        range; the others go entry by entry, as snapshots do."""
        states = list(snapshots)
        mine = self.key_group_range
        native = [
            state
            for state in states
            if isinstance(state, NativeRocksDBState)
            and state.max_parallelism == self.max_parallelism
            and len(state.key_group_range.intersection(mine))
        ]
        if native and not self.descriptors:
            adopted = max(native, key=lambda state: len(state.key_group_range.intersection(mine)))
            self._open_native(adopted)
            states = [state for state in states if state is not adopted]
            if adopted.manifest.unclaimed is not None:
                states.append(adopted.manifest.unclaimed)
        super().restore(states)

    def _open_native(self, state: NativeRocksDBState) -> None:
        store = self._store
        store.require_db().close()  # the empty database made at construction
        shutil.rmtree(self.working_dir)
        os.mkdir(self.working_dir)
        for name in os.listdir(state.directory):
            source, target = os.path.join(state.directory, name), os.path.join(self.working_dir, name)
            if name.endswith(".sst"):
                os.link(source, target)  # immutable: shared with the download, no copy
            else:
                shutil.copyfile(source, target)  # RocksDB rewrites these
        families = {CF_PREFIX + name: self._options_for_state() for name in state.manifest.states}
        db = Rdict(self.working_dir, self._db_options, column_families=families)
        store.db = db
        self._native_states = dict(state.manifest.states)
        low, high = self.key_group_range.start, self.key_group_range.end + 1
        for name in state.manifest.states:
            family = db.get_column_family(CF_PREFIX + name)
            if low > 0:
                family.delete_range(bytes(2), low.to_bytes(2, "big"))
            if high < self.max_parallelism:
                family.delete_range(high.to_bytes(2, "big"), b"\xff\xff\xff")

    def _restore_values(self, descriptor: StateDescriptor[Any], spaces: dict[Any, dict[Any, Any]]) -> None:
        """Plain values, encoded as this state stores them and written one WriteBatch per key group."""
        encode = StateCodec(descriptor, self.clock).encode
        max_parallelism = self.max_parallelism
        groups: dict[int, list[Entry]] = {}
        for namespace, table in spaces.items():
            for key, value in table.items():
                key_group = key_group_for(key, max_parallelism)
                groups.setdefault(key_group, []).append((key, namespace, encode(value)))
        self._restore_state(descriptor, groups)

    def _space(self, state: str, namespace: Any) -> _Space:
        store = self._store
        try:
            table = store.tables[state]
        except KeyError:
            raise KeyError(
                f"operator {self.operator_uid!r} has no state {state!r}; register it first"
            ) from None
        if namespace is DEFAULT_NAMESPACE:
            return table.default
        space = table.extra.get(namespace)
        if space is None:
            space = _Space(store, table, namespace)
            if store.in_batch:
                space.open()
                table.extra[namespace] = space
        return space

    # ---- the backend interface

    def get_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        return self._space(state, namespace).read(key)

    def put_nowait(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self._space(state, namespace).put(key, value)

    def delete_nowait(self, state: str, key: Any, namespace: Any) -> None:
        self._space(state, namespace).delete(key)

    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        return self._space(state, namespace).read(key)

    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self._space(state, namespace).put(key, value)

    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        self._space(state, namespace).delete(key)

    async def get_many(self, state: str, keys: Sequence[Any], namespace: Any) -> list[Any]:
        """The values of ``keys`` (MISSING where absent), with one multi-get for what is not cached."""
        space = self._space(state, namespace)
        values = space.values
        if values is None:
            return space.fetch(keys)
        unknown = [key for key in dict.fromkeys(keys) if key not in values]
        if unknown:
            values.update(zip(unknown, space.fetch(unknown), strict=True))
        return [values[key] for key in keys]

    async def put_many(self, state: str, items: Iterable[tuple[Any, Any]], namespace: Any) -> None:
        """Set many values; outside a batch with one atomic ``WriteBatch``. Every value is serialised
        (and its size checked) before anything is written."""
        space = self._space(state, namespace)
        encode, check = space.encode_checked, space.check
        pending = [(key, value, check(key, encode(key, value))) for key, value in items]
        writes = space.writes
        if writes is not None:
            values = space.values
            assert values is not None
            for key, value, data in pending:
                writes[key] = data
                values[key] = value
            return
        store = self._store
        batch = WriteBatch(raw_mode=True)
        handle = space.table.handle
        for key, _, data in pending:
            batch.put(space.key_bytes(key), store.stored(key, data), handle)
        store.require_db().write(batch, store.write_options)

    async def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        """Every ``(key, value)`` of ``state`` in ``namespace``, with the open batch's writes.

        Iterates the state's column family and skips other namespaces' entries. The view is not
        isolated from writes made meanwhile: do not change the state while iterating it.
        """
        space = self._space(state, namespace)
        buffered = dict(space.writes) if space.writes else {}
        cached = dict(space.values) if buffered and space.values is not None else {}
        ns_bytes, decode_raw = space.ns_bytes, space.decode_raw
        count = 0
        for item in space.cf.items(read_opt=self._store.read_all):
            raw_key: bytes = item[0]  # raw mode: keys are bytes
            raw_value: bytes = item[1]
            key, end = _decode_key(raw_key, 2)
            if raw_key[end:] != ns_bytes:
                continue
            stored_key = _stored_key(raw_value)
            if stored_key is not _PLAIN:
                key = stored_key
            elif key is _DATACLASS:
                raise RuntimeError(f"state {state!r}: an entry's key cannot be decoded; the data is damaged")
            if buffered and key in buffered:
                continue
            yield key, decode_raw(raw_value)
            count += 1
            if count % 1024 == 0:
                await anyio.lowlevel.checkpoint()  # a long iteration leaves the loop room
        for key, data in buffered.items():
            if data is not None:
                yield key, cached[key]

    async def prepare_batch(self, keys: Sequence[Any]) -> None:
        """Open a batch over ``keys`` (see the module's documentation); a previous batch that did not
        finish is written first."""
        self._store.open_batch(keys)

    async def finish_batch(self) -> None:
        """Write the batch's buffered writes with one atomic WriteBatch."""
        store = self._store
        if store.in_batch:
            store.commit()

    # ---- snapshots

    def snapshot_sync(self, checkpoint_id: int = 0) -> SnapshotResources:
        """Write the open batch and take a RocksDB checkpoint: a flush, then hard links to the
        database's files in a directory of its own, which later writes never change.

        Uploading (incremental) or reading and encoding the checkpoint happens later, off the actor.
        It runs here, not in a worker thread: rocksdict holds the GIL while it creates a checkpoint,
        so no other actor would run meanwhile, and handing the work over and back doubled the pause.
        """
        store = self._store
        if store.in_batch:
            store.commit()
        self._snapshots_taken += 1
        path = f"{store.path}.snapshot-{self._snapshots_taken}"
        Checkpoint(store.require_db()).create_checkpoint(path)
        tables, now = dict(store.tables), self.clock()
        if self.incremental:
            return _IncrementalRocksDBSnapshotResources(self, tables, path, now, checkpoint_id)
        return _RocksDBSnapshotResources(self, tables, path, now)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        files = self._written.get(checkpoint_id)
        if files is None:
            return  # not a checkpoint this backend wrote incrementally (a savepoint, say)
        self._confirmed_files = files
        self._written = {cid: done for cid, done in self._written.items() if cid > checkpoint_id}

    # ---- inspection and the end

    def memory_usage(self) -> dict[str, int]:
        """The memory budget, how it is split, and what is used, in bytes (entries for the key cache)."""
        return {
            "budget": self.memory_budget,
            "block_cache_capacity": self._block_cache_capacity,
            "block_cache_usage": self._block_cache.get_usage(),
            "write_buffer_capacity": self._write_buffer_manager.get_buffer_size(),
            "write_buffer_usage": self._write_buffer_manager.get_usage(),
            "key_cache_entries": len(self._store.keys),
            "key_cache_limit": self._store.key_cache_limit,
        }

    def rocksdb_property(self, name: str, state: str | None = None) -> int | None:
        """An integer property of RocksDB, such as ``"estimate-num-keys"`` or ``"block-cache-capacity"``
        (the ``rocksdb.`` prefix is optional), of a state's column family or of the database."""
        store = self._store
        db = store.require_db()
        source: Any = db if state is None else self._space(state, DEFAULT_NAMESPACE).cf
        prefixed = name if name.startswith("rocksdb.") else f"rocksdb.{name}"
        value: int | None = source.property_int_value(prefixed)
        return value

    def native_metrics(self) -> dict[str, Any] | None:
        """RocksDB's own statistics and some properties of each state, or None unless enabled."""
        if not self.native_metrics_enabled:
            return None
        store = self._store
        store.require_db()
        states = {
            name: {
                prop: table.cf.property_int_value(f"rocksdb.{prop}")
                for prop in ("estimate-num-keys", "cur-size-all-mem-tables", "total-sst-files-size")
            }
            for name, table in store.tables.items()
        }
        return {"statistics": self._db_options.get_statistics(), "states": states}

    async def dispose(self) -> None:
        """Drop the open batch, close the database and delete the working directory (in a worker
        thread, so the event loop does not wait). Idempotent."""
        store = self._store
        if store.db is None:
            return
        self._finalizer.detach()
        db, names = store.detach()
        await run_sync(_close_and_remove, db, names, store.path)


class _RocksDBSnapshotResources(SnapshotResources):
    """A RocksDB checkpoint of a subtask's states, read and encoded in a worker thread."""

    def __init__(
        self, backend: RocksDBKeyedStateBackend, tables: dict[str, _Table], path: str, now: float
    ) -> None:
        self._backend = backend
        self._tables = tables
        self._path = path
        self._now = now
        self._unclaimed = backend.unclaimed_restored_state()
        self._native = dict(backend._native_states)

    def materialize(self) -> KeyedStateSnapshot:
        backend = self._backend
        entries: dict[str, dict[int, list[Entry]]] = {}
        checkpoint = _open_read_only(self._path, [*self._tables, *self._native])
        try:
            for name in self._native:  # restored natively, not registered: as stored
                entries[name] = _stored_groups(checkpoint, name)
            for name, table in self._tables.items():
                codec = StateCodec(table.descriptor, backend.clock)
                plain = table.descriptor.ttl is None
                groups: dict[int, list[Entry]] = {}
                for key_group, key, namespace, raw_value in _stored_entries(checkpoint, name):
                    if plain:  # stored as the codec encodes it: no decoding, no encoding
                        data = _payload(raw_value)
                    else:
                        alive = codec.prune(table.decode_raw(raw_value), self._now)
                        if alive is MISSING:
                            continue
                        data = codec.encode(alive)
                    groups.setdefault(key_group, []).append((key, namespace, data))
                entries[name] = groups
        finally:
            checkpoint.close()
            shutil.rmtree(self._path, ignore_errors=True)
        states = dict(self._native)
        states.update({name: StateMetaInfo.of(table.descriptor) for name, table in self._tables.items()})
        return backend.with_unclaimed_restored_state(
            KeyedStateSnapshot(
                backend.operator_uid, backend.max_parallelism, backend.key_group_range, states, entries
            ),
            self._unclaimed,
        )

    def release(self) -> None:
        # Normally materialize() removed the checkpoint already, off the event loop.
        if os.path.exists(self._path):
            shutil.rmtree(self._path, ignore_errors=True)


class _IncrementalRocksDBSnapshotResources(_RocksDBSnapshotResources, IncrementalSnapshotResources):
    """A RocksDB checkpoint whose new SST files are uploaded as they are, without reading an entry."""

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        tables: dict[str, _Table],
        path: str,
        now: float,
        checkpoint_id: int,
    ) -> None:
        super().__init__(backend, tables, path, now)
        self._checkpoint_id = checkpoint_id

    async def write_incremental(self, writer: SharedStateWriter) -> IncrementalKeyedState:
        backend = self._backend
        reusable = backend._confirmed_files
        try:
            names = await run_sync(os.listdir, self._path)
            files: dict[str, SharedStateHandle] = {}
            for name in sorted(n for n in names if n.endswith(".sst")):
                handle = reusable.get(name)
                if handle is None:  # new since the confirmed checkpoint: upload it as it is
                    data = await run_sync(_read_file, os.path.join(self._path, name))
                    handle = await writer.write("sst", data)
                files[name] = handle
            private = await run_sync(_read_files, self._path, [n for n in names if not n.endswith(".sst")])
        finally:
            await run_sync(shutil.rmtree, self._path, True)
        backend._written[self._checkpoint_id] = files
        unclaimed = backend.with_unclaimed_restored_state(
            KeyedStateSnapshot(
                backend.operator_uid, backend.max_parallelism, backend.key_group_range, {}, {}
            ),
            self._unclaimed,
        )
        manifest = RocksDBManifest(
            backend.operator_uid,
            backend.max_parallelism,
            backend.key_group_range,
            {
                **self._native,
                **{name: StateMetaInfo.of(table.descriptor) for name, table in self._tables.items()},
            },
            files,
            private,
            unclaimed if unclaimed.states else None,
        )
        return IncrementalKeyedState(manifest, tuple(files.values()))


@dataclass(frozen=True)
class RocksDBManifest(KeyedStateManifest):
    """The keyed state of one subtask in an incremental RocksDB checkpoint: a RocksDB checkpoint's
    files, the SST files as shared blobs by their local names, the others (MANIFEST, CURRENT,
    OPTIONS) held here; and restored state no function had registered yet, if any."""

    operator_uid: str
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMetaInfo]
    sst_files: dict[str, SharedStateHandle]
    private_files: dict[str, bytes]
    unclaimed: KeyedStateSnapshot | None = None

    def resolve(self, shared: Mapping[str, tuple[bytes, str]]) -> KeyedStateSnapshot:
        """Download the files, open them read-only and take every entry as stored."""
        prepared = self.download(shared)
        try:
            return prepared.resolve()
        finally:
            prepared.discard()

    def download(self, shared: Mapping[str, tuple[bytes, str]]) -> NativeRocksDBState:
        """Write the checkpoint's files into a temporary directory of their own."""
        directory = tempfile.mkdtemp(prefix="lockgate-rocksdb-restore-")
        try:
            for name, handle in self.sst_files.items():
                blob = shared.get(handle.name)
                if blob is None:
                    raise CorruptCheckpointError(handle.pointer, "missing: the checkpoint references it")
                _write_file(os.path.join(directory, name), blob[0])
            for name, data in self.private_files.items():
                _write_file(os.path.join(directory, name), data)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return NativeRocksDBState(self, directory)

    def snapshot(self, entries: dict[str, dict[int, list[Entry]]]) -> KeyedStateSnapshot:
        """A snapshot of ``entries`` (read from this manifest's files) and the unclaimed state."""
        states = dict(self.states)
        if self.unclaimed is not None:
            states.update(self.unclaimed.states)
            for name, groups in self.unclaimed.entries.items():
                mine = entries.setdefault(name, {})
                for key_group, group in groups.items():
                    mine.setdefault(key_group, []).extend(group)
        return KeyedStateSnapshot(
            self.operator_uid, self.max_parallelism, self.key_group_range, states, entries
        )


class NativeRocksDBState(PreparedKeyedState):
    """A RocksDB checkpoint's files downloaded into a directory, which a RocksDB backend opens as its
    database (hard links, no entry read), or which is read entry by entry otherwise. The directory is
    deleted when this object is collected, or by :meth:`discard`."""

    def __init__(self, manifest: RocksDBManifest, directory: str) -> None:
        self.manifest = manifest
        self.directory = directory
        self.operator_uid = manifest.operator_uid
        self.max_parallelism = manifest.max_parallelism
        self.key_group_range = manifest.key_group_range
        self._finalizer = weakref.finalize(self, shutil.rmtree, directory, True)

    def __repr__(self) -> str:
        where = f"key groups {self.key_group_range.start}..{self.key_group_range.end} at {self.directory}"
        return f"<NativeRocksDBState {self.operator_uid!r} {where}>"

    def resolve(self) -> KeyedStateSnapshot:
        """Every entry as stored (the bytes a state's codec wrote: nothing is decoded)."""
        entries: dict[str, dict[int, list[Entry]]] = {}
        database = _open_read_only(self.directory, self.manifest.states)
        try:
            for name in self.manifest.states:
                entries[name] = _stored_groups(database, name)
        finally:
            database.close()
        return self.manifest.snapshot(entries)

    def discard(self) -> None:
        self._finalizer()


def _open_read_only(path: str, states: Iterable[str]) -> Rdict:
    families = {CF_PREFIX + name: Options(raw_mode=True) for name in states}
    return Rdict(
        path, options=Options(raw_mode=True), column_families=families, access_type=AccessType.read_only()
    )


def _stored_entries(database: Rdict, state: str) -> Iterator[tuple[int, Any, Any, bytes]]:
    """``(key group, key, namespace, stored value)`` of every entry of a state's column family."""
    family: Any = database.get_column_family(CF_PREFIX + state)  # raw mode: bytes in and out
    for raw_key, raw_value in family.items():
        key, end = _decode_key(raw_key, 2)
        namespace, _ = _decode_key(raw_key, end)
        stored_key = _stored_key(raw_value)
        if stored_key is not _PLAIN:
            key = stored_key
        yield int.from_bytes(raw_key[:2], "big"), key, namespace, raw_value


def _stored_groups(database: Rdict, state: str) -> dict[int, list[Entry]]:
    """A state's entries by key group, each value as stored (the bytes its codec wrote)."""
    groups: dict[int, list[Entry]] = {}
    for key_group, key, namespace, raw_value in _stored_entries(database, state):
        groups.setdefault(key_group, []).append((key, namespace, _payload(raw_value)))
    return groups


def _read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _read_files(directory: str, names: list[str]) -> dict[str, bytes]:
    return {name: _read_file(os.path.join(directory, name)) for name in names}


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


class RocksDBValueState(ValueState[T]):
    """A value state (without TTL) that reaches its buffers directly: inside a batch one dict lookup
    per read and one serialisation per write, with no await and no call through the backend."""

    __slots__ = ("_space",)

    def __init__(
        self, backend: RocksDBKeyedStateBackend, descriptor: ValueStateDescriptor[T], space: _Space
    ) -> None:
        super().__init__(backend, descriptor)
        self._space = space

    def value_nowait(self) -> T:
        value = self._space.read(self._backend.current_key)
        return self._descriptor.fresh_default() if value is MISSING else value

    def update_nowait(self, value: T | None) -> None:
        space = self._space
        key = self._backend.current_key
        if value is None:
            space.delete(key)
        else:
            space.put(key, value)

    def clear_nowait(self) -> None:
        self._space.delete(self._backend.current_key)

    async def value(self) -> T:
        return self.value_nowait()

    async def update(self, value: T | None) -> None:
        self.update_nowait(value)

    async def clear(self) -> None:
        self._space.delete(self._backend.current_key)


# ---- canonical key bytes, read back


def _decodes_exactly(key: Any) -> bool:
    """Whether ``key`` decodes from its canonical bytes to an object of the same type and value."""
    kind = type(key)
    if kind is str or kind is int or kind is bytes or key is None:
        return True
    if kind is float:
        return not key.is_integer()  # integral floats encode as ints
    if kind is tuple:
        return all(_decodes_exactly(item) for item in key)
    return False


class _Opaque:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<dataclass key>"


# A dataclass key's canonical bytes hold its class name and fields, not a way to rebuild it.
_DATACLASS: Final = _Opaque()


def _decode_key(data: bytes, pos: int) -> tuple[Any, int]:
    """The key encoded by :func:`canonical_key_bytes` at ``data[pos:]``, and where it ends."""
    tag = data[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x46:  # F
        return _FLOAT.unpack_from(data, pos)[0], pos + 8
    (length,) = _LEN.unpack_from(data, pos)
    pos += 4
    if tag == 0x53:  # S
        return data[pos : pos + length].decode("utf-8", "surrogatepass"), pos + length
    if tag == 0x49:  # I
        return int.from_bytes(data[pos : pos + length], "big", signed=True), pos + length
    if tag == 0x42:  # B
        return data[pos : pos + length], pos + length
    if tag == 0x54:  # T
        items = []
        for _ in range(length):
            item, pos = _decode_key(data, pos)
            items.append(item)
        return tuple(items), pos
    if tag == 0x44:  # D: class name, field count, then (name, value) per field
        pos += length
        (fields,) = _LEN.unpack_from(data, pos)
        pos += 4
        for _ in range(fields * 2):
            _, pos = _decode_key(data, pos)
        return _DATACLASS, pos
    raise ValueError(f"not canonical key bytes: tag {tag!r} at {pos - 5}")
