"""Restoring a job's state from a checkpoint: finding it, reading it, and handing each subtask its part."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from lockgate._errors import CheckpointError, ConfigurationError, CorruptCheckpointError
from lockgate._threads import run_sync
from lockgate.actors._channel_state import ChannelStateSnapshot, InFlightBatch
from lockgate.graph import JobGraph
from lockgate.snapshots import (
    METADATA_NAME,
    SAVEPOINT_PREFIX,
    CheckpointStorage,
    CompletedCheckpoint,
    FileCheckpointStorage,
    LoadedCheckpoint,
    load_checkpoint,
    parse_file_url,
    unpickle_state,
)
from lockgate.snapshots._metadata import Blob
from lockgate.state import (
    KeyedStateManifest,
    KeyedStateSnapshot,
    OperatorStateSnapshot,
    PreparedKeyedState,
    RestoredOperatorState,
    StateBackend,
    redistribute,
)

logger = logging.getLogger("lockgate")

_SNAPSHOT_DIR = re.compile(r"(chk-|savepoint-)(\d+)")

#: Reads one completed checkpoint whole.
Loader = Callable[[CompletedCheckpoint], Awaitable[LoadedCheckpoint]]


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
            uid: [unpickle_state(blob, OperatorStateSnapshot) for blob in blobs if blob is not None]
            for uid, blobs in loaded.operator.items()
        }
        channel = {
            uid: [None if blob is None else _decode_in_flight(blob) for blob in blobs]
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

    def check_against(self, graph: JobGraph, allow_non_restored_state: bool) -> None:
        """Refuse a restore that would lose state or misplace keys.

        Raises:
            ConfigurationError: The max parallelism differs, state belongs to uids the job lacks
                (unless ``allow_non_restored_state``), or an operator with in-flight records (an
                unaligned checkpoint's channel state) has another parallelism.
        """
        if self.max_parallelism != graph.max_parallelism:
            raise ConfigurationError(
                f"the checkpoint at {self.pointer} was taken with max_parallelism {self.max_parallelism}, "
                f"but the job has {graph.max_parallelism}; key groups only line up with the same "
                "max_parallelism, so keep it unchanged"
            )
        parallelism_of = {
            node.uid: vertex.parallelism for vertex in graph.vertices for node in vertex.operators
        }
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


def _decode_in_flight(blob: tuple[bytes, str]) -> list[InFlightBatch]:
    return unpickle_state(blob, ChannelStateSnapshot).batches


def _keyed_state(
    blob: Blob, loaded: LoadedCheckpoint, backend: StateBackend | None
) -> KeyedStateSnapshot | PreparedKeyedState:
    """A subtask's keyed state: held whole, prepared for a native restore, or rebuilt from the shared
    blobs its manifest names."""
    state = unpickle_state(blob, object)
    if isinstance(state, KeyedStateSnapshot):
        return state
    if isinstance(state, KeyedStateManifest):
        prepared = None if backend is None else backend.prepare_restore(state, loaded.shared)
        return state.resolve(loaded.shared) if prepared is None else prepared
    raise CorruptCheckpointError(blob[1], f"it holds {type(state).__name__}, not keyed state")


class _OneDirectory(FileCheckpointStorage):
    """The files of one checkpoint directory, whatever its name says (a copy may be renamed)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory.parent)
        self._only = directory

    def checkpoint_directory(self, checkpoint_id: int) -> Path:
        return self._only


