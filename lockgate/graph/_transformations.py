"""The logical graph a user builds: transformations, the operators they name, and partitioners."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from lockgate.connectors import Sink, Source
from lockgate.eventtime import Evictor, Trigger, WatermarkStrategy, WindowAssigner
from lockgate.functions import (
    BroadcastProcessFunction,
    KeyedProcessFunction,
    MapFunction,
    OutputTag,
    ProcessFunction,
    ProcessWindowFunction,
)
from lockgate.state import AggregateFunction, ValueStateDescriptor

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


class OperatorSpec:
    """What an operator does, for the runtime to instantiate per subtask.

    Each kind of operator is a subclass: a frozen dataclass of what its operator needs (the user's
    function, a key selector, a sink) that declares, as class attributes, what the graph and the
    runtime must know of it. The runtime makes the operator through the factory registered for the
    spec's class (``lockgate.actors._registry.operator_for``), so the graph never imports the runtime.

    Attributes:
        kind: The kind's name, in snake case: generated uids and names start with it.
        keyed: Whether the operator keeps keyed state, and so gets a keyed state backend per subtask
            (its input is a keyed stream).
        may_keep_state: Whether the operator may keep state of any kind: savepoints warn about such
            operators when their uid was generated. Keyed operators keep state.
        is_sink: Whether the operator ends a stream: a job runs the operators that lead to a sink.
    """

    kind: ClassVar[str]
    keyed: ClassVar[bool] = False
    may_keep_state: ClassVar[bool] = True
    is_sink: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Checked as the class is defined, so a spec missing a declaration fails where it is written.
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "kind", None), str):
            raise TypeError(
                f"operator spec {cls.__qualname__} must declare its kind: kind: ClassVar[str] = ..."
            )
        if cls.keyed and not cls.may_keep_state:
            raise TypeError(
                f"operator spec {cls.__qualname__} is keyed, so it keeps state: may_keep_state is True"
            )


@dataclass(frozen=True)
class MapSpec(OperatorSpec):
    function: Callable[[Any], Any] | MapFunction[Any, Any]
    kind: ClassVar[str] = "map"
    may_keep_state: ClassVar[bool] = False


@dataclass(frozen=True)
class FilterSpec(OperatorSpec):
    function: Callable[[Any], Any]
    kind: ClassVar[str] = "filter"
    may_keep_state: ClassVar[bool] = False


@dataclass(frozen=True)
class FlatMapSpec(OperatorSpec):
    function: Callable[[Any], Any]
    kind: ClassVar[str] = "flat_map"
    may_keep_state: ClassVar[bool] = False


@dataclass(frozen=True)
class ProcessSpec(OperatorSpec):
    function: ProcessFunction[Any, Any]
    kind: ClassVar[str] = "process"


@dataclass(frozen=True)
class KeyedProcessSpec(OperatorSpec):
    function: KeyedProcessFunction[Any, Any]
    key_selector: KeySelector
    kind: ClassVar[str] = "keyed_process"
    keyed: ClassVar[bool] = True


@dataclass(frozen=True)
class KeyedMapSpec(OperatorSpec):
    """A map on a keyed stream: the current key is set per record, so keyed state is available."""

    function: Callable[[Any], Any] | MapFunction[Any, Any]
    key_selector: KeySelector
    kind: ClassVar[str] = "keyed_map"
    keyed: ClassVar[bool] = True


@dataclass(frozen=True)
class KeyedMapWithStateSpec(OperatorSpec):
    """A map whose function takes and gives its record's key's value state:
    ``output, new_value = function(record, value)``."""

    function: Callable[[Any, Any], Any]
    key_selector: KeySelector
    state: ValueStateDescriptor[Any]
    kind: ClassVar[str] = "map_with_state"
    keyed: ClassVar[bool] = True


@dataclass(frozen=True)
class ReduceSpec(OperatorSpec):
    function: Callable[[Any, Any], Any]
    key_selector: KeySelector
    kind: ClassVar[str] = "reduce"
    keyed: ClassVar[bool] = True


@dataclass(frozen=True)
class BroadcastProcessSpec(OperatorSpec):
    """Two inputs: records (input 0) and broadcast records (input 1) that write broadcast state."""

    function: BroadcastProcessFunction[Any, Any, Any]
    kind: ClassVar[str] = "broadcast_process"


@dataclass(frozen=True)
class TimestampsAndWatermarksSpec(OperatorSpec):
    """Gives records timestamps and makes watermarks, by a strategy (its state: the last watermark)."""

    strategy: WatermarkStrategy
    kind: ClassVar[str] = "timestamps_watermarks"


@dataclass(frozen=True)
class WindowSpec(OperatorSpec):
    """Keyed windows: an assigner, a trigger (None: the assigner's default), an optional evictor,
    the allowed lateness in ms and the late side output; the contents are pre-aggregated by
    ``reduce_function`` or ``aggregate_function`` (else kept whole), and ``window_function`` (a
    ProcessWindowFunction) makes the results."""

    key_selector: KeySelector
    assigner: WindowAssigner
    trigger: Trigger | None = None
    evictor: Evictor | None = None
    allowed_lateness: int = 0
    late_tag: OutputTag | None = None
    reduce_function: Callable[[Any, Any], Any] | None = None
    aggregate_function: AggregateFunction[Any, Any, Any] | None = None
    window_function: ProcessWindowFunction[Any, Any] | None = None
    kind: ClassVar[str] = "window"
    keyed: ClassVar[bool] = True


@dataclass(frozen=True)
class SinkSpec(OperatorSpec):
    sink: Sink
    kind: ClassVar[str] = "sink"
    is_sink: ClassVar[bool] = True


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
    #: Gives the source's records timestamps and makes its watermarks, per subtask.
    watermark_strategy: WatermarkStrategy | None = None


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


@dataclass(eq=False, kw_only=True)
class SideOutputTransformation(Transformation):
    """The records its input operator emits to side output ``tag`` (``ctx.output(tag, value)``)."""

    tag: OutputTag
