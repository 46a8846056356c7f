"""Streams: the user-facing builders of the logical graph."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from lockgate._errors import ConfigurationError
from lockgate.api._windowed import WindowedStream
from lockgate.connectors import CollectSink, Sink
from lockgate.eventtime import (
    CountEvictor,
    CountTrigger,
    GlobalWindows,
    PurgingTrigger,
    WatermarkStrategy,
    WindowAssigner,
)
from lockgate.functions import (
    BroadcastProcessFunction,
    KeyedProcessFunction,
    MapFunction,
    OutputTag,
    ProcessFunction,
)
from lockgate.graph import (
    BroadcastPartitioner,
    BroadcastProcessSpec,
    FilterSpec,
    FlatMapSpec,
    ForwardPartitioner,
    KeyedMapSpec,
    KeyedMapWithStateSpec,
    KeyedProcessSpec,
    KeyGroupPartitioner,
    KeySelector,
    MapSpec,
    OperatorSpec,
    OperatorTransformation,
    Partitioner,
    PartitionTransformation,
    ProcessSpec,
    RebalancePartitioner,
    ReduceSpec,
    SideOutputTransformation,
    SinkSpec,
    TimestampsAndWatermarksSpec,
    Transformation,
    UnionTransformation,
)
from lockgate.state import ValueStateDescriptor

if TYPE_CHECKING:
    from lockgate.api._environment import StreamEnvironment

S = TypeVar("S", bound=Sink)


def _require_function(method: str, fn: object, example: str) -> None:
    if not callable(fn):
        raise ConfigurationError(f"{method}() needs a function, got {fn!r}; for example {example}")


def _require_instance(method: str, function: object, base: type) -> None:
    if isinstance(function, type):
        raise ConfigurationError(
            f"{method}() needs an instance of {base.__name__}, got the class {function.__qualname__}; "
            f"pass {function.__qualname__}() instead"
        )
    if not isinstance(function, base):
        raise ConfigurationError(
            f"{method}() needs an instance of a {base.__name__} subclass, got {function!r}"
        )


class DataStream:
    """A stream of records. Each method adds an operator and returns the stream it produces.

    Every operator method takes ``uid=`` (its stable name in checkpoints, unique in the job),
    ``name=`` (its display name) and ``parallelism=`` (its number of subtasks).
    """

    def __init__(self, env: StreamEnvironment, node: Transformation) -> None:
        self.env = env
        self._node = node

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {getattr(self._node, 'uid', type(self._node).__name__)}>"

    @property
    def parallelism(self) -> int:
        """The parallelism of the operator that produces this stream."""
        return self._node.parallelism

    def _apply(
        self,
        spec: OperatorSpec,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
        inputs: tuple[Transformation, ...] | None = None,
    ) -> DataStream:
        """The stream out of a new operator that runs ``spec`` on this stream (on ``inputs``, in input
        order, for an operator of several inputs). Every operator method ends here, and so can an
        operator kind that has no method yet: its spec only needs an operator registered for it."""
        env = self.env
        parallelism = env._check_parallelism(parallelism, name or uid or spec.kind)
        node = OperatorTransformation(
            id=env._next_id(),
            parallelism=parallelism,
            inputs=inputs or (self._node,),
            spec=spec,
            **env._naming(spec.kind, uid, name),
        )
        return DataStream(env, env._add(node))

    def _partitioned(self, partitioner: Partitioner) -> DataStream:
        node = PartitionTransformation(
            id=self.env._next_id(),
            parallelism=self._node.parallelism,
            inputs=(self._node,),
            partitioner=partitioner,
        )
        return DataStream(self.env, self.env._add(node))

    # ---- record-at-a-time functions

    def map(
        self,
        fn: Callable[[Any], Any] | MapFunction[Any, Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Each record becomes ``fn(record)``; ``fn`` is a ``def``, an ``async def`` or a
        :class:`MapFunction` (whose ``map`` is called)."""
        if not isinstance(fn, MapFunction):
            _require_function("map", fn, "map(lambda r: r * 2)")
        return self._apply(MapSpec(fn), uid, name, parallelism)

    def filter(
        self,
        fn: Callable[[Any], Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Keep the records for which ``fn(record)`` is true; ``fn`` may be ``async def``."""
        _require_function("filter", fn, "filter(lambda r: r > 0)")
        return self._apply(FilterSpec(fn), uid, name, parallelism)

    def flat_map(
        self,
        fn: Callable[[Any], Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Each record becomes what ``fn(record)`` yields or returns (an iterable, or None).

        ``fn`` may be a generator, an async generator, or a ``def``/``async def`` returning an iterable.
        """
        _require_function("flat_map", fn, "flat_map(str.split)")
        return self._apply(FlatMapSpec(fn), uid, name, parallelism)

    def process(
        self,
        function: ProcessFunction[Any, Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Run a :class:`ProcessFunction` on every record (no keyed state; see KeyedStream.process)."""
        _require_instance("process", function, ProcessFunction)
        return self._apply(ProcessSpec(function), uid, name, parallelism)

    # ---- event time

    def assign_timestamps_and_watermarks(
        self,
        strategy: WatermarkStrategy,
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Give records timestamps and emit watermarks by ``strategy``, here rather than at the
        source; watermarks from upstream stop here. Prefer the source's ``watermark_strategy=``:
        watermarks made per source subtask see every record in its order."""
        if not isinstance(strategy, WatermarkStrategy):
            raise ConfigurationError(
                "assign_timestamps_and_watermarks() takes an lg.WatermarkStrategy, such as "
                "lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(...), "
                f"got {strategy!r}"
            )
        return self._apply(TimestampsAndWatermarksSpec(strategy), uid, name, parallelism)

    def get_side_output(self, tag: OutputTag) -> DataStream:
        """The records the operator of this stream emits to side output ``tag``
        (``ctx.output(tag, value)``; late records of a window with ``side_output_late_data``)."""
        if not isinstance(tag, OutputTag):
            raise ConfigurationError(f"get_side_output() takes an lg.OutputTag, got {tag!r}")
        node = self._node
        if not isinstance(node, OperatorTransformation):
            raise ConfigurationError(
                f"get_side_output() needs the stream out of an operator, not {self!r}; call it on "
                "what process(...) or a window function returned"
            )
        side = SideOutputTransformation(
            id=self.env._next_id(), parallelism=node.parallelism, inputs=(node,), tag=tag
        )
        return DataStream(self.env, self.env._add(side))

    # ---- partitioning

    def key_by(self, key_selector: KeySelector) -> KeyedStream:
        """Partition by key: records of one key go to one subtask, in order, with their keyed state.

        ``key_selector(record)`` returns the key: None, bool, int, float, str, bytes, a tuple of these
        or a dataclass instance.
        """
        _require_function("key_by", key_selector, "key_by(lambda r: r[0])")
        stream = self._partitioned(KeyGroupPartitioner(key_selector))
        return KeyedStream(self.env, stream._node, key_selector)

    def rebalance(self) -> DataStream:
        """Spread records round-robin over the next operator's subtasks."""
        return self._partitioned(RebalancePartitioner())

    def broadcast(self) -> DataStream:
        """Send every record to every subtask of the next operator."""
        return self._partitioned(BroadcastPartitioner())

    def forward(self) -> DataStream:
        """Send subtask i's records to subtask i of the next operator (equal parallelism only)."""
        return self._partitioned(ForwardPartitioner())

    def union(self, *others: DataStream) -> DataStream:
        """One stream of the records of this stream and ``others``."""
        if not others:
            raise ConfigurationError("union() needs at least one other stream")
        for other in others:
            if not isinstance(other, DataStream):
                raise ConfigurationError(f"union() takes streams, got {other!r}")
            if other.env is not self.env:
                raise ConfigurationError("union() cannot join streams of different environments")
        nodes = (self._node, *(other._node for other in others))
        node = UnionTransformation(id=self.env._next_id(), parallelism=self._node.parallelism, inputs=nodes)
        return DataStream(self.env, self.env._add(node))

    def connect(self, broadcast_stream: DataStream) -> BroadcastConnectedStream:
        """Join this stream with ``broadcast_stream`` for the broadcast state pattern.

        Every subtask of the next operator gets every record of ``broadcast_stream`` (it is
        broadcast if it was not already); continue with ``.process(BroadcastProcessFunction)``.
        """
        if not isinstance(broadcast_stream, DataStream):
            raise ConfigurationError(f"connect() takes a stream, got {broadcast_stream!r}")
        if broadcast_stream.env is not self.env:
            raise ConfigurationError("connect() cannot join streams of different environments")
        node = broadcast_stream._node
        if not (
            isinstance(node, PartitionTransformation) and isinstance(node.partitioner, BroadcastPartitioner)
        ):
            broadcast_stream = broadcast_stream.broadcast()
        return BroadcastConnectedStream(self, broadcast_stream)

    # ---- sinks

    def sink(
        self,
        sink: S,
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> S:
        """Write the stream to ``sink``; returns the sink: ``out = s.sink(lg.CollectSink())``."""
        _require_instance("sink", sink, Sink)
        self._apply(SinkSpec(sink), uid, name, parallelism)
        return sink

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for record in stream``: run the stream's job in batch (its sources must end) and
        hand out what reaches this stream, once the job has finished. What a savepoint can be
        bootstrapped from (``SavepointWriter.with_keyed_state``), among other uses."""
        return self._collected()

    async def _collected(self) -> AsyncIterator[Any]:
        sink: CollectSink[Any] = self.sink(CollectSink(), uid=f"_collect-{self.env._next_id()}")
        await self.env.execute(f"collecting {self!r}")
        for record in sink.results:
            yield record


class KeyedStream(DataStream):
    """A stream partitioned by key (see :meth:`DataStream.key_by`)."""

    def __init__(self, env: StreamEnvironment, node: Transformation, key_selector: KeySelector) -> None:
        super().__init__(env, node)
        self.key_selector = key_selector

    def process(  # type: ignore[override]
        self,
        function: KeyedProcessFunction[Any, Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Run a :class:`KeyedProcessFunction`, with keyed state, on every record."""
        _require_instance("process", function, KeyedProcessFunction)
        spec = KeyedProcessSpec(function, self.key_selector)
        return self._apply(spec, uid, name, parallelism)

    def map(
        self,
        fn: Callable[[Any], Any] | MapFunction[Any, Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Each record becomes ``fn(record)``, with the record's key current: a
        :class:`MapFunction` may use keyed state (declared in ``open``). The fastest keyed form."""
        if not isinstance(fn, MapFunction):
            _require_function("map", fn, "map(lambda r: r * 2)")
        spec = KeyedMapSpec(fn, self.key_selector)
        return self._apply(spec, uid, name, parallelism)

    def map_with_state(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        state: ValueStateDescriptor[Any] | None = None,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Each record becomes an output of ``output, new_value = fn(record, value)``, where ``value``
        is the record's key's value state (the descriptor's default while the key has none) and
        ``new_value`` its next value (None clears it). ``state`` names the state (in savepoints, for
        queries, with its serializer and TTL); by default ``ValueStateDescriptor("state")``.

        The fastest keyed form: the runtime reads and writes the state around each call, so ``fn`` is
        one plain call per record (a running sum: ``lambda r, total: ((r[0], total + r[1]),
        total + r[1])`` with ``state=lg.ValueStateDescriptor("total", default=0)``). ``fn`` may be an
        ``async def``."""
        _require_function("map_with_state", fn, "map_with_state(lambda r, seen: (r, (seen or 0) + 1))")
        if state is None:
            state = ValueStateDescriptor[Any]("state")
        elif not isinstance(state, ValueStateDescriptor):
            raise ConfigurationError(
                f"map_with_state() keeps a value state: state= takes a ValueStateDescriptor, got {state!r}"
            )
        spec = KeyedMapWithStateSpec(fn, self.key_selector, state)
        return self._apply(spec, uid, name, parallelism)

    def reduce(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Per key, emit ``fn(previous_result, record)`` for every record (the first passes as is)."""
        _require_function("reduce", fn, "reduce(lambda a, b: (a[0], a[1] + b[1]))")
        spec = ReduceSpec(fn, self.key_selector)
        return self._apply(spec, uid, name, parallelism)

    def sum(
        self,
        field: int | str | None = None,
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """A running sum per key of ``field``: a tuple or list index, a dataclass field or dict key.

        With no ``field`` the records themselves are the numbers summed.
        """
        return self.reduce(_summer(field), uid=uid, name=name or "sum", parallelism=parallelism)

    # ---- windows

    def window(self, assigner: WindowAssigner) -> WindowedStream:
        """Cut each key's records into the windows ``assigner`` gives (``lg.TumblingEventTimeWindows``,
        ``lg.SlidingEventTimeWindows``, ``lg.EventTimeSessionWindows``, their processing-time twins,
        ``lg.GlobalWindows``); end with ``reduce``, ``aggregate`` or ``process``."""
        if isinstance(assigner, type) or not isinstance(assigner, WindowAssigner):
            raise ConfigurationError(
                "window() takes a window assigner such as "
                f"lg.TumblingEventTimeWindows.of(timedelta(minutes=1)), got {assigner!r}"
            )
        return WindowedStream(self, assigner)

    def count_window(self, size: int, slide: int | None = None) -> WindowedStream:
        """Windows of ``size`` records per key: one after the other, or every ``slide`` records the
        last ``size`` of them."""
        for what, count in (("size", size), ("slide", slide)):
            if count is not None and (type(count) is not int or count < 1):
                raise ConfigurationError(f"count_window() takes a {what} of at least 1, got {count!r}")
        windowed = WindowedStream(self, GlobalWindows.create())
        if slide is None:
            return windowed.trigger(PurgingTrigger.of(CountTrigger.of(size)))
        return windowed.evictor(CountEvictor.of(size)).trigger(CountTrigger.of(slide))


def _summer(field: int | str | None) -> Callable[[Any, Any], Any]:
    if field is None:
        return lambda total, value: total + value
    if not isinstance(field, int | str):
        raise ConfigurationError(f"sum() takes an index or field name, got {field!r}")

    def add(total: Any, value: Any) -> Any:
        if isinstance(total, tuple | list) and isinstance(field, int):
            summed = list(total)
            summed[field] = total[field] + value[field]
            return type(total)(summed) if type(total) in (tuple, list) else type(total)(*summed)
        if isinstance(total, dict):
            return {**total, field: total[field] + value[field]}
        if dataclasses.is_dataclass(total) and isinstance(field, str):
            summed_field = getattr(total, field) + getattr(value, field)
            return dataclasses.replace(total, **{field: summed_field})  # type: ignore[type-var]
        raise TypeError(f"sum({field!r}) cannot read that field of a {type(total).__qualname__}")

    return add


class BroadcastConnectedStream:
    """A stream joined with a broadcast stream (see :meth:`DataStream.connect`)."""

    def __init__(self, stream: DataStream, broadcast_stream: DataStream) -> None:
        self.stream = stream
        self.broadcast_stream = broadcast_stream

    def process(
        self,
        function: BroadcastProcessFunction[Any, Any, Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Run a :class:`BroadcastProcessFunction` over both inputs."""
        _require_instance("process", function, BroadcastProcessFunction)
        stream = self.stream
        inputs = (stream._node, self.broadcast_stream._node)
        return stream._apply(BroadcastProcessSpec(function), uid, name, parallelism, inputs)
