"""The runtime context of one operator subtask."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from lockgate._config import CheckpointingMode
from lockgate._errors import ConfigurationError
from lockgate.eventtime import TimeDomain
from lockgate.functions import OutputTag, RuntimeContext, TimerService
from lockgate.mailbox import StampedBatch
from lockgate.state import (
    AggregatingState,
    AggregatingStateDescriptor,
    BroadcastState,
    KeyedStateBackend,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    OperatorListState,
    OperatorStateBackend,
    ReducingState,
    ReducingStateDescriptor,
    State,
    ValueState,
    ValueStateDescriptor,
)

T = TypeVar("T")
IN = TypeVar("IN")
OUT = TypeVar("OUT")
S = TypeVar("S", bound=State[Any])


class SubtaskContext(RuntimeContext):
    """The context of one operator subtask: keyed operators carry their keyed state backend, every
    operator its operator state backend.

    Attributes:
        broadcast_writable: Whether broadcast state may be changed through this context (only while
            a broadcast process function handles a broadcast record).
    """

    def __init__(
        self,
        operator_uid: str,
        operator_name: str,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        keyed_backend: KeyedStateBackend | None = None,
        operator_backend: OperatorStateBackend | None = None,
        *,
        checkpointing_mode: CheckpointingMode | None = None,
        attempt: int = 0,
        auto_watermark_interval: int = 200,
    ) -> None:
        self.operator_uid = operator_uid
        self.operator_name = operator_name
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.keyed_backend = keyed_backend
        self.operator_backend = operator_backend or OperatorStateBackend(operator_uid)
        self.broadcast_writable = False
        self.checkpointing_mode = checkpointing_mode
        self.attempt = attempt
        #: The most often, in ms, a watermark generator emits (0: after every batch).
        self.auto_watermark_interval = auto_watermark_interval
        #: The timestamp of the record (or timer) being processed; None without one.
        self.current_timestamp: int | None = None
        #: The domain of the timer being fired; None outside ``on_timer``.
        self.current_domain: TimeDomain | None = None
        #: The operator's timers (keyed operators that use them, from ``open``).
        self.timers: TimerService | None = None
        #: What ``output`` collected since the actor last sent it on, by tag.
        self.side_outputs: dict[OutputTag, StampedBatch] = {}
        #: Asks the subtask's actor to wake the operator at a time (ms since the epoch); the actor sets it.
        self.request_wakeup: Any = _no_wakeups

    def broadcast_side(self) -> SubtaskContext:
        """A context like this one through which broadcast state may be changed."""
        side = copy.copy(self)
        side.broadcast_writable = True
        return side

    @property
    def is_restored(self) -> bool:
        return self.operator_backend.is_restored

    def __repr__(self) -> str:
        return f"<SubtaskContext {self.operator_uid!r} [{self.subtask_index + 1}/{self.parallelism}]>"

    def _require_keyed(self, what: str) -> KeyedStateBackend:
        if self.keyed_backend is None:
            raise ConfigurationError(
                f"{what} needs a keyed stream, but operator {self.operator_uid!r} is not keyed; "
                "apply it after key_by(...)"
            )
        return self.keyed_backend

    def _keyed_state(self, method: str, descriptor: Any, expected: type[Any], state_type: type[S]) -> S:
        backend = self._require_keyed(f"{method}()")
        if not isinstance(descriptor, expected):
            raise TypeError(f"{method}() takes a {expected.__name__}, got {type(descriptor).__qualname__}")
        return backend.create_state(descriptor, state_type)

    def get_state(self, descriptor: ValueStateDescriptor[T]) -> ValueState[T]:
        return self._keyed_state("get_state", descriptor, ValueStateDescriptor, ValueState)

    def get_list_state(self, descriptor: ListStateDescriptor[T]) -> ListState[T] | OperatorListState[T]:
        if self.keyed_backend is None:
            return self.operator_backend.get_list_state(descriptor)
        return self._keyed_state("get_list_state", descriptor, ListStateDescriptor, ListState)

    def get_union_list_state(self, descriptor: ListStateDescriptor[T]) -> OperatorListState[T]:
        return self.operator_backend.get_union_list_state(descriptor)

    def get_broadcast_state(self, descriptor: MapStateDescriptor[T]) -> BroadcastState[Any, T]:
        state = self.operator_backend.get_broadcast_state(descriptor)
        return state if self.broadcast_writable else state.read_only()

    def get_map_state(self, descriptor: MapStateDescriptor[T]) -> MapState[Any, T]:
        return self._keyed_state("get_map_state", descriptor, MapStateDescriptor, MapState)

    def get_reducing_state(self, descriptor: ReducingStateDescriptor[T]) -> ReducingState[T]:
        return self._keyed_state("get_reducing_state", descriptor, ReducingStateDescriptor, ReducingState)

    def get_aggregating_state(
        self, descriptor: AggregatingStateDescriptor[IN, Any, OUT]
    ) -> AggregatingState[IN, OUT]:
        return self._keyed_state(
            "get_aggregating_state", descriptor, AggregatingStateDescriptor, AggregatingState
        )

    def get_current_key(self) -> Any:
        return self._require_keyed("get_current_key()").current_key

    def timestamp(self) -> int | None:
        return self.current_timestamp

    def timer_service(self) -> TimerService:
        backend = self._require_keyed("timer_service()")
        if self.timers is None and not backend.holds_timers:
            backend.timer_queue("event")  # raises: the backend holds no timers, and says what to use
        if self.timers is None:
            raise ConfigurationError(
                f"operator {self.operator_uid!r} has no timers: timer_service() works in the "
                "process functions of keyed streams (key_by(...).process(...))"
            )
        return self.timers

    def time_domain(self) -> TimeDomain | None:
        return self.current_domain

    def output(self, tag: OutputTag, value: Any) -> None:
        if not isinstance(tag, OutputTag):
            raise TypeError(f"output() takes an lg.OutputTag and a value, got {tag!r} as the tag")
        batch = self.side_outputs.get(tag)
        if batch is None:
            batch = self.side_outputs[tag] = StampedBatch((), [])
        batch.append(value)
        batch.timestamps.append(self.current_timestamp)


def _no_wakeups(at: int) -> None:
    raise RuntimeError("this operator runs outside an actor, which could wake it up")
