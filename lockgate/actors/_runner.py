"""The local runner: builds channels, operators and actors from a job graph and runs them once.

One :class:`JobRunner` is one attempt of a job; :class:`JobExecution` runs attempts until the job
finishes, restarting from the latest complete checkpoint as the restart strategy allows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from lockgate._config import CheckpointConfig, CheckpointingMode, RestartStrategy
from lockgate._errors import CheckpointError, JobFailedError, LockgateError
from lockgate.actors._actor import ActorRuntime, SourceTask, SubtaskActor
from lockgate.actors._context import SubtaskContext
from lockgate.actors._event_time import TimestampsAndWatermarksOperator
from lockgate.actors._failure import OperatorFailure
from lockgate.actors._operators import StreamOperator, create_operator
from lockgate.actors._output import (
    BroadcastOutput,
    EdgeOutput,
    ForwardOutput,
    KeyGroupOutput,
    OutputRouter,
    RebalanceOutput,
)
from lockgate.checkpointing import CheckpointCoordinator
from lockgate.connectors import SourceReader
from lockgate.functions import OutputTag
from lockgate.graph import (
    BroadcastPartitioner,
    ForwardPartitioner,
    JobEdge,
    JobGraph,
    JobVertex,
    KeyGroupPartitioner,
    OperatorTransformation,
    RebalancePartitioner,
    SourceTransformation,
)
from lockgate.mailbox import JOB_FINISHED, Channel, ChannelStatistics, Mailbox
from lockgate.observe import job_logger, log_scope
from lockgate.savepoint import InFlightBatch, RestoredState
from lockgate.snapshots import CheckpointStorage, MemoryCheckpointStorage
from lockgate.state import KeyedStateBackend, KeyGroupRange, OperatorStateBackend, StateBackend

logger = logging.getLogger("lockgate")


class Instrumentation(Protocol):
    """Hooks that wrap operators and source readers of each attempt (fault injection in tests)."""

    def operator(self, attempt: int, operator: StreamOperator) -> StreamOperator:
        """The operator to run in place of ``operator``."""

    def reader(
        self,
        attempt: int,
        uid: str,
        subtask_index: int,
        reader: SourceReader,
        request_checkpoint: Callable[[], anyio.Event],
    ) -> SourceReader:
        """The reader to run in place of ``reader``."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How the runtime moves records, keeps state and recovers.

    Attributes:
        batch_size: The most records in one batch.
        channel_capacity: The most batches a channel holds before its producer waits.
        state_backend: Where keyed operators keep live state.
        checkpointing: When and how checkpoints are taken (disabled by default).
        checkpoint_storage: Where checkpoints go.
        restart_strategy: Whether a failed job restarts.
        instrumentation: Hooks for tests (see :mod:`lockgate.testing`).
        auto_watermark_interval: The most often, in ms, a subtask emits a new watermark (0: after
            every batch that advanced it).
        runner: What runs the subtasks: None, in this process (:class:`JobRunner`); or another runner
            (``lockgate.RayRunner``: in Ray actors).
    """

    batch_size: int
    channel_capacity: int
    state_backend: StateBackend
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    checkpoint_storage: CheckpointStorage = field(default_factory=MemoryCheckpointStorage)
    restart_strategy: RestartStrategy = field(default_factory=RestartStrategy.no_restart)
    instrumentation: Instrumentation | None = None
    auto_watermark_interval: int = 200
    runner: Runner | None = None

    @property
    def mode(self) -> CheckpointingMode | None:
        """The checkpointing mode, or None without checkpointing."""
        return self.checkpointing.mode if self.checkpointing.enabled else None

    @property
    def asynchronous(self) -> bool:
        """Whether snapshots are written in the background (the config and the backend agree)."""
        return self.checkpointing.asynchronous and getattr(self.state_backend, "asynchronous", True)


@dataclass(frozen=True)
class JobResult:
    """What a finished job reports.

    Attributes:
        job_name: The name the job ran under.
        duration: Seconds from start to end.
        channels: The final statistics of every channel of the last attempt, by channel name.
        restarts: How many times the job restarted after a failure.
        restored_from: For each restart, the id of the checkpoint it restored from (None: it started
            again from the beginning, as no checkpoint was complete).
    """

    job_name: str
    duration: float
    channels: dict[str, ChannelStatistics] = field(repr=False)
    restarts: int = 0
    restored_from: tuple[int | None, ...] = ()


class Attempt(Protocol):
    """One attempt of a job, as :class:`~lockgate.actors.JobExecution` sees it (:class:`JobRunner`
    runs one in this process)."""

    attempt: int

    @property
    def failed(self) -> bool:
        """Whether the attempt has failed (its subtasks are ending, or have ended)."""

    @property
    def actors(self) -> list[SubtaskActor]:
        """The subtask actors that run in this process (none if they run elsewhere)."""

    def channel_statistics(self) -> dict[str, ChannelStatistics]:
        """The statistics of every channel now, by channel name."""

    @property
    def started_at(self) -> float:
        """When the attempt's subtasks started counting (``time.perf_counter()``)."""

    def metric_counters(self, now: float) -> dict[str, dict[str, Any]]:
        """Every subtask's counters (see :meth:`SubtaskActor.metric_counters`), by
        ``"<uid>[<subtask>]"``: as of ``now``, or as the subtasks last reported them."""

    async def run(self) -> JobResult:
        """Run the subtasks to the end; raise :class:`JobFailedError` if one of them fails."""


