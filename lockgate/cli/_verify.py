"""``lockgate savepoint verify``: every file of a savepoint or checkpoint read back and checked.

A check reads ``_metadata`` and every file it names (state files and the shared files of incremental
checkpoints) through the storage, which verifies each frame: magic, version, flags, length, the size
and CRC-32 its handle records, and the CRC-32 of the payload (``docs/savepoint-format.md``); the state
kept inline in ``_metadata`` is checked against its handle's size and CRC-32 too. Nothing
is unpickled, so verifying runs no code from the files, whoever wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lockgate._errors import CheckpointError, CorruptCheckpointError
from lockgate.snapshots import (
    METADATA_NAME,
    CheckpointStorage,
    CompletedCheckpoint,
    SharedStateHandle,
    StreamStateHandle,
    checkpoints_at,
    read_checkpoint_metadata,
    read_inline,
)


@dataclass(frozen=True)
class Damage:
    """A file that failed its check: where it is and what is wrong with it."""

    path: str
    reason: str


@dataclass
class CheckedSnapshot:
    """One checkpoint or savepoint: what it is, how many of its files are intact, which are not."""

    pointer: str
    description: str
    intact: int = 0
    damaged: list[Damage] = field(default_factory=list)


@dataclass
class Verification:
    """What ``verify`` found at a URL: each checkpoint or savepoint there, and the files over all of
    them (a shared file several checkpoints name counts once)."""

    snapshots: list[CheckedSnapshot] = field(default_factory=list)
    intact: int = 0
    damaged: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


async def verify(url: str, key: bytes | None = None) -> Verification:
    """Check every file of the checkpoint or savepoint at ``url``, or of each one in a directory of them.

    Raises:
        CheckpointError: There is none at ``url`` (a damaged one is reported, not raised).
        ConfigurationError: The URL is not usable.
    """
    result = Verification()
    try:
        found = await checkpoints_at(url, signing_key=key)
    except CorruptCheckpointError as exc:  # a checkpoint directory without its _metadata
        snapshot = CheckedSnapshot(url, "checkpoint", damaged=[Damage(exc.path, exc.reason)])
        result.snapshots.append(snapshot)
        result.damaged += snapshot.damaged
        return result
    checked: dict[str, Damage | None] = {}  # by path: each file is read once
    for storage, checkpoint in found:
        snapshot = await _verify_one(storage, checkpoint, checked)
        result.snapshots.append(snapshot)
    result.intact = sum(damage is None for damage in checked.values())
    result.damaged = [damage for damage in checked.values() if damage is not None]
    return result


async def _verify_one(
    storage: CheckpointStorage, checkpoint: CompletedCheckpoint, checked: dict[str, Damage | None]
) -> CheckedSnapshot:
    where = f"{checkpoint.pointer.rstrip('/')}/{METADATA_NAME}"
    snapshot = CheckedSnapshot(checkpoint.pointer, f"checkpoint {checkpoint.checkpoint_id}")
    try:
        metadata = await read_checkpoint_metadata(storage, checkpoint)
    except CorruptCheckpointError as exc:
        _note(snapshot, checked, where, Damage(exc.path, exc.reason))
        return snapshot
    _note(snapshot, checked, where, None)
    snapshot.description = f"{metadata.kind} {metadata.checkpoint_id} of job {metadata.job_name!r}"
    for uid in sorted(metadata.operators):
        subtasks = metadata.operators[uid].subtasks
        for index in sorted(subtasks):
            handles = subtasks[index]
            for handle in (handles.keyed, handles.operator, handles.channel):
                if handle is not None:
                    await _check(storage, handle, snapshot, checked)
            for shared in handles.shared:
                await _check(storage, shared, snapshot, checked)
    return snapshot


async def _check(
    storage: CheckpointStorage,
    handle: StreamStateHandle | SharedStateHandle,
    snapshot: CheckedSnapshot,
    checked: dict[str, Damage | None],
) -> None:
    """Read one file (unless it was read already) and note what its check found. An inline blob is
    no file: it is in ``_metadata``, already checked; its bytes are checked against its handle, and
    noted only if damaged."""
    if isinstance(handle, StreamStateHandle) and handle.inline is not None:
        try:
            read_inline(handle)
        except CorruptCheckpointError as exc:
            _note(snapshot, checked, handle.pointer, Damage(exc.path, exc.reason))
        return
    shared = isinstance(handle, SharedStateHandle)
    known = f"shared/{handle.name}" if shared else f"{snapshot.pointer}/{handle.name}"
    if known in checked:
        _note(snapshot, checked, known, checked[known])
        return
    damage = None
    try:
        if isinstance(handle, SharedStateHandle):
            await storage.read_shared(handle)
        else:
            await storage.read_state(handle)
    except CorruptCheckpointError as exc:
        damage = Damage(exc.path, exc.reason)
    except CheckpointError as exc:  # unreadable (permissions, an I/O error) or a refused name
        damage = Damage(handle.pointer, str(exc))
    _note(snapshot, checked, known, damage)


def _note(
    snapshot: CheckedSnapshot, checked: dict[str, Damage | None], known: str, damage: Damage | None
) -> None:
    checked[known] = damage
    if damage is None:
        snapshot.intact += 1
    else:
        snapshot.damaged.append(damage)
