"""The keyed state backend of one subtask in RocksDB, and its value state that skips the backend."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from itertools import repeat
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    MemtableFactory,
    Options,
    Rdict,
    SliceTransform,
    WriteBatch,
    WriteBufferManager,
)

from lockgate._errors import ConfigurationError, StateValueTooLargeError
from lockgate._threads import run_sync
from lockgate.snapshots import SharedStateHandle
from lockgate.state._backend import KeyedStateBackend, PendingMigration, S
from lockgate.state._descriptors import StateDescriptor, ValueStateDescriptor
from lockgate.state._keygroups import KeyGroupRange, key_groups_of
from lockgate.state._serialization import canonical_key_bytes
from lockgate.state._serializers import PICKLE_PROTOCOL, PickleSerializer
from lockgate.state._snapshot import (
    Columns,
    Entry,
    KeyedStateSnapshot,
    PreparedKeyedState,
    SnapshotResources,
    StateCodec,
    StateMetaInfo,
    pickle_each,
    split_list,
    split_map,
)
from lockgate.state._states import DEFAULT_NAMESPACE, MISSING, ListState, MapState, ValueState
from lockgate.state._timers import TIMER_KIND, TimerQueue
from lockgate.state.rocksdb._encoding import (
    _DATACLASS,
    _PLAIN,
    CF_PREFIX,
    _decode_key,
    _decoder,
    _payload,
    _stored_key,
)
from lockgate.state.rocksdb._entry_states import RocksDBListState, RocksDBMapState, _whole_values
from lockgate.state.rocksdb._files import _WORKING_PREFIX, _close_and_remove, reclaim_working_directories
from lockgate.state.rocksdb._native import NativeRocksDBState
from lockgate.state.rocksdb._options import (
    _HASH_PREFIX_LEN,
    _KEY_CACHE_SHARE,
    _MAX_MEMTABLE,
    _MIB,
    _VALUE_CACHE_SHARE,
    _memory_split,
)
from lockgate.state.rocksdb._snapshots import _IncrementalRocksDBSnapshotResources, _RocksDBSnapshotResources
from lockgate.state.rocksdb._store import (
    _SEQUENCE_BYTES,
    _EntrySpace,
    _HeldBack,
    _ListSpace,
    _MapSpace,
    _Space,
    _Store,
    _stored_entry,
    _Table,
)
from lockgate.state.rocksdb._timers import RocksDBTimerQueue, restored_timers
from lockgate.state.rocksdb._views import CheckpointView

T = TypeVar("T")


class RocksDBKeyedStateBackend(KeyedStateBackend):
    """The keyed state of one subtask in its own RocksDB database (see the package's documentation).

    Args:
        operator_uid: The operator whose state this is.
        key_group_range: The key groups this subtask owns.
        max_parallelism: The number of key groups of the job.
        local_dir: Where to make the working directory (the system temporary directory if None).
        memory_budget: Bytes of memory the database may use (see :class:`RocksDBStateBackend`).
        max_value_size: The largest serialised value in bytes.
        native_metrics: Whether RocksDB collects statistics (see :meth:`native_metrics`).
        incremental: Whether checkpoints upload only new SST files (see the package's documentation).

    Attributes:
        working_dir: The database's directory, deleted by :meth:`dispose`.
    """

    supports_nowait = True
    holds_timers = True

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
        # The value caches take a share of the budget (see _store._Space); RocksDB the rest.
        value_cache_limit = int(memory_budget * _VALUE_CACHE_SHARE)
        cache_capacity, write_buffer_capacity = _memory_split(memory_budget - value_cache_limit)
        key_cache_limit = int(memory_budget * _KEY_CACHE_SHARE)  # bytes, on top of the budget
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
            operator_uid,
            max_parallelism,
            max_value_size,
            key_cache_limit,
            self.working_dir,
            db,
            value_cache_limit,
        )
        # Should dispose() never be called (the subtask never ran), the directory still goes, when the
        # backend is collected or at the latest when the process exits.
        self._finalizer = weakref.finalize(self, self._store.release)
        self._snapshots_taken = 0
        # Checkpoint views for queries (see _views): kept by pending checkpoints, the one that
        # answers, and those to discard with the next snapshot (off the event loop).
        self._pinned: dict[int, CheckpointView] = {}
        self._view: CheckpointView | None = None
        self._stale_views: list[CheckpointView] = []

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
        # Index and filter in 4 KiB partitions, only their small top level pinned: a lookup loads a
        # partition, not a whole SST file's index and filter (megabytes once the state outgrows the
        # cache, which then churned: 2 M keys with a 16 MiB budget read 23 k random keys/s, 42 k so).
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_pin_top_level_index_and_filter(True)
        return table

    def _options_for_state(self, kind: str) -> Options:
        """The options of a state's column family, chosen by its kind.

        A kind stored as one value per key and namespace is read by point lookups: its column family
        gets a hash-indexed memtable (a hash of the key's first bytes, which hold the key group and,
        for usual keys, the whole key: O(1) lookups instead of a skip list's O(log n) key comparisons)
        that updates a value in place where the new one is not longer, which keeps the memtable from
        filling with old versions of hot keys. Iterating such a memtable takes a total order seek (see
        ``_Store.read_all``). In-place updates mean a RocksDB snapshot does not isolate entries still
        in the memtable; a checkpoint must flush first (as RocksDB checkpoints do).

        A map or a list, one RocksDB entry per map entry or element, is scanned by prefix, and timers
        are read in order: the default skip list, which iterates in order at no extra cost, and
        whole-key bloom filters for point lookups.
        """
        options = Options(raw_mode=True)
        options.set_block_based_table_factory(self._table_options())
        options.set_write_buffer_size(self._write_buffer_size)
        if kind in ("map", "list", TIMER_KIND):
            return options
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
        read = None
        if native is not None:  # restored natively: the column family is there, with its entries
            read = self.check_restored_meta(native, descriptor)
            del self._native_states[name]
            cf = db.get_column_family(cf_name)
        else:
            cf = db.create_column_family(cf_name, self._options_for_state(descriptor.kind))
        handle = db.get_column_family_handle(cf_name)
        encode: Callable[[Any], bytes]
        decode: Callable[[bytes], Any]
        decode_raw: Callable[[bytes], Any]
        encode_slow: Callable[[Any], bytes] | None = None
        serializer = descriptor.serializer
        codec = StateCodec(descriptor, self.clock)
        if descriptor.kind == ValueStateDescriptor.kind and descriptor.ttl is None:
            # What is stored is the user's value: the serializer's bytes, nothing around them.
            encode, decode = serializer.dumps, serializer.loads
            if type(serializer) is PickleSerializer:
                # The same bytes without a Python frame; what plain pickle refuses goes the slow way.
                # pickle.loads ignores the trailer (bytes past the pickle's end): no slicing.
                encode, encode_slow = _pickle_value, serializer.dumps
                decode_raw = pickle.loads
            else:
                decode_raw = _decoder(decode)
        else:  # a list, an accumulator, entries with their TTL timestamps (a map's: one by one)
            encode, decode_raw = codec.encode, _decoder(codec.decode)
        table = _Table(store, descriptor, cf, handle, encode, decode_raw, codec, encode_slow)
        store.tables[name] = table
        if store.in_batch:
            table.default.open()
        if read is not None:  # its entries have the old schema: rewritten before they are read
            self._migrate_later(PendingMigration(descriptor, read, in_place=True))

    def _migrate(self, migration: PendingMigration) -> None:
        if not migration.in_place:
            super()._migrate(migration)
            return
        # Every entry of the column family read with the old schema and written with the new one,
        # its key and trailer kept; one WriteBatch per few thousand entries.
        descriptor = migration.descriptor
        store = self._store
        store.settle()
        table = store.tables[descriptor.name]
        if isinstance(table.default, _Space):
            table.default.drop()  # every entry is read and rewritten in RocksDB
        old, new = StateCodec(descriptor, self.clock, migration.read), table.codec
        decode: Callable[[bytes], Any] = old.decode_element if table.per_entry else old.decode
        encode: Callable[[Any], bytes] = new.encode_element if table.per_entry else new.encode
        db, handle, limit = store.require_db(), table.handle, store.max_value_size
        batch = WriteBatch(raw_mode=True)
        for raw_key, raw in table.cf.items(read_opt=store.read_all):
            payload = _payload(raw)
            trailer = raw[len(payload) :]
            data = encode(decode(payload))
            if len(data) > limit:
                key = _decode_key(raw_key, 2)[0]
                raise StateValueTooLargeError(self.operator_uid, descriptor.name, key, len(data), limit)
            if len(trailer) <= 1:  # no pickled key: the trailer depends on the data's last byte
                trailer = b"" if data[-1:] == b"." else _PLAIN
            batch.put(raw_key, data + trailer, handle)
            if len(batch) >= 4096:
                db.write(batch, store.write_options)
                batch = WriteBatch(raw_mode=True)
        db.write(batch, store.write_options)

    def restored_state_names(self) -> set[str]:
        return super().restored_state_names() | set(self._native_states)

    def create_state(
        self, descriptor: StateDescriptor[Any], state_type: type[S], *, namespaced: bool = False
    ) -> S:
        state = super().create_state(descriptor, state_type, namespaced=namespaced)
        space = self._store.tables[descriptor.name].default
        if (
            not namespaced
            and type(descriptor) is ValueStateDescriptor
            and descriptor.ttl is None
            and state_type is ValueState
        ):
            assert isinstance(space, _Space)
            return RocksDBValueState(self, descriptor, space)  # type: ignore[return-value]
        if isinstance(space, _MapSpace) and state_type is MapState:
            return RocksDBMapState(self, descriptor)  # type: ignore[return-value]
        if isinstance(space, _ListSpace) and state_type is ListState:
            return RocksDBListState(self, descriptor)  # type: ignore[return-value]
        return state

    def _create_timer_queue(self, domain: str) -> TimerQueue:
        """A queue over the timers' column family (see :mod:`lockgate.state.rocksdb._timers`); restored
        timers are written into it first, one WriteBatch per key group."""
        descriptor, restored = self._register_timers(domain)
        store = self._store
        store.settle()
        table = store.tables[descriptor.name]
        db, handle = store.require_db(), table.handle
        for timers in restored_timers(store.key_group_bytes, restored):
            batch = WriteBatch(raw_mode=True)
            for raw_key, value in timers:
                batch.put(raw_key, value, handle)
            db.write(batch, store.write_options)
        return RocksDBTimerQueue(store, table)

    def _restore_state(self, descriptor: StateDescriptor[Any], groups: dict[int, list[Entry]]) -> None:
        """Write the restored entries as they are: the bytes of an entry are what this state stores
        (same serializer and TTL, checked on registration), so nothing is decoded or encoded again,
        the key group is the one the entry is filed under, and each key group is one WriteBatch."""
        store = self._store
        store.settle()
        table = store.tables[descriptor.name]
        if isinstance(table.default, _Space):
            table.default.drop()  # restored entries are written to RocksDB directly
        handle, stored, limit = table.handle, store.stored, store.max_value_size
        db = store.require_db()
        namespaces: dict[Any, bytes] = {}
        kind, timed = descriptor.kind, descriptor.ttl is not None
        for key_group, entries in groups.items():
            prefix = store.key_group_bytes[key_group]
            batch = WriteBatch(raw_mode=True)
            put = batch.put
            for key, namespace, data in entries:
                ns_bytes = namespaces.get(namespace)
                if ns_bytes is None:
                    ns_bytes = namespaces[namespace] = canonical_key_bytes(namespace)
                if kind == "map" or kind == "list":  # one RocksDB entry per map entry or element
                    entry_prefix = prefix + canonical_key_bytes(key) + ns_bytes
                    if kind == "map":
                        stored_entries = [
                            (
                                entry_prefix + canonical_key_bytes(user_key),
                                _stored_entry(key, user_key, element),
                            )
                            for user_key, element in split_map(data, timed).items()
                        ]
                    else:
                        stored_entries = [
                            (entry_prefix + _sequence(index), stored(key, element))
                            for index, element in enumerate(split_list(data, timed))
                        ]
                    for entry_key, element in stored_entries:
                        if len(element) > limit:
                            raise StateValueTooLargeError(
                                self.operator_uid, descriptor.name, key, len(element), limit
                            )
                        put(entry_key, element, handle)
                    continue
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
        families = {
            CF_PREFIX + name: self._options_for_state(meta.kind)
            for name, meta in state.manifest.states.items()
        }
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

    def _restore_encoded(self, descriptor: StateDescriptor[Any], spaces: dict[Any, dict[Any, bytes]]) -> None:
        """Codec bytes are what RocksDB stores: written as they are, one WriteBatch per key group."""
        max_parallelism = self.max_parallelism
        groups: dict[int, list[Entry]] = {}
        for namespace, table in spaces.items():
            # Key groups computed for all keys at once, uncached: a restore's keys would flush the
            # process's key-hash cache of keys in use.
            for (key, data), key_group in zip(
                table.items(), key_groups_of(list(table), max_parallelism), strict=True
            ):
                groups.setdefault(key_group, []).append((key, namespace, data))
        self._restore_state(descriptor, groups)

    def _restore_grouped_values(self, descriptor: StateDescriptor[Any], groups: dict[int, Columns]) -> None:
        """Plain values by key group (a savepoint's packed tables), encoded as this state stores them
        and written one WriteBatch per key group: no key is hashed again."""
        encode = StateCodec(descriptor, self.clock).encoder
        # The default serializer's plain values: pickled in one C-level loop (what its dumps writes);
        # should plain pickle refuse one, the codec's loop takes them all (cloudpickle).
        plain = type(descriptor.serializer) is PickleSerializer and descriptor.kind not in ("list", "map")
        entries: dict[int, list[Entry]] = {}
        for key_group, columns in groups.items():
            held = entries[key_group] = []
            for namespace, (keys, values) in columns.items():
                encoded: list[bytes] | None = None
                if plain:
                    try:
                        encoded = pickle_each(values)
                    except Exception:
                        encoded = None
                if encoded is None:
                    encoded = list(map(encode, values))
                held.extend(zip(keys, repeat(namespace), encoded))
        self._restore_state(descriptor, entries)

    def _restore_values(self, descriptor: StateDescriptor[Any], spaces: dict[Any, dict[Any, Any]]) -> None:
        """Plain values, encoded as this state stores them and written one WriteBatch per key group."""
        encode = StateCodec(descriptor, self.clock).encode
        max_parallelism = self.max_parallelism
        groups: dict[int, list[Entry]] = {}
        for namespace, table in spaces.items():
            for (key, value), key_group in zip(
                table.items(), key_groups_of(list(table), max_parallelism), strict=True
            ):
                groups.setdefault(key_group, []).append((key, namespace, encode(value)))
        self._restore_state(descriptor, groups)

    def _space(self, state: str, namespace: Any) -> _Space | _EntrySpace:
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
            space = table.space(store, namespace)
            if store.in_batch:
                space.open()
                table.extra[namespace] = space
        return space

    # ---- the backend interface

    # A map's whole value (a dict of elements) through these: restores, queries. Map state objects
    # reach single entries through their _MapSpace.

    def get_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        return self._space(state, namespace).read(key)

    def namespaces_of(self, state: str, key: Any) -> list[Any]:
        """The namespaces of ``key``'s entries in RocksDB (a scan of the entries that start with its
        key bytes) and in the open batch's buffers."""
        store = self._store
        table = store.tables[state]
        prefix = store.key_bytes(key)[:-1]  # without the default namespace's byte
        found: dict[Any, None] = {}
        iterator = table.cf.iter(store.read_all)
        iterator.seek(prefix)
        while iterator.valid():
            raw_key: bytes = iterator.key()
            if not raw_key.startswith(prefix):
                break
            found[_decode_key(raw_key, len(prefix))[0]] = None
            iterator.next()
        found.update(dict.fromkeys(table.extra))
        found.pop(DEFAULT_NAMESPACE, None)
        return list(found)

    def peek_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        space = self._space(state, namespace)
        if isinstance(space, _EntrySpace):
            return space.read(key)  # reads only: a scan of RocksDB and of the batch's writes
        return space.peek(key)  # the cache, else RocksDB; without filling the cache

    def put_nowait(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        space = self._space(state, namespace)
        if isinstance(space, _EntrySpace):
            space.replace(key, value)
        else:
            space.put(key, value)

    def delete_nowait(self, state: str, key: Any, namespace: Any) -> None:
        space = self._space(state, namespace)
        if isinstance(space, _EntrySpace):
            space.clear(key)
        else:
            space.delete(key)

    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        return self.get_nowait(state, key, namespace)

    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self.put_nowait(state, key, namespace, value)

    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        self.delete_nowait(state, key, namespace)

    async def get_many(self, state: str, keys: Sequence[Any], namespace: Any) -> list[Any]:
        """The values of ``keys`` (MISSING where absent), with one multi-get for what is not cached."""
        space = self._space(state, namespace)
        if isinstance(space, _EntrySpace):
            return [space.read(key) for key in keys]
        values = space.values
        unknown = [key for key in dict.fromkeys(keys) if key not in values]
        if not space.in_batch:
            found = dict(zip(unknown, space.fetch(unknown), strict=True)) if unknown else {}
            return [found[key] if key in found else space.peek(key) for key in keys]
        if unknown:
            space.keep(unknown, space.fetch(unknown))
        return [space.read(key) for key in keys]

    async def put_many(self, state: str, items: Iterable[tuple[Any, Any]], namespace: Any) -> None:
        """Set many values; outside a batch with one atomic ``WriteBatch``. Every value is serialised
        (and its size checked) before anything is written."""
        space = self._space(state, namespace)
        if isinstance(space, _EntrySpace):
            for key, value in items:
                space.replace(key, value)
            return
        encode, check = space.encode_checked, space.check
        pending = [(key, value, check(key, encode(key, value))) for key, value in items]
        if space.in_batch:
            for key, value, _ in pending:
                space.put(key, value)
            return
        store = self._store
        store.settle()
        batch = WriteBatch(raw_mode=True)
        handle = space.table.handle
        for key, _, data in pending:
            space.forget(key)
            batch.put(space.key_bytes(key), store.stored(key, data), handle)
        store.require_db().write(batch, store.write_options)

    async def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        """Every ``(key, value)`` of ``state`` in ``namespace``, with the open batch's writes.

        Iterates the state's column family and skips other namespaces' entries. The view is not
        isolated from writes made meanwhile: do not change the state while iterating it.
        """
        space = self._space(state, namespace)
        if isinstance(space, _EntrySpace):
            async for item in _whole_values(space):
                yield item
            return
        self._store.settle()  # RocksDB is read directly
        # What the cache holds that RocksDB does not yet (RocksDB never holds part of a batch).
        unwritten = {key: space.peek(key) for key in space.dirty}
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
            if unwritten and key in unwritten:
                continue
            yield key, decode_raw(raw_value)
            count += 1
            if count % 1024 == 0:
                await anyio.lowlevel.checkpoint()  # a long iteration leaves the loop room
        for key, value in unwritten.items():
            if value is not MISSING:
                yield key, value

    async def prepare_batch(self, keys: Sequence[Any]) -> None:
        """Open a batch over ``keys`` (see the package's documentation); a previous batch that did not
        finish is written first."""
        self._store.open_batch(keys)

    async def finish_batch(self) -> None:
        """Write the batch's buffered writes with one atomic WriteBatch."""
        store = self._store
        if store.in_batch:
            store.commit()

    # ---- snapshots

    def snapshot_sync(self, checkpoint_id: int = 0) -> SnapshotResources:
        """Write the open batch and the value caches' writes, and take a RocksDB checkpoint: a flush,
        then hard links to the database's files in a directory of its own, which later writes never
        change.

        Uploading (incremental) or reading and encoding the checkpoint happens later, off the actor.
        It runs here, not in a worker thread: rocksdict holds the GIL while it creates a checkpoint,
        so no other actor would run meanwhile, and handing the work over and back doubled the pause.
        """
        store = self._store
        if store.in_batch:
            store.commit()
        store.flush()  # the value caches' writes: the checkpoint holds every write before the barrier
        path = self._next_snapshot_path()
        Checkpoint(store.require_db()).create_checkpoint(path)
        return self._snapshot_resources(path, checkpoint_id, None)

    async def snapshot_capture(self, checkpoint_id: int = 0) -> SnapshotResources:
        """The actor's snapshot: its synchronous part writes the open batch and sets the value caches'
        writes aside, as of the barrier; the asynchronous part writes them in steps between the next
        batches, then takes the RocksDB checkpoint (see ``_Store.hold_back``). A checkpoint's pause
        so does not grow with the keys changed since the last one."""
        store = self._store
        if store.in_batch:
            store.commit()
        path = self._next_snapshot_path()
        return self._snapshot_resources(path, checkpoint_id, store.hold_back(path))

    def _next_snapshot_path(self) -> str:
        self._snapshots_taken += 1
        return f"{self._store.path}.snapshot-{self._snapshots_taken}"

    def _snapshot_resources(
        self, path: str, checkpoint_id: int, held_back: _HeldBack | None
    ) -> SnapshotResources:
        """The resources of a snapshot whose RocksDB checkpoint is, or will be, at ``path``."""
        tables, now = dict(self._store.tables), self.clock()
        keep = self.keeping_views and checkpoint_id > 0
        if keep:
            self._pinned[checkpoint_id] = CheckpointView(path, tables)
        discard, self._stale_views = self._stale_views, []
        if self.incremental:
            return _IncrementalRocksDBSnapshotResources(
                self, tables, path, now, checkpoint_id, held_back, keep=keep, discard=discard
            )
        return _RocksDBSnapshotResources(self, tables, path, now, held_back, keep=keep, discard=discard)

    async def read_checkpoint_view(self, state: str, key: Any) -> Any:
        view = self._view
        assert view is not None, "a view is published before queries read it"
        space = view.space(self._store, state)
        return MISSING if space is None else space.read(key)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        view = self._pinned.pop(checkpoint_id, None)
        if view is not None:  # it answers from now on; the one before and older pending ones go
            self._stale_views += [old for cid, old in self._pinned.items() if cid < checkpoint_id]
            self._pinned = {cid: kept for cid, kept in self._pinned.items() if cid > checkpoint_id}
            if self._view is not None:
                self._stale_views.append(self._view)
            self._view = view
            self.publish_checkpoint_view(checkpoint_id)
        files = self._written.get(checkpoint_id)
        if files is None:
            return  # not a checkpoint this backend wrote incrementally (a savepoint, say)
        self._confirmed_files = files
        self._written = {cid: done for cid, done in self._written.items() if cid > checkpoint_id}

    # ---- inspection and the end

    def memory_usage(self) -> dict[str, int]:
        """The memory budget, how it is split, and what is used, in bytes (and the key cache's entries)."""
        return {
            "budget": self.memory_budget,
            "block_cache_capacity": self._block_cache_capacity,
            "block_cache_usage": self._block_cache.get_usage(),
            "write_buffer_capacity": self._write_buffer_manager.get_buffer_size(),
            "write_buffer_usage": self._write_buffer_manager.get_usage(),
            "key_cache_entries": len(self._store.keys.entries),
            "key_cache_limit": self._store.keys.limit,
            "key_cache_usage": self._store.keys.charged,
            "value_cache_limit": self._store.value_cache_limit,
            "value_cache_usage": self._store.value_cache_usage(),
        }

    def rocksdb_property(self, name: str, state: str | None = None) -> int | None:
        """An integer property of RocksDB, such as ``"estimate-num-keys"`` or ``"block-cache-capacity"``
        (the ``rocksdb.`` prefix is optional), of a state's column family or of the database."""
        store = self._store
        db = store.require_db()
        if not store.in_batch:  # (RocksDB never holds part of a batch)
            store.flush()  # so that RocksDB's figures count the cache's writes
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
        if not store.in_batch:
            store.flush()
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
        views = [*self._stale_views, *self._pinned.values(), *([self._view] if self._view else [])]
        self._stale_views, self._pinned, self._view = [], {}, None
        db, names = store.detach()
        await run_sync(_close_and_remove, db, names, store.path)
        for view in views:
            await run_sync(view.discard)


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

    def map_batch_nowait(
        self,
        keys: Sequence[Any],
        records: Sequence[Any],
        step: Callable[[Any, T], tuple[Any, T | None]],
    ) -> list[Any]:
        # A key that cannot be stored fails as its bytes are made.
        return self._space.map_batch_nowait(keys, records, step, self._descriptor.fresh_default)

    async def value(self) -> T:
        return self.value_nowait()

    async def update(self, value: T | None) -> None:
        self.update_nowait(value)

    async def clear(self) -> None:
        self._space.delete(self._backend.current_key)


def _sequence(index: int) -> bytes:
    """The RocksDB key suffix of a list's element number ``index``."""
    return index.to_bytes(_SEQUENCE_BYTES, "big")


def _pickle_value(value: Any, dumps: Callable[[Any, int], bytes] = pickle.dumps) -> bytes:
    """``pickle.dumps(value, protocol=5)``: a function with positional arguments costs about 60 % of a
    ``functools.partial`` with a keyword (this runs once per value a checkpoint writes)."""
    return dumps(value, PICKLE_PROTOCOL)
