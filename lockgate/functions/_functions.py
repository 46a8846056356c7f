"""The base classes of user functions and the context the runtime hands them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, Protocol, TypeVar

from lockgate._config import CheckpointingMode
from lockgate.eventtime import TimeDomain
from lockgate.state import (
    AggregatingState,
    AggregatingStateDescriptor,
    BroadcastState,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    OperatorListState,
    ReducingState,
    ReducingStateDescriptor,
    ValueState,
    ValueStateDescriptor,
)

IN = TypeVar("IN")
IN2 = TypeVar("IN2")
OUT = TypeVar("OUT")
T = TypeVar("T")


class OutputTag:
    """Names a side output: ``ctx.output(tag, value)`` in a function, ``stream.get_side_output(tag)``
    after it. Tags are equal when their names are."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"an OutputTag needs a non-empty str name, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"OutputTag({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("output-tag", self.name))


class TimerService(ABC):
    """Time and timers of a keyed function (``ctx.timer_service()``), for the current key.

    Timestamps are ints, milliseconds since the epoch. A key holds at most one timer per timestamp
    and domain: registering it again does nothing. Timers are keyed state: checkpointed, restored
    and rescaled with their keys.
    """

    @abstractmethod
    def current_watermark(self) -> int:
        """The operator's event time: the minimum of its inputs' watermarks (idle inputs left out)."""

    @abstractmethod
    def current_processing_time(self) -> int:
        """The wall clock, in ms since the epoch."""

    @abstractmethod
    def register_event_time_timer(self, timestamp: int) -> None:
        """Call ``on_timer(timestamp, ctx)`` for the current key once the watermark reaches ``timestamp``."""

    @abstractmethod
    def register_processing_time_timer(self, timestamp: int) -> None:
        """Call ``on_timer(timestamp, ctx)`` for the current key once the clock reaches ``timestamp``."""

    @abstractmethod
    def delete_event_time_timer(self, timestamp: int) -> None:
        """Drop the current key's event-time timer at ``timestamp`` (nothing if there is none)."""

    @abstractmethod
    def delete_processing_time_timer(self, timestamp: int) -> None:
        """Drop the current key's processing-time timer at ``timestamp`` (nothing if there is none)."""


class RuntimeContext(ABC):
    """What a function sees of the subtask that runs it.

    The same object is handed to ``open()`` and to every ``process_element()`` call of a subtask.

    Attributes:
        operator_uid: The operator's uid (explicit, or derived from its place in the graph).
        operator_name: The operator's display name.
        subtask_index: This subtask's index, from 0.
        parallelism: The operator's number of subtasks.
        max_parallelism: The job's number of key groups.
        checkpointing_mode: The job's :class:`CheckpointingMode`, or None without checkpointing.
        attempt: How many times the job has restarted before this run of the subtask (0 at first).
    """

    operator_uid: str
    operator_name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int
    checkpointing_mode: CheckpointingMode | None = None
    attempt: int = 0

    @abstractmethod
    def get_state(self, descriptor: ValueStateDescriptor[T]) -> ValueState[T]:
        """The keyed :class:`ValueState` that ``descriptor`` declares (keyed streams only)."""

    @abstractmethod
    def get_list_state(self, descriptor: ListStateDescriptor[T]) -> ListState[T] | OperatorListState[T]:
        """The :class:`ListState` that ``descriptor`` declares: keyed state on a keyed stream, else
        operator list state (split evenly over the subtasks when the job is rescaled)."""

    @abstractmethod
    def get_union_list_state(self, descriptor: ListStateDescriptor[T]) -> OperatorListState[T]:
        """Operator list state that every subtask gets whole on restore (non-keyed functions)."""

    @abstractmethod
    def get_broadcast_state(self, descriptor: MapStateDescriptor[T]) -> BroadcastState[Any, T]:
        """The broadcast state of a broadcast process function; read-only in ``process_element``."""

    @property
    @abstractmethod
    def is_restored(self) -> bool:
        """Whether the subtask's state was restored from a snapshot."""

    @abstractmethod
    def get_map_state(self, descriptor: MapStateDescriptor[T]) -> MapState[Any, T]:
        """The keyed :class:`MapState` that ``descriptor`` declares (keyed streams only)."""

    @abstractmethod
    def get_reducing_state(self, descriptor: ReducingStateDescriptor[T]) -> ReducingState[T]:
        """The keyed :class:`ReducingState` that ``descriptor`` declares (keyed streams only)."""

    @abstractmethod
    def get_aggregating_state(
        self, descriptor: AggregatingStateDescriptor[IN, Any, OUT]
    ) -> AggregatingState[IN, OUT]:
        """The keyed :class:`AggregatingState` that ``descriptor`` declares (keyed streams only)."""

    @abstractmethod
    def get_current_key(self) -> Any:
        """The key of the record being processed (keyed streams only)."""

    @abstractmethod
    def timestamp(self) -> int | None:
        """The timestamp of the record being processed (in ``on_timer``, the timer's), or None if it
        has none."""

    @abstractmethod
    def timer_service(self) -> TimerService:
        """Time and timers for the current key (keyed process functions only)."""

    @abstractmethod
    def time_domain(self) -> TimeDomain | None:
        """In ``on_timer``: the domain of the timer that fired; None elsewhere."""

    @abstractmethod
    def output(self, tag: OutputTag, value: Any) -> None:
        """Emit ``value`` to the side output ``tag`` (read with ``stream.get_side_output(tag)``)."""


