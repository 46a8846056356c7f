"""Loading checkpoints: reading one whole (metadata and every blob it names, checksums verified), finding
the newest intact one of several, and opening any URL through the storage registered for its scheme."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from lockgate._errors import CheckpointError, CorruptCheckpointError
from lockgate.snapshots._metadata import CheckpointMetadata
from lockgate.snapshots._registry import storage_for
from lockgate.snapshots._storage import METADATA_NAME, CheckpointStorage, CompletedCheckpoint

logger = logging.getLogger("lockgate")

T = TypeVar("T")


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
    metadata = await read_checkpoint_metadata(storage, CompletedCheckpoint(checkpoint_id, pointer))
    where = f"{pointer.rstrip('/')}/{METADATA_NAME}"
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


#: Reads one completed checkpoint whole.
Loader = Callable[[CompletedCheckpoint], Awaitable[LoadedCheckpoint]]


async def load_from_pointer(
    url: str, *, fall_back: bool = False, signing_key: bytes | None = None
) -> LoadedCheckpoint:
    """Read the checkpoint at ``url``: a checkpoint or savepoint directory (``.../chk-7``,
    ``.../savepoint-8``), or a directory of checkpoints and/or savepoints (the URL given to
    ``stop_with_savepoint``), whose newest intact one is taken, saying which in the log (a damaged one
    is skipped, with a warning). The storage is the one registered for the URL's scheme.

    Raises:
        CheckpointError: There is no complete checkpoint there.
        CorruptCheckpointError: Every checkpoint there is damaged; the error names a file.
        ConfigurationError: The URL is not usable (no storage for its scheme, or a bad path).
    """
    found = await checkpoints_at(url, signing_key=signing_key)
    if len(found) == 1:
        only, checkpoint = found[0]
        return await load_checkpoint(only, checkpoint.checkpoint_id, checkpoint.pointer)
    storage_of = {checkpoint.pointer: storage for storage, checkpoint in found}
    completed = [checkpoint for _, checkpoint in found]

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


async def checkpoints_at(
    url: str, *, signing_key: bytes | None = None
) -> list[tuple[CheckpointStorage, CompletedCheckpoint]]:
    """The complete checkpoints and savepoints at ``url``, oldest first, each with the storage that
    reads it: the one checkpoint a URL such as ``.../chk-7`` names, or those of a directory of
    checkpoints and/or savepoints (the URL given to ``stop_with_savepoint``).

    Raises:
        CheckpointError: There is no complete checkpoint there.
        ConfigurationError: The URL is not usable (no storage for its scheme, or a bad path).

    With ``signing_key``, every file read must be signed with it.
    """
    storage = storage_for(url)
    if signing_key is not None:
        storage.signing_key = signing_key
    here = await storage.snapshot_here()
    if here is not None:
        return [here]
    savepoints = storage.savepoints()
    storages = [storage] if savepoints is None else [storage, savepoints]
    found: list[tuple[int, int, CheckpointStorage, CompletedCheckpoint]] = []
    for kind, place in enumerate(storages):
        for checkpoint in await place.completed_checkpoints():
            found.append((checkpoint.checkpoint_id, kind, place, checkpoint))
    if not found:
        raise CheckpointError(
            f"there is no complete checkpoint or savepoint at {url}: no chk-<n>/{METADATA_NAME} or "
            f"savepoint-<n>/{METADATA_NAME} in {storage!r}"
        )
    # Ids grow across a job's checkpoints and savepoints alike: the highest is the newest.
    return [(place, checkpoint) for _, _, place, checkpoint in sorted(found, key=lambda entry: entry[:2])]


async def read_checkpoint_metadata(
    storage: CheckpointStorage, checkpoint: CompletedCheckpoint
) -> CheckpointMetadata:
    """The metadata of a completed checkpoint of ``storage``, checksum verified.

    Raises:
        CorruptCheckpointError: It is missing or damaged; the error names the file.
    """
    where = f"{checkpoint.pointer.rstrip('/')}/{METADATA_NAME}"
    try:
        data = await storage.read_metadata(checkpoint.checkpoint_id)
    except CorruptCheckpointError:
        raise
    except CheckpointError as exc:
        raise CorruptCheckpointError(where, str(exc)) from exc
    return CheckpointMetadata.from_bytes(data, where)


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
