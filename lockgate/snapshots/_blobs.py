"""Naming and writing the blobs of a subtask's part of a checkpoint: its own state blobs, and the shared
blobs of incremental checkpoints (each under a name no other checkpoint or process ever writes)."""

from __future__ import annotations

import logging
import re
import uuid
import zlib

from lockgate._errors import CheckpointError
from lockgate.snapshots._storage import (
    CheckpointLocation,
    CheckpointStorage,
    SharedStateHandle,
    StreamStateHandle,
)

logger = logging.getLogger("lockgate")

#: The name of a shared blob: a state blob's name, its kind, and a random part (see ``SubtaskStateWriter``).
SHARED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{8}-[0-9]+-[a-z]+-[0-9a-f]{32}")


def blob_name(uid: str, subtask_index: int, kind: str) -> str:
    """The name of a state blob in a checkpoint: readable, and unique even for uids that differ only
    in characters a file name cannot hold."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", uid)[:80].lstrip("._-") or "op"
    return f"{readable}-{zlib.crc32(uid.encode()):08x}-{subtask_index}-{kind}"


class SubtaskStateWriter:
    """Writes one subtask's part of one checkpoint into its location: each operator's own blobs under
    readable names (:func:`blob_name`), and the shared blobs of incremental snapshots, each under a name
    of its own (readable, with a random part: no two checkpoints or processes ever write the same name).
    It remembers the shared blobs: should the checkpoint not take them, :meth:`discard` deletes them.

    Args:
        storage: The checkpoint's storage.
        location: The checkpoint's location in it.
        subtask_index: The subtask whose part this is.
        canonical: The checkpoint is a savepoint: state goes whole, in the canonical form.
    """

    def __init__(
        self, storage: CheckpointStorage, location: CheckpointLocation, subtask_index: int, *, canonical: bool
    ) -> None:
        self.storage = storage
        self.location = location
        self.subtask_index = subtask_index
        self.canonical = canonical
        self.uploaded: list[SharedStateHandle] = []

    def for_operator(self, uid: str) -> OperatorStateWriter:
        """The writer of operator ``uid``'s blobs (a :class:`~lockgate.state.KeyedStateWriter` too)."""
        return OperatorStateWriter(self, uid)

    async def discard(self) -> None:
        """Delete the shared blobs written (the checkpoint failed, or did not take them); the others go
        with the checkpoint's location."""
        if self.uploaded:
            names, self.uploaded = [handle.name for handle in self.uploaded], []
            try:
                await self.storage.discard_shared(names)
            except CheckpointError as exc:
                logger.warning("could not delete the shared state of a failed checkpoint: %s", exc)


class OperatorStateWriter:
    """Writes the blobs of one operator of a subtask for one checkpoint."""

    def __init__(self, owner: SubtaskStateWriter, uid: str) -> None:
        self.owner = owner
        self.uid = uid
        self.shared = _SharedBlobWriter(owner, uid)

    @property
    def canonical(self) -> bool:
        return self.owner.canonical

    async def write(self, data: bytes) -> StreamStateHandle:
        """Persist the operator's keyed state blob."""
        return await self.write_blob("keyed", data)

    async def write_blob(self, kind: str, data: bytes) -> StreamStateHandle:
        """Persist one of the operator's own blobs: ``kind`` is ``keyed``, ``operator`` or ``channel``."""
        owner = self.owner
        name = blob_name(self.uid, owner.subtask_index, kind)
        return await owner.storage.write_state(owner.location, name, data)


class _SharedBlobWriter:
    def __init__(self, owner: SubtaskStateWriter, uid: str) -> None:
        self.owner = owner
        self.uid = uid

    async def write(self, kind: str, data: bytes) -> SharedStateHandle:
        owner = self.owner
        name = f"{blob_name(self.uid, owner.subtask_index, kind)}-{uuid.uuid4().hex}"
        handle = await owner.storage.write_shared(name, data)
        owner.uploaded.append(handle)
        return handle
