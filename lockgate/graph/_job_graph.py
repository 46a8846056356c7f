"""From the logical graph to the job graph: operators chained into vertices joined by edges."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lockgate._errors import ConfigurationError
from lockgate.functions import OutputTag
from lockgate.graph._transformations import (
    ForwardPartitioner,
    OperatorTransformation,
    Partitioner,
    PartitionTransformation,
    PhysicalTransformation,
    RebalancePartitioner,
    SideOutputTransformation,
    SourceTransformation,
    Transformation,
    UnionTransformation,
)

#: A resolved input of an operator: the operator upstream, the partitioner (None: not set), and the
#: side output it comes from (None: the main output).
_Input = tuple[PhysicalTransformation, Partitioner | None, OutputTag | None]


@dataclass(eq=False)
class JobEdge:
    """Records flow from every subtask of ``source`` to the subtasks of ``target`` by ``partitioner``,
    into the target's input ``input_index`` (0 but for the second input of a two-input operator)."""

    source: JobVertex
    target: JobVertex
    partitioner: Partitioner
    input_index: int = 0
    #: For a side output's edge: the operator of the source chain that emits it, and its tag.
    side_output: tuple[str, OutputTag] | None = None

    def __repr__(self) -> str:
        side = f"[{self.side_output[1].name}]" if self.side_output else ""
        return f"<JobEdge {self.source.name}{side} -{self.partitioner.name}-> {self.target.name}>"


@dataclass(eq=False)
class JobVertex:
    """A chain of operators that runs as one actor per subtask; ``operators[0]`` is the head."""

    index: int
    operators: list[PhysicalTransformation]
    parallelism: int
    inputs: list[JobEdge] = field(default_factory=list)
    outputs: list[JobEdge] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The chain's operator names, joined by ``->``."""
        return " -> ".join(op.name for op in self.operators)

    @property
    def is_source(self) -> bool:
        """Whether the chain starts with a source."""
        return isinstance(self.operators[0], SourceTransformation)

    def __repr__(self) -> str:
        return f"<JobVertex {self.name} [parallelism {self.parallelism}]>"


@dataclass(eq=False)
class JobGraph:
    """Vertices in topological order (every vertex after its inputs)."""

    vertices: list[JobVertex]
    max_parallelism: int

    def __repr__(self) -> str:
        return f"<JobGraph [{len(self.vertices)} vertices: {', '.join(v.name for v in self.vertices)}]>"

    def parallelism_of(self) -> dict[str, int]:
        """The parallelism of every operator, by uid."""
        return {node.uid: vertex.parallelism for vertex in self.vertices for node in vertex.operators}


def _resolve_inputs(
    node: Transformation, partitioner: Partitioner | None = None, tag: OutputTag | None = None
) -> list[_Input]:
    # Walk back through virtual nodes; the partitioner nearest the consumer wins.
    if isinstance(node, PhysicalTransformation):
        return [(node, partitioner, tag)]
    if isinstance(node, PartitionTransformation):
        return _resolve_inputs(node.inputs[0], partitioner or node.partitioner, tag)
    if isinstance(node, UnionTransformation):
        return [edge for source in node.inputs for edge in _resolve_inputs(source, partitioner, tag)]
    if isinstance(node, SideOutputTransformation):
        return _resolve_inputs(node.inputs[0], partitioner, node.tag)
    raise TypeError(f"unknown transformation {node!r}")


def build_job_graph(transformations: Iterable[Transformation], max_parallelism: int) -> JobGraph:
    """Chain and connect the operators that lead to a sink; raise ConfigurationError for a bad graph."""
    sinks = [t for t in transformations if isinstance(t, OperatorTransformation) and t.spec.is_sink]
    if not sinks:
        raise ConfigurationError(
            "the job has no sink, so nothing would be executed; add one, e.g. stream.sink(lg.PrintSink())"
        )

    # The physical operators that lead to a sink, and their resolved input edges.
    inputs: dict[
        PhysicalTransformation, list[tuple[PhysicalTransformation, Partitioner, int, OutputTag | None]]
    ]
    inputs = {}
    pending: list[PhysicalTransformation] = list(sinks)
    while pending:
        node = pending.pop()
        if node in inputs:
            continue
        resolved: list[tuple[PhysicalTransformation, Partitioner, int, OutputTag | None]] = []
        for input_index, logical_input in enumerate(node.inputs):
            for upstream, partitioner, tag in _resolve_inputs(logical_input):
                resolved.append((upstream, _effective(upstream, node, partitioner), input_index, tag))
                pending.append(upstream)
        inputs[node] = resolved
    nodes = sorted(inputs, key=lambda t: t.id)
    outputs: dict[PhysicalTransformation, list[PhysicalTransformation]] = {n: [] for n in nodes}
    for node in nodes:
        for upstream, _, _, _ in inputs[node]:
            outputs[upstream].append(node)

    def chains_into(node: PhysicalTransformation) -> bool:
        # Chain into the single upstream when nothing but a forward edge of equal parallelism joins
        # them, from its main output (a side output's records always go through a channel).
        if len(inputs[node]) != 1:
            return False
        upstream, partitioner, _, tag = inputs[node][0]
        return (
            tag is None
            and isinstance(partitioner, ForwardPartitioner)
            and len(outputs[upstream]) == 1
            and upstream.parallelism == node.parallelism
        )

    vertex_of: dict[PhysicalTransformation, JobVertex] = {}
    vertices: list[JobVertex] = []
    for node in nodes:  # in id order, so a chain's head comes before its members
        if chains_into(node):
            vertex = vertex_of[inputs[node][0][0]]
            vertex.operators.append(node)
        else:
            vertex = JobVertex(len(vertices), [node], node.parallelism)
            vertices.append(vertex)
        vertex_of[node] = vertex
    for vertex in vertices:
        head = vertex.operators[0]
        for upstream, partitioner, input_index, tag in inputs[head]:
            side = None if tag is None else (upstream.uid, tag)
            edge = JobEdge(vertex_of[upstream], vertex, partitioner, input_index, side)
            vertex.inputs.append(edge)
            edge.source.outputs.append(edge)
    return JobGraph(vertices, max_parallelism)


def _effective(
    upstream: PhysicalTransformation, node: PhysicalTransformation, partitioner: Partitioner | None
) -> Partitioner:
    if partitioner is None:
        same = upstream.parallelism == node.parallelism
        return ForwardPartitioner() if same else RebalancePartitioner()
    if isinstance(partitioner, ForwardPartitioner) and upstream.parallelism != node.parallelism:
        raise ConfigurationError(
            f"forward() joins {upstream.name!r} (parallelism {upstream.parallelism}) to {node.name!r} "
            f"(parallelism {node.parallelism}): forward needs equal parallelism; use rebalance() "
            "or give both operators the same parallelism"
        )
    return partitioner