class Runner(Protocol):
    """Runs attempts of a job somewhere else than in this process's event loop alone (the Ray runner)."""

    def attempt(
        self,
        job_name: str,
        graph: JobGraph,
        options: RuntimeOptions,
        *,
        restored: RestoredState | None,
        attempt: int,
        coordinator: CheckpointCoordinator,
    ) -> Attempt:
        """An attempt of the job, ready to :meth:`Attempt.run`; a graph it cannot run fails here."""


class JobRunner:
    """Runs one attempt of a job graph, inside the caller's task, through anyio task groups.

    Args:
        job_name: The job's name.
        graph: What to run.
        options: How to run it.
        restored: The state to start from, or None to start empty.
        attempt: How many times the job has restarted before this attempt.
        coordinator: The job's checkpoint coordinator (it takes savepoints even without checkpointing).
    """

    def __init__(
        self,
        job_name: str,
        graph: JobGraph,
        options: RuntimeOptions,
        *,
        restored: RestoredState | None = None,
        attempt: int = 0,
        coordinator: CheckpointCoordinator | None = None,
    ) -> None:
        self.job_name = job_name
        self.graph = graph
        self.options = options
        self.restored = restored
        self.attempt = attempt
        self.coordinator = coordinator
        self.mode = options.mode
        self.asynchronous = options.asynchronous
        self.unaligned = options.checkpointing.unaligned and self.mode is CheckpointingMode.EXACTLY_ONCE
        self.aligned_timeout = options.checkpointing.aligned_timeout
        self.channels: dict[str, Channel] = {}
        self._failure: LockgateError | None = None
        self._background: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished = 0
        # Built before the run, so a bad function fails the call that starts the job.
        self.actors = self._build()

    def channel_statistics(self) -> dict[str, ChannelStatistics]:
        """The statistics of every channel now, by channel name."""
        return {name: channel.statistics() for name, channel in self.channels.items()}

    @property
    def started_at(self) -> float:
        """When the first of the attempt's actors was made (``time.perf_counter()``)."""
        return min((actor.started_at for actor in self.actors), default=time.perf_counter())

    def metric_counters(self, now: float) -> dict[str, dict[str, Any]]:
        """Every subtask's counters as of ``now``, by ``"<uid>[<subtask>]"``."""
        counters: dict[str, dict[str, Any]] = {}
        for actor in self.actors:
            counters.update(actor.metric_counters(now))
        return counters

    async def run(self) -> JobResult:
        """Run every actor to the end; raise :class:`JobFailedError` if one of them fails."""
        started = time.perf_counter()
        try:
            async with anyio.create_task_group() as background:
                self._background = background
                self._scope = background.cancel_scope
                if self.coordinator is not None:
                    try:
                        await self.coordinator.attach(self.actors, background, self.fail)
                    except LockgateError as exc:  # raised below, not wrapped in the task group's
                        self.fail(exc)
                async with anyio.create_task_group() as task_group:
                    for actor in self.actors:
                        task_group.start_soon(self._run_actor, actor, name=repr(actor))
                background.cancel_scope.cancel()  # checkpoints in progress end with the job
        finally:
            self._background = None
            if self.coordinator is not None:
                await detach_coordinator(self.coordinator, failed=self._failure is not None)
        if self._failure is not None:
            raise self._failure
        return JobResult(self.job_name, time.perf_counter() - started, self.channel_statistics())

    @property
    def failed(self) -> bool:
        """Whether the attempt has failed (its actors are ending, or have ended)."""
        return self._failure is not None

    def fail(self, failure: LockgateError) -> None:
        """End the attempt with ``failure`` (the first failure wins; the others follow from it)."""
        if self._failure is None:
            self._failure = failure
        if self._scope is not None:
            self._scope.cancel()

    async def _run_actor(self, actor: SubtaskActor) -> None:
        try:
            # What the subtask logs, and the tasks and worker threads it starts, names it.
            with log_scope(operator_uid=actor.head_uid, subtask=actor.subtask_index):
                await actor.run()
        except Exception as exc:
            if isinstance(exc, OperatorFailure) and exc.__cause__ is not None:
                uid, cause = exc.operator_uid, exc.__cause__
            else:  # not a user function's error: name the chain's head
                uid, cause = actor.head_uid, exc
            self.fail(subtask_failure(self.job_name, uid, actor.subtask_index, actor.parallelism, cause))

    # ---- services for the actors

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``function(*args)`` beside the actors; an error in it fails the attempt."""
        assert self._background is not None
        self._background.start_soon(self._guard, function, args)

    async def _guard(self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await function(*args)
        except Exception as exc:
            if isinstance(exc, OperatorFailure) and exc.__cause__ is not None:
                exc = exc.__cause__  # type: ignore[assignment]
            self.fail(background_failure(exc))

    def actor_finished(self, actor: SubtaskActor) -> None:
        """``actor`` has finished its input. Without checkpointing, once all have, every actor is told
        the job finished; with it, the final checkpoint's completion tells them (see the coordinator)."""
        self._finished += 1
        if self._finished < len(self.actors):
            return
        coordinator = self.coordinator
        if coordinator is not None and coordinator.ends_with_checkpoint:
            coordinator.subtasks_finished()
            return
        for each in self.actors:
            each.post(JOB_FINISHED)

    # ---- building

    def _build(self) -> list[SubtaskActor]:
        # inputs[vertex][subtask]: the channels feeding that subtask; outputs likewise per edge.
        inputs: dict[JobVertex, list[list[tuple[Channel, int]]]] = {
            v: [[] for _ in range(v.parallelism)] for v in self.graph.vertices
        }
        edge_channels: dict[JobEdge, list[list[Channel]]] = {}
        for vertex in self.graph.vertices:
            for edge in vertex.outputs:
                edge_channels[edge] = self._connect(edge, inputs[edge.target])
        actors = []
        for vertex in self.graph.vertices:
            for index in range(vertex.parallelism):
                main: list[EdgeOutput] = []
                side: dict[tuple[str, OutputTag], list[EdgeOutput]] = {}
                for edge in vertex.outputs:
                    output = edge_output(self.graph, self.options, edge, edge_channels[edge][index], index)
                    if edge.side_output is None:
                        main.append(output)
                    else:
                        side.setdefault(edge.side_output, []).append(output)
                router = OutputRouter(main, side)
                actors.append(
                    build_subtask(
                        self, vertex, index, router, inputs[vertex][index], self._request_checkpoint
                    )
                )
        return actors

    def _connect(self, edge: JobEdge, target_inputs: list[list[tuple[Channel, int]]]) -> list[list[Channel]]:
        """Create the channels of ``edge``; return, per producer subtask, its channels in order."""
        source, target = edge.source, edge.target
        per_producer: list[list[Channel]] = []
        for i in range(source.parallelism):
            targets = [i] if isinstance(edge.partitioner, ForwardPartitioner) else range(target.parallelism)
            channels = []
            for j in targets:
                name = f"{source.operators[-1].uid}[{i}]->{target.operators[0].uid}[{j}]"
                channel = Channel(self.options.channel_capacity, name)
                self.channels[name] = channel
                target_inputs[j].append((channel, edge.input_index))
                channels.append(channel)
            per_producer.append(channels)
        return per_producer

    def _request_checkpoint(self) -> anyio.Event:
        if self.coordinator is not None:
            return self.coordinator.request_checkpoint()
        finished = anyio.Event()
        finished.set()
        return finished


