"""Snapshots of a RocksDB backend: a RocksDB checkpoint, read entry by entry or uploaded by SST file."""

from __future__ import annotations

import os
import pickle
import shutil
from typing import TYPE_CHECKING, Final

import anyio
import anyio.lowlevel
from rocksdict import Rdict

from lockgate._threads import run_sync
from lockgate.snapshots import SharedStateHandle
from lockgate.state._snapshot import (
    Entry,
    IncrementalKeyedState,
    IncrementalSnapshotResources,
    KeyedStateSnapshot,
    KeyedStateWriter,
    PersistedKeyedState,
    SharedStateWriter,
    SnapshotResources,
    StateCodec,
    StateMetaInfo,
    join_list,
    join_map,
)
from lockgate.state._states import MISSING
from lockgate.state._timers import TIMER_KIND
from lockgate.state.rocksdb._encoding import _payload
from lockgate.state.rocksdb._files import _read_file, _read_files
from lockgate.state.rocksdb._native import LAYOUT, RocksDBManifest
from lockgate.state.rocksdb._reading import _open_read_only, _stored_entries, _stored_groups, _stored_wholes
from lockgate.state.rocksdb._timers import stored_timer_groups

if TYPE_CHECKING:
    from lockgate.state.rocksdb._keyed import RocksDBKeyedStateBackend
    from lockgate.state.rocksdb._store import _HeldBack, _Table
    from lockgate.state.rocksdb._views import CheckpointView


#: How often, and how many times at most, a snapshot looks whether RocksDB has flushed its memtables
#: before it takes its checkpoint (which would flush what remains while the actor waits).
_FLUSH_POLL_SECONDS: Final = 0.002
_FLUSH_POLLS: Final = 500


class _RocksDBSnapshotResources(SnapshotResources):
    """A RocksDB checkpoint of a subtask's states, read and encoded in a worker thread.

    With writes held back (``held_back``, see ``_Store.hold_back``), the checkpoint is taken by
    :meth:`write`, once they are written."""

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        tables: dict[str, _Table],
        path: str,
        now: float,
        held_back: _HeldBack | None = None,
        *,
        keep: bool = False,
        discard: list[CheckpointView] | None = None,
    ) -> None:
        self._backend = backend
        self._tables = tables
        self._path = path
        self._now = now
        self._held_back = held_back
        self._unclaimed = backend.unclaimed_restored_state()
        self._native = dict(backend._native_states)
        # Whether the checkpoint directory outlives the snapshot (a checkpoint view keeps it), and
        # views no longer needed, closed and deleted here off the event loop.
        self._keep = keep
        self._discard = discard or []

    async def _take_checkpoint(self) -> None:
        """Write the held-back entries a step at a time, the actor's batches in between (an earlier
        snapshot's first); let RocksDB flush its memtables in its own threads; then take the
        checkpoint, which has next to nothing left to flush (it runs on the event loop, holding the
        GIL)."""
        held_back = self._held_back
        if held_back is None:
            return
        store = self._backend._store
        while held_back in store.held_back:
            if store.write_step():
                await anyio.lowlevel.checkpoint()
            elif store.held_back[0] is not held_back:
                store.take_checkpoint()  # an earlier barrier's, written: checkpoints go in their order
            else:
                store.flush_memtables()
                for _ in range(_FLUSH_POLLS):
                    await anyio.sleep(_FLUSH_POLL_SECONDS)
                    if not store.held_back or store.held_back[0] is not held_back or not store.flushing():
                        break
                store.settle(held_back)
        if not held_back.checkpoint_taken:
            raise RuntimeError(
                f"the RocksDB state of operator {self._backend.operator_uid!r} was disposed before "
                "its snapshot was taken"
            )

    async def write(self, writer: KeyedStateWriter) -> PersistedKeyedState:
        await self._take_checkpoint()
        return await super().write(writer)

    def _clean_up(self) -> None:
        """Delete the checkpoint directory unless a view keeps it, and discard the stale views."""
        if not self._keep:
            shutil.rmtree(self._path, ignore_errors=True)
        discard, self._discard = self._discard, []
        for view in discard:
            view.discard()

    def materialize(self) -> KeyedStateSnapshot:
        assert self._held_back is None or self._held_back.checkpoint_taken, "written by write() only"
        backend = self._backend
        entries: dict[str, dict[int, list[Entry]]] = {}
        checkpoint = _open_read_only(self._path, [*self._tables, *self._native])
        try:
            for name, meta in self._native.items():  # restored natively, not registered: as stored
                entries[name] = _stored_groups(checkpoint, name, meta)
            for name, table in self._tables.items():
                codec = StateCodec(table.descriptor, backend.clock)
                plain = table.descriptor.ttl is None
                groups: dict[int, list[Entry]] = {}
                if table.descriptor.kind == TIMER_KIND:
                    entries[name] = stored_timer_groups(checkpoint, name)
                    continue
                if table.per_entry:
                    entries[name] = _whole_groups(checkpoint, name, codec, self._now)
                    continue
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
            self._clean_up()
        states = dict(self._native)
        states.update({name: StateMetaInfo.of(table.descriptor) for name, table in self._tables.items()})
        return backend.with_unclaimed_restored_state(
            KeyedStateSnapshot(
                backend.operator_uid, backend.max_parallelism, backend.key_group_range, states, entries
            ),
            self._unclaimed,
        )

    def release(self) -> None:
        if self._held_back is not None:  # if never written: the held-back entries still go to RocksDB
            self._backend._store.settle(self._held_back)
        # Normally materialize() or write_incremental() cleaned up already, off the event loop.
        self._clean_up()


class _IncrementalRocksDBSnapshotResources(_RocksDBSnapshotResources, IncrementalSnapshotResources):
    """A RocksDB checkpoint whose new SST files are uploaded as they are, without reading an entry."""

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        tables: dict[str, _Table],
        path: str,
        now: float,
        checkpoint_id: int,
        held_back: _HeldBack | None = None,
        *,
        keep: bool = False,
        discard: list[CheckpointView] | None = None,
    ) -> None:
        super().__init__(backend, tables, path, now, held_back, keep=keep, discard=discard)
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
            await run_sync(self._clean_up)
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
            layout=LAYOUT,
        )
        return IncrementalKeyedState(manifest, tuple(files.values()))


def _whole_groups(checkpoint: Rdict, name: str, codec: StateCodec, now: float) -> dict[int, list[Entry]]:
    """A map or list state's values by key group, each joined from its entries as the codec encodes a
    map or a list; under TTL, elements expired at ``now`` are left out (and a value left empty)."""
    ttl, is_map = codec.ttl, codec.kind == "map"
    groups: dict[int, list[Entry]] = {}
    for key_group, key, namespace, elements in _stored_wholes(checkpoint, name, codec.kind):
        if ttl is not None:
            limit = now - ttl.ttl_seconds
            if is_map:
                elements = {uk: data for uk, data in elements.items() if pickle.loads(data)[0] > limit}
            else:
                elements = [data for data in elements if pickle.loads(data)[0] > limit]
            if not elements:
                continue
        joined = join_map(elements, ttl is not None) if is_map else join_list(elements, ttl is not None)
        groups.setdefault(key_group, []).append((key, namespace, joined))
    return groups
