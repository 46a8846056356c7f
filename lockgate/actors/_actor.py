"""The subtask actor: one task that owns a chain of operators and processes one message at a time."""

from __future__ import annotations

import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from lockgate._config import CheckpointingMode
from lockgate._errors import StateSerializationError
from lockgate._threads import run_sync
from lockgate.actors._channel_state import ChannelStateRecording, completed_recording
from lockgate.actors._context import SubtaskContext
from lockgate.actors._failure import OperatorFailure
from lockgate.actors._operators import StreamOperator
from lockgate.actors._output import OutputRouter
from lockgate.checkpointing import CheckpointCoordinator, SubtaskAcknowledgement
from lockgate.connectors import SourceReader
from lockgate.mailbox import (
    END_OF_INPUT,
    JOB_FINISHED,
    MAIL,
    RESUME,
    STOP,
    AlignmentTimedOut,
    Barrier,
    CheckpointComplete,
    Mailbox,
    TriggerCheckpoint,
)
from lockgate.savepoint import InFlightBatch, encode_channel_state
from lockgate.snapshots import (
    SharedBlobWriter,
    SharedStateHandle,
    StateBlobs,
    StreamStateHandle,
    SubtaskStateHandles,
    blob_name,
    write_state_blobs,
)
from lockgate.state import (
    IncrementalSnapshotResources,
    KeyedStateBackend,
    OperatorStateSnapshot,
    SnapshotResources,
    pickle_snapshot,
)


@dataclass
class SourceTask:
    """The source at the head of a chain: its uid, its reader and its context (operator state)."""

    uid: str
    reader: SourceReader
    ctx: SubtaskContext


class ActorRuntime(Protocol):
    """What an actor needs from the attempt of the job that runs it."""

    coordinator: CheckpointCoordinator | None
    mode: CheckpointingMode | None
    asynchronous: bool
    unaligned: bool  # checkpoints (never savepoints) may let barriers overtake records
    aligned_timeout: float | None  # with unaligned: None, unaligned at once; else after this long

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``function(*args)`` in the background of the attempt."""

    def actor_finished(self, actor: SubtaskActor) -> None:
        """``actor`` has finished its input: its operators have finished and its end of input has gone
        downstream. It stays alive, taking part in checkpoints, until :data:`JOB_FINISHED`."""


@dataclass
class _Capture:
    """The synchronous part of one operator's snapshot."""

    uid: str
    operator_state: OperatorStateSnapshot | None
    keyed: SnapshotResources | None


@dataclass(frozen=True)
class _Part:
    """The synchronous part of a subtask's checkpoint, handed to the asynchronous part: the captures,
    what the synchronous part and the alignment took (seconds), and whether the input had ended."""

    checkpoint_id: int
    captures: list[_Capture]
    sync_duration: float
    alignment: float
    finished: bool


@dataclass
class _ChannelStateUpload:
    """An unaligned checkpoint's channel state, stored by a background task of its own while the rest
    of the subtask's snapshot is written; ``stored`` is set once it is done, with ``ok`` false if the
    checkpoint was given up, aborted, or declined because the channel state could not be stored."""

    recording: ChannelStateRecording
    stored: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False
    handle: StreamStateHandle | None = None


