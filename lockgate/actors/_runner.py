"""The local runner: builds channels, operators and actors from a job graph and runs them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from lockgate._errors import JobFailedError
from lockgate.actors._actor import OperatorFailure, SubtaskActor
from lockgate.actors._context import SubtaskContext
from lockgate.actors._operators import StreamOperator, create_operator, is_keyed
from lockgate.actors._output import (
    BroadcastOutput,
    EdgeOutput,
    ForwardOutput,
    KeyGroupOutput,
    OutputRouter,
    RebalanceOutput,
)
from lockgate.connectors import SourceReader
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
from lockgate.mailbox import Channel, ChannelStatistics, Mailbox
from lockgate.state import KeyedStateBackend, KeyGroupRange, StateBackend


@dataclass(frozen=True)
class RuntimeOptions:
    """How the runtime moves records.

    Attributes:
        batch_size: The most records in one batch.
        channel_capacity: The most batches a channel holds before its producer waits.
        state_backend: Where keyed operators keep live state.
    """

    batch_size: int
    channel_capacity: int
    state_backend: StateBackend


@dataclass(frozen=True)
class JobResult:
    """What a finished job reports.

    Attributes:
        job_name: The name the job ran under.
        duration: Seconds from start to end.
        channels: The final statistics of every channel, by channel name.
    """

    job_name: str
    duration: float
    channels: dict[str, ChannelStatistics] = field(repr=False)


class JobRunner:
    """Runs one job graph once, inside the caller's task, through an anyio task group."""

    def __init__(self, job_name: str, graph: JobGraph, options: RuntimeOptions) -> None:
        self.job_name = job_name
        self.graph = graph
        self.options = options
        self.channels: dict[str, Channel] = {}
        self._failure: JobFailedError | None = None
        # Built before the run, so a bad function fails the call that starts the job.
        self.actors = self._build()

    def channel_statistics(self) -> dict[str, ChannelStatistics]:
        """The statistics of every channel now, by channel name."""
        return {name: channel.statistics() for name, channel in self.channels.items()}

    async def run(self) -> JobResult:
        """Run every actor to the end; raise :class:`JobFailedError` if one of them fails."""
        started = time.perf_counter()
        async with anyio.create_task_group() as task_group:
            for actor in self.actors:
                task_group.start_soon(self._run_actor, actor, task_group.cancel_scope, name=repr(actor))
        if self._failure is not None:
            raise self._failure
        return JobResult(self.job_name, time.perf_counter() - started, self.channel_statistics())

    async def _run_actor(self, actor: SubtaskActor, scope: anyio.CancelScope) -> None:
        try:
            await actor.run()
        except Exception as exc:
            if isinstance(exc, OperatorFailure) and exc.__cause__ is not None:
                uid, cause = exc.operator_uid, exc.__cause__
            else:  # not a user function's error: name the chain's head
                uid, cause = actor.head_uid, exc
            if self._failure is None:  # the first failure is the cause; the others follow from it
                self._failure = JobFailedError(
                    self.job_name, uid, actor.subtask_index, actor.parallelism, cause
                )
            scope.cancel()

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
                outputs = [
                    self._edge_output(edge, edge_channels[edge][index], index) for edge in vertex.outputs
                ]
                actors.append(self._actor(vertex, index, OutputRouter(outputs), inputs[vertex][index]))
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

    def _edge_output(self, edge: JobEdge, channels: list[Channel], index: int) -> EdgeOutput:
        size = self.options.batch_size
        partitioner = edge.partitioner
        if isinstance(partitioner, ForwardPartitioner):
            return ForwardOutput(channels, size)
        if isinstance(partitioner, RebalancePartitioner):
            return RebalanceOutput(channels, size, start=index)
        if isinstance(partitioner, BroadcastPartitioner):
            return BroadcastOutput(channels, size)
        if isinstance(partitioner, KeyGroupPartitioner):
            max_parallelism = self.graph.max_parallelism
            return KeyGroupOutput(channels, size, partitioner.key_selector, max_parallelism)
        raise TypeError(f"unknown partitioner {partitioner!r}")

    def _actor(
        self, vertex: JobVertex, index: int, output: OutputRouter, channels: list[tuple[Channel, int]]
    ) -> SubtaskActor:
        max_parallelism = self.graph.max_parallelism
        operators: list[StreamOperator] = []
        backends: list[KeyedStateBackend] = []
        source: tuple[str, SourceReader] | None = None
        for node in vertex.operators:
            backend = None
            if isinstance(node, OperatorTransformation) and is_keyed(node.spec):
                key_groups = KeyGroupRange.for_subtask(max_parallelism, vertex.parallelism, index)
                backend = self.options.state_backend.create_keyed_backend(
                    node.uid, key_groups, max_parallelism
                )
                backends.append(backend)
            ctx = SubtaskContext(node.uid, node.name, index, vertex.parallelism, max_parallelism, backend)
            if isinstance(node, SourceTransformation):
                source = (node.uid, node.source.create_reader(ctx))
            else:
                assert isinstance(node, OperatorTransformation)
                operators.append(create_operator(node.spec, ctx))
        return SubtaskActor(
            vertex.name,
            vertex.operators[0].uid,
            index,
            vertex.parallelism,
            operators,
            output,
            source=source,
            mailbox=None if source else Mailbox([channel for channel, _ in channels]),
            channel_inputs=[input_index for _, input_index in channels],
            batch_size=self.options.batch_size,
            keyed_backends=backends,
        )
