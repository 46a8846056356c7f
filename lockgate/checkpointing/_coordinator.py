"""The checkpoint coordinator: one per job, across restarts.

It triggers checkpoint n at the sources (they inject barrier n into the stream), collects one
acknowledgement with state handles from every subtask, and completes the checkpoint only when all
have acknowledged: it writes the metadata (which makes the checkpoint complete), deletes checkpoints
beyond the retained number, and tells every subtask, so transactional sinks commit. A checkpoint
that a subtask declines or that times out is aborted: its files are removed and the job goes on.
Which complete checkpoints are kept, and the shared blobs they reference, is
:class:`~lockgate.checkpointing._retention.RetainedCheckpoints`' business.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio
from anyio.abc import TaskGroup

from lockgate._config import CheckpointConfig
from lockgate._errors import CheckpointError, ConfigurationError, LockgateError
from lockgate.checkpointing._participants import CheckpointParticipant, SnapshotTarget, SubtaskAcknowledgement
from lockgate.checkpointing._retention import RetainedCheckpoints
from lockgate.checkpointing._stats import CheckpointStats, CheckpointStatsSnapshot
from lockgate.mailbox import JOB_FINISHED, RESUME, STOP, CheckpointComplete, TriggerCheckpoint
from lockgate.snapshots import (
    CheckpointMetadata,
    CheckpointStorage,
    CompletedCheckpoint,
    LoadedCheckpoint,
    OperatorCheckpointState,
    storage_for,
)

logger = logging.getLogger("lockgate")


@dataclass
class _Pending:
    checkpoint_id: int
    target: SnapshotTarget
    timestamp: float
    started: float
    waiting: set[tuple[str, int]]
    savepoint: bool = False
    stop: bool = False
    certainly_final: bool = False  # every subtask will take it after its input ended (_next_is_final)
    acks: dict[tuple[str, int], SubtaskAcknowledgement] = field(default_factory=dict)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: CompletedCheckpoint | None = None
    error: Exception | None = None
    completing: bool = False

    async def outcome(self) -> CompletedCheckpoint:
        """Wait for the checkpoint to end; what it completed as, or its failure raised."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


#: How many checkpoints' statistics a job keeps (the newest; the counts cover all).
STATS_HISTORY: Final = 1000


