"""The complete checkpoints a job keeps, and the shared blobs they reference.

Retention keeps the newest ``retained`` complete checkpoints of the job's storage: the job's own and,
in a storage the job has claimed, those earlier runs left there (counted first, never restored from by a
restart). Shared blobs (incremental checkpoints) are counted per checkpoint in a
:class:`SharedStateRegistry` from the moment an acknowledgement names them, and deleted once no complete
checkpoint, nor one in progress, references them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio

from lockgate._config import CheckpointConfig
from lockgate._errors import CheckpointError
from lockgate.snapshots import (
    METADATA_NAME,
    SHARED_NAME,
    CheckpointMetadata,
    CheckpointStorage,
    CompletedCheckpoint,
    LoadedCheckpoint,
    SharedStateRegistry,
    load_from_pointer,
    load_newest,
    storage_loader,
)

logger = logging.getLogger("lockgate")


class RetainedCheckpoints:
    """The checkpoints one job keeps in its storage, across its attempts.

    Attributes:
        owned: The checkpoints this job completed and keeps, oldest first.
        base: The checkpoint the job was started from (``restore_from``), if any.
    """

    def __init__(self, job_name: str, storage: CheckpointStorage, config: CheckpointConfig) -> None:
        self.job_name = job_name
        self.storage = storage
        self.config = config
        self.owned: list[CompletedCheckpoint] = []
        self.base: CompletedCheckpoint | None = None
        self._inherited: list[CompletedCheckpoint] = []
        self._shared = SharedStateRegistry()
        self._taken_over = False

    def __len__(self) -> int:
        return len(self._inherited) + len(self.owned)

    async def take_over(self, existing: list[CompletedCheckpoint], *, claimed: bool) -> None:
        """Count the shared blobs that the checkpoints already in the storage reference, and delete
        shared blobs no complete checkpoint references: what a process that ended in the middle of a
        checkpoint, or of a deletion, left behind.

        A job that has ``claimed`` the storage takes those checkpoints into its retention (oldest first,
        before its own): ``retained`` covers the directory, not only this run. They are never restored
        from by a restart (only the job's own checkpoints and the one it started from are).
        Done once per job, on its first attempt.
        """
        if self._taken_over:
            return
        self._taken_over = True
        if not self.storage.outlives_process:
            return  # nothing can be left over from another process; another job may be writing here
        references: list[tuple[CompletedCheckpoint, set[str]]] = []
        for checkpoint in existing:
            where = f"{checkpoint.pointer}/{METADATA_NAME}"
            try:
                data = await self.storage.read_metadata(checkpoint.checkpoint_id)
                metadata = CheckpointMetadata.from_bytes(data, where)
            except CheckpointError as exc:
                # Its references are unknown: delete nothing, rather than something it needs.
                logger.warning(
                    "job %r: cannot read %s (%s); leftover shared state and old checkpoints are kept",
                    self.job_name,
                    where,
                    exc,
                )
                for _, names in references:
                    self._shared.pin(names)
                return
            references.append((checkpoint, metadata.shared_names()))
        for checkpoint, names in references:
            if claimed:
                self._shared.register(checkpoint.checkpoint_id, names)
                self._inherited.append(checkpoint)
            else:
                self._shared.pin(names)
        # Only files lockgate named: a user's own file in shared/ is not lockgate's to delete.
        named = {name for name in await self.storage.shared_names() if SHARED_NAME.fullmatch(name)}
        leftovers = named - self._shared.referenced()
        if leftovers:
            logger.info(
                "job %r: deleting %d shared state file(s) that no complete checkpoint references",
                self.job_name,
                len(leftovers),
            )
            await self._discard_shared(leftovers)

    def no_longer_held(self, names: Iterable[str]) -> list[str]:
        """Those of the shared blobs ``names`` that no checkpoint references any more (they may be gone)."""
        return sorted(name for name in names if not self._shared.is_live(name))

    def hold(self, checkpoint_id: int, names: Iterable[str]) -> None:
        """Checkpoint ``checkpoint_id`` (in progress) references the shared blobs ``names``."""
        self._shared.register(checkpoint_id, names)

    async def release(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` was aborted: delete the shared blobs only it referenced."""
        await self._discard_shared(self._shared.release(checkpoint_id))

    async def add(self, completed: CompletedCheckpoint) -> None:
        """The job completed ``completed``: keep it, and delete the oldest beyond ``retained``.

        Not cut short by the end of the job: a checkpoint dropped half-way would leave its shared blobs
        behind."""
        self.owned.append(completed)
        with anyio.CancelScope(shield=True):
            while len(self) > self.config.retained:
                oldest = self._inherited.pop(0) if self._inherited else self.owned.pop(0)
                try:
                    await self.storage.discard_checkpoint(oldest.checkpoint_id)
                except CheckpointError as exc:
                    logger.warning("job %r: could not delete an old checkpoint: %s", self.job_name, exc)
                # Its shared blobs go once it is no longer complete, if no other checkpoint holds them.
                await self.release(oldest.checkpoint_id)

    async def load_latest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint a restart can restore: the job's own, or the one it started from;
        None if there is none.

        A damaged newest one is refused, unless ``fall_back_past_damaged`` lets the restore skip it
        (with a warning saying why) for the one before it (see :func:`~lockgate.snapshots.load_newest`).

        Raises:
            CorruptCheckpointError: The newest is damaged (without the fall-back), or all are.
        """
        fall_back = self.config.fall_back_past_damaged
        candidates = list(self.owned)
        if self.base is not None:
            candidates.insert(0, self.base)
        if not candidates:
            return None
        own = storage_loader(self.storage)

        async def load(checkpoint: CompletedCheckpoint) -> LoadedCheckpoint:
            if checkpoint is self.base:
                return await load_from_pointer(
                    checkpoint.pointer, fall_back=fall_back, signing_key=self.storage.signing_key
                )
            return await own(checkpoint)

        return await load_newest(load, candidates, f"job {self.job_name!r}", fall_back=fall_back)

    async def _discard_shared(self, names: Iterable[str]) -> None:
        try:
            await self.storage.discard_shared(names)
        except CheckpointError as exc:
            logger.warning("job %r: could not delete shared state: %s", self.job_name, exc)
