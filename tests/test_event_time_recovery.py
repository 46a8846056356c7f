"""Windows and timers survive crashes and rescaling: for any stream within the watermark bound, any
crash points, parallelism and backend (incremental too), window and timer output is exactly-once;
and a savepoint with open windows and pending timers taken at parallelism 2 restores at parallelism 3
on the other backend, losing and repeating nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.testing import FailureSchedule, assert_exactly_once, failure_schedules
from tests.test_windows import Count

pytestmark = pytest.mark.anyio

BOUND = 20  # ms of out-of-orderness the streams keep within

STATE_BACKENDS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap": lambda: lg.HeapStateBackend(),
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True, max_chain_length=3),
    "rocksdb": lambda: lg.RocksDBStateBackend(incremental=True),
    "rocksdb-full": lambda: lg.RocksDBStateBackend(incremental=False),
}


@st.composite
def bounded_streams(draw: st.DrawFn) -> list[tuple[str, int]]:
    """(key, timestamp) records, each at most BOUND ms older than the newest before it: never late."""
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from("abcde"), st.integers(0, 15), st.integers(0, BOUND)),
            min_size=5,
            max_size=60,
        )
    )
    base, out = 0, []
    for key, step, jitter in steps:
        base += step
        out.append((key, max(0, base - jitter)))
    return out


class Label(lg.ProcessWindowFunction[Any, Any]):
    def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
        return [("window", key, context.window.start, context.window.end, elements[0])]


class Remind(lg.KeyedProcessFunction[Any, Any]):
    """An event-time timer 10 ms after each record; each firing emits the key's records so far."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.seen = ctx.get_state(lg.ValueStateDescriptor("seen", default=0))

    def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
        self.seen.update_nowait(self.seen.value_nowait() + 1)
        ctx.timer_service().register_event_time_timer(value[1] + 10)
        return ()

    def on_timer(self, timestamp: int, ctx: lg.RuntimeContext) -> Any:
        return [("timer", ctx.get_current_key(), timestamp)]


def assigner(kind: str) -> lg.WindowAssigner:
    if kind == "tumbling":
        return lg.TumblingEventTimeWindows.of(timedelta(milliseconds=25))
    if kind == "sliding":
        return lg.SlidingEventTimeWindows.of(timedelta(milliseconds=30), timedelta(milliseconds=10))
    return lg.EventTimeSessionWindows.with_gap(timedelta(milliseconds=12))


def event_time_job(
    items: list[tuple[str, int]], kind: str, source_parallelism: int
) -> Callable[[lg.StreamEnvironment], Any]:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        strategy = lg.WatermarkStrategy.for_bounded_out_of_orderness(
            timedelta(milliseconds=BOUND)
        ).with_timestamp_assigner(lambda record, previous: record[1])
        keyed = env.from_collection(
            items, uid="src", parallelism=source_parallelism, watermark_strategy=strategy
        ).key_by(lambda r: r[0])
        windows = keyed.window(assigner(kind)).aggregate(Count(), Label(), uid="windows")
        timers = keyed.process(Remind(), uid="timers")
        windows.union(timers).sink(sink, uid="out")
        return sink

    return build


def environment(parallelism: int, backend: str) -> Callable[[], lg.StreamEnvironment]:
    def make() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(
            parallelism=parallelism, max_parallelism=16, batch_size=3, channel_capacity=2
        )
        env.set_state_backend(STATE_BACKENDS[backend]())
        env.config.auto_watermark_interval = 0
        return env

    return make


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=bounded_streams(),
    kind=st.sampled_from(["tumbling", "sliding", "session"]),
    parallelism=st.integers(1, 4),
    source_parallelism=st.integers(1, 2),
    backend=st.sampled_from(sorted(STATE_BACKENDS)),
    schedule=failure_schedules(["src", "windows", "timers", "out"], max_record=40, max_checkpoint_every=8),
)
async def test_window_and_timer_output_is_exactly_once_after_any_crashes(
    items: list[tuple[str, int]],
    kind: str,
    parallelism: int,
    source_parallelism: int,
    backend: str,
    schedule: FailureSchedule,
) -> None:
    await assert_exactly_once(
        event_time_job(items, kind, source_parallelism),
        schedule,
        environment=environment(parallelism, backend),
    )


@pytest.mark.parametrize(("first", "second"), [("heap", "rocksdb"), ("rocksdb", "heap")])
async def test_a_savepoint_with_open_windows_and_pending_timers_rescales_onto_the_other_backend(
    tmp_path: Path, first: str, second: str
) -> None:
    """Stop with a savepoint at parallelism 2 while windows are open and timers pending; restore at
    parallelism 3 on the other backend; the two runs together give exactly what one run gives."""
    # Bursts of 40 ms with 40 ms between them: sessions close as event time passes them.
    records = [(key, ts) for ts in range(0, 600, 3) if (ts // 40) % 2 == 0 for key in "abcdefg"]
    head, tail = records[:220], records[220:]

    def build(env: lg.StreamEnvironment, source: lg.QueueSource[Any]) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1])
        keyed = env.from_source(source, uid="src", watermark_strategy=strategy).key_by(lambda r: r[0])
        windows = keyed.window(assigner("session")).aggregate(Count(), Label(), uid="windows")
        windows.union(keyed.process(Remind(), uid="timers")).sink(sink, uid="out")
        return sink

    def env_for(backend: str, parallelism: int) -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=16)
        env.set_state_backend(STATE_BACKENDS[backend]())
        env.config.auto_watermark_interval = 0
        return env

    # The reference: one run over everything.
    source: lg.QueueSource[Any] = lg.QueueSource(maxsize=len(records))
    env = env_for(first, 2)
    whole = build(env, source)
    for record in records:
        source.put_nowait(record)
    source.close()
    await env.execute("whole")

    # Half, a savepoint (windows open, timers pending), the rest at parallelism 3 on the other backend.
    source = lg.QueueSource()
    env = env_for(first, 2)
    before = build(env, source)
    job = await env.start("before")
    for record in head:
        await source.put(record)
    with anyio.fail_after(20):
        savepoint = await job.stop_with_savepoint((tmp_path / "sp").as_uri())
    source = lg.QueueSource()
    env = env_for(second, 3)
    after = build(env, source)
    job = await env.start("after", restore_from=savepoint)
    for record in tail:
        await source.put(record)
    source.close()
    await job.wait()
    assert sorted(before.results + after.results) == sorted(whole.results)
    assert any(result[0] == "window" for result in before.results)  # some closed before the savepoint
    assert any(result[0] == "window" for result in after.results)  # and some were open across it
