"""Exactly-once: for any input, any crash points and any parallelism, on heap and on RocksDB, what the
sinks committed equals what a run without failures commits. Under at-least-once nothing is lost."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.testing import (
    Crash,
    FailureSchedule,
    assert_exactly_once,
    committed_output,
    failure_schedules,
    inject_failures,
)

pytestmark = pytest.mark.anyio

Record = tuple[str, int]
records = st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(-50, 50)), min_size=5, max_size=60)
parallelisms = st.integers(1, 4)
# Incremental: RocksDB uploads only new SST files (its default); the heap writes chains of a base and
# deltas, a new base every third link, so crashes land on bases, short and long chains.
backends = st.sampled_from(["heap", "heap-incremental", "rocksdb", "rocksdb-full"])
STATE_BACKENDS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True, max_chain_length=3),
    "rocksdb": lambda: lg.RocksDBStateBackend(incremental=True),
    "rocksdb-full": lambda: lg.RocksDBStateBackend(incremental=False),
}


def environment(parallelism: int, backend: str) -> Callable[[], lg.StreamEnvironment]:
    def make() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(
            parallelism=parallelism, max_parallelism=16, batch_size=3, channel_capacity=2
        )
        if backend in STATE_BACKENDS:
            env.set_state_backend(STATE_BACKENDS[backend]())
        return env

    return make


class Tally(lg.KeyedProcessFunction[Record, tuple[str, int, int, int]]):
    """Counts each key's records in three kinds of state; emits (key, count, list length, map count).

    Records of one key may reach it from several subtasks in any interleaving, so what it emits
    must not depend on their order: a count does not; a running sum would.
    """

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))
        self.values = ctx.get_list_state(lg.ListStateDescriptor[int]("values"))
        self.counts = ctx.get_map_state(lg.MapStateDescriptor[int]("counts"))

    async def process_element(self, value: Record, ctx: lg.RuntimeContext) -> Any:
        count = await self.count.value() + 1
        await self.count.update(count)
        await self.values.add(value[1])
        await self.counts.put("n", (await self.counts.get("n") or 0) + 1)
        yield (ctx.get_current_key(), count, len(await self.values.get()), await self.counts.get("n"))


def running_sums(items: list[Record], source_parallelism: int) -> Callable[[lg.StreamEnvironment], Any]:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        (
            env.from_collection(items, uid="src", parallelism=source_parallelism)
            .map(lambda r: (r[0], r[1] * 2), uid="double")
            .key_by(lambda r: r[0])
            .process(Tally(), uid="sum")
            .sink(sink, uid="out")
        )
        return sink

    return build


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    source_parallelism=parallelisms,
    backend=backends,
    schedule=failure_schedules(["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8),
)
async def test_keyed_running_sums_are_exactly_once_after_any_crashes(
    items: list[Record], parallelism: int, source_parallelism: int, backend: str, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        running_sums(items, source_parallelism), schedule, environment=environment(parallelism, backend)
    )


def unioned_reduce(left: list[Record], right: list[Record]) -> Callable[[lg.StreamEnvironment], Any]:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        first = env.from_collection(left, uid="left", parallelism=2)
        second = env.from_collection(right, uid="right").map(lambda r: (r[0], -r[1]), uid="negate")
        (
            first.union(second)
            .key_by(lambda r: r[0])
            .map(lambda r: (r[0], 1), uid="one")
            .key_by(lambda r: r[0])
            .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="reduce")
            .rebalance()
            .map(lambda r: r, uid="after")
            .sink(sink, uid="out")
        )
        return sink

    return build


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    left=records,
    right=records,
    parallelism=parallelisms,
    backend=backends,
    schedule=failure_schedules(
        ["left", "right", "negate", "one", "reduce", "after", "out"], max_record=40, max_checkpoint_every=8
    ),
)
async def test_a_union_of_two_sources_is_exactly_once(
    left: list[Record], right: list[Record], parallelism: int, backend: str, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        unioned_reduce(left, right), schedule, environment=environment(parallelism, backend)
    )


class Scale(lg.BroadcastProcessFunction[Record, int, Record]):
    """Multiplies values by the factor from the broadcast side; holds records that come before it in
    operator list state, so the output does not depend on which input is read first."""

    descriptor = lg.MapStateDescriptor[int]("factor")

    def initialize_state(self, ctx: lg.RuntimeContext) -> None:
        self.held = ctx.get_list_state(lg.ListStateDescriptor[Record]("held"))

    def process_element(self, value: Record, ctx: lg.RuntimeContext) -> Iterator[Record]:
        factor = ctx.get_broadcast_state(self.descriptor).get_nowait("factor")
        if factor is None:
            self.held.add_nowait(value)
        else:
            yield (value[0], value[1] * factor)

    def process_broadcast_element(self, value: int, ctx: lg.RuntimeContext) -> Iterator[Record]:
        ctx.get_broadcast_state(self.descriptor).put_nowait("factor", value)
        held = self.held.get_nowait()
        self.held.clear_nowait()
        return iter([(key, number * value) for key, number in held])


class CountPerSubtask(lg.ProcessFunction[Record, tuple[int, int]]):
    """Operator list state: emits (subtask, how many records the subtask has seen) per record."""

    def initialize_state(self, ctx: lg.RuntimeContext) -> None:
        self.state = ctx.get_list_state(lg.ListStateDescriptor[int]("seen"))
        self.seen = sum(self.state.get_nowait())

    def process_element(self, value: Record, ctx: lg.RuntimeContext) -> Iterator[tuple[int, int]]:
        self.seen += 1
        yield (ctx.subtask_index, self.seen)

    def snapshot_state(self, ctx: lg.RuntimeContext) -> None:
        self.state.update_nowait([self.seen])


def broadcast_and_operator_state(
    items: list[Record], factors: list[int]
) -> Callable[[lg.StreamEnvironment], lg.CollectSink[Any]]:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        rules = env.from_collection(factors, uid="factors").broadcast()
        scaled = env.from_collection(items, uid="items").connect(rules).process(Scale(), uid="scale")
        # Every value is a multiple of the factor: a 1 each, unless a record was not scaled.
        ones = scaled.map(lambda r: (r[0], 1 if r[1] % 3 == 0 else 1000), uid="sign")
        ones.key_by(lambda r: r[0]).sum(1, uid="sum").sink(sink, uid="out")
        return sink

    return build


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(
        ["items", "factors", "scale", "sign", "sum", "out"], max_record=40, max_checkpoint_every=8
    ),
)
async def test_a_broadcast_connected_stream_is_exactly_once(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        broadcast_and_operator_state(items, [3]), schedule, environment=environment(parallelism, "heap")
    )


@settings(max_examples=20, deadline=None)
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(["items", "count"], max_record=40, max_checkpoint_every=8),
)
async def test_operator_list_state_survives_crashes_exactly_once(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        counts = env.from_collection(items, uid="items", parallelism=parallelism).process(
            CountPerSubtask(), uid="count"
        )
        counts.sink(sink, uid="out")
        return sink

    await assert_exactly_once(build, schedule, environment=environment(parallelism, "heap"))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8),
)
async def test_at_least_once_loses_nothing(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    def make() -> lg.StreamEnvironment:
        env = environment(parallelism, "heap")()
        env.enable_checkpointing(3600.0, lg.CheckpointingMode.AT_LEAST_ONCE)
        return env

    def keys_and_counts(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        env.from_collection(items, uid="src").map(lambda r: r, uid="double").key_by(lambda r: r[0]).process(
            Tally(), uid="sum"
        ).sink(sink, uid="out")
        return sink

    expected = await committed_output(keys_and_counts, environment=make)
    actual = await committed_output(keys_and_counts, schedule, environment=make)
    assert not Counter(expected) - Counter(actual)


async def test_a_crash_between_checkpoints_is_recovered_and_counted() -> None:
    items = [(k, i) for i, k in enumerate("abcabcabca" * 10)]
    schedule = FailureSchedule((Crash("sum", 60), Crash("out", 20)), checkpoint_every=5)
    env_factory = environment(2, "heap")
    report = await assert_exactly_once(running_sums(items, 1), schedule, environment=env_factory)
    assert len(report.expected) == len(items)
    assert report.crashes_fired == 2 and report.restarts_from_checkpoint == 2


def visible_lines(directory: Path) -> Counter[str]:
    """The lines of the committed files; hidden (uncommitted) files do not count."""
    lines: Counter[str] = Counter()
    for path in directory.iterdir():
        if not path.name.startswith("."):
            lines.update(path.read_text().splitlines())
    return lines


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8),
)
async def test_file_sink_commits_each_record_exactly_once(
    tmp_path: Path, items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    def run(directory: Path, with_failures: FailureSchedule | None) -> Any:
        env = environment(parallelism, "heap")()
        env.enable_checkpointing(3600.0)
        if with_failures is not None:
            env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=len(with_failures.crashes)))
            inject_failures(env, with_failures)
        stream = env.from_collection(items, uid="src").map(lambda r: r, uid="double")
        stream.key_by(lambda r: r[0]).process(Tally(), uid="sum").sink(lg.FileSink(directory), uid="out")
        return env.execute("files")

    case = tmp_path / uuid.uuid4().hex
    await run(case / "expected", None)
    await run(case / "actual", schedule)
    assert visible_lines(case / "actual") == visible_lines(case / "expected")
    assert sum(visible_lines(case / "expected").values()) == len(items)
