"""Timers of keyed process functions, from the outside: event time and processing time, register and
delete, state and side outputs in on_timer, firing exactly once per key and timestamp in order."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg

pytestmark = pytest.mark.anyio

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

BACKENDS = {
    "heap": lambda: lg.HeapStateBackend(),
    "rocksdb": lambda: lg.RocksDBStateBackend(),
}


class Arrivals:
    """Sets ``arrived`` once ``count`` records passed through :meth:`note` (a map in the job)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = anyio.Event()

    def note(self, record: Any) -> Any:
        self.count -= 1
        if self.count <= 0:
            self.arrived.set()
        return record


def by_ts(bound: int = 0) -> lg.WatermarkStrategy:
    return lg.WatermarkStrategy.for_bounded_out_of_orderness(
        timedelta(milliseconds=bound)
    ).with_timestamp_assigner(lambda record, previous: record[1])


class TimerPerRecord(lg.KeyedProcessFunction[Any, Any]):
    """Registers an event-time timer at each record's ``timer`` field (deletes it if negative); each
    firing emits (key, timestamp, the watermark then, the count of the key's records so far) and may
    register one more timer ``chain`` ms later, once."""

    def __init__(self, chain: int | None = None) -> None:
        self.chain = chain

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))
        self.chained = ctx.get_state(lg.ValueStateDescriptor("chained", default=False))

    def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
        self.count.update_nowait(self.count.value_nowait() + 1)
        timer = value[2]
        if timer >= 0:
            ctx.timer_service().register_event_time_timer(timer)
        else:
            ctx.timer_service().delete_event_time_timer(-timer)
        return ()

    async def on_timer(self, timestamp: int, ctx: lg.RuntimeContext) -> Any:
        assert ctx.time_domain() is lg.TimeDomain.EVENT_TIME
        assert ctx.timestamp() == timestamp
        service = ctx.timer_service()
        yield (ctx.get_current_key(), timestamp, service.current_watermark(), await self.count.value())
        if self.chain is not None and not await self.chained.value():
            await self.chained.update(True)
            service.register_event_time_timer(timestamp + self.chain)


