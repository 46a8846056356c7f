"""The subtask actor: one task that owns a chain of operators and processes one message at a time.

Barrier alignment is :mod:`lockgate.actors._alignment`'s, a checkpoint's snapshot
:mod:`lockgate.actors._snapshotting`'s: this module is the mailbox loop, the letters and the life of
the actor.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from lockgate._config import CheckpointingMode
from lockgate.actors._alignment import BarrierAlignment
from lockgate.actors._context import SubtaskContext
from lockgate.actors._event_time import WAKE, InputWatermarks, Wakeups, now_millis
from lockgate.actors._failure import OperatorFailure
from lockgate.actors._operators import StreamOperator
from lockgate.actors._output import OutputRouter
from lockgate.actors._snapshotting import SubtaskSnapshots
from lockgate.checkpointing import SubtaskCoordinator
from lockgate.connectors import SourceReader
from lockgate.eventtime import MAX_WATERMARK, MIN_WATERMARK
from lockgate.mailbox import (
    END_OF_INPUT,
    IDLE,
    JOB_FINISHED,
    MAIL,
    RESUME,
    STOP,
    AlignmentTimedOut,
    Barrier,
    CheckpointComplete,
    Mailbox,
    StampedBatch,
    TriggerCheckpoint,
    Watermark,
    WatermarkStatus,
)
from lockgate.savepoint import InFlightBatch
from lockgate.state import KeyedStateBackend


@dataclass
class SourceTask:
    """The source at the head of a chain: its uid, its reader and its context (operator state)."""

    uid: str
    reader: SourceReader
    ctx: SubtaskContext


class ActorRuntime(Protocol):
    """What an actor needs from the attempt of the job that runs it."""

    @property
    def coordinator(self) -> SubtaskCoordinator | None:
        """The job's checkpoint coordinator, as a subtask sees it (None: no checkpoints)."""

    mode: CheckpointingMode | None
    asynchronous: bool
    unaligned: bool  # checkpoints (never savepoints) may let barriers overtake records
    aligned_timeout: float | None  # with unaligned: None, unaligned at once; else after this long

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``function(*args)`` in the background of the attempt."""

    def actor_finished(self, actor: SubtaskActor) -> None:
        """``actor`` has finished its input: its operators have finished and its end of input has gone
        downstream. It stays alive, taking part in checkpoints, until :data:`JOB_FINISHED`."""


class SubtaskActor:
    """Runs one subtask of a job vertex: a source reader or a mailbox feeds its operator chain.

    Messages are processed one at a time and to the end, so operators never see concurrency. A source
    actor yields to the event loop after each batch, so a fast source cannot starve other tasks.
    Letters (checkpoint triggers and notifications) are handled between two messages. Once its input
    has ended, the actor finishes its operators, sends its end of input downstream, and stays alive
    until the whole job has finished, taking part in checkpoints as before (its barriers follow its
    end of input): the job ends with a final checkpoint that every subtask takes after its end, and
    transactional sinks make their last records visible when it completes.
    """

    def __init__(
        self,
        name: str,
        head_uid: str,
        subtask_index: int,
        parallelism: int,
        operators: list[StreamOperator],
        output: OutputRouter,
        runtime: ActorRuntime,
        *,
        source: SourceTask | None = None,
        mailbox: Mailbox,
        channel_inputs: list[int] | None = None,
        batch_size: int,
        keyed_backends: list[KeyedStateBackend],
        in_flight: list[tuple[int, InFlightBatch]] | None = None,
    ) -> None:
        if (source is None) == (not mailbox.channels):
            raise ValueError("an actor reads from a source or from channels, not both or neither")
        self.name = name
        self.head_uid = head_uid
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.key = (head_uid, subtask_index)
        self.operators = operators
        self.output = output
        self.runtime = runtime
        self.source = source
        self.is_source = source is not None
        self.mailbox = mailbox
        # The operator input (0, or 1 for a two-input operator) that each mailbox channel feeds.
        self.channel_inputs = channel_inputs or []
        self.batch_size = batch_size
        self.keyed_backends = keyed_backends
        # Restored channel state: (position of the operator in the chain, (operator input, batch)).
        self.in_flight = in_flight or []
        self.input_ended = False  # the input has ended and the operators have finished
        self._stopped = False  # a stop-with-savepoint completed: end without finishing
        self._job_finished = False  # every subtask of the job is done: end
        self._read_scope: anyio.CancelScope | None = None
        self.snapshots = SubtaskSnapshots(self)
        self.alignment = BarrierAlignment(self)
        # Event time: the inputs' combined watermark, what went down the chain, wake-ups.
        self.input_watermarks = InputWatermarks(len(mailbox.channels))
        self.watermark = MIN_WATERMARK
        # Metrics, counted per batch (see metric_counters): records into and out of each operator
        # of the chain, the records the source read and how long it waited for them, the watermark
        # each operator was last given and the one last sent downstream.
        self.records_in = [0] * len(operators)
        self.records_out = [0] * len(operators)
        self.source_records = 0
        self.source_waited = 0.0  # the read under way aside
        self._reading_since: float | None = None
        self.operator_watermarks = [MIN_WATERMARK] * len(operators)
        self.output_watermark = MIN_WATERMARK
        self.started_at = time.perf_counter()
        self.ended_at: float | None = None
        self._idle_downstream = False
        self.wakeups = Wakeups(self.post, runtime.spawn)
        for operator in operators:
            operator.ctx.request_wakeup = self.wakeups.request
        self._generators = [(p, op) for p, op in enumerate(operators) if op.generates_watermarks]
        #: Set once the chain is open and its restored state loaded: its state may be queried.
        self.opened = anyio.Event()
        #: Whether its state may be queried now: opened, and not closing (the queries' hot path).
        self.is_open = False
        self.closed = False

    def __repr__(self) -> str:
        state = ("finished" if self.input_ended else "running") + self.alignment.describe()
        return f"<SubtaskActor {self.name} [subtask {self.subtask_index} | {state}]>"

    def metric_counters(self, now: float) -> dict[str, dict[str, Any]]:
        """This subtask's counters so far, by ``"<uid>[<subtask>]"`` of its source and operators:
        records in and out, seconds busy, backpressured (waiting for room downstream) and idle
        (waiting for input), the current input and output watermarks (None before the first).
        Busy is the rest of the time since the subtask started: processing, and waiting for its turn
        in the event loop it shares with the job's other subtasks."""
        until = now if self.ended_at is None else min(now, self.ended_at)
        channels = [channel for edge in self.output.edges for channel in edge.channels]
        backpressured = sum(channel.blocked_seconds(until) for channel in channels)
        reading = self._reading_since
        idle = self.mailbox.waited_seconds(until) + self.source_waited
        if reading is not None:
            idle += max(0.0, until - reading)
        busy = max(0.0, until - self.started_at - idle - backpressured)
        times = {"busyTime": busy, "backPressuredTime": backpressured, "idleTime": idle}
        found: dict[str, dict[str, Any]] = {}
        index = self.subtask_index
        source_uid = None if self.source is None else self.source.uid
        if source_uid is not None:
            found[f"{source_uid}[{index}]"] = {
                "numRecordsIn": 0,
                "numRecordsOut": self.source_records,
                **times,
                "currentInputWatermark": None,
                "currentOutputWatermark": None,
            }
        watermarks = self.operator_watermarks
        last = len(self.operators) - 1
        for position, operator in enumerate(self.operators):
            given = watermarks[position]
            sent = self.output_watermark if position == last else watermarks[position + 1]
            current = {
                "currentInputWatermark": None if given == MIN_WATERMARK else given,
                "currentOutputWatermark": None if sent == MIN_WATERMARK else sent,
            }
            if operator.uid == source_uid:  # the source's timestamps and watermarks: part of it
                found[f"{source_uid}[{index}]"].update(current, currentInputWatermark=None)
                continue
            found[f"{operator.uid}[{index}]"] = {
                "numRecordsIn": self.records_in[position],
                "numRecordsOut": self.records_out[position],
                **times,
                **current,
            }
        return found

    def post(self, letter: Any) -> None:
        """Hand the actor a letter; a source waiting for records is woken to handle it."""
        self.mailbox.post(letter)
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def run(self) -> None:
        """Open the chain, process the input to its end, finish the chain, take part in checkpoints
        until the job has finished; always close the chain."""
        try:
            for operator in self.operators:
                try:
                    await operator.open()
                except Exception as exc:
                    raise OperatorFailure(operator.uid) from exc
            for backend in self.keyed_backends:
                try:  # restored state whose schema changed, in a worker thread, before any record
                    await backend.migrate_restored_state()
                except Exception as exc:
                    raise OperatorFailure(backend.operator_uid) from exc
            self.is_open = True
            self.opened.set()
            await self._emit_restored_watermarks()
            await self._replay_in_flight()
            if self.source is not None:
                await self._run_source(self.source)
                if not self._stopped:
                    await self._end_input()
                    await self._answer_letters()
            else:
                await self._run_mailbox(self.mailbox)
            if self._job_finished:
                await self._notify_job_finished()
        except BaseException:
            self.wakeups.close()
            with anyio.CancelScope(shield=True):
                await self._close()  # a failure while closing must not hide the one in flight
            raise
        self.wakeups.close()
        with anyio.CancelScope(shield=True):
            failure = await self._close()
        if failure is not None:
            raise failure

    # ---- the input

    async def _run_source(self, source: SourceTask) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as background:
            background.start_soon(source.reader.run_background)
            try:
                await self._read_source(source)
            except Exception as exc:  # raised below, outside the group, so it is not wrapped
                failure = exc
            background.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _read_source(self, source: SourceTask) -> None:
        reader, mailbox, size = source.reader, self.mailbox, self.batch_size
        while True:
            letter = mailbox.take_mail()
            while letter is not None:
                await self._on_letter(letter)
                letter = mailbox.take_mail()
            if self._stopped:
                return
            with anyio.CancelScope() as scope:
                self._read_scope = scope
                try:
                    # Backpressure is felt here, where a letter can interrupt the wait, rather than
                    # halfway through emitting a batch: a checkpoint's barrier need not queue behind it.
                    await self.output.wait_for_room()
                    self._reading_since = time.perf_counter()
                    batch = await reader.read(size)
                except Exception as exc:
                    raise OperatorFailure(source.uid) from exc
                finally:
                    self._read_scope = None
                    if self._reading_since is not None:  # a read, even one a letter cut short
                        self.source_waited += time.perf_counter() - self._reading_since
                        self._reading_since = None
            if scope.cancelled_caught:
                continue  # a letter came while the reader waited
            if batch is None:
                return
            if batch:
                self.source_records += len(batch)
                await self.process(batch, 0)
                if self._generators:
                    await self._poll_generators()
            await anyio.lowlevel.checkpoint()

    async def _run_mailbox(self, mailbox: Mailbox) -> None:
        """Process the channels' messages and the letters until the job has finished or stopped; once
        every channel has ended, finish (only barriers and letters come after that)."""
        open_inputs = len(mailbox.channels)
        channel_inputs = self.channel_inputs
        alignment = self.alignment
        watermarks = self.input_watermarks
        while not (self._stopped or self._job_finished):
            index, message = await mailbox.receive()
            if type(message) is list or type(message) is StampedBatch:
                if watermarks.any_idle:
                    watermarks.on_active(index)
                progress = alignment.progress
                if progress is not None and index not in progress.delivered:
                    await alignment.take_before_barrier(progress, index, message)
                elif channel_inputs[index]:
                    await self.process_second_input(message)
                else:
                    await self.process(message, 0)
                if self._generators:
                    await self._poll_generators()
            elif index == MAIL:
                await self._on_letter(message)
            elif type(message) is Watermark:
                advanced = watermarks.on_watermark(index, message.timestamp)
                if advanced is not None:
                    await self.advance_watermark(advanced)
            elif message is END_OF_INPUT:
                # An ended channel holds no watermark back (it counts as MAX_WATERMARK). Only
                # barriers follow the end of a channel; an ended channel counts as having delivered
                # every barrier still to come (all it carried is processed).
                advanced = watermarks.on_watermark(index, MAX_WATERMARK)
                if advanced is not None:
                    await self.advance_watermark(advanced)
                open_inputs -= 1
                if not open_inputs:  # first, so a checkpoint this completes is taken after the end
                    await self._end_input()
                await alignment.on_end_of_channel(index)
            elif isinstance(message, Barrier):
                await alignment.on_barrier(index, message)
            elif isinstance(message, WatermarkStatus):
                await self._on_input_status(index, message)
            else:
                raise AssertionError(f"unexpected control event {message!r}")

    async def process(self, batch: list[Any], first: int) -> None:
        """Run ``batch`` through the chain from operator ``first`` and emit what comes out."""
        operators, records_in, records_out = self.operators, self.records_in, self.records_out
        for position in range(first, len(operators)):
            operator = operators[position]
            records_in[position] += len(batch)
            try:
                batch = await operator.process_batch(batch)
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc
            records_out[position] += len(batch)
            if operator.ctx.side_outputs:
                await self._emit_side_outputs(position, operator)
            if not batch:
                return
        await self.output.emit(batch)

    async def _emit_side_outputs(self, position: int, operator: StreamOperator) -> None:
        collected = operator.ctx.side_outputs
        pending = list(collected.items())
        collected.clear()  # the same dict: a broadcast function's second context shares it
        for tag, batch in pending:
            self.records_out[position] += len(batch)
            if all(timestamp is None for timestamp in batch.timestamps):
                await self.output.emit_side(operator.uid, tag, list(batch))
            else:
                await self.output.emit_side(operator.uid, tag, batch)

    # ---- event time

    async def advance_watermark(self, watermark: int, first: int = 0) -> None:
        """Pass ``watermark`` down the chain from operator ``first``: each operator fires what is due
        (its outputs go through the rest of the chain first), then it goes out downstream (but
        MAX_WATERMARK, which only the end of input brings, and which that carries itself). A
        watermark-generating operator stops it (but MAX_WATERMARK): its own take its place."""
        operators = self.operators
        if first == 0:
            self.watermark = watermark
        for position in range(first, len(operators)):
            operator = operators[position]
            if operator.generates_watermarks and watermark != MAX_WATERMARK:
                return
            self.operator_watermarks[position] = watermark
            await self._pass_on(position, operator, operator.on_watermark(watermark))
        self.output_watermark = watermark
        if watermark != MAX_WATERMARK:  # the end of input, which follows it, says as much downstream
            self._idle_downstream = False
            await self.output.emit_event(Watermark(watermark))

    async def _pass_on(self, position: int, operator: StreamOperator, firing: Awaitable[list[Any]]) -> None:
        """What ``operator`` (at ``position`` in the chain) emits outside a batch (timers fired, its
        last outputs) goes through the rest of the chain, its side outputs to theirs."""
        try:
            fired = await firing
        except Exception as exc:
            raise OperatorFailure(operator.uid) from exc
        if operator.ctx.side_outputs:
            await self._emit_side_outputs(position, operator)
        if fired:
            self.records_out[position] += len(fired)
            await self.process(fired, position + 1)

    async def _on_input_status(self, index: int, status: WatermarkStatus) -> None:
        watermarks = self.input_watermarks
        if not status.idle:
            watermarks.on_active(index)
            return
        advanced = watermarks.on_idle(index)
        if advanced is not None:
            await self.advance_watermark(advanced)
        if watermarks.all_idle and not self._generators and not self._idle_downstream:
            self._idle_downstream = True  # records or a watermark from here make it active again
            await self.output.emit_event(IDLE)

    async def _poll_generators(self) -> None:
        """Emit what the chain's watermark-generating operators have to emit now."""
        now = now_millis()
        for position, operator in self._generators:
            try:
                event = operator.poll(now)
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc
            if event is None:
                continue
            if isinstance(event, WatermarkStatus):
                if position == self._generators[-1][0]:  # only the last one speaks for the output
                    await self.output.emit_event(event)
            else:
                await self.advance_watermark(event, position + 1)

    async def _emit_restored_watermarks(self) -> None:
        """A restored generator emits again first what it emitted last before the checkpoint."""
        for position, operator in self._generators:
            restored = operator.restored_watermark()
            if restored is not None:
                await self.advance_watermark(restored, position + 1)

    async def _on_wake(self) -> None:
        """A wake-up came: fire due processing-time timers down the chain, then let generators emit."""
        now = now_millis()
        for position, operator in enumerate(self.operators):
            await self._pass_on(position, operator, operator.on_processing_time(now))
        if self._generators:
            await self._poll_generators()

    async def _replay_in_flight(self) -> None:
        """Process the channel state of the checkpoint this subtask was restored from, before any new
        input: records that were in flight when the checkpoint was taken."""
        in_flight, self.in_flight = self.in_flight, []
        for position, (input_index, batch) in in_flight:
            if input_index and position == 0:
                await self.process_second_input(batch)
            else:
                await self.process(batch, position)

    async def process_second_input(self, batch: list[Any]) -> None:
        head = self.operators[0]
        self.records_in[0] += len(batch)
        try:
            outputs = await head.process_batch2(batch)
        except Exception as exc:
            raise OperatorFailure(head.uid) from exc
        if outputs:
            self.records_out[0] += len(outputs)
            await self.process(outputs, 1)

    # ---- letters

    async def _on_letter(self, letter: Any) -> None:
        if isinstance(letter, TriggerCheckpoint):
            savepoint = letter.savepoint
            unaligned = self.runtime.unaligned and self.runtime.aligned_timeout is None and not savepoint
            if letter.stop:
                self._notify_stopping(True)
            await self.snapshots.take(letter.checkpoint_id, 0.0, savepoint=savepoint, unaligned=unaligned)
            if letter.stop:
                await self._hold()
        elif isinstance(letter, AlignmentTimedOut):
            await self.alignment.on_timeout(letter)
        elif isinstance(letter, CheckpointComplete):
            await self._notify_complete(letter)
        elif letter is WAKE:
            if not self.input_ended:  # after its end, processing time fires nothing (as in Flink)
                await self._on_wake()
        elif letter is STOP:
            self._stopped = True
        elif letter is JOB_FINISHED:
            self._job_finished = True
        elif letter is not RESUME:  # a resume that finds nothing held does nothing
            raise AssertionError(f"unexpected letter {letter!r}")

    async def _hold(self) -> None:
        """Read nothing after a stop-with-savepoint's barrier: only letters, until it completed (stop)
        or failed (resume)."""
        while not (self._stopped or self._job_finished):
            _, letter = await self.mailbox.receive()  # a source's mailbox holds letters only
            if letter is RESUME:
                self._notify_stopping(False)
                return
            await self._on_letter(letter)

    def _notify_stopping(self, stopping: bool) -> None:
        if self.source is not None:
            try:
                self.source.reader.notify_stopping(stopping)
            except Exception as exc:
                raise OperatorFailure(self.source.uid) from exc

    async def _notify_complete(self, letter: CheckpointComplete) -> None:
        checkpoint_id = letter.checkpoint_id
        if self.source is not None:
            try:
                self.source.reader.notify_checkpoint_complete(checkpoint_id)
                self.source.reader.release_before(letter.oldest_retained)
            except Exception as exc:
                raise OperatorFailure(self.source.uid) from exc
        for backend in self.keyed_backends:
            backend.notify_checkpoint_complete(checkpoint_id)
        for operator in self.operators:
            try:
                await operator.notify_checkpoint_complete(checkpoint_id)
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc

    async def decline(self, checkpoint_id: int, reason: str, *, counts: bool = True) -> None:
        coordinator = self.runtime.coordinator
        if coordinator is not None:
            await coordinator.decline(checkpoint_id, self.key, reason, counts=counts)

    # ---- the end

    async def _end_input(self) -> None:
        """The input has ended: finish the operators (each one's last outputs still pass through the
        rest of the chain) and send the end of input downstream. First, event time reaches its
        end: every event-time timer fires."""
        if self.watermark < MAX_WATERMARK:
            await self.advance_watermark(MAX_WATERMARK)
        for position, operator in enumerate(self.operators):
            await self._pass_on(position, operator, operator.finish())
        await self.output.emit_event(END_OF_INPUT)
        self.input_ended = True
        if self.source is not None and self.runtime.coordinator is not None:
            self.runtime.coordinator.source_finished(self.key)
        self.runtime.actor_finished(self)

    async def _answer_letters(self) -> None:
        """A finished source: answer letters (checkpoints go on) until the job finishes or stops."""
        while not (self._stopped or self._job_finished):
            _, letter = await self.mailbox.receive()  # a source's mailbox holds letters only
            await self._on_letter(letter)

    async def _notify_job_finished(self) -> None:
        """Every subtask of the job is done (without checkpointing, sinks commit what is left)."""
        for operator in self.operators:
            try:
                await operator.notify_job_finished()
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc

    async def _close(self) -> OperatorFailure | None:
        """Close everything even if one close raises; return the first error, by its owner."""
        self.is_open, self.closed = False, True  # its state is about to go: no query may read it
        self.ended_at = time.perf_counter()  # its time stops counting
        closings: list[tuple[Any, str]] = []
        if self.source is not None:
            closings.append((self.source.reader.close, self.source.uid))
        closings += [(operator.close, operator.uid) for operator in self.operators]
        closings += [(backend.dispose, backend.operator_uid) for backend in self.keyed_backends]
        failures = [await _attempt(close, uid) for close, uid in closings]
        return next((failure for failure in failures if failure is not None), None)


async def _attempt(close: Any, uid: str) -> OperatorFailure | None:
    try:
        await close()
    except Exception as exc:
        failure = OperatorFailure(uid)
        failure.__cause__ = exc
        return failure
    return None
