"""Fault injection: crash chosen operators at chosen records, and checkpoint at chosen points."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

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
    """

    uid: str
    at_record: int

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
    _counts: dict[tuple[int, str], list[int]] = field(default_factory=dict)

    def _crash_for(self, attempt: int, uid: str) -> Crash | None:
        crashes = self.schedule.crashes
        if attempt < len(crashes) and crashes[attempt].uid == uid:
            return crashes[attempt]
        return None

    def _counter(self, attempt: int, uid: str) -> list[int]:
        return self._counts.setdefault((attempt, uid), [0])

    def operator(self, attempt: int, operator: StreamOperator) -> StreamOperator:
        crash = self._crash_for(attempt, operator.uid)
        if crash is None:
            return operator
        return _CrashingOperator(operator, crash, self._counter(attempt, operator.uid), self.fired)

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
        return _InstrumentedReader(
            reader, crash, self._counter(attempt, uid), self.fired, every, request_checkpoint
        )


def inject_failures(env: StreamEnvironment, schedule: FailureSchedule) -> FaultInjector:
    """Apply ``schedule`` to the jobs ``env`` runs from now on; returns the injector (see ``fired``)."""
    if not isinstance(schedule, FailureSchedule):
        raise ConfigurationError(f"inject_failures() takes a FailureSchedule, got {schedule!r}")
    injector = FaultInjector(schedule)
    env._instrumentation = injector
    return injector


def _crash(crash: Crash, fired: list[Crash]) -> InjectedFailure:
    fired.append(crash)
    return InjectedFailure(f"injected crash of {crash.uid!r} at its record {crash.at_record}")


class _CrashingOperator(StreamOperator):
    """Runs ``inner`` until its crash's record comes, then raises in its place."""

    def __init__(self, inner: StreamOperator, crash: Crash, counter: list[int], fired: list[Crash]) -> None:
        super().__init__(inner.ctx)
        self._inner = inner
        self.generates_watermarks = inner.generates_watermarks
        self._crash = crash
        self._counter = counter
        self._fired = fired

    async def _count(self, batch: list[Any], process: Callable[[list[Any]], Any]) -> list[Any]:
        seen = self._counter[0]
        self._counter[0] = seen + len(batch)
        at = self._crash.at_record
        if seen < at <= seen + len(batch):
            before = batch[: at - seen - 1]
            if before:
                await process(before)
            raise _crash(self._crash, self._fired)
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
        crash: Crash | None,
        counter: list[int],
        fired: list[Crash],
        checkpoint_every: int | None,
        request_checkpoint: Callable[[], anyio.Event],
    ) -> None:
        self._inner = inner
        self._crash = crash
        self._counter = counter
        self._fired = fired
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
        seen = self._counter[0]
        self._counter[0] = seen + len(batch)
        if self._crash is not None and seen < self._crash.at_record <= seen + len(batch):
            raise _crash(self._crash, self._fired)
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