@FAST
@given(
    records=st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 100), st.integers(-120, 120)), max_size=60
    ),
    parallelism=st.integers(1, 4),
    batch_size=st.sampled_from([1, 5, 100]),
    backend=st.sampled_from(sorted(BACKENDS)),
)
async def test_event_time_timers_fire_once_per_key_and_timestamp_in_order(
    records: list[tuple[str, int, int]], parallelism: int, batch_size: int, backend: str
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    env.set_state_backend(BACKENDS[backend]())
    env.config.auto_watermark_interval = 0
    out = (
        env.from_collection(records, watermark_strategy=by_ts(), parallelism=1)
        .key_by(lambda r: r[0])
        .process(TimerPerRecord(), uid="timers")
        .sink(lg.CollectSink())
    )
    await env.execute("timers")
    # The model: per key the pending timers, registered and deleted record by record; after each
    # batch that advances the watermark (the newest timestamp so far - 1), it fires the due ones,
    # earliest first (timers come due only as the watermark advances); the end fires the rest. A timer
    # registered again after it fired fires again.
    pending: dict[str, set[int]] = defaultdict(set)
    expected: dict[str, list[int]] = defaultdict(list)
    newest = emitted = lg.MIN_WATERMARK

    def advance(watermark: int) -> None:
        nonlocal emitted
        if watermark <= emitted:
            return
        emitted = watermark
        for key, timers in pending.items():
            due = sorted(t for t in timers if t <= watermark)
            expected[key] += due
            timers.difference_update(due)

    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        for key, _, timer in batch:
            if timer >= 0:
                pending[key].add(timer)
            else:
                pending[key].discard(-timer)
        newest = max(newest, *(ts for _, ts, _ in batch))
        advance(newest - 1)
    advance(lg.MAX_WATERMARK)
    fired: dict[str, list[int]] = defaultdict(list)
    for key, timestamp, watermark, _ in out.results:
        fired[key].append(timestamp)
        assert watermark >= timestamp  # fired only once event time reached it
    assert fired == {key: timers for key, timers in expected.items() if timers}


async def test_a_timer_registered_in_on_timer_fires_in_timestamp_order() -> None:
    env = lg.StreamEnvironment(batch_size=1)
    env.config.auto_watermark_interval = 0
    out = (
        env.from_collection([("a", 0, 10), ("a", 1, 30), ("a", 100, -1)], watermark_strategy=by_ts())
        .key_by(lambda r: r[0])
        .process(TimerPerRecord(chain=7), uid="chained")
        .sink(lg.CollectSink())
    )
    await env.execute("chained timers")
    # The watermark jumps to 99: the timer at 10 fires and registers 17, which fires before 30.
    assert [timestamp for _, timestamp, _, _ in out.results] == [10, 17, 30]


async def test_on_timer_output_comes_before_the_watermark_that_fired_it() -> None:
    """Records a timer emits reach the next operator before the watermark that fired the timer."""

    class Watch(lg.KeyedProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            yield (value, ctx.timer_service().current_watermark())

    env = lg.StreamEnvironment(batch_size=1)
    env.config.auto_watermark_interval = 0
    records = [("a", 0, 5), ("a", 50, -1), ("a", 51, -1)]
    out = (
        env.from_collection(records, watermark_strategy=by_ts())
        .key_by(lambda r: r[0])
        .process(TimerPerRecord(), uid="timers")
        .key_by(lambda r: r[0])
        .process(Watch(), uid="watch")
        .sink(lg.CollectSink())
    )
    await env.execute("order")
    [(fired, watermark_downstream)] = out.results
    assert fired[1] == 5
    assert watermark_downstream < 49  # the watermark 49 that fired the timer had not arrived yet


async def test_processing_time_timers_fire_with_state_and_side_outputs() -> None:
    reminders = lg.OutputTag("reminders")

    class Remind(lg.KeyedProcessFunction[Any, Any]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.seen = ctx.get_list_state(lg.ListStateDescriptor("seen"))
            self.armed = ctx.get_state(lg.ValueStateDescriptor("armed", default=False))

        async def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            await self.seen.add(value)
            if not await self.armed.value():  # one reminder per key
                await self.armed.update(True)
                service = ctx.timer_service()
                service.register_processing_time_timer(service.current_processing_time() + 20)
            return
            yield

        async def on_timer(self, timestamp: int, ctx: lg.RuntimeContext) -> Any:
            assert ctx.time_domain() is lg.TimeDomain.PROCESSING_TIME
            assert ctx.timestamp() is None
            ctx.output(reminders, ctx.get_current_key())
            yield (ctx.get_current_key(), sorted(await self.seen.get()))

    env = lg.StreamEnvironment(parallelism=2)
    source = lg.QueueSource()
    stream = env.from_source(source).key_by(lambda v: v % 2).process(Remind(), uid="remind")
    both = Arrivals(2)
    out = stream.map(both.note).sink(lg.CollectSink())
    side = stream.get_side_output(reminders).sink(lg.CollectSink())
    for value in range(4):  # queued before the start: read in one batch, before any timer is due
        await source.put(value)
    job = await env.start("processing time")
    with anyio.fail_after(10):
        await both.arrived.wait()
    source.close()
    await job.wait()
    assert sorted(out.results) == [(0, [0, 2]), (1, [1, 3])]
    assert sorted(side.results) == [0, 1]


async def test_timer_service_outside_keyed_functions_says_where_it_works() -> None:
    class Wrong(lg.ProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            ctx.timer_service()
            return ()

    env = lg.StreamEnvironment()
    env.from_collection([1]).process(Wrong()).sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError) as failed:
        await env.execute("wrong")
    assert "key_by" in str(failed.value.__cause__)


async def test_an_idle_source_does_not_hold_windows_back() -> None:
    """Two sources feed one window; one goes quiet. Without idleness its watermark holds the window
    back until the end; with it, the busy source's watermark alone fires the window while the job
    still runs."""
    busy, quiet = lg.QueueSource(), lg.QueueSource()
    env = lg.StreamEnvironment()
    strategy = by_ts().with_idleness(timedelta(milliseconds=50))
    env.config.auto_watermark_interval = 0
    a = env.from_source(busy, uid="busy", watermark_strategy=strategy)
    b = env.from_source(quiet, uid="quiet", watermark_strategy=strategy)
    fired = Arrivals(1)
    out = (
        a.union(b)
        .key_by(lambda r: r[0])
        .window(lg.TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
        .reduce(lambda x, y: (x[0], x[1], x[2] + y[2]), uid="sum")
        .map(fired.note)
        .sink(lg.CollectSink())
    )
    job = await env.start("idleness")
    await quiet.put(("k", 1, 1))
    await busy.put(("k", 2, 1))
    await busy.put(("k", 30, 1))  # the busy source's watermark passes the window [0, 10)
    with anyio.fail_after(10):
        await fired.arrived.wait()
    assert out.results == [("k", 1, 2)] or out.results == [("k", 2, 2)]
    busy.close()
    quiet.close()
    await job.wait()


async def test_processing_time_timers_due_while_the_job_was_down_fire_right_after_the_restore(
    tmp_path: Any,
) -> None:
    class Later(lg.KeyedProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            service = ctx.timer_service()
            # A second: time enough for the stop-with-savepoint on a busy machine (200 ms was not).
            service.register_processing_time_timer(service.current_processing_time() + 1000)
            return [("seen", value)]

        def on_timer(self, timestamp: int, ctx: lg.RuntimeContext) -> Any:
            return [("fired", ctx.get_current_key(), timestamp)]

    def build(
        source: lg.QueueSource[Any], arrivals: Arrivals
    ) -> tuple[lg.StreamEnvironment, lg.CollectSink[Any]]:
        env = lg.StreamEnvironment()
        env.set_state_backend(lg.RocksDBStateBackend())
        out = (
            env.from_source(source, uid="src")
            .key_by(lambda v: v)
            .process(Later(), uid="later")
            .map(arrivals.note, uid="note")
            .sink(lg.CollectSink(), uid="out")
        )
        return env, out

    source: lg.QueueSource[Any] = lg.QueueSource()
    seen = Arrivals(1)
    env, before = build(source, seen)
    job = await env.start("before")
    await source.put("k")
    with anyio.fail_after(10):
        await seen.arrived.wait()
        savepoint = await job.stop_with_savepoint((tmp_path / "sp").as_uri())
    assert before.results == [("seen", "k")]  # the timer was pending when the job stopped
    await anyio.sleep(1.0)  # the job is down while the timer comes due (time passing, not waiting on it)
    source = lg.QueueSource()
    fired = Arrivals(1)
    env, after = build(source, fired)
    job = await env.start("after", restore_from=savepoint)
    with anyio.fail_after(10):
        await fired.arrived.wait()  # no record comes: the restored timer alone wakes the operator
    source.close()
    await job.wait()
    [(kind, key, _)] = after.results
    assert (kind, key) == ("fired", "k")


async def test_processing_time_timers_do_not_fire_after_the_end_of_input() -> None:
    """A bounded branch ends while its job goes on: its pending processing-time timer never fires
    (nothing may follow the end of input downstream), as in Flink."""

    class Soon(lg.KeyedProcessFunction[Any, Any]):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:
            service = ctx.timer_service()
            service.register_processing_time_timer(service.current_processing_time() + 30)
            return [("seen", value)]

        def on_timer(self, timestamp: int, ctx: lg.RuntimeContext) -> Any:
            return [("fired", ctx.get_current_key())]

    env = lg.StreamEnvironment()
    ended = env.from_collection(["k"]).key_by(lambda v: v).process(Soon(), uid="soon").sink(lg.CollectSink())
    other: lg.QueueSource[Any] = lg.QueueSource()
    env.from_source(other).sink(lg.CollectSink())
    job = await env.start("two branches")
    await anyio.sleep(0.2)  # the timer's time passes while the other branch keeps the job running
    other.close()
    await job.wait()
    assert ended.results == [("seen", "k")]