def edge_output(
    graph: JobGraph, options: RuntimeOptions, edge: JobEdge, channels: list[Channel], index: int
) -> EdgeOutput:
    """Subtask ``index``'s output along ``edge``, into ``channels`` (its channels of the edge, in
    order of the consumer subtasks)."""
    size = options.batch_size
    partitioner = edge.partitioner
    if isinstance(partitioner, ForwardPartitioner):
        return ForwardOutput(channels, size)
    if isinstance(partitioner, RebalancePartitioner):
        return RebalanceOutput(channels, size, start=index)
    if isinstance(partitioner, BroadcastPartitioner):
        return BroadcastOutput(channels, size)
    if isinstance(partitioner, KeyGroupPartitioner):
        target = edge.target.operators[0].uid
        return KeyGroupOutput(channels, size, partitioner.key_selector, graph.max_parallelism, target)
    raise TypeError(f"unknown partitioner {partitioner!r}")


class SubtaskRuntime(ActorRuntime, Protocol):
    """What building a subtask needs of the attempt it runs in (the local runner, or a Ray worker's
    host of one subtask)."""

    graph: JobGraph
    options: RuntimeOptions
    restored: RestoredState | None
    attempt: int


def build_subtask(
    runtime: SubtaskRuntime,
    vertex: JobVertex,
    index: int,
    output: OutputRouter,
    channels: list[tuple[Channel, int]],
    request_checkpoint: Callable[[], anyio.Event],
) -> SubtaskActor:
    """The actor of subtask ``index`` of ``vertex``: its chain's operators (state restored), sending to
    ``output`` and reading ``channels`` (each with the operator input it feeds), or its source.
    ``request_checkpoint``: what a test's instrumented source reader calls to ask for a checkpoint."""
    graph, options, restored, attempt = runtime.graph, runtime.options, runtime.restored, runtime.attempt
    max_parallelism = graph.max_parallelism
    parallelism = vertex.parallelism
    instrumentation = options.instrumentation
    operators: list[StreamOperator] = []
    backends: list[KeyedStateBackend] = []
    source: SourceTask | None = None
    in_flight: list[tuple[int, InFlightBatch]] = []
    for node in vertex.operators:
        if restored is not None and not isinstance(node, SourceTransformation):
            position = len(operators)  # where in the chain the operator's channel state re-enters
            in_flight += [(position, batch) for batch in restored.in_flight(node.uid, index)]
        backend = None
        if isinstance(node, OperatorTransformation) and node.spec.keyed:
            key_groups = KeyGroupRange.for_subtask(max_parallelism, parallelism, index)
            backend = options.state_backend.create_keyed_backend(node.uid, key_groups, max_parallelism)
            backends.append(backend)
            if restored is not None:
                backend.restore(restored.keyed.get(node.uid, []))
        operator_state = None
        if restored is not None:
            operator_state = restored.operator_state(node.uid, parallelism, index)
        ctx = SubtaskContext(
            node.uid,
            node.name,
            index,
            parallelism,
            max_parallelism,
            backend,
            OperatorStateBackend(node.uid, operator_state),
            checkpointing_mode=runtime.mode,
            attempt=attempt,
            auto_watermark_interval=options.auto_watermark_interval,
        )
        if isinstance(node, SourceTransformation):
            reader = node.source.create_reader(ctx)
            if instrumentation is not None:
                reader = instrumentation.reader(attempt, node.uid, index, reader, request_checkpoint)
            source = SourceTask(node.uid, reader, ctx)
            if node.watermark_strategy is not None:  # the source's timestamps and watermarks
                operators.append(TimestampsAndWatermarksOperator(ctx, node.watermark_strategy))
        else:
            assert isinstance(node, OperatorTransformation)
            operator = create_operator(node.spec, ctx)
            if instrumentation is not None:
                operator = instrumentation.operator(attempt, operator)
            operators.append(operator)
    return SubtaskActor(
        vertex.name,
        vertex.operators[0].uid,
        index,
        parallelism,
        operators,
        output,
        runtime,
        source=source,
        mailbox=Mailbox([channel for channel, _ in channels]),
        channel_inputs=[input_index for _, input_index in channels],
        batch_size=options.batch_size,
        keyed_backends=backends,
        in_flight=in_flight,
    )


