"""Fault injection: crash chosen operators at chosen records, and checkpoint at chosen points."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from lockgate._driver import driver_link, resident_token
from lockgate._errors import ConfigurationError, LockgateError
from lockgate.actors._operators import StreamOperator
from lockgate.api import StreamEnvironment
from lockgate.connectors import SourceReader
from lockgate.mailbox import WatermarkStatus
from lockgate.state import OperatorStateSnapshot


class InjectedFailure(LockgateError):
    """The failure a :class:`Crash` injects; a job that meets it fails (or restarts) as on any error."""


@dataclass(frozen=True)
class Crash:
    """Crash operator ``uid`` at the ``at_record``-th record it receives (from 1, over all its subtasks).

    The records before it in the same batch are processed (their state changes stay), and the operator
    raises :class:`InjectedFailure` instead of returning their outputs: a crash in the middle of work.
    With ``kill`` (jobs on ``RayRunner`` only), the subtask's Ray actor is killed there instead
    (``ray.kill``, as a lost process): nothing of it gets to say goodbye.
    """

    uid: str
    at_record: int
    kill: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.uid, str) or not isinstance(self.at_record, int) or self.at_record < 1:
            raise ConfigurationError(f"Crash takes an operator uid and a record number from 1, got {self!r}")


@dataclass(frozen=True)
class FailureSchedule:
    """Which crashes happen, and where checkpoints are taken.

    Crash ``i`` is armed in the ``i``-th run of the job (the first run, then each restart), so a
    schedule of three crashes fails the job up to three times. Records are counted per run.

    Attributes:
        crashes: The crashes, one per run.
        checkpoint_every: Take a checkpoint each time the first subtask of a source has read this many
            more records: its reads stop exactly there (a batch never runs past the point), and it reads
            nothing more until the checkpoint has completed (or failed), so the checkpoint holds
            exactly the records before the point. None: only the environment's interval triggers
            checkpoints.
    """

    crashes: tuple[Crash, ...] = ()
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_every is not None and (
            not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1
        ):
            raise ConfigurationError(
                f"checkpoint_every must be a positive int, got {self.checkpoint_every!r}"
            )

    @classmethod
    def random(
        cls, seed: int, uids: Sequence[str], *, max_record: int, max_crashes: int = 3
    ) -> FailureSchedule:
        """A schedule drawn from ``random.Random(seed)``: reproducible from the seed."""
        rng = random.Random(seed)
        crashes = tuple(
            Crash(rng.choice(list(uids)), rng.randint(1, max_record))
            for _ in range(rng.randint(0, max_crashes))
        )
        return cls(crashes, checkpoint_every=rng.randint(1, max(1, max_record)))


@dataclass
class FaultInjector:
    """Wraps the operators and source readers of each run of a job as a :class:`FailureSchedule` says.

    Attributes:
        schedule: The schedule being applied.
        fired: The crashes that happened, in order.
    """

    schedule: FailureSchedule
    fired: list[Crash] = field(default_factory=list)
    _counts: dict[tuple[int, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Copies in the Ray workers of a job count and report here, in the driver's process.
        self._token = resident_token(self)

    def _crash_for(self, attempt: int, uid: str) -> Crash | None:
        crashes = self.schedule.crashes
        if attempt < len(crashes) and crashes[attempt].uid == uid:
            return crashes[attempt]
        return None

    async def count(self, attempt: int, uid: str, records: int) -> int:
        """Count ``records`` more of ``uid``'s in ``attempt``, over all its subtasks wherever they run;
        return the count before them."""
        link = driver_link()
        if link is None:
            return self._count_here(attempt, uid, records)
        with anyio.CancelScope(shield=True):  # a source's read must stay cancel-safe: finish the count
            seen: int = await link.call(self._token, "_count_here", attempt, uid, records)
        return seen

    def _count_here(self, attempt: int, uid: str, records: int) -> int:
        seen = self._counts.get((attempt, uid), 0)
        self._counts[attempt, uid] = seen + records
        return seen

    async def crash(self, crash: Crash) -> InjectedFailure:
        """Record that ``crash`` fires, and the error to raise for it (a killed actor raises nothing)."""
        link = driver_link()
        if link is None:
            self._fired_here(crash)
        else:
            link.send(self._token, "_fired_here", crash)
            if crash.kill:
                await link.kill_self()
        return InjectedFailure(f"injected crash of {crash.uid!r} at its record {crash.at_record}")

    def _fired_here(self, crash: Crash) -> None:
        self.fired.append(crash)

    def operator(self, attempt: int, operator: StreamOperator) -> StreamOperator:
        crash = self._crash_for(attempt, operator.uid)
        if crash is None:
            return operator
        return _CrashingOperator(operator, crash, self, attempt)

    def reader(
        self,
        attempt: int,
        uid: str,
        subtask_index: int,
        reader: SourceReader,
        request_checkpoint: Callable[[], anyio.Event],
    ) -> SourceReader:
        crash = self._crash_for(attempt, uid)
        every = self.schedule.checkpoint_every if subtask_index == 0 else None
        if crash is None and every is None:
            return reader
        return _InstrumentedReader(reader, uid, crash, self, attempt, every, request_checkpoint)


def inject_failures(env: StreamEnvironment, schedule: FailureSchedule) -> FaultInjector:
    """Apply ``schedule`` to the jobs ``env`` runs from now on; returns the injector (see ``fired``)."""
    if not isinstance(schedule, FailureSchedule):
        raise ConfigurationError(f"inject_failures() takes a FailureSchedule, got {schedule!r}")
    killing = [crash for crash in schedule.crashes if crash.kill]
    if killing and env.runner is None:
        raise ConfigurationError(
            f"{killing[0]!r} kills a Ray actor: it needs a job on lg.RayRunner (a job of this process is "
            "killed by killing the process)"
        )
    injector = FaultInjector(schedule)
    env._instrumentation = injector
    return injector


class _CrashingOperator(StreamOperator):
    """Runs ``inner`` until its crash's record comes, then raises in its place."""

    def __init__(self, inner: StreamOperator, crash: Crash, injector: FaultInjector, attempt: int) -> None:
        super().__init__(inner.ctx)
        self._inner = inner
        self.generates_watermarks = inner.generates_watermarks
        self._crash = crash
        self._injector = injector
        self._attempt = attempt

    async def _count(self, batch: list[Any], process: Callable[[list[Any]], Any]) -> list[Any]:
        seen = await self._injector.count(self._attempt, self.uid, len(batch))
        at = self._crash.at_record
        if seen < at <= seen + len(batch):
            before = batch[: at - seen - 1]
            if before:
                await process(before)
            raise await self._injector.crash(self._crash)
        result: list[Any] = await process(batch)
        return result

    async def open(self) -> None:
        await self._inner.open()

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        return await self._count(batch, self._inner.process_batch)

    async def process_batch2(self, batch: list[Any]) -> list[Any]:
        return await self._count(batch, self._inner.process_batch2)

    async def finish(self) -> list[Any]:
        return await self._inner.finish()

    async def on_watermark(self, watermark: int) -> list[Any]:
        return await self._inner.on_watermark(watermark)

    async def on_processing_time(self, now: int) -> list[Any]:
        return await self._inner.on_processing_time(now)

    def restored_watermark(self) -> int | None:
        return self._inner.restored_watermark()

    def poll(self, now: int) -> int | WatermarkStatus | None:
        return self._inner.poll(now)

    async def prepare_snapshot(self, checkpoint_id: int) -> None:
        await self._inner.prepare_snapshot(checkpoint_id)

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        await self._inner.notify_checkpoint_complete(checkpoint_id)

    async def notify_job_finished(self) -> None:
        await self._inner.notify_job_finished()

    def snapshot_operator_state(self) -> OperatorStateSnapshot:
        return self._inner.snapshot_operator_state()

    async def close(self) -> None:
        await self._inner.close()