@dataclass
class _BarrierProgress:
    """Where one checkpoint stands at a subtask with input channels, in exactly-once mode.

    Aligned, a channel has *delivered* the barrier once the barrier and every batch it overtook have
    been taken, and it is paused until all channels have. Unaligned, the snapshot is taken at once,
    nothing is paused, and the channel state is recorded: batches as they are taken from a channel
    whose barrier has not come yet, and the batches a barrier overtook as soon as the barrier is taken
    (they are still queued, and processed later as usual); a channel has delivered the barrier then.
    """

    checkpoint_id: int
    started: float
    delivered: set[int] = field(default_factory=set)
    # Channels whose barrier came ahead of batches still to take: how many of them remain.
    overtaken: dict[int, int] = field(default_factory=dict)
    unaligned: bool = False  # the snapshot is taken and the barrier passed on, before all delivered it
    recording: ChannelStateRecording | None = None  # None if unaligned but aborted meanwhile
    timer: anyio.CancelScope | None = None  # the alignment timer, with aligned_timeout


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
        self._last_checkpoint = 0  # the newest checkpoint this subtask has taken its part of
        self._read_scope: anyio.CancelScope | None = None
        # Exactly-once: the checkpoint whose barriers are on their way in, if any.
        self._progress: _BarrierProgress | None = None
        self._ended: set[int] = set()
        # At-least-once: the channels that delivered each checkpoint's barrier, and since when.
        self._tracked: dict[int, tuple[set[int], float]] = {}

    def __repr__(self) -> str:
        state = "finished" if self.input_ended else "running"
        progress = self._progress
        if progress is not None:
            doing = "recording" if progress.unaligned else "aligning"
            delivered = len(progress.delivered | self._ended)
            state += f" | barrier {progress.checkpoint_id} {doing} {delivered}/{len(self.mailbox.channels)}"
        return f"<SubtaskActor {self.name} [subtask {self.subtask_index} | {state}]>"

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
            with anyio.CancelScope(shield=True):
                await self._close()  # a failure while closing must not hide the one in flight
            raise
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
                    batch = await reader.read(size)
                except Exception as exc:
                    raise OperatorFailure(source.uid) from exc
                finally:
                    self._read_scope = None
            if scope.cancelled_caught:
                continue  # a letter came while the reader waited
            if batch is None:
                return
            if batch:
                await self._process(batch, 0)
            await anyio.lowlevel.checkpoint()

    async def _run_mailbox(self, mailbox: Mailbox) -> None:
        """Process the channels' messages and the letters until the job has finished or stopped; once
        every channel has ended, finish (only barriers and letters come after that)."""
        open_inputs = len(mailbox.channels)
        channel_inputs = self.channel_inputs
        while not (self._stopped or self._job_finished):
            index, message = await mailbox.receive()
            if type(message) is list:
                progress = self._progress
                if progress is not None and index not in progress.delivered:
                    await self._take_before_barrier(progress, index, message)
                elif channel_inputs[index]:
                    await self._process_second_input(message)
                else:
                    await self._process(message, 0)
            elif index == MAIL:
                await self._on_letter(message)
            elif message is END_OF_INPUT:
                # Only barriers follow the end of a channel; an ended channel counts as having
                # delivered every barrier still to come (all it carried is processed).
                self._ended.add(index)
                open_inputs -= 1
                if not open_inputs:  # first, so a checkpoint this completes is taken after the end
                    await self._end_input()
                if self._progress is not None:
                    await self._check_delivered()
                if self._tracked:
                    await self._check_tracked()
            elif isinstance(message, Barrier):
                await self._on_barrier(index, message)
            else:
                raise AssertionError(f"unexpected control event {message!r}")

    async def _process(self, batch: list[Any], first: int) -> None:
        """Run ``batch`` through the chain from operator ``first`` and emit what comes out."""
        operators = self.operators
        for position in range(first, len(operators)):
            operator = operators[position]
            try:
                batch = await operator.process_batch(batch)
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc
            if not batch:
                return
        await self.output.emit(batch)

    async def _replay_in_flight(self) -> None:
        """Process the channel state of the checkpoint this subtask was restored from, before any new
        input: records that were in flight when the checkpoint was taken."""
        in_flight, self.in_flight = self.in_flight, []
        for position, (input_index, batch) in in_flight:
            if input_index and position == 0:
                await self._process_second_input(batch)
            else:
                await self._process(batch, position)

    async def _process_second_input(self, batch: list[Any]) -> None:
        head = self.operators[0]
        try:
            outputs = await head.process_batch2(batch)
        except Exception as exc:
            raise OperatorFailure(head.uid) from exc
        if outputs:
            await self._process(outputs, 1)

    # ---- barriers

    async def _on_barrier(self, index: int, barrier: Barrier) -> None:
        checkpoint_id = barrier.checkpoint_id
        savepoint = self._is_savepoint(checkpoint_id)
        if self.runtime.mode is not CheckpointingMode.EXACTLY_ONCE and not savepoint:
            await self._track_barrier(index, checkpoint_id)
            return
        progress = self._progress
        if progress is None or checkpoint_id > progress.checkpoint_id:
            if checkpoint_id <= self._last_checkpoint:
                return  # a checkpoint this subtask has passed on already
            if progress is not None:  # a newer barrier: the older checkpoint cannot complete
                await self._give_up(progress, f"barrier {checkpoint_id} overtook it")
            progress = self._progress = _BarrierProgress(checkpoint_id, time.perf_counter())
            if self.runtime.unaligned and not savepoint:
                timeout = self.runtime.aligned_timeout
                if timeout is None:
                    await self._unalign(progress)
                else:
                    progress.timer = self._start_alignment_timer(checkpoint_id, timeout)
        elif checkpoint_id < progress.checkpoint_id:
            return  # the barrier of a checkpoint already given up
        if barrier.overtaken and not progress.unaligned:
            # The batches it overtook still come first: the channel delivers the barrier after them.
            progress.overtaken[index] = barrier.overtaken
        else:
            self._record_queued(progress, index, barrier.overtaken)
            self._deliver(progress, index)
        await self._check_delivered()

    def _record_queued(self, progress: _BarrierProgress, index: int, count: int) -> None:
        """Record the next ``count`` batches queued in channel ``index``: they precede the barrier
        (which overtook them) but come after the snapshot. They stay queued, to be processed as usual.
        A newer barrier may have overtaken them meanwhile (while this one was handled, the producer
        ran); it sits ahead of them and is passed over."""
        if progress.recording is not None and count:
            input_index = self.channel_inputs[index]
            batches = self.mailbox.peek_batches(index, count)
            assert len(batches) == count, (count, batches)  # they stay queued until taken
            for batch in batches:
                progress.recording.record(input_index, batch)

    async def _take_before_barrier(self, progress: _BarrierProgress, index: int, batch: list[Any]) -> None:
        """Process a batch of a channel that has not delivered the checkpoint's barrier: it precedes
        the barrier, so an unaligned checkpoint records it as channel state."""
        if progress.recording is not None:
            progress.recording.record(self.channel_inputs[index], batch)
        if self.channel_inputs[index]:
            await self._process_second_input(batch)
        else:
            await self._process(batch, 0)
        remaining = progress.overtaken.get(index)
        if remaining is not None:  # one of the batches its barrier overtook
            if remaining > 1:
                progress.overtaken[index] = remaining - 1
            else:
                del progress.overtaken[index]
                self._deliver(progress, index)
                await self._check_delivered()

    def _deliver(self, progress: _BarrierProgress, index: int) -> None:
        progress.delivered.add(index)
        if not progress.unaligned:
            self.mailbox.pause(index)  # hold this input until every input delivered the barrier

    async def _check_delivered(self) -> None:
        """Once every channel has delivered the barrier (or ended): take the aligned snapshot, or
        complete the unaligned one's channel state."""
        progress = self._progress
        assert progress is not None
        if len(progress.delivered | self._ended) < len(self.mailbox.channels):
            return
        self._progress = None
        if progress.unaligned:
            if progress.recording is not None:
                progress.recording.complete()
            return
        self._stop_timer(progress)
        await self._checkpoint(progress.checkpoint_id, time.perf_counter() - progress.started)
        self._release_inputs(progress)

    async def _unalign(self, progress: _BarrierProgress) -> None:
        """Take the checkpoint unaligned now: snapshot, barrier passed on ahead of queued records,
        every input read again; what precedes the barrier from here on is recorded."""
        self._stop_timer(progress)
        progress.unaligned = True
        self._release_inputs(progress)
        alignment = time.perf_counter() - progress.started
        progress.recording = await self._checkpoint(progress.checkpoint_id, alignment, unaligned=True)
        for index, remaining in progress.overtaken.items():  # aligning had not reached them yet
            self._record_queued(progress, index, remaining)
            progress.delivered.add(index)
        progress.overtaken.clear()

    async def _give_up(self, progress: _BarrierProgress, reason: str) -> None:
        self._stop_timer(progress)
        if progress.recording is not None:
            progress.recording.abandon()
        await self._decline(progress.checkpoint_id, reason, counts=False)
        self._release_inputs(progress)

    def _release_inputs(self, progress: _BarrierProgress) -> None:
        for index in progress.delivered:  # ended ones too: later barriers come through them
            self.mailbox.resume(index)

    def _start_alignment_timer(self, checkpoint_id: int, timeout: float) -> anyio.CancelScope:
        """Post :class:`AlignmentTimedOut` to this actor after ``timeout`` seconds, unless cancelled."""
        scope = anyio.CancelScope()
        self.runtime.spawn(self._post_after, scope, timeout, AlignmentTimedOut(checkpoint_id))
        return scope

    async def _post_after(self, scope: anyio.CancelScope, delay: float, letter: Any) -> None:
        with scope:
            await anyio.sleep(delay)
            self.post(letter)

    @staticmethod
    def _stop_timer(progress: _BarrierProgress) -> None:
        if progress.timer is not None:
            progress.timer.cancel()
            progress.timer = None

    async def _track_barrier(self, index: int, checkpoint_id: int) -> None:
        """At-least-once: inputs are never held, so the barriers of several checkpoints may be on their
        way at once; each is passed on once every input delivered it (or ended), in id order."""
        if checkpoint_id <= self._last_checkpoint:
            return  # a checkpoint this subtask has passed on, or given up for a newer one
        seen, _ = self._tracked.setdefault(checkpoint_id, (set(), time.perf_counter()))
        seen.add(index)
        await self._check_tracked()

    async def _check_tracked(self) -> None:
        for passed in [cid for cid in self._tracked if cid <= self._last_checkpoint]:
            del self._tracked[passed]  # a newer checkpoint (an aligned savepoint) got through first
        everyone = len(self.mailbox.channels)
        for checkpoint_id in sorted(self._tracked):
            seen, started = self._tracked[checkpoint_id]
            if len(seen | self._ended) < everyone:
                continue
            for older in [cid for cid in self._tracked if cid < checkpoint_id]:
                del self._tracked[older]  # a newer checkpoint got through first: it subsumes them
                reason = f"checkpoint {checkpoint_id} got through this subtask first"
                await self._decline(older, reason, counts=False)
            del self._tracked[checkpoint_id]
            await self._checkpoint(checkpoint_id, time.perf_counter() - started)

    def _is_savepoint(self, checkpoint_id: int) -> bool:
        """Savepoints are aligned in every mode: a restored job must not see a record twice."""
        coordinator = self.runtime.coordinator
        target = None if coordinator is None else coordinator.target(checkpoint_id)
        return target is not None and target.canonical

    # ---- letters

    async def _on_letter(self, letter: Any) -> None:
        if isinstance(letter, TriggerCheckpoint):
            checkpoint_id = letter.checkpoint_id
            unaligned = (
                self.runtime.unaligned
                and self.runtime.aligned_timeout is None
                and not self._is_savepoint(checkpoint_id)
            )
            if letter.stop:
                self._notify_stopping(True)
            await self._checkpoint(checkpoint_id, 0.0, unaligned=unaligned)
            if letter.stop:
                await self._hold()
        elif isinstance(letter, AlignmentTimedOut):
            progress = self._progress
            if (
                progress is not None
                and progress.checkpoint_id == letter.checkpoint_id
                and not progress.unaligned
            ):
                await self._unalign(progress)
                await self._check_delivered()
        elif isinstance(letter, CheckpointComplete):
            await self._notify_complete(letter)
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

    async def _decline(self, checkpoint_id: int, reason: str, *, counts: bool = True) -> None:
        coordinator = self.runtime.coordinator
        if coordinator is not None:
            await coordinator.decline(checkpoint_id, self.key, reason, counts=counts)

    # ---- snapshots

    async def _checkpoint(
        self, checkpoint_id: int, alignment: float, *, unaligned: bool = False
    ) -> ChannelStateRecording | None:
        """Take this subtask's part of a checkpoint: the synchronous part now, between two messages;
        the barrier moves on; the asynchronous part runs in the background (or now, if the job's
        snapshots are synchronous and the checkpoint is aligned).

        ``unaligned``: the barrier overtakes what is queued downstream, and the acknowledgement waits
        for the channel state, recorded into the returned recording (None if the checkpoint was
        aborted meanwhile; a source's is empty and complete).
        """
        self._last_checkpoint = max(self._last_checkpoint, checkpoint_id)
        coordinator = self.runtime.coordinator
        target = None if coordinator is None else coordinator.target(checkpoint_id)
        if target is None:  # aborted meanwhile: pass the barrier on, so downstream aligns
            await self._pass_barrier(checkpoint_id, unaligned)
            return None
        assert coordinator is not None
        started = time.perf_counter()
        captures = await self._capture(checkpoint_id)
        part = _Part(checkpoint_id, captures, time.perf_counter() - started, alignment, self.input_ended)
        if unaligned:
            # The channel state is complete only after the barrier has moved on: always in the background.
            recording = completed_recording() if self.is_source else ChannelStateRecording(self.head_uid)
            await self._pass_barrier(checkpoint_id, unaligned)
            upload = _ChannelStateUpload(recording)
            self.runtime.spawn(self._store_channel_state, coordinator, checkpoint_id, upload)
            self.runtime.spawn(self._persist, coordinator, part, upload)
            return recording
        if self.runtime.asynchronous:
            await self.output.emit_event(Barrier(checkpoint_id))
            self.runtime.spawn(self._persist, coordinator, part)
        else:
            await self._persist(coordinator, part)
            await self.output.emit_event(Barrier(checkpoint_id))
        return None

    async def _pass_barrier(self, checkpoint_id: int, unaligned: bool) -> None:
        if unaligned:
            self.output.overtake(checkpoint_id)
        else:
            await self.output.emit_event(Barrier(checkpoint_id))

    async def _capture(self, checkpoint_id: int) -> list[_Capture]:
        captures: list[_Capture] = []
        source = self.source
        if source is not None:
            try:
                source.reader.snapshot_state(checkpoint_id)
            except Exception as exc:
                raise OperatorFailure(source.uid) from exc
            backend = source.ctx.operator_backend
            captures.append(
                _Capture(source.uid, backend.snapshot(self.subtask_index, self.parallelism), None)
            )
        for operator in self.operators:
            try:
                await operator.prepare_snapshot(checkpoint_id)
                operator_state = operator.snapshot_operator_state()
                keyed_backend = operator.ctx.keyed_backend
                keyed = None if keyed_backend is None else await keyed_backend.snapshot_capture(checkpoint_id)
            except Exception as exc:
                for capture in captures:
                    if capture.keyed is not None:
                        capture.keyed.release()
                raise OperatorFailure(operator.uid) from exc
            captures.append(_Capture(operator.uid, operator_state, keyed))
        return captures

    async def _persist(
        self, coordinator: CheckpointCoordinator, part: _Part, in_flight: _ChannelStateUpload | None = None
    ) -> None:
        """The asynchronous part: encode the captured state, write it, acknowledge the checkpoint
        (an unaligned one's once its channel state, ``in_flight``, is stored too).

        Keyed state that snapshots incrementally writes its new shared blobs first; if the checkpoint
        fails or does not take the acknowledgement, they are deleted again."""
        started = time.perf_counter()
        checkpoint_id, captures = part.checkpoint_id, part.captures
        target = coordinator.target(checkpoint_id)
        if target is None:
            for capture in captures:
                if capture.keyed is not None:
                    capture.keyed.release()
            return  # aborted: nothing to write
        writer = None if target.canonical else SharedBlobWriter(target.storage, self.subtask_index)
        try:
            blobs, shared = await self._encode(captures, target.canonical, writer)
            if coordinator.target(checkpoint_id) is None:
                await self._discard(writer)
                return
            states = await write_state_blobs(
                target.storage, target.location, self.subtask_index, blobs, shared
            )
        except StateSerializationError:
            # No later checkpoint can take it either: the job fails now, whatever failures it tolerates.
            await self._discard(writer)
            raise
        except Exception as exc:
            await self._discard(writer)
            await coordinator.decline(checkpoint_id, self.key, f"{type(exc).__name__}: {exc}", cause=exc)
            return
        except BaseException:  # the attempt is cancelled: no checkpoint will take the uploads
            await self._discard(writer)
            raise
        finally:
            for capture in captures:
                if capture.keyed is not None:
                    capture.keyed.release()
        uploaded = frozenset(handle.name for handle in writer.uploaded) if writer is not None else frozenset()
        ack = SubtaskAcknowledgement(
            states,
            part.sync_duration,
            time.perf_counter() - started,
            part.alignment,
            uploaded,
            finished=part.finished,
        )
        if in_flight is not None:
            await in_flight.stored.wait()
            if not in_flight.ok:
                await self._discard(writer)
                return
            ack = self._with_channel_state(ack, in_flight.handle, time.perf_counter() - started)
        if not await coordinator.acknowledge(checkpoint_id, self.key, ack):
            await self._discard(writer)

    async def _store_channel_state(
        self, coordinator: CheckpointCoordinator, checkpoint_id: int, upload: _ChannelStateUpload
    ) -> None:
        """Wait for an unaligned checkpoint's channel state to be complete and write it, as a blob of
        the chain's first operator (none if nothing was in flight)."""
        try:
            recorded = await upload.recording.finished()
            target = coordinator.target(checkpoint_id)
            if recorded is None or target is None:
                return  # given up or aborted: nothing to store
            try:
                if recorded:
                    data = await run_sync(encode_channel_state, recorded)
                    name = blob_name(self.head_uid, self.subtask_index, "channel")
                    upload.handle = await target.storage.write_state(target.location, name, data)
            except Exception as exc:
                reason = f"its in-flight records could not be stored: {type(exc).__name__}: {exc}"
                await coordinator.decline(checkpoint_id, self.key, reason, cause=exc)
                return
            upload.ok = True
        finally:
            upload.stored.set()

    def _with_channel_state(
        self, ack: SubtaskAcknowledgement, handle: StreamStateHandle | None, async_duration: float
    ) -> SubtaskAcknowledgement:
        """``ack`` of an unaligned checkpoint, with the channel state's handle in the chain's first
        operator's handles."""
        states = dict(ack.states)
        if handle is not None:
            head = states.get(self.head_uid, SubtaskStateHandles())
            states[self.head_uid] = replace(head, channel=handle)
        return replace(
            ack,
            states=states,
            async_duration=async_duration,
            unaligned=True,
            in_flight_bytes=0 if handle is None else handle.size,
        )

    @staticmethod
    async def _discard(writer: SharedBlobWriter | None) -> None:
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await writer.discard()

    @staticmethod
    async def _encode(
        captures: list[_Capture], canonical: bool, writer: SharedBlobWriter | None
    ) -> tuple[StateBlobs, dict[str, tuple[SharedStateHandle, ...]]]:
        """The captured state as blobs; ``canonical``: every keyed state whole, entry by entry (the
        savepoint form). With a ``writer``, keyed state that snapshots incrementally writes its
        shared blobs through it and is represented by its manifest."""
        blobs: StateBlobs = {}
        shared: dict[str, tuple[SharedStateHandle, ...]] = {}
        for capture in captures:
            resources = capture.keyed
            keyed = None
            if isinstance(resources, IncrementalSnapshotResources) and writer is not None:
                written = await resources.write_incremental(writer.for_operator(capture.uid))
                keyed = pickle.dumps(written.manifest, protocol=5)
                shared[capture.uid] = written.shared
            elif resources is not None:
                keyed = await run_sync(_materialize, resources, canonical)
            state = capture.operator_state
            operator = pickle.dumps(state, protocol=5) if state is not None and state.states else None
            blobs[capture.uid] = (keyed, operator)
        return blobs, shared

    # ---- the end

    async def _end_input(self) -> None:
        """The input has ended: finish the operators (each one's last outputs still pass through the
        rest of the chain) and send the end of input downstream."""
        for position, operator in enumerate(self.operators):
            try:
                last = await operator.finish()
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc
            if last:
                await self._process(last, position + 1)
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
        closings: list[tuple[Any, str]] = []
        if self.source is not None:
            closings.append((self.source.reader.close, self.source.uid))
        closings += [(operator.close, operator.uid) for operator in self.operators]
        closings += [(backend.dispose, backend.operator_uid) for backend in self.keyed_backends]
        failures = [await _attempt(close, uid) for close, uid in closings]
        return next((failure for failure in failures if failure is not None), None)


def _materialize(resources: SnapshotResources, canonical: bool = False) -> bytes:
    """Build a keyed snapshot and encode it: the costly part, run in a worker thread. ``canonical``:
    every state entry by entry, as savepoints hold them."""
    snapshot = resources.materialize()
    if canonical:
        snapshot = snapshot.canonical()
    return pickle_snapshot(snapshot, snapshot.tables, snapshot.operator_uid)


async def _attempt(close: Any, uid: str) -> OperatorFailure | None:
    try:
        await close()
    except Exception as exc:
        failure = OperatorFailure(uid)
        failure.__cause__ = exc
        return failure
    return None
