"""The logical graph a user builds: transformations, the operators they name, and partitioners."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from lockgate.connectors import Sink, Source
from lockgate.functions import BroadcastProcessFunction, KeyedProcessFunction, MapFunction, ProcessFunction

KeySelector = Callable[[Any], Any]


# ---- partitioners: how records of an edge are spread over the consumer's subtasks


@dataclass(frozen=True)
class ForwardPartitioner:
    """Subtask ``i`` sends to subtask ``i``; needs equal parallelism, and lets operators chain."""

    name: ClassVar[str] = "forward"


@dataclass(frozen=True)
class RebalancePartitioner:
    """Records are spread round-robin over all consumer subtasks."""

    name: ClassVar[str] = "rebalance"


@dataclass(frozen=True)
class BroadcastPartitioner:
    """Every consumer subtask gets every record."""

    name: ClassVar[str] = "broadcast"


@dataclass(frozen=True)
class KeyGroupPartitioner:
    """A record goes to the subtask that owns its key's key group."""

    key_selector: KeySelector
    name: ClassVar[str] = "hash"


Partitioner = ForwardPartitioner | RebalancePartitioner | BroadcastPartitioner | KeyGroupPartitioner


# ---- operator specs: what an operator does, for the runtime to instantiate per subtask


@dataclass(frozen=True)
class MapSpec:
    function: Callable[[Any], Any] | MapFunction[Any, Any]
    kind: ClassVar[str] = "map"


@dataclass(frozen=True)
class FilterSpec:
    function: Callable[[Any], Any]
    kind: ClassVar[str] = "filter"


@dataclass(frozen=True)
class FlatMapSpec:
    function: Callable[[Any], Any]
    kind: ClassVar[str] = "flat_map"


@dataclass(frozen=True)
class ProcessSpec:
    function: ProcessFunction[Any, Any]
    kind: ClassVar[str] = "process"


@dataclass(frozen=True)
class KeyedProcessSpec:
    function: KeyedProcessFunction[Any, Any]
    key_selector: KeySelector
    kind: ClassVar[str] = "keyed_process"


@dataclass(frozen=True)
class KeyedMapSpec:
    """A map on a keyed stream: the current key is set per record, so keyed state is available."""

    function: Callable[[Any], Any] | MapFunction[Any, Any]
    key_selector: KeySelector
    kind: ClassVar[str] = "keyed_map"


@dataclass(frozen=True)
class ReduceSpec:
    function: Callable[[Any, Any], Any]
    key_selector: KeySelector
    kind: ClassVar[str] = "reduce"


@dataclass(frozen=True)
class BroadcastProcessSpec:
    """Two inputs: records (input 0) and broadcast records (input 1) that write broadcast state."""

    function: BroadcastProcessFunction[Any, Any, Any]
    kind: ClassVar[str] = "broadcast_process"


@dataclass(frozen=True)
class SinkSpec:
    sink: Sink
    kind: ClassVar[str] = "sink"


OperatorSpec = (
    MapSpec
    | FilterSpec
    | FlatMapSpec
    | ProcessSpec
    | KeyedProcessSpec
    | KeyedMapSpec
    | ReduceSpec
    | BroadcastProcessSpec
    | SinkSpec
)


# ---- transformations: the nodes of the logical graph


@dataclass(eq=False, kw_only=True)
class Transformation:
    """A node of the logical graph. ``id`` grows with creation, so inputs come before consumers."""

    id: int
    parallelism: int
    inputs: tuple[Transformation, ...] = ()

    @property
    def is_physical(self) -> bool:
        """Whether the node runs as an operator (else it only shapes edges)."""
        return False


@dataclass(eq=False, kw_only=True)
class PhysicalTransformation(Transformation):
    """A node that runs as an operator: a source or an operator with one (logical) input."""

    name: str
    uid: str
    uid_is_explicit: bool

    @property
    def is_physical(self) -> bool:
        return True


@dataclass(eq=False, kw_only=True)
class SourceTransformation(PhysicalTransformation):
    source: Source


@dataclass(eq=False, kw_only=True)
class OperatorTransformation(PhysicalTransformation):
    """An operator; one logical input, or two for a two-input operator (in input order)."""

    spec: OperatorSpec


@dataclass(eq=False, kw_only=True)
class PartitionTransformation(Transformation):
    """Sets how records of its input reach the next operator."""

    partitioner: Partitioner


@dataclass(eq=False, kw_only=True)
class UnionTransformation(Transformation):
    """Merges several streams into one."""