def subtask_failure(
    job_name: str, uid: str, index: int, parallelism: int, cause: BaseException
) -> JobFailedError:
    """The failure of an attempt whose subtask ``index`` raised ``cause`` in operator ``uid`` (the one
    that raised, in the chain), logged with its traceback."""
    job_logger(job_name, uid, index).info(
        "operator %r subtask %d (of %d) raised %s: %s",
        uid,
        index,
        parallelism,
        type(cause).__name__,
        cause,
        exc_info=cause,
    )
    return JobFailedError(job_name, uid, index, parallelism, cause)


def background_failure(error: BaseException) -> LockgateError:
    """The failure of an attempt whose task beside the subtasks (a checkpoint's writing) raised
    ``error``: a lockgate error as it is (a state that cannot be serialised fails the job), any other
    as a failed checkpoint (the job restarts)."""
    return error if isinstance(error, LockgateError) else CheckpointError(f"{type(error).__name__}: {error}")


async def detach_coordinator(coordinator: CheckpointCoordinator, *, failed: bool) -> None:
    """An attempt has ended (``failed``, or its subtasks finished): the checkpoints still in progress
    are aborted, quietly if the job simply finished first. Shielded: it runs while the attempt's
    tasks are being cancelled."""
    with anyio.CancelScope(shield=True):
        if failed:
            await coordinator.detach("the job attempt failed")
        else:
            await coordinator.detach("the job finished first", quietly=True)
