"""Naming and writing the blobs of a subtask's part of a checkpoint: its own state blobs, and the shared
blobs of incremental checkpoints (each under a name no other checkpoint or process ever writes)."""

from __future__ import annotations

import logging
import re
import uuid
import zlib
from dataclasses import dataclass

from lockgate._errors import CheckpointError
from lockgate.snapshots._metadata import SubtaskStateHandles
from lockgate.snapshots._storage import CheckpointLocation, CheckpointStorage, SharedStateHandle

logger = logging.getLogger("lockgate")

#: A subtask's state as bytes, by operator uid: (keyed state blob, operator state blob), None if none.
StateBlobs = dict[str, tuple[bytes | None, bytes | None]]


#: The name of a shared blob: a state blob's name, its kind, and a random part (see ``SharedBlobWriter``).
SHARED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{8}-[0-9]+-[a-z]+-[0-9a-f]{32}")


def blob_name(uid: str, subtask_index: int, kind: str) -> str:
    """The name of a state blob in a checkpoint: readable, and unique even for uids that differ only
    in characters a file name cannot hold."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", uid)[:80].lstrip("._-") or "op"
    return f"{readable}-{zlib.crc32(uid.encode()):08x}-{subtask_index}-{kind}"


async def write_state_blobs(
    storage: CheckpointStorage,
    location: CheckpointLocation,
    subtask_index: int,
    blobs: StateBlobs,
    shared: dict[str, tuple[SharedStateHandle, ...]] | None = None,
) -> dict[str, SubtaskStateHandles]:
    """Write one subtask's state blobs into a checkpoint; their handles by operator uid, with the
    shared blobs each operator's keyed state references (``shared``, incremental checkpoints)."""
    handles: dict[str, SubtaskStateHandles] = {}
    for uid, (keyed_data, operator_data) in blobs.items():
        keyed = operator = None
        if keyed_data is not None:
            keyed = await storage.write_state(location, blob_name(uid, subtask_index, "keyed"), keyed_data)
        if operator_data is not None:
            name = blob_name(uid, subtask_index, "operator")
            operator = await storage.write_state(location, name, operator_data)
        handles[uid] = SubtaskStateHandles(keyed, operator, (shared or {}).get(uid, ()))
    return handles


class SharedBlobWriter:
    """Writes the shared blobs of one subtask's operators for one checkpoint, each under a name of
    its own (readable, with a random part: no two checkpoints or processes ever write the same name),
    and remembers them: should the checkpoint not take them, the subtask deletes them again."""

    def __init__(self, storage: CheckpointStorage, subtask_index: int) -> None:
        self.storage = storage
        self.subtask_index = subtask_index
        self.uploaded: list[SharedStateHandle] = []

    def for_operator(self, uid: str) -> _OperatorBlobWriter:
        """The writer an operator's keyed state backend uses."""
        return _OperatorBlobWriter(self, uid)

    async def discard(self) -> None:
        """Delete what was uploaded (the checkpoint failed, or did not take it)."""
        if self.uploaded:
            names, self.uploaded = [handle.name for handle in self.uploaded], []
            try:
                await self.storage.discard_shared(names)
            except CheckpointError as exc:
                logger.warning("could not delete the shared state of a failed checkpoint: %s", exc)


@dataclass(frozen=True)
class _OperatorBlobWriter:
    owner: SharedBlobWriter
    uid: str

    async def write(self, kind: str, data: bytes) -> SharedStateHandle:
        owner = self.owner
        name = f"{blob_name(self.uid, owner.subtask_index, kind)}-{uuid.uuid4().hex}"
        handle = await owner.storage.write_shared(name, data)
        owner.uploaded.append(handle)
        return handle
