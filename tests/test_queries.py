"""Queryable state in process: ``job.query_state`` reads a running job's keyed state from the subtask
that owns the key, between two of its steps, for every kind of state, on either backend."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from tests._sources import GUARD, until_or_failure
from tests.test_recovery import Watch
from tests.test_state_contract import Average

pytestmark = pytest.mark.anyio


class Totals(lg.KeyedProcessFunction[tuple[str, int], Any]):
    """A running total per key, and the record in every other kind of state."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0).queryable("totals"))
        self.amounts = ctx.get_list_state(lg.ListStateDescriptor[int]("amounts"))
        self.last = ctx.get_map_state(lg.MapStateDescriptor[int]("last"))
        self.summed = ctx.get_reducing_state(lg.ReducingStateDescriptor[int]("summed", lambda a, b: a + b))
        self.average = ctx.get_aggregating_state(lg.AggregatingStateDescriptor("average", Average()))
        self.recent = ctx.get_state(lg.ValueStateDescriptor[int]("recent", ttl=lg.StateTtlConfig(3600)))

    def process_element(self, record: tuple[str, int], ctx: lg.RuntimeContext) -> Iterator[Any]:
        amount = record[1]
        self.total.update_nowait(self.total.value_nowait() + amount)
        self.amounts.add_nowait(amount)
        self.last.put_nowait(amount % 3, amount)
        self.summed.add_nowait(amount)
        self.average.add_nowait(amount)
        self.recent.update_nowait(amount)
        yield record


BACKENDS = {
    "heap": lg.HeapStateBackend,
    "heap incremental": lambda: lg.HeapStateBackend(incremental=True),
    "rocksdb": lg.RocksDBStateBackend,  # incremental by default
    "rocksdb full": lambda: lg.RocksDBStateBackend(incremental=False),
}


def environment(parallelism: int, backend: str) -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=16, batch_size=3)
    env.set_state_backend(BACKENDS[backend]())
    return env


async def start(env: lg.StreamEnvironment) -> tuple[lg.Job, lg.QueueSource[tuple[str, int]], Watch]:
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid="src").key_by(lambda record: record[0])
    keyed.process(Totals(), uid="totals").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    return await env.start("queries"), source, watch


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 9)), min_size=1, max_size=60),
    parallelism=st.integers(1, 4),
    backend=st.sampled_from(["heap", "rocksdb"]),
)
async def test_a_live_query_of_a_growing_total_never_goes_back_and_ends_at_the_total(
    records: list[tuple[str, int]], parallelism: int, backend: str
) -> None:
    job, source, watch = await start(environment(parallelism, backend))
    seen: dict[str, list[int]] = defaultdict(list)
    done = anyio.Event()

    async def query_while_it_runs() -> None:
        while not done.is_set():
            for key in "abcdefg":
                total = await job.query_state("totals", "total", key)
                seen[key].append(0 if total is None else total)
            await anyio.lowlevel.checkpoint()  # the stream's turn

    try:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                group.start_soon(query_while_it_runs)
                for record in records:
                    await source.put(record)
                await until_or_failure(job, lambda: watch.until(len(records)))
                done.set()
            totals: dict[str, int] = defaultdict(int)
            for key, amount in records:
                totals[key] += amount
            for key in "abcdefg":
                assert seen[key] == sorted(seen[key])  # never back
                assert await job.query_state("totals", "total", key) == totals.get(key)
    finally:
        await job.cancel()


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
async def test_every_kind_of_state_answers_as_its_function_reads_it(backend: str) -> None:
    job, source, watch = await start(environment(2, backend))
    try:
        with anyio.fail_after(GUARD):
            # Asked before the subtasks are open: the query waits for them, then finds no value.
            assert await job.query_state("totals", "total", "a") is None
            for record in [("a", 4), ("a", 5), ("b", 1)]:
                await source.put(record)
            await until_or_failure(job, lambda: watch.until(3))
            query = job.query_state
            assert await query("totals", "total", "a") == 9
            assert await query("totals", "amounts", "a") == [4, 5]
            assert await query("totals", "last", "a") == {1: 4, 2: 5}
            assert await query("totals", "summed", "a") == 9
            assert await query("totals", "average", "a") == 4.5
            assert await query("totals", "recent", "b") == 1
            assert await query("totals", "total", "nobody") is None
            # A copy: changing what a query returned changes nothing in the job.
            (await query("totals", "amounts", "a")).append(100)
            assert await query("totals", "amounts", "a") == [4, 5]
    finally:
        await job.cancel()


async def test_queries_that_cannot_be_answered_say_why() -> None:
    job, _, _ = await start(environment(2, "heap"))
    try:
        with anyio.fail_after(GUARD):
            with pytest.raises(KeyError, match=r"has no keyed operator 'nope'; it has \['totals'\]"):
                await job.query_state("nope", "total", "a")
            with pytest.raises(KeyError, match=r"has no keyed state 'nope'; it has \['amounts', 'average'"):
                await job.query_state("totals", "nope", "a")
    finally:
        await job.cancel()
    with pytest.raises(lg.ConfigurationError, match=r"has ended .*lg\.Savepoint\.load"):
        await job.query_state("totals", "total", "a")


def test_a_queryable_name_is_a_non_empty_string() -> None:
    descriptor = lg.ValueStateDescriptor[int]("total")
    assert descriptor.queryable("totals") is descriptor and descriptor.queryable_as == "totals"
    with pytest.raises(ValueError, match="public name must be a non-empty str"):
        descriptor.queryable("")