class CheckpointCoordinator:
    """Triggers, collects and completes the checkpoints of one job.

    Args:
        job_name: The job's name, written into each checkpoint's metadata.
        config: When and how to checkpoint.
        storage: Where checkpoints go.
        max_parallelism: The job's number of key groups.
        parallelism_of: The parallelism of each operator, by uid.
    """

    def __init__(
        self,
        job_name: str,
        config: CheckpointConfig,
        storage: CheckpointStorage,
        max_parallelism: int,
        parallelism_of: dict[str, int],
    ) -> None:
        self.job_name = job_name
        self.config = config
        self.storage = storage
        self.max_parallelism = max_parallelism
        self.parallelism_of = parallelism_of
        self._next_id: int | None = None
        self._pending: dict[int, _Pending] = {}
        # The newest STATS_HISTORY checkpoints' statistics (and every pending one's), and the counts
        # of all: a job that checkpoints every second for weeks keeps a bounded history.
        self._stats: dict[int, CheckpointStats] = {}
        self._completed_count = 0
        self._failed_count = 0
        self._last_completed: CheckpointStats | None = None  # the newest by id, kept or not
        self._retained = RetainedCheckpoints(job_name, storage, config)
        self._consecutive_failures = 0
        self._last_finished = -math.inf
        self._participants: list[CheckpointParticipant] = []
        self._group: TaskGroup | None = None
        self._attached = anyio.Event()  # set while an attempt runs, or for good once the job ended
        self._closed = False
        self._fail_job: Callable[[LockgateError], None] | None = None
        self._running_sources: set[tuple[str, int]] = set()
        self._finishing = False  # the attempt's final checkpoint is complete: its subtasks end
        self._subtasks_finished = False  # every subtask of the attempt has finished its input
        self._final_on_its_way = False  # a checkpoint sure to be final is triggered (until it fails)
        self._starting = 0
        self._wake = anyio.Event()
        self._beginning = anyio.Lock()
        self._claimed = False  # the storage is claimed for this job (see CheckpointStorage.claim)

    def __repr__(self) -> str:
        return (
            f"<CheckpointCoordinator {self.job_name!r} [{len(self._retained)} retained, "
            f"{len(self._pending)} in progress]>"
        )

    # ---- the job's attempts

    def set_base(self, checkpoint: CompletedCheckpoint, checkpoint_id: int) -> None:
        """The job starts from ``checkpoint``: ids continue after it, and it is a fallback for restores."""
        self._retained.base = checkpoint
        self._next_id = max(self._next_id or 1, checkpoint_id + 1)

    async def attach(
        self,
        participants: Sequence[CheckpointParticipant],
        group: TaskGroup,
        fail_job: Callable[[LockgateError], None],
    ) -> None:
        """An attempt of the job starts with ``participants``; background work runs in ``group``.

        Raises:
            CheckpointError: The storage cannot be read (its error is the cause).
        """
        if self.config.enabled and not self._claimed:
            # One running job per checkpoint directory: a second one is refused here.
            note = await self.storage.claim(self.job_name)
            self._claimed = True
            if note is not None:
                logger.warning("job %r: %s", self.job_name, note)
        # Ids go on after every checkpoint in the storage, so none is ever overwritten.
        try:
            existing = await self.storage.completed_checkpoints()
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"job {self.job_name!r} cannot list the checkpoints in {self.storage!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        after = max([c.checkpoint_id for c in existing], default=0) + 1
        self._next_id = max(self._next_id or 1, after)
        await self._retained.take_over(existing, claimed=self._claimed)
        self._participants = list(participants)
        self._group = group
        self._attached.set()
        self._fail_job = fail_job
        self._running_sources = {p.key for p in self._participants if p.is_source}
        self._finishing = False
        self._subtasks_finished = False
        self._final_on_its_way = False
        if self.config.interval is not None:
            group.start_soon(self._trigger_periodically, name="checkpoint trigger")

    async def detach(self, reason: str, *, quietly: bool = False) -> None:
        """The attempt has ended: abort every checkpoint in progress (``quietly``: logged at info level,
        as when the job has simply finished first)."""
        self._participants = []
        self._group = None
        if not self._closed:
            self._attached = anyio.Event()
        self._fail_job = None
        self._running_sources = set()
        for checkpoint_id in list(self._pending):
            await self._abort(checkpoint_id, reason, count_failure=False, quietly=quietly)

    def close(self) -> None:
        """The job has ended for good: nothing waits for another attempt; the storage's claim goes."""
        self._closed = True
        self._attached.set()
        if self._claimed:
            self._claimed = False
            self.storage.release_claim()

    @property
    def _sources_running(self) -> bool:
        """Whether a source subtask is still reading its input."""
        return bool(self._running_sources)

    @property
    def ends_with_checkpoint(self) -> bool:
        """Whether the job ends with a final checkpoint (checkpointing is enabled): its subtasks end
        once it is complete, and transactional sinks commit their last records then."""
        return self.config.enabled

    def source_finished(self, key: tuple[str, int]) -> None:
        """Source subtask ``key`` has read all its input (it still takes part in checkpoints: its
        barriers follow its end of input). After the last one, a checkpoint is triggered at once:
        records may drain downstream for a long time. Aligned, it follows every record and is the final
        checkpoint; unaligned, it overtakes what is queued and covers the drain."""
        self._running_sources.discard(key)
        if not self._running_sources and self.ends_with_checkpoint:
            self._trigger_at_once("the sources' end")

    def subtasks_finished(self) -> None:
        """Every subtask has finished its input: unless a checkpoint sure to be final is on its way,
        trigger the final checkpoint at once (every subtask takes it after its end)."""
        self._subtasks_finished = True
        if self.ends_with_checkpoint and not self._final_on_its_way:
            self._trigger_at_once("the subtasks' end")

    @property
    def _next_is_final(self) -> bool:
        """Whether every subtask will take a checkpoint triggered now after its input ended: all have
        finished, or, aligned, every source has (its barriers then follow every record)."""
        return self._subtasks_finished or (not self._sources_running and not self.config.unaligned)

    def _trigger_at_once(self, why: str) -> None:
        if self._group is not None and not self._finishing:
            # Known at once, before the checkpoint has begun: a second trigger would be redundant.
            self._final_on_its_way = self._final_on_its_way or self._next_is_final
            self._group.start_soon(self._try_checkpoint, name=f"checkpoint at {why}")

    # ---- triggering

    async def _trigger_periodically(self) -> None:
        """Trigger checkpoints every interval until the final checkpoint is complete (so one that
        failed is tried again an interval later)."""
        interval = self.config.interval
        assert interval is not None
        while not self._finishing:
            await anyio.sleep(interval)
            while len(self._pending) >= self.config.max_concurrent or (
                time.monotonic() - self._last_finished < self.config.min_pause
            ):
                if len(self._pending) >= self.config.max_concurrent:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                else:
                    await anyio.sleep(self.config.min_pause - (time.monotonic() - self._last_finished))
            await self._try_checkpoint()

    async def _try_checkpoint(self) -> None:
        if self._finishing:
            return
        try:
            await self._start_checkpoint()
        except CheckpointError as exc:
            logger.warning("job %r: a checkpoint could not start: %s", self.job_name, exc)

    def request_checkpoint(self) -> anyio.Event:
        """Start a checkpoint unless as many as allowed are in progress (a test hook).

        Returns an event set once the checkpoint has completed or failed (at once if none started).
        """
        finished = anyio.Event()
        if self._group is None or len(self._pending) + self._starting >= self.config.max_concurrent:
            finished.set()
        else:
            self._starting += 1  # counted now: another request before the task runs must see it
            self._group.start_soon(self._checkpoint_and_signal, finished)
        return finished

    async def _checkpoint_and_signal(self, finished: anyio.Event) -> None:
        try:
            pending = await self._start_checkpoint(reserved=True)
            await pending.done.wait()
        except CheckpointError as exc:
            logger.warning("job %r: a checkpoint could not start: %s", self.job_name, exc)
        finally:
            finished.set()

    async def trigger_checkpoint(self) -> CompletedCheckpoint:
        """Take a checkpoint now and wait for it to complete.

        Waits for the job's attempt to be running first (right after the job starts, or while it
        restarts).

        Raises:
            CheckpointError: The job has ended (or its final checkpoint is complete), or the
                checkpoint failed.
        """
        await self._attached.wait()
        pending = await self._start_checkpoint()
        return await pending.outcome()

    async def _start_checkpoint(
        self, *, reserved: bool = False, savepoint: CheckpointStorage | None = None, stop: bool = False
    ) -> _Pending:
        """Create checkpoint n's location and tell the sources to inject barrier n.

        ``reserved``: the caller has counted this checkpoint in ``_starting`` already. ``savepoint``:
        the storage a savepoint goes to; ``stop``: the job stops once it completes.
        """
        if not reserved:
            self._starting += 1
        try:
            return await self._begin_checkpoint(savepoint, stop)
        finally:
            self._starting -= 1

    async def _begin_checkpoint(self, savepoint: CheckpointStorage | None, stop: bool) -> _Pending:
        # One at a time, from taking the id to posting the triggers, however long creating a location
        # takes: sources take checkpoints in id order. (One that took n + 1 before n gave a sink's last
        # transaction to n + 1; n then completed as the final checkpoint and nothing committed it.)
        async with self._beginning:
            return await self._begin_next(savepoint, stop)

    async def _begin_next(self, savepoint: CheckpointStorage | None, stop: bool) -> _Pending:
        if self._group is None or self._finishing:
            raise CheckpointError(
                f"job {self.job_name!r} cannot take a checkpoint now: it has ended, or its final "
                "checkpoint is complete"
            )
        assert self._next_id is not None
        checkpoint_id = self._next_id
        self._next_id += 1
        started = time.monotonic()
        storage = savepoint if savepoint is not None else self.storage
        try:
            location = await storage.create_checkpoint_location(checkpoint_id)
        except Exception as exc:  # a failed checkpoint, as one whose files cannot be written
            reason = f"its location could not be created: {type(exc).__name__}: {exc}"
            self._record_failure(checkpoint_id, started, reason, savepoint is not None)
            self._count_failure(checkpoint_id, reason, exc)
            raise CheckpointError(
                f"checkpoint {checkpoint_id} of job {self.job_name!r} failed: {reason}"
            ) from exc
        if self._group is None:  # the attempt ended meanwhile
            await storage.discard_checkpoint(checkpoint_id)
            raise CheckpointError(f"job {self.job_name!r} stopped before checkpoint {checkpoint_id} began")
        participants = self._participants
        pending = _Pending(
            checkpoint_id,
            SnapshotTarget(storage, location, canonical=savepoint is not None),
            time.time(),
            started,
            {participant.key for participant in participants},
            savepoint=savepoint is not None,
            stop=stop,
            certainly_final=self._next_is_final,
        )
        self._pending[checkpoint_id] = pending
        self._record(CheckpointStats(checkpoint_id, "in_progress", 0.0, savepoint=pending.savepoint))
        group = self._group
        group.start_soon(self._watch_timeout, pending, name=f"checkpoint {checkpoint_id} timeout")
        for participant in participants:
            if participant.is_source:  # finished or not: a finished source's barrier follows its end
                participant.post(TriggerCheckpoint(checkpoint_id, stop, savepoint=pending.savepoint))
        return pending

    async def trigger_savepoint(self, url: str, *, stop: bool = False) -> CompletedCheckpoint:
        """Take a savepoint into the directory ``url`` (as ``savepoint-<id>/``) and wait for it.

        With ``stop``, the sources read nothing after its barrier, and once it is complete the sinks
        commit and every subtask ends. Savepoints are never deleted by retention and commit no sink
        unless the job stops: a restart goes back to the latest checkpoint, never to a savepoint.

        Raises:
            CheckpointError: The job has ended, or the savepoint failed (the job goes on).
            ConfigurationError: ``url`` names no storage that can hold savepoints.
        """
        await self._attached.wait()
        place = storage_for(url)
        if self.storage.signing_key is not None:  # savepoints are signed like the job's checkpoints
            place.signing_key = self.storage.signing_key
        place.inline_threshold = self.storage.inline_threshold  # and keep small state inline as they do
        storage = place.savepoints()
        if storage is None:
            raise ConfigurationError(
                f"a savepoint cannot go to {url!r}: {place!r} holds no savepoints; give a URL of a storage "
                "that does, such as 'file:///data/savepoints'"
            )
        # Savepoints of other jobs may be there: this one's id (its directory's name) comes after them.
        existing = await storage.completed_checkpoints()
        if existing and self._next_id is not None:
            self._next_id = max(self._next_id, existing[-1].checkpoint_id + 1)
        pending = await self._start_checkpoint(savepoint=storage, stop=stop)
        return await pending.outcome()

    async def _watch_timeout(self, pending: _Pending) -> None:
        with anyio.move_on_after(self.config.timeout):
            await pending.done.wait()
            return
        if pending.checkpoint_id in self._pending and not pending.completing:
            await self._abort(pending.checkpoint_id, f"it timed out after {self.config.timeout} s")

    # ---- acknowledgements

    def target(self, checkpoint_id: int) -> SnapshotTarget | None:
        """Where checkpoint (or savepoint) ``checkpoint_id`` goes, or None if it is not in progress."""
        pending = self._pending.get(checkpoint_id)
        return None if pending is None else pending.target

    async def acknowledge(
        self, checkpoint_id: int, key: tuple[str, int], ack: SubtaskAcknowledgement
    ) -> bool:
        """Subtask ``key`` has persisted its state for the checkpoint; the last one completes it.

        Returns whether the acknowledgement counts. If not (the checkpoint was aborted meanwhile, or a
        shared blob it reuses is no longer referenced by any checkpoint, so may be gone), the subtask
        deletes the shared blobs it uploaded; its other files go with the checkpoint's location.
        """
        pending = self._pending.get(checkpoint_id)
        if pending is None or key not in pending.waiting:
            return False
        gone = self._retained.no_longer_held(ack.reused())
        if gone:
            reason = f"it reuses shared state no retained checkpoint holds any more ({', '.join(gone[:3])})"
            await self.decline(checkpoint_id, key, reason, counts=False)
            return False
        self._retained.hold(checkpoint_id, ack.shared_names())
        pending.waiting.discard(key)
        pending.acks[key] = ack
        if not pending.waiting:
            await self._complete(pending)
        return True

    async def decline(
        self,
        checkpoint_id: int,
        key: tuple[str, int],
        reason: str,
        *,
        counts: bool = True,
        cause: BaseException | None = None,
    ) -> None:
        """Subtask ``key`` cannot take part in the checkpoint: abort it.

        A decline that does not ``count`` (a newer checkpoint got through first: it subsumes this one)
        is not a failure for ``tolerable_failures``. ``cause``: the error that made the subtask decline
        (the storage's, the snapshot's), the cause of the job's failure if it fails for it.
        """
        if checkpoint_id in self._pending:
            message = f"subtask {key[1]} of {key[0]!r} declined it: {reason}"
            await self._abort(checkpoint_id, message, count_failure=counts, cause=cause)

    async def _complete(self, pending: _Pending) -> None:
        checkpoint_id = pending.checkpoint_id
        pending.completing = True
        operators: dict[str, OperatorCheckpointState] = {}
        for (_, subtask_index), ack in sorted(pending.acks.items()):
            for uid, handles in ack.states.items():
                state = operators.setdefault(uid, OperatorCheckpointState(uid, self.parallelism_of[uid]))
                state.subtasks[subtask_index] = handles
        metadata = CheckpointMetadata(
            checkpoint_id,
            self.job_name,
            self.max_parallelism,
            pending.timestamp,
            operators,
            kind="savepoint" if pending.savepoint else "checkpoint",
        )
        try:
            target = pending.target
            completed = await target.storage.write_metadata(target.location, metadata.to_bytes())
        except Exception as exc:
            pending.completing = False
            await self._abort(checkpoint_id, f"its metadata could not be written: {exc}", cause=exc)
            return
        if pending.savepoint:
            self._finish_savepoint(pending, completed, metadata)
            return
        owned = self._retained.owned
        if owned and owned[-1].checkpoint_id > checkpoint_id:
            # A newer checkpoint completed while this one wrote its metadata: it subsumes this one.
            pending.completing = False
            reason = f"checkpoint {owned[-1].checkpoint_id} completed first"
            await self._abort(checkpoint_id, reason, count_failure=False)
            return
        del self._pending[checkpoint_id]
        self._record(self._completed_stats(pending, metadata))
        self._consecutive_failures = 0
        self._last_finished = time.monotonic()
        await self._retained.add(completed)  # before anyone hears of the completion
        pending.result = completed
        pending.done.set()
        self._wake.set()
        letter = CheckpointComplete(checkpoint_id, owned[0].checkpoint_id)
        final = all(ack.finished for ack in pending.acks.values())
        if pending.certainly_final and not final:
            unfinished = sorted(key for key, ack in pending.acks.items() if not ack.finished)
            raise AssertionError(
                f"checkpoint {checkpoint_id} was triggered to be the final one, yet subtasks "
                f"{unfinished} took it before their input ended"
            )
        if final:  # every subtask took it after its end: the sinks commit their last, then all end
            self._finishing = True
        for participant in self._participants:
            participant.post(letter)
            if final:
                participant.post(JOB_FINISHED)
        # Older checkpoints still in progress are subsumed: this one restores later than they would.
        # After the final one, newer ones are moot too: the subtasks end, and drop what they hold.
        for other_id in [
            cid
            for cid, other in self._pending.items()
            if (cid < checkpoint_id or final) and not other.completing and not other.savepoint
        ]:
            reason = (
                f"checkpoint {checkpoint_id} completed first"
                if other_id < checkpoint_id
                else (f"checkpoint {checkpoint_id} was the job's final one")
            )
            await self._abort(other_id, reason, count_failure=False)

    def _completed_stats(self, pending: _Pending, metadata: CheckpointMetadata) -> CheckpointStats:
        acks = list(pending.acks.values())
        return CheckpointStats(
            pending.checkpoint_id,
            "completed",
            time.monotonic() - pending.started,
            sync_duration=max((a.sync_duration for a in acks), default=0.0),
            async_duration=max((a.async_duration for a in acks), default=0.0),
            alignment_duration=max((a.alignment_duration for a in acks), default=0.0),
            persisted_bytes=sum(a.persisted_bytes for a in acks),
            full_bytes=metadata.full_bytes,
            unaligned=any(a.unaligned for a in acks),
            in_flight_bytes=sum(a.in_flight_bytes for a in acks),
            savepoint=pending.savepoint,
        )

    def _finish_savepoint(
        self, pending: _Pending, completed: CompletedCheckpoint, metadata: CheckpointMetadata
    ) -> None:
        del self._pending[pending.checkpoint_id]
        self._record(self._completed_stats(pending, metadata))
        self._last_finished = time.monotonic()
        pending.result = completed
        pending.done.set()
        self._wake.set()
        if pending.stop:  # the sinks commit what precedes the savepoint, then every subtask ends
            owned = self._retained.owned
            oldest = owned[0].checkpoint_id if owned else pending.checkpoint_id
            for participant in self._participants:
                participant.post(CheckpointComplete(pending.checkpoint_id, oldest))
                participant.post(STOP)

    async def _abort(
        self,
        checkpoint_id: int,
        reason: str,
        *,
        count_failure: bool = True,
        quietly: bool = False,
        cause: BaseException | None = None,
    ) -> None:
        pending = self._pending.pop(checkpoint_id, None)
        if pending is None:
            return
        pending.target.aborted = True  # subtasks still writing stop
        if pending.certainly_final:  # the periodic trigger tries again
            self._final_on_its_way = False
        self._record_failure(checkpoint_id, pending.started, reason, pending.savepoint, quietly=quietly)
        if pending.stop:  # the sources hold back for a stop that will not come
            for participant in self._participants:
                if participant.is_source:
                    participant.post(RESUME)
        try:
            await pending.target.storage.discard_checkpoint(checkpoint_id)
            await self._retained.release(checkpoint_id)
        except CheckpointError as exc:
            logger.warning(
                "job %r: could not delete failed checkpoint %d: %s", self.job_name, checkpoint_id, exc
            )
        finally:  # the files are gone before anyone hears of the failure
            pending.error = CheckpointError(
                f"checkpoint {checkpoint_id} of job {self.job_name!r} failed: {reason}"
            )
            pending.done.set()
            self._wake.set()
        if count_failure:
            self._count_failure(checkpoint_id, reason, cause)

    def _record_failure(
        self, checkpoint_id: int, started: float, reason: str, savepoint: bool, *, quietly: bool = False
    ) -> None:
        """Log a failed checkpoint and keep its statistics."""
        level = logging.INFO if quietly else logging.WARNING
        logger.log(level, "job %r: checkpoint %d failed: %s", self.job_name, checkpoint_id, reason)
        self._record(
            CheckpointStats(
                checkpoint_id, "failed", time.monotonic() - started, failure=reason, savepoint=savepoint
            )
        )
        self._last_finished = time.monotonic()

    def _count_failure(self, checkpoint_id: int, reason: str, cause: BaseException | None) -> None:
        """A checkpoint failed: fail the job if more failed in a row than ``tolerable_failures``."""
        self._consecutive_failures += 1
        tolerable = self.config.tolerable_failures
        if tolerable is not None and self._consecutive_failures > tolerable and self._fail_job is not None:
            failure = CheckpointError(
                f"{self._consecutive_failures} checkpoint(s) in a row failed, more than "
                f"tolerable_failures={tolerable}; the last, checkpoint {checkpoint_id}: {reason} "
                "(set env.checkpoint_config.tolerable_failures to let the job go on after failed "
                "checkpoints)"
            )
            failure.__cause__ = cause
            self._fail_job(failure)

    # ---- restoring

    @property
    def last_completed_id(self) -> int:
        """The id of this job's newest completed checkpoint (savepoints aside), 0 if none."""
        owned = self._retained.owned
        return owned[-1].checkpoint_id if owned else 0

    async def load_latest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint this job can restore from, or None if it has none (see
        :meth:`RetainedCheckpoints.load_latest`).

        Raises:
            CorruptCheckpointError: The newest is damaged (without ``fall_back_past_damaged``), or all are.
        """
        return await self._retained.load_latest()

    # ---- statistics

    def _record(self, stats: CheckpointStats) -> None:
        """Keep ``stats`` (a checkpoint triggered, completed or failed), count it once it has ended,
        and forget the oldest ended ones beyond :data:`STATS_HISTORY`."""
        before = self._stats.get(stats.id)
        if before is None or before.status != stats.status:
            if stats.status == "completed":
                self._completed_count += 1
                if self._last_completed is None or stats.id > self._last_completed.id:
                    self._last_completed = stats
            elif stats.status == "failed":
                self._failed_count += 1
        self._stats[stats.id] = stats
        while len(self._stats) > STATS_HISTORY:
            oldest = next(iter(self._stats))  # ids grow: the first kept is the oldest
            if oldest in self._pending:
                break
            del self._stats[oldest]

    @property
    def last_completed_statistics(self) -> CheckpointStats | None:
        """The statistics of the newest completed checkpoint or savepoint, None before the first."""
        return self._last_completed

    def statistics(self, last: int | None = None) -> CheckpointStatsSnapshot:
        """The counts of every checkpoint so far, and the statistics of the newest (the ``last``
        ones; None: all kept, the newest :data:`STATS_HISTORY`), oldest first."""
        now = time.monotonic()
        ids = sorted(self._stats)
        if last is not None:
            ids = ids[len(ids) - last :] if last > 0 else []
        history = []
        for checkpoint_id in ids:
            stats = self._stats[checkpoint_id]
            pending = self._pending.get(checkpoint_id)
            if pending is not None:
                stats = CheckpointStats(
                    checkpoint_id, "in_progress", now - pending.started, savepoint=pending.savepoint
                )
            history.append(stats)
        return CheckpointStatsSnapshot(
            completed=self._completed_count,
            failed=self._failed_count,
            in_progress=len(self._pending),
            history=history,
        )
