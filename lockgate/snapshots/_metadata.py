"""A checkpoint's metadata: which state blobs make up each operator's state, and how to read them back.

The coordinator writes it last (:meth:`CheckpointStorage.write_metadata`), once every subtask has
acknowledged: a checkpoint is complete exactly when its metadata exists. It holds handles, never
state: the blobs stay where the subtasks wrote them.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Final, TypeVar

from lockgate._errors import CheckpointError, CorruptCheckpointError
from lockgate.snapshots._storage import (
    METADATA_NAME,
    CheckpointStorage,
    SharedStateHandle,
    StreamStateHandle,
)

T = TypeVar("T")

#: The version of the metadata layout; a reader refuses any other.
METADATA_VERSION: Final = 1


@dataclass(frozen=True)
class SubtaskStateHandles:
    """The state blobs one operator subtask wrote for a checkpoint: keyed and operator state, and the
    shared blobs its keyed state references (an incremental checkpoint; see ``SharedStateHandle``), and
    the in-flight records of its input channels (unaligned checkpoints; held by a chain's first operator)."""

    keyed: StreamStateHandle | None = None
    operator: StreamStateHandle | None = None
    shared: tuple[SharedStateHandle, ...] = ()
    channel: StreamStateHandle | None = None

    @property
    def size(self) -> int:
        """Bytes of this subtask's state, shared blobs included (what a restore reads)."""
        own = sum(handle.size for handle in (self.keyed, self.operator, self.channel) if handle is not None)
        return own + sum(handle.size for handle in self.shared)


@dataclass(frozen=True)
class OperatorCheckpointState:
    """The state of one operator (by uid) in a checkpoint: its parallelism and each subtask's blobs."""

    uid: str
    parallelism: int
    subtasks: dict[int, SubtaskStateHandles] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointMetadata:
    """What ``_metadata`` holds.

    Attributes:
        checkpoint_id: The checkpoint's id.
        job_name: The job that took it.
        max_parallelism: The job's number of key groups.
        timestamp: When it was triggered, in seconds since the epoch.
        operators: The state of every operator, by uid.
        kind: ``"checkpoint"``, or ``"savepoint"`` (every keyed state in the canonical, entry by entry
            form; see ``docs/savepoint-format.md``).
    """

    checkpoint_id: int
    job_name: str
    max_parallelism: int
    timestamp: float
    operators: dict[str, OperatorCheckpointState]
    kind: str = "checkpoint"
    version: int = METADATA_VERSION

    def to_bytes(self) -> bytes:
        """The metadata as stored (the storage frames it with a checksum)."""
        return pickle.dumps(self, protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> CheckpointMetadata:
        """Metadata read from ``where`` (a path or reference, for errors)."""
        try:
            metadata = pickle.loads(data)
        except Exception as exc:
            raise CorruptCheckpointError(where, f"the metadata cannot be read ({exc})") from exc
        if not isinstance(metadata, cls):
            raise CorruptCheckpointError(
                where, f"it holds {type(metadata).__name__}, not checkpoint metadata"
            )
        if metadata.version != METADATA_VERSION:
            raise CorruptCheckpointError(
                where,
                f"metadata version {metadata.version} is not supported (this lockgate reads "
                f"version {METADATA_VERSION})",
            )
        return metadata

    @property
    def full_bytes(self) -> int:
        """The bytes of every state blob the checkpoint consists of, shared ones included."""
        return sum(s.size for op in self.operators.values() for s in op.subtasks.values())

    def shared_names(self) -> set[str]:
        """The names of the shared blobs the checkpoint references."""
        return {
            handle.name
            for state in self.operators.values()
            for handles in state.subtasks.values()
            for handle in handles.shared
        }


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back whole: its metadata and, per operator uid, each subtask's keyed and
    operator state blob as ``(bytes, pointer)`` (None where a subtask wrote none), the shared blobs
    the keyed state references, by name, and the channel state blob of the subtasks of unaligned
    checkpoints that stored in-flight records."""

    metadata: CheckpointMetadata
    pointer: str
    keyed: dict[str, list[Blob | None]]
    operator: dict[str, list[Blob | None]]
    shared: dict[str, Blob] = field(default_factory=dict)
    channel: dict[str, list[Blob | None]] = field(default_factory=dict)


#: A state blob's bytes and where they were read from.
Blob = tuple[bytes, str]


async def load_checkpoint(storage: CheckpointStorage, checkpoint_id: int, pointer: str) -> LoadedCheckpoint:
    """Read a completed checkpoint's metadata and every state blob it names, each checksum verified.

    Raises:
        CorruptCheckpointError: The metadata or a blob is missing or damaged; the error names it.
        CheckpointError: The storage has no complete checkpoint ``checkpoint_id``.
    """
    where = f"{pointer.rstrip('/')}/{METADATA_NAME}"
    try:
        data = await storage.read_metadata(checkpoint_id)
    except CorruptCheckpointError:
        raise
    except CheckpointError as exc:
        raise CorruptCheckpointError(where, str(exc)) from exc
    metadata = CheckpointMetadata.from_bytes(data, where)
    keyed: dict[str, list[Blob | None]] = {}
    operator: dict[str, list[Blob | None]] = {}
    shared: dict[str, Blob] = {}
    channel: dict[str, list[Blob | None]] = {}
    for uid, state in metadata.operators.items():
        keyed[uid] = [None] * state.parallelism
        operator[uid] = [None] * state.parallelism
        for index, handles in state.subtasks.items():
            if not 0 <= index < state.parallelism:
                raise CorruptCheckpointError(
                    where,
                    f"operator {uid!r} has state of subtask {index} at parallelism {state.parallelism}",
                )
            if handles.keyed is not None:
                keyed[uid][index] = (await storage.read_state(handles.keyed), handles.keyed.pointer)
            if handles.operator is not None:
                operator[uid][index] = (await storage.read_state(handles.operator), handles.operator.pointer)
            for handle in handles.shared:
                if handle.name not in shared:
                    shared[handle.name] = (await storage.read_shared(handle), handle.pointer)
            if handles.channel is not None:
                blobs = channel.setdefault(uid, [None] * state.parallelism)
                blobs[index] = (await storage.read_state(handles.channel), handles.channel.pointer)
    return LoadedCheckpoint(metadata, pointer, keyed, operator, shared, channel)


def unpickle_state(blob: Blob, expected: type[T]) -> T:
    """Unpickle one state blob, naming its file if it does not hold what it should."""
    data, pointer = blob
    try:
        value = pickle.loads(data)
    except Exception as exc:
        raise CorruptCheckpointError(pointer, f"the state cannot be read ({exc})") from exc
    if not isinstance(value, expected):
        raise CorruptCheckpointError(pointer, f"it holds {type(value).__name__}, not {expected.__name__}")
    return value
