"""A job's state decoded from a loaded checkpoint, by operator uid, and each subtask's part of it."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

from lockgate._errors import ConfigurationError, CorruptCheckpointError
from lockgate._threads import run_sync
from lockgate.savepoint._channel_state import InFlightBatch, decode_channel_state
from lockgate.savepoint._operator_state import decode_operator_state
from lockgate.snapshots import Blob, LoadedCheckpoint
from lockgate.state import (
    KeyedStateManifest,
    KeyedStateSnapshot,
    OperatorStateSnapshot,
    PreparedKeyedState,
    RestoredOperatorState,
    StateBackend,
    redistribute,
)
from lockgate.state._snapshot import load_keyed_state


@dataclass
class RestoredState:
    """The state of a job read from one checkpoint, by operator uid.

    Attributes:
        checkpoint_id: The checkpoint it was read from.
        pointer: Where that checkpoint is.
        max_parallelism: The number of key groups of the job that wrote it.
        keyed: Every subtask's keyed state snapshot, by uid.
        operator: Every subtask's operator state snapshot, by uid.
        uids: Every operator uid the checkpoint has state for.
        channel: The in-flight batches each subtask stored (unaligned checkpoints), by the uid of its
            chain's first operator, indexed by subtask (None for a subtask that stored none).
    """

    checkpoint_id: int
    pointer: str
    max_parallelism: int
    keyed: dict[str, list[KeyedStateSnapshot | PreparedKeyedState]]
    operator: dict[str, list[OperatorStateSnapshot]]
    uids: set[str]
    channel: dict[str, list[list[InFlightBatch] | None]] = field(default_factory=dict)
    _split: dict[tuple[str, int], list[RestoredOperatorState]] = field(default_factory=dict)

    @classmethod
    async def load(cls, loaded: LoadedCheckpoint, backend: StateBackend | None = None) -> RestoredState:
        """:meth:`from_checkpoint` in a worker thread: unpickling a large state must not stall the loop."""
        return await run_sync(cls.from_checkpoint, loaded, backend)

    @classmethod
    def from_checkpoint(cls, loaded: LoadedCheckpoint, backend: StateBackend | None = None) -> RestoredState:
        """Decode the state blobs of a loaded checkpoint; keyed state of an incremental checkpoint
        that ``backend`` (the job's state backend) restores natively is prepared for it.

        Raises:
            CorruptCheckpointError: A blob does not hold the state it should; the error names it.
        """
        keyed = {
            uid: [_keyed_state(blob, loaded, backend) for blob in blobs if blob is not None]
            for uid, blobs in loaded.keyed.items()
        }
        operator = {
            uid: [decode_operator_state(blob) for blob in blobs if blob is not None]
            for uid, blobs in loaded.operator.items()
        }
        channel = {
            uid: [None if blob is None else decode_channel_state(blob) for blob in blobs]
            for uid, blobs in loaded.channel.items()
        }
        metadata = loaded.metadata
        return cls(
            metadata.checkpoint_id,
            loaded.pointer,
            metadata.max_parallelism,
            {uid: snapshots for uid, snapshots in keyed.items() if snapshots},
            {uid: snapshots for uid, snapshots in operator.items() if snapshots},
            set(metadata.operators),
            {uid: batches for uid, batches in channel.items() if any(batches)},
        )

    def check_against(
        self, max_parallelism: int, parallelism_of: Mapping[str, int], allow_non_restored_state: bool
    ) -> None:
        """Refuse a restore into a job of ``max_parallelism`` whose operators have the parallelism
        ``parallelism_of`` (by uid) that would lose state or misplace keys.

        Raises:
            ConfigurationError: The max parallelism differs, state belongs to uids the job lacks
                (unless ``allow_non_restored_state``), or an operator with in-flight records (an
                unaligned checkpoint's channel state) has another parallelism.
        """
        if self.max_parallelism != max_parallelism:
            raise ConfigurationError(
                f"the checkpoint at {self.pointer} was taken with max_parallelism {self.max_parallelism}, "
                f"but the job has {max_parallelism}; key groups only line up with the same "
                "max_parallelism, so keep it unchanged"
            )
        for uid, per_subtask in sorted(self.channel.items()):
            if uid in parallelism_of and parallelism_of[uid] != len(per_subtask):
                raise ConfigurationError(
                    f"the checkpoint at {self.pointer} is unaligned: it holds records that were in flight "
                    f"to operator {uid!r} at parallelism {len(per_subtask)}, and they cannot be split "
                    f"for parallelism {parallelism_of[uid]}; keep the parallelism of {uid!r} at "
                    f"{len(per_subtask)}, or restore from an aligned checkpoint or a savepoint taken at "
                    "the new parallelism"
                )
        known = set(parallelism_of)
        missing = sorted((set(self.keyed) | set(self.operator) | set(self.channel)) - known)
        if missing and not allow_non_restored_state:
            raise ConfigurationError(
                f"the checkpoint at {self.pointer} holds state of operator uid(s) {missing} that this job "
                "does not have; give the operators their old uids, or pass allow_non_restored_state=True "
                "to drop that state"
            )

    def operator_state(self, uid: str, parallelism: int, subtask_index: int) -> RestoredOperatorState | None:
        """The operator state subtask ``subtask_index`` of ``parallelism`` restores, or None if none."""
        snapshots = self.operator.get(uid)
        if snapshots is None:
            return None if uid not in self.uids else {}
        split = self._split.get((uid, parallelism))
        if split is None:
            split = self._split[(uid, parallelism)] = redistribute(snapshots, parallelism)
        return split[subtask_index]

    def in_flight(self, uid: str, subtask_index: int) -> list[InFlightBatch]:
        """The in-flight batches subtask ``subtask_index`` of ``uid`` replays first (none if none)."""
        per_subtask = self.channel.get(uid)
        if per_subtask is None or subtask_index >= len(per_subtask):
            return []
        return per_subtask[subtask_index] or []


def _keyed_state(
    blob: Blob, loaded: LoadedCheckpoint, backend: StateBackend | None
) -> KeyedStateSnapshot | PreparedKeyedState:
    """A subtask's keyed state: held whole, prepared for a native restore, or rebuilt from the shared
    blobs its manifest names."""
    state = load_keyed_blob(blob)
    if isinstance(state, KeyedStateSnapshot):
        return state
    if isinstance(state, KeyedStateManifest):
        prepared = None if backend is None else backend.prepare_restore(state, loaded.shared)
        return state.resolve(loaded.shared) if prepared is None else prepared
    raise CorruptCheckpointError(blob[1], f"it holds {type(state).__name__}, not keyed state")


def load_keyed_blob(blob: Blob) -> object:
    """What a keyed state blob holds (a snapshot, a savepoint's key groups read back into it, their
    packed tables left for the restore to unpickle, or a manifest), naming the blob if it cannot be
    read."""
    data, pointer = blob
    try:
        return load_keyed_state(io.BytesIO(data), packed=True)
    except Exception as exc:
        raise CorruptCheckpointError(pointer, f"the state cannot be read ({exc})") from exc