async def load_from_pointer(url: str, *, fall_back: bool = False) -> LoadedCheckpoint:
    """Read the checkpoint at ``url``: a checkpoint or savepoint directory (``.../chk-7``,
    ``.../savepoint-8``), or a directory of checkpoints and/or savepoints (the URL given to
    ``stop_with_savepoint``), whose newest intact one is taken, saying which in the log (a damaged one
    is skipped, with a warning).

    Raises:
        CheckpointError: There is no complete checkpoint there.
        CorruptCheckpointError: Every checkpoint there is damaged; the error names a file.
        ConfigurationError: The URL is not a usable file URL or path.
    """
    path = parse_file_url(url)
    match = _SNAPSHOT_DIR.fullmatch(path.name)
    if match and (path / METADATA_NAME).exists():
        return await load_checkpoint(_OneDirectory(path), int(match[2]), path.as_uri())
    if match and path.is_dir():
        raise CorruptCheckpointError(
            str(path / METADATA_NAME), "it is missing: the checkpoint is not complete"
        )
    # A directory of checkpoints, of savepoints (the URL given to stop_with_savepoint), or of both.
    storages = [FileCheckpointStorage(path), FileCheckpointStorage(path, prefix=SAVEPOINT_PREFIX)]
    found: list[tuple[int, int, CompletedCheckpoint]] = []
    storage_of: dict[str, CheckpointStorage] = {}
    for kind, storage in enumerate(storages):
        for checkpoint in await storage.completed_checkpoints():
            found.append((checkpoint.checkpoint_id, kind, checkpoint))
            storage_of[checkpoint.pointer] = storage
    if not found:
        raise CheckpointError(
            f"there is no complete checkpoint or savepoint at {url}: no chk-<n>/{METADATA_NAME} or "
            f"savepoint-<n>/{METADATA_NAME} in {path}"
        )
    # Ids grow across a job's checkpoints and savepoints alike: the highest is the newest.
    completed = [checkpoint for _, _, checkpoint in sorted(found, key=lambda entry: entry[:2])]

    async def load(checkpoint: CompletedCheckpoint) -> LoadedCheckpoint:
        return await load_checkpoint(
            storage_of[checkpoint.pointer], checkpoint.checkpoint_id, checkpoint.pointer
        )

    loaded = await load_newest(load, completed, str(url), fall_back=fall_back)
    logger.info(
        "restoring from %s, the newest intact of %d checkpoint(s) and savepoint(s) in %s",
        loaded.pointer,
        len(completed),
        url,
    )
    return loaded


def storage_loader(storage: CheckpointStorage) -> Loader:
    """A loader of the checkpoints of ``storage``."""

    async def load(checkpoint: CompletedCheckpoint) -> LoadedCheckpoint:
        return await load_checkpoint(storage, checkpoint.checkpoint_id, checkpoint.pointer)

    return load


async def load_newest(
    load: Loader, completed: list[CompletedCheckpoint], where: str, *, fall_back: bool = False
) -> LoadedCheckpoint:
    """The newest of ``completed``, if it loads.

    A damaged newest checkpoint is refused: the sinks may have committed what it covers, and a
    restore from an older one would repeat those records. With ``fall_back``, damaged ones are skipped
    instead, with a warning saying why, for the one before each.

    Raises:
        CorruptCheckpointError: The newest is damaged (without ``fall_back``), or all are; it names the
            file and says what a fall-back would repeat and how to allow it.
    """
    newest_first = list(reversed(completed))
    for position, checkpoint in enumerate(newest_first):
        try:
            return await load(checkpoint)
        except CorruptCheckpointError as exc:
            older = newest_first[position + 1 :]
            if not older:
                raise
            if not fall_back:
                raise CorruptCheckpointError(
                    exc.path,
                    f"{exc.reason}. It is checkpoint {checkpoint.checkpoint_id} in {where}, the newest: "
                    f"restoring checkpoint {older[0].checkpoint_id} before it instead would replay the "
                    "records between the two, which the sinks may have committed already (they would "
                    "appear twice), so lockgate refuses; repair or remove the damaged checkpoint, restore "
                    "from a savepoint, or set env.checkpoint_config.fall_back_past_damaged = True to "
                    "accept the repeats",
                ) from exc
            logger.warning(
                "checkpoint %d in %s cannot be restored (%s); falling back to checkpoint %d before it, "
                "so records committed after that one may be repeated",
                checkpoint.checkpoint_id,
                where,
                exc,
                older[0].checkpoint_id,
            )
    raise AssertionError("unreachable: the last candidate re-raises")
