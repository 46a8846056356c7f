"""Windows from the outside: whole jobs compared with a plain-Python model of Flink's window
semantics (tests/windows_reference.py), for any stream, lateness, parallelism and assigner."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from tests.windows_reference import Assigner, run_model

pytestmark = pytest.mark.anyio

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Each job runs in milliseconds: many examples find the boundary cases (a watermark exactly at a
# window's end or cleanup time).
THOROUGH = settings(FAST, max_examples=200)


class Contents(lg.ProcessWindowFunction[Any, Any]):
    """Emits (key, start, end, sorted values) per firing."""

    async def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
        yield (key, context.window.start, context.window.end, tuple(sorted(v[2] for v in elements)))


def assigner_of(model: Assigner) -> lg.WindowAssigner:
    size = timedelta(milliseconds=model.size)
    if model.kind == "tumbling":
        return lg.TumblingEventTimeWindows.of(size)
    if model.kind == "sliding":
        return lg.SlidingEventTimeWindows.of(size, timedelta(milliseconds=model.slide))
    return lg.EventTimeSessionWindows.with_gap(size)


assigners = st.one_of(
    st.builds(Assigner, st.just("tumbling"), st.integers(1, 40)),
    # sizes a multiple of the slide (records meet in panes) and any others
    st.integers(1, 10).flatmap(
        lambda slide: st.builds(
            Assigner, st.just("sliding"), st.integers(1, 4).map(lambda n: n * slide), st.just(slide)
        )
    ),
    st.builds(Assigner, st.just("sliding"), st.integers(2, 30), st.integers(1, 10)),
    st.builds(Assigner, st.just("session"), st.integers(1, 30)),
)


def job(
    records: list[tuple[Any, int, int]],
    assigner: lg.WindowAssigner,
    *,
    lateness: int,
    bound: int,
    batch_size: int,
    parallelism: int,
) -> tuple[lg.StreamEnvironment, lg.CollectSink, lg.CollectSink]:
    env = lg.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    env.config.auto_watermark_interval = 0  # a watermark after every batch, as the model has it
    late = lg.OutputTag("late")
    strategy = lg.WatermarkStrategy.for_bounded_out_of_orderness(
        timedelta(milliseconds=bound)
    ).with_timestamp_assigner(lambda record, previous: record[1])
    windows = (
        env.from_collection(records, uid="src", parallelism=1, watermark_strategy=strategy)
        .key_by(lambda r: r[0])
        .window(assigner)
        .allowed_lateness(timedelta(milliseconds=lateness))
        .side_output_late_data(late)
        .process(Contents(), uid="windows")
    )
    fired = windows.sink(lg.CollectSink(), uid="fired")
    lates = windows.get_side_output(late).map(lambda r: (r[0], r[2])).sink(lg.CollectSink(), uid="late")
    return env, fired, lates


@THOROUGH
@given(
    stream=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 120)), max_size=60),
    assigner=assigners,
    lateness=st.sampled_from([0, 5, 30]),
    bound=st.integers(0, 20),
    batch_size=st.sampled_from([1, 3, 50]),
    parallelism=st.integers(1, 4),
)
async def test_windows_equal_the_model_and_late_records_go_to_the_side_output(
    stream: list[tuple[str, int]],
    assigner: Assigner,
    lateness: int,
    bound: int,
    batch_size: int,
    parallelism: int,
) -> None:
    records = [(key, ts, position) for position, (key, ts) in enumerate(stream)]
    env, fired, lates = job(
        records,
        assigner_of(assigner),
        lateness=lateness,
        bound=bound,
        batch_size=batch_size,
        parallelism=parallelism,
    )
    await env.execute("windows")
    model = run_model(records, assigner, lateness, bound, batch_size)
    assert Counter(fired.results) == Counter(model.fired)
    assert sorted(lates.results) == sorted(model.late)


class Count(lg.AggregateFunction[Any, int, int]):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


class WithWindow(lg.ProcessWindowFunction[Any, Any]):
    def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
        return [(key, context.window.start, elements[0])]


@pytest.mark.parametrize("kind", ["reduce", "aggregate", "reduce+function", "aggregate+function"])
async def test_pre_aggregated_windows(kind: str) -> None:
    env = lg.StreamEnvironment(parallelism=2)
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1])
    records = [("a", ts, 1) for ts in range(0, 25)] + [("b", ts, 2) for ts in range(5, 12)]
    records.sort(key=lambda r: r[1])
    windowed = (
        env.from_collection(records, watermark_strategy=strategy)
        .key_by(lambda r: r[0])
        .window(lg.TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
    )
    function = WithWindow() if kind.endswith("+function") else None
    if kind.startswith("reduce"):
        stream = windowed.reduce(lambda a, b: (a[0], max(a[1], b[1]), a[2] + b[2]), function, uid="w")
    else:
        stream = windowed.aggregate(Count(), function, uid="w")
    out = stream.process(Stamped()).sink(lg.CollectSink())
    await env.execute("pre-aggregated")
    if kind == "reduce":
        expected = [
            (("a", 9, 10), 9),
            (("a", 19, 10), 19),
            (("a", 24, 5), 29),
            (("b", 9, 10), 9),
            (("b", 11, 4), 19),
        ]
    elif kind == "aggregate":
        expected = [(10, 9), (10, 19), (5, 29), (5, 9), (2, 19)]
    elif kind == "reduce+function":
        expected = [
            (("a", 0, ("a", 9, 10)), 9),
            (("a", 10, ("a", 19, 10)), 19),
            (("a", 20, ("a", 24, 5)), 29),
            (("b", 0, ("b", 9, 10)), 9),
            (("b", 10, ("b", 11, 4)), 19),
        ]
    else:
        expected = [
            (("a", 0, 10), 9),
            (("a", 10, 10), 19),
            (("a", 20, 5), 29),
            (("b", 0, 5), 9),
            (("b", 10, 2), 19),
        ]
    assert sorted(out.results, key=repr) == sorted(expected, key=repr)


class Stamped(lg.ProcessFunction[Any, Any]):
    def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
        yield (value, ctx.timestamp())


async def test_count_windows_tumbling_and_sliding() -> None:
    env = lg.StreamEnvironment()
    keyed = env.from_collection(range(10)).key_by(lambda v: v % 2)
    tumbling = keyed.count_window(2).reduce(lambda a, b: a + b, uid="tumbling").sink(lg.CollectSink())
    sliding = keyed.count_window(3, 2).process(ListAll(), uid="sliding").sink(lg.CollectSink())
    await env.execute("count windows")
    assert sorted(tumbling.results) == sorted([0 + 2, 4 + 6, 1 + 3, 5 + 7])
    assert sorted(sliding.results) == sorted([(0, 2), (2, 4, 6), (1, 3), (3, 5, 7)])


class ListAll(lg.ProcessWindowFunction[Any, Any]):
    def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
        yield tuple(elements)


async def test_a_global_window_without_a_trigger_never_fires_and_a_custom_trigger_does() -> None:
    class EveryThird(lg.Trigger):
        def __init__(self) -> None:
            self.seen = lg.ValueStateDescriptor("seen", default=0)

        def on_element(self, element: Any, timestamp: int, window: Any, ctx: lg.TriggerContext) -> Any:
            seen = ctx.get_partitioned_state(self.seen)
            count = seen.value_nowait() + 1
            seen.update_nowait(count)
            return lg.TriggerResult.FIRE_AND_PURGE if count % 3 == 0 else lg.TriggerResult.CONTINUE

    env = lg.StreamEnvironment()
    keyed = env.from_collection(range(7)).key_by(lambda v: "k")
    never = keyed.window(lg.GlobalWindows.create()).process(ListAll(), uid="never").sink(lg.CollectSink())
    custom = (
        keyed.window(lg.GlobalWindows.create())
        .trigger(EveryThird())
        .process(ListAll(), uid="custom")
        .sink(lg.CollectSink())
    )
    await env.execute("global")
    assert never.results == []
    assert custom.results == [(0, 1, 2), (3, 4, 5)]


async def test_window_state_and_global_state_of_a_process_window_function() -> None:
    firings = lg.ValueStateDescriptor("firings", default=0)
    total = lg.ValueStateDescriptor("total", default=0)

    class Counting(lg.ProcessWindowFunction[Any, Any]):
        async def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
            mine = context.window_state().get_state(firings)
            everything = context.global_state().get_state(total)
            await mine.update(await mine.value() + 1)
            await everything.update(await everything.value() + len(elements))
            yield (context.window.start, await mine.value(), await everything.value())

        async def clear(self, context: lg.WindowContext) -> None:
            await context.window_state().get_state(firings).clear()

    env = lg.StreamEnvironment()
    env.config.auto_watermark_interval = 0
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r)
    out = (
        env.from_collection([1, 2, 11, 3, 12, 25], watermark_strategy=strategy, uid="src")
        .key_by(lambda r: "k")
        .window(lg.TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
        .allowed_lateness(timedelta(milliseconds=100))
        .process(Counting(), uid="w")
        .sink(lg.CollectSink())
    )
    env.batch_size = 1
    await env.execute("window state")
    # The window [0, 10) fires at watermark 10 (after 11 came), again for the late 3; then [10, 20)
    # and [20, 30) at the end.
    assert out.results == [(0, 1, 2), (0, 2, 5), (10, 1, 7), (20, 1, 8)]


async def test_event_time_windows_need_timestamps() -> None:
    env = lg.StreamEnvironment()
    (
        env.from_collection([1, 2])
        .key_by(lambda v: v)
        .window(lg.TumblingEventTimeWindows.of(1))
        .reduce(lambda a, b: a + b)
        .sink(lg.CollectSink())
    )
    with pytest.raises(lg.JobFailedError) as failed:
        await env.execute("no timestamps")
    assert "watermark_strategy" in str(failed.value.__cause__)


def test_window_settings_are_checked() -> None:
    env = lg.StreamEnvironment()
    keyed = env.from_collection([1]).key_by(lambda v: v)
    with pytest.raises(lg.ConfigurationError, match="window assigner"):
        keyed.window(lg.TumblingEventTimeWindows)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="more than zero"):
        lg.TumblingEventTimeWindows.of(0)
    with pytest.raises(lg.ConfigurationError, match="event-time windows"):
        keyed.window(lg.TumblingProcessingTimeWindows.of(1)).allowed_lateness(1)
    with pytest.raises(lg.ConfigurationError, match="cannot merge"):
        keyed.window(lg.EventTimeSessionWindows.with_gap(1)).trigger(lg.Trigger())
    with pytest.raises(lg.ConfigurationError, match="ProcessWindowFunction"):
        keyed.window(lg.GlobalWindows.create()).process(ListAll)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="at least 1"):
        keyed.count_window(0)


async def test_a_time_evictor_keeps_the_newest_elements_of_a_window() -> None:
    env = lg.StreamEnvironment()
    env.config.auto_watermark_interval = 0
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r)
    out = (
        env.from_collection([1, 3, 5, 7, 9, 12], watermark_strategy=strategy)
        .key_by(lambda r: "k")
        .window(lg.TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
        .evictor(lg.TimeEvictor.of(timedelta(milliseconds=4)))
        .process(ListAll(), uid="w")
        .sink(lg.CollectSink())
    )
    await env.execute("time evictor")
    assert out.results == [(7, 9), (12,)]  # 9 - 4 = 5: elements up to 5 are evicted


async def test_no_watermarks_fires_event_time_windows_only_at_the_end() -> None:
    class Watch(lg.ProcessWindowFunction[Any, Any]):
        def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
            yield (context.window.start, context.current_watermark())

    env = lg.StreamEnvironment(batch_size=1)
    env.config.auto_watermark_interval = 0
    strategy = lg.WatermarkStrategy.no_watermarks().with_timestamp_assigner(lambda r: r)
    out = (
        env.from_collection([1, 15, 27], watermark_strategy=strategy)
        .key_by(lambda r: "k")
        .window(lg.TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
        .process(Watch(), uid="w")
        .sink(lg.CollectSink())
    )
    await env.execute("no watermarks")
    assert out.results == [(0, lg.MAX_WATERMARK), (10, lg.MAX_WATERMARK), (20, lg.MAX_WATERMARK)]


async def test_processing_time_windows_fire_by_the_clock() -> None:
    from tests.test_timers import Arrivals

    env = lg.StreamEnvironment()
    source: lg.QueueSource[Any] = lg.QueueSource()
    fired = Arrivals(1)
    out = (
        env.from_source(source)
        .key_by(lambda r: r[0])
        .window(lg.TumblingProcessingTimeWindows.of(timedelta(milliseconds=50)))
        .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="w")
        .map(fired.note)
        .sink(lg.CollectSink())
    )
    job = await env.start("processing time windows")
    await source.put(("k", 1))
    await source.put(("k", 2))
    with anyio.fail_after(10):
        await fired.arrived.wait()  # the window's end passed on the clock, with no record after it
    source.close()
    await job.wait()
    assert sum(total for _, total in out.results) == 3


@pytest.mark.parametrize(
    "assigner",
    [
        lg.TumblingEventTimeWindows.of(timedelta(milliseconds=4)),
        lg.SlidingEventTimeWindows.of(timedelta(milliseconds=4), timedelta(milliseconds=2)),
        lg.SlidingEventTimeWindows.of(timedelta(milliseconds=5), timedelta(milliseconds=2)),
    ],
)
async def test_a_window_sees_its_records_in_arrival_order(assigner: lg.WindowAssigner) -> None:
    """Out-of-order records within one batch: each window's elements, and an order-sensitive reduce,
    follow the order the records came in, as record-at-a-time processing gives."""
    arrival = [3, 1, 6, 2, 0, 5, 7, 4, 9, 8]
    env = lg.StreamEnvironment(batch_size=100)
    strategy = lg.WatermarkStrategy.for_bounded_out_of_orderness(
        timedelta(milliseconds=100)
    ).with_timestamp_assigner(lambda r: r)
    keyed = env.from_collection(arrival, watermark_strategy=strategy).key_by(lambda r: "k")
    listed = keyed.window(assigner).process(ListAll(), uid="listed").sink(lg.CollectSink())
    joined = keyed.window(assigner).reduce(lambda a, b: f"{a}{b}", uid="joined").sink(lg.CollectSink())
    await env.execute("arrival order")
    expected = []
    for window_start in sorted({w.start for ts in arrival for w in assigner.assign_windows(ts, ts)}):
        end = window_start + (assigner.size)  # type: ignore[attr-defined]
        expected.append(tuple(ts for ts in arrival if window_start <= ts < end))
    assert sorted(listed.results) == sorted(expected)
    assert sorted(joined.results, key=str) == sorted(
        ("".join(map(str, members)) if len(members) > 1 else members[0] for members in expected), key=str
    )