class KeyedProcessFunction(ABC, Generic[IN, OUT]):
    """A function of a keyed stream, with keyed state.

    Implement ``process_element(value, ctx)`` in one of these forms; each record's outputs are what it
    yields (or returns):

    - ``async def`` with ``yield``: may ``await`` anything, state included (the PyFlink form);
    - ``def`` with ``yield``, or a ``def`` that returns an iterable of outputs or None: the fast form.
      It reaches state through the ``*_nowait`` methods of state objects, which work on every local backend.

    State objects are created in :meth:`open` with ``ctx.get_state(...)``; they act on the key of the
    record being processed. Each subtask works on its own copy of the function object.
    """

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per subtask before the first record: declare state here."""

    @abstractmethod
    def process_element(self, value: IN, ctx: RuntimeContext) -> AsyncIterator[OUT] | Iterable[OUT] | None:
        """Process one record of the current key; yield (or return) its outputs."""

    def on_timer(self, timestamp: int, ctx: RuntimeContext) -> AsyncIterator[OUT] | Iterable[OUT] | None:
        """A timer of the current key fired (``ctx.time_domain()`` says which clock); yield (or return)
        outputs, in any form ``process_element`` may take. Event-time outputs carry the timer's
        timestamp."""
        return None

    def close(self) -> None:
        """Called once per subtask when it ends, however it ends."""


class MapFunction(ABC, Generic[IN, OUT]):
    """A map function with a life cycle: ``open`` once per subtask, ``map`` per record, ``close``.

    On a keyed stream (``keyed.map(fn)``) it may use keyed state, declared in ``open``, and it is
    the fastest form for keyed hot paths: one output per record, no generator. ``map`` may be an
    ``async def``; with a plain ``def`` it reaches state through the ``*_nowait`` methods of state objects.
    Each subtask works on its own copy of the function object.
    """

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per subtask before the first record: declare state here."""

    @abstractmethod
    def map(self, value: IN) -> OUT:
        """The output of one record."""

    def close(self) -> None:
        """Called once per subtask when it ends, however it ends."""


class CheckpointedFunction:
    """Hooks of functions that keep operator state.

    ``initialize_state`` runs once per subtask before ``open``: declare operator state there
    (``ctx.get_list_state``, ``ctx.get_union_list_state``) and read what was restored
    (``ctx.is_restored``). ``snapshot_state`` runs when a snapshot is taken: move what the function
    keeps in plain attributes into its operator state.
    """

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Declare operator state and read its restored contents."""

    def snapshot_state(self, ctx: RuntimeContext) -> None:
        """Bring operator state up to date for the snapshot being taken."""


class ProcessFunction(CheckpointedFunction, ABC, Generic[IN, OUT]):
    """A function of a non-keyed stream. ``process_element`` takes the same forms as in
    :class:`KeyedProcessFunction`; keyed state is not available here, operator state is."""

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per subtask before the first record."""

    @abstractmethod
    def process_element(self, value: IN, ctx: RuntimeContext) -> AsyncIterator[OUT] | Iterable[OUT] | None:
        """Process one record; yield (or return) its outputs."""

    def close(self) -> None:
        """Called once per subtask when it ends, however it ends."""