def reference(records: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """What Totals holds per key after ``records``: the total, the amounts, the last amount by its
    remainder mod 3 (its value, list and map states)."""
    held: dict[str, dict[str, Any]] = {}
    for key, amount in records:
        state = held.setdefault(key, {"total": 0, "amounts": [], "last": {}})
        state["total"] += amount
        state["amounts"].append(amount)
        state["last"][amount % 3] = amount
    return held


CHECKED = ("total", "amounts", "last")


async def answers(job: lg.Job, consistency: str) -> dict[str, dict[str, Any]]:
    """Every key's value, list and map state as queries with ``consistency`` read them."""
    found: dict[str, dict[str, Any]] = {}
    for key in "abcdefg":
        values = {state: await job.query_state("totals", state, key, consistency) for state in CHECKED}
        if any(value is not None for value in values.values()):
            found[key] = values
    return found


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    phases=st.lists(
        st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 9)), max_size=15), min_size=2, max_size=4
    ),
    parallelism=st.integers(1, 4),
    backend=st.sampled_from(sorted(BACKENDS)),
)
async def test_a_checkpoint_query_answers_as_of_the_last_completed_checkpoint(
    phases: list[list[tuple[str, int]]], parallelism: int, backend: str
) -> None:
    env = environment(parallelism, backend)
    env.enable_checkpointing(3600)  # only the checkpoints the test triggers
    job, source, watch = await start(env)
    fed: list[tuple[str, int]] = []
    try:
        with anyio.fail_after(GUARD):

            async def feed(records: list[tuple[str, int]]) -> None:
                fed.extend(records)
                for record in records:
                    await source.put(record)
                await until_or_failure(job, lambda: watch.until(len(fed)))

            await feed(phases[0])
            async with anyio.create_task_group() as group:
                first: list[Any] = []

                async def ask() -> None:  # the first query waits for the next checkpoint
                    first.append(await job.query_state("totals", "total", "a", consistency="checkpoint"))

                group.start_soon(ask)
                await anyio.lowlevel.checkpoint()
                while not first:  # until the query waits (it started pinning) and has its answer
                    await job.trigger_checkpoint()
                    await anyio.lowlevel.checkpoint()
            checkpointed = reference(fed)
            for phase in phases[1:]:
                await feed(phase)
                assert await answers(job, "checkpoint") == checkpointed
                assert await answers(job, "live") == reference(fed)
                await job.trigger_checkpoint()
                checkpointed = reference(fed)
            assert await answers(job, "checkpoint") == checkpointed
    finally:
        await job.cancel()


async def test_a_checkpoint_query_needs_periodic_checkpoints() -> None:
    job, _, _ = await start(environment(1, "heap"))
    try:
        with pytest.raises(lg.ConfigurationError, match="takes no periodic checkpoints"):
            await job.query_state("totals", "total", "a", consistency="checkpoint")
        with pytest.raises(lg.ConfigurationError, match="consistency is 'live' or 'checkpoint'"):
            await job.query_state("totals", "total", "a", consistency="eventually")
    finally:
        await job.cancel()


class Elements(lg.ProcessWindowFunction[Any, Any]):
    def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
        yield (key, context.window.start, len(elements))


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@pytest.mark.parametrize("kind", ["reduce", "elements"])
async def test_a_window_operator_answers_the_contents_of_each_open_window_of_a_key(
    backend: str, kind: str
) -> None:
    env = environment(1, backend)  # one subtask: once "b" is in, so is every "a" before it
    env.enable_checkpointing(3600)
    strategy = lg.WatermarkStrategy.for_bounded_out_of_orderness(
        timedelta(hours=1)  # the windows stay open
    ).with_timestamp_assigner(lambda record: record[1])
    source: lg.QueueSource[tuple[str, int, int]] = lg.QueueSource()
    windowed = (
        env.from_source(source, uid="src", watermark_strategy=strategy)
        .key_by(lambda record: record[0])
        .window(lg.TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
    )
    if kind == "reduce":
        out = windowed.reduce(lambda a, b: (a[0], max(a[1], b[1]), a[2] + b[2]), uid="w")
    else:
        out = windowed.process(Elements(), uid="w")
    out.sink(lg.CollectSink(), uid="out")
    job = await env.start("window queries")
    records = [("a", 1, 5), ("a", 4, 6), ("a", 12, 7), ("b", 3, 1)]
    if kind == "reduce":
        expected = {lg.TimeWindow(0, 10): ("a", 4, 11), lg.TimeWindow(10, 20): ("a", 12, 7)}
    else:
        expected = {
            lg.TimeWindow(0, 10): [(("a", 1, 5), 1), (("a", 4, 6), 4)],
            lg.TimeWindow(10, 20): [(("a", 12, 7), 12)],
        }
    try:
        with anyio.fail_after(GUARD):
            assert await job.query_state("w", "window-contents", "a") is None  # no window yet
            for record in records:
                await source.put(record)
            while await job.query_state("w", "window-contents", "b") is None:  # "b" came last
                await anyio.lowlevel.checkpoint()
            assert await job.query_state("w", "window-contents", "a") == expected
            with pytest.raises(lg.ConfigurationError, match=r"kept per window .* queried live only"):
                await job.query_state("w", "window-contents", "a", consistency="checkpoint")
    finally:
        await job.cancel()
