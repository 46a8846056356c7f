"""Incremental RocksDB checkpoints: their manifest, and their files downloaded for a native restore."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from lockgate._errors import CheckpointError, CorruptCheckpointError
from lockgate.snapshots import SharedStateHandle
from lockgate.state._keygroups import KeyGroupRange
from lockgate.state._snapshot import (
    Entry,
    KeyedStateManifest,
    KeyedStateSnapshot,
    PreparedKeyedState,
    StateMetaInfo,
)
from lockgate.state.rocksdb._files import _write_file
from lockgate.state.rocksdb._reading import _open_read_only, _stored_groups

#: How the files of incremental RocksDB checkpoints lay state out now (see ``RocksDBManifest.layout``).
LAYOUT = 2


@dataclass(frozen=True)
class RocksDBManifest(KeyedStateManifest):
    """The keyed state of one subtask in an incremental RocksDB checkpoint: a RocksDB checkpoint's
    files, the SST files as shared blobs by their local names, the others (MANIFEST, CURRENT,
    OPTIONS) held here; and restored state no function had registered yet, if any. ``layout`` is
    how the files lay state out: 2, map entries and list elements one RocksDB entry each; a manifest
    pickled before the field existed reads as 1, a map or a list one RocksDB value per key.
    """

    operator_uid: str
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMetaInfo]
    sst_files: dict[str, SharedStateHandle]
    private_files: dict[str, bytes]
    unclaimed: KeyedStateSnapshot | None = None
    layout: int = 1

    def resolve(self, shared: Mapping[str, tuple[bytes, str]]) -> KeyedStateSnapshot:
        """Download the files, open them read-only and take every entry as stored."""
        prepared = self.download(shared)
        try:
            return prepared.resolve()
        finally:
            prepared.discard()

    def download(self, shared: Mapping[str, tuple[bytes, str]]) -> NativeRocksDBState:
        """Write the checkpoint's files into a temporary directory of their own.

        Raises:
            CheckpointError: The files lay map or list state out as an older lockgate did.
        """
        maps = sorted(name for name, meta in self.states.items() if meta.kind in ("map", "list"))
        if self.layout < LAYOUT and maps:
            raise CheckpointError(
                f"operator {self.operator_uid!r}: this incremental RocksDB checkpoint was written by an "
                f"older lockgate, which stored the map or list state {maps} one value per key; this one "
                "stores one entry per map entry or element and cannot read those files. Restore from a "
                "savepoint taken with the older lockgate (savepoints have the same format in both)"
            )
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
            # Whichever form it holds (restored from a heap checkpoint: tables), as entries.
            for name, groups in self.unclaimed.grouped_entries().items():
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

    def __reduce__(self) -> tuple[object, ...]:
        # Sent to another process (a Ray worker, perhaps on another machine), it carries its files, which
        # are written into a directory of that process's own: this one goes when this object does.
        files = {}
        for name in os.listdir(self.directory):
            with open(os.path.join(self.directory, name), "rb") as file:
                files[name] = file.read()
        return _with_files, (self.manifest, files)

    def resolve(self) -> KeyedStateSnapshot:
        """Every entry as stored (the bytes a state's codec wrote: nothing is decoded)."""
        entries: dict[str, dict[int, list[Entry]]] = {}
        database = _open_read_only(self.directory, self.manifest.states)
        try:
            for name, meta in self.manifest.states.items():
                entries[name] = _stored_groups(database, name, meta)
        finally:
            database.close()
        return self.manifest.snapshot(entries)

    def discard(self) -> None:
        self._finalizer()


def _with_files(manifest: RocksDBManifest, files: dict[str, bytes]) -> NativeRocksDBState:
    """A :class:`NativeRocksDBState` of ``manifest`` whose ``files`` are written into a new directory."""
    directory = tempfile.mkdtemp(prefix="lockgate-rocksdb-restore-")
    try:
        for name, data in files.items():
            _write_file(os.path.join(directory, name), data)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return NativeRocksDBState(manifest, directory)