class _InstrumentedReader(SourceReader):
    """Counts what ``inner`` reads: crashes at the crash's record, asks for checkpoints as scheduled."""

    def __init__(
        self,
        inner: SourceReader,
        uid: str,
        crash: Crash | None,
        injector: FaultInjector,
        attempt: int,
        checkpoint_every: int | None,
        request_checkpoint: Callable[[], anyio.Event],
    ) -> None:
        self._inner = inner
        self._uid = uid
        self._crash = crash
        self._injector = injector
        self._attempt = attempt
        self._every = checkpoint_every
        self._request_checkpoint = request_checkpoint
        self._read = 0
        self._checkpointing: anyio.Event | None = None

    async def read(self, max_records: int) -> list[Any] | None:
        if self._checkpointing is not None:
            # Nothing is read until the requested checkpoint is over: it lands exactly here. The wait
            # is cancelled when the checkpoint's trigger comes, so the source can inject the barrier.
            await self._checkpointing.wait()
            self._checkpointing = None
        if self._every is not None:  # the batch ends at the next checkpoint point, not past it
            max_records = min(max_records, self._every - self._read % self._every)
        batch = await self._inner.read(max_records)
        if not batch:
            return batch
        crash = self._crash
        if crash is not None:
            seen = await self._injector.count(self._attempt, self._uid, len(batch))
            if seen < crash.at_record <= seen + len(batch):
                raise await self._injector.crash(crash)
        if self._every is not None:
            before, self._read = self._read, self._read + len(batch)
            if before // self._every != self._read // self._every:
                self._checkpointing = self._request_checkpoint()
        return batch

    async def run_background(self) -> None:
        await self._inner.run_background()

    async def close(self) -> None:
        await self._inner.close()

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._inner.snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._inner.notify_checkpoint_complete(checkpoint_id)

    def release_before(self, checkpoint_id: int) -> None:
        self._inner.release_before(checkpoint_id)
