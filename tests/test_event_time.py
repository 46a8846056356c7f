"""Event time from the outside: timestamps carried through operators, watermarks from sources and
from assign_timestamps_and_watermarks, idleness, side outputs, and timers of keyed process functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg

pytestmark = pytest.mark.anyio

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def by_ts(out_of_orderness: int = 0) -> lg.WatermarkStrategy:
    return lg.WatermarkStrategy.for_bounded_out_of_orderness(
        timedelta(milliseconds=out_of_orderness)
    ).with_timestamp_assigner(lambda record, previous: record[1])


class Stamps(lg.ProcessFunction[Any, Any]):
    """Emits (record, its timestamp)."""

    def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
        yield (value, ctx.timestamp())


async def test_timestamps_travel_through_map_filter_and_flat_map() -> None:
    env = lg.StreamEnvironment(parallelism=2, batch_size=3)
    events = [("e", ts) for ts in (5, 1, 9, 4, 7, 2, 8)]
    out = (
        env.from_collection(events, watermark_strategy=by_ts())
        .map(lambda r: (r[0].upper(), r[1]))
        .filter(lambda r: r[1] != 4)
        .flat_map(lambda r: [r, (r[0] + "!", r[1])])
        .rebalance()
        .process(Stamps())
        .sink(lg.CollectSink())
    )
    await env.execute("stamps")
    expected = [((name, ts), ts) for _, ts in events if ts != 4 for name in ("E", "E!")]
    assert sorted(out.results) == sorted(expected)


async def test_records_without_a_strategy_have_no_timestamp() -> None:
    env = lg.StreamEnvironment()
    out = env.from_collection([1, 2]).process(Stamps()).sink(lg.CollectSink())
    await env.execute("no stamps")
    assert out.results == [(1, None), (2, None)]


async def test_a_datetime_timestamp_becomes_milliseconds_and_a_naive_one_is_refused() -> None:
    env = lg.StreamEnvironment()
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r)
    out = env.from_collection([moment], watermark_strategy=strategy).process(Stamps()).sink(lg.CollectSink())
    await env.execute("datetime")
    assert out.results == [(moment, int(moment.timestamp() * 1000))]

    env = lg.StreamEnvironment()
    env.from_collection([datetime(2026, 1, 2)], watermark_strategy=strategy).sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError) as failed:
        await env.execute("naive")
    assert "naive datetime" in str(failed.value.__cause__)


async def test_side_outputs_reach_their_streams_with_timestamps() -> None:
    small = lg.OutputTag("small")

    class Split(lg.ProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            if value[1] < 5:
                ctx.output(small, value)
            else:
                yield value

    env = lg.StreamEnvironment(parallelism=2)
    events = [("e", ts) for ts in range(10)]
    main = env.from_collection(events, watermark_strategy=by_ts()).process(Split(), uid="split")
    big = main.sink(lg.CollectSink())
    smalls = main.get_side_output(small).process(Stamps()).sink(lg.CollectSink())
    unread = main.get_side_output(lg.OutputTag("nobody"))  # a side output nobody reads is dropped
    assert unread.parallelism == 2
    await env.execute("side outputs")
    assert sorted(big.results) == events[5:]
    assert sorted(smalls.results) == [(event, event[1]) for event in events[:5]]


async def test_side_outputs_of_a_keyed_function_and_without_timestamps() -> None:
    odd = lg.OutputTag("odd")

    class Odd(lg.KeyedProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            if value % 2:
                ctx.output(odd, (ctx.get_current_key(), value))
            return [value]

    env = lg.StreamEnvironment(parallelism=3)
    stream = env.from_collection(range(20)).key_by(lambda v: v % 4).process(Odd(), uid="odd")
    everything = stream.sink(lg.CollectSink())
    odds = stream.get_side_output(odd).sink(lg.CollectSink())
    await env.execute("keyed side output")
    assert sorted(everything.results) == list(range(20))
    assert sorted(odds.results) == sorted((v % 4, v) for v in range(20) if v % 2)


def test_bad_event_time_arguments_say_what_to_do() -> None:
    env = lg.StreamEnvironment()
    with pytest.raises(lg.ConfigurationError, match="WatermarkStrategy"):
        env.from_collection([1], watermark_strategy="ts")  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="OutputTag"):
        env.from_collection([1]).map(str).get_side_output("late")  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="not be negative"):
        lg.WatermarkStrategy.for_bounded_out_of_orderness(-1)
    with pytest.raises(lg.ConfigurationError, match="more than zero"):
        lg.WatermarkStrategy.for_monotonous_timestamps().with_idleness(0)
    with pytest.raises(TypeError, match="non-empty"):
        lg.OutputTag("")


async def test_a_strategy_without_an_assigner_needs_timestamps_upstream() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1], watermark_strategy=lg.WatermarkStrategy.for_monotonous_timestamps()).sink(
        lg.CollectSink()
    )
    with pytest.raises(lg.JobFailedError) as failed:
        await env.execute("no assigner")
    assert "with_timestamp_assigner" in str(failed.value.__cause__)


async def test_assign_timestamps_later_in_the_stream_replaces_the_timestamps() -> None:
    env = lg.StreamEnvironment()
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda record, previous: previous * 10
    )
    out = (
        env.from_collection([("a", 1), ("b", 2)], watermark_strategy=by_ts())
        .assign_timestamps_and_watermarks(strategy)
        .process(Stamps())
        .sink(lg.CollectSink())
    )
    await env.execute("reassigned")
    assert out.results == [(("a", 1), 10), (("b", 2), 20)]


def test_the_watermark_interval_is_checked() -> None:
    env = lg.StreamEnvironment()
    env.config.auto_watermark_interval = -1
    env.from_collection([1]).sink(lg.CollectSink())
    with pytest.raises(lg.ConfigurationError, match="auto_watermark_interval"):
        env.execute_blocking("bad interval")


@FAST
@given(
    timestamps=st.lists(st.integers(0, 10_000), min_size=1, max_size=60),
    bound=st.integers(0, 50),
    batch_size=st.sampled_from([1, 4, 100]),
)
async def test_watermarks_never_go_back_and_follow_the_bound(
    timestamps: list[int], bound: int, batch_size: int
) -> None:
    """What a keyed function sees as the watermark is, before each record, the one its source emitted
    after the batches before it (interval 0: after every batch): never going back, never ahead."""

    class Watch(lg.KeyedProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            yield (value, ctx.timer_service().current_watermark())

    env = lg.StreamEnvironment(batch_size=batch_size)
    env.config.auto_watermark_interval = 0
    events = [("k", ts, position) for position, ts in enumerate(timestamps)]
    out = (
        env.from_collection(events, watermark_strategy=by_ts(bound))
        .key_by(lambda r: r[0])
        .process(Watch())
        .sink(lg.CollectSink())
    )
    await env.execute("watermarks")
    seen = [watermark for _, watermark in out.results]
    assert seen == sorted(seen)
    for event, watermark in out.results:
        before = [ts for _, ts, position in events[: event[2] - event[2] % batch_size]]
        newest_possible = max(before) - bound - 1 if before else lg.MIN_WATERMARK
        assert watermark <= newest_possible