class BroadcastProcessFunction(CheckpointedFunction, ABC, Generic[IN, IN2, OUT]):
    """The broadcast state pattern: ``stream.connect(rules).process(fn)``.

    Every subtask sees every record of the broadcast input (``process_broadcast_element``), where it
    may change broadcast state; records of the other input (``process_element``) read it only, so
    all subtasks keep the same broadcast state. Both reach it with
    ``ctx.get_broadcast_state(descriptor)``, and both take the forms of
    :meth:`KeyedProcessFunction.process_element`.
    """

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per subtask before the first record."""

    @abstractmethod
    def process_element(self, value: IN, ctx: RuntimeContext) -> AsyncIterator[OUT] | Iterable[OUT] | None:
        """Process one record; broadcast state is read-only here."""

    @abstractmethod
    def process_broadcast_element(
        self, value: IN2, ctx: RuntimeContext
    ) -> AsyncIterator[OUT] | Iterable[OUT] | None:
        """Process one broadcast record; broadcast state is writable here."""

    def close(self) -> None:
        """Called once per subtask when it ends, however it ends."""


class KeyedStateStore(Protocol):
    """Where a window function reaches keyed state: of the current window, or of the key."""

    def get_state(self, descriptor: ValueStateDescriptor[T]) -> ValueState[T]: ...

    def get_list_state(self, descriptor: ListStateDescriptor[T]) -> ListState[T]: ...

    def get_map_state(self, descriptor: MapStateDescriptor[T]) -> MapState[Any, T]: ...

    def get_reducing_state(self, descriptor: ReducingStateDescriptor[T]) -> ReducingState[T]: ...

    def get_aggregating_state(
        self, descriptor: AggregatingStateDescriptor[IN, Any, OUT]
    ) -> AggregatingState[IN, OUT]: ...


class WindowContext(ABC):
    """What a :class:`ProcessWindowFunction` sees of the window it is called for.

    Attributes:
        window: The window: an ``lg.TimeWindow(start, end)`` or the ``lg.GlobalWindow``.
    """

    window: Any

    @abstractmethod
    def current_watermark(self) -> int:
        """The operator's event time."""

    @abstractmethod
    def current_processing_time(self) -> int:
        """The wall clock, in ms since the epoch."""

    @abstractmethod
    def window_state(self) -> KeyedStateStore:
        """State of the current key and this window (cleared with :meth:`ProcessWindowFunction.clear`)."""

    @abstractmethod
    def global_state(self) -> KeyedStateStore:
        """State of the current key, shared by all its windows."""

    @abstractmethod
    def output(self, tag: OutputTag, value: Any) -> None:
        """Emit ``value`` to the side output ``tag``."""


class ProcessWindowFunction(ABC, Generic[IN, OUT]):
    """Computes a window's results from all its elements (or from the pre-aggregated result of
    ``reduce``/``aggregate`` with ``window_function=``): ``process(key, context, elements)`` yields
    them, in any form ``KeyedProcessFunction.process_element`` may take. Results carry the timestamp
    ``context.window.max_timestamp()``. Each subtask works on its own copy."""

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per subtask before the first window."""

    @abstractmethod
    def process(
        self, key: Any, context: WindowContext, elements: list[IN]
    ) -> AsyncIterator[OUT] | Iterable[OUT] | None:
        """The results of one firing of ``context.window`` for ``key``."""

    def clear(self, context: WindowContext) -> Any:
        """The window is gone (its time and allowed lateness passed): clear its window state."""

    def close(self) -> None:
        """Called once per subtask when it ends, however it ends."""
