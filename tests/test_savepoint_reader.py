"""Reading savepoints and checkpoints offline (``lg.Savepoint``): what a job held, read back exactly, for
every kind of state, both backends, savepoints and checkpoints (incremental ones too), at any parallelism."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from tests._sources import GUARD, PausingSource, until_or_failure
from tests.test_recovery import Watch
from tests.test_savepoints import Buffers

pytestmark = pytest.mark.anyio

MAX_PARALLELISM = 16
RUNS = itertools.count()
FAR = 10**15  # processing-time timers this far out never fire during a test


class Count(lg.AggregateFunction[int, int, int]):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: int, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


@dataclasses.dataclass
class Reading:
    value: int
    label: str = "r"


class Everything(lg.KeyedProcessFunction[tuple[str, int], Any]):
    """Keeps each record in every kind of keyed state, and a processing-time timer per record."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0))
        self.values = ctx.get_list_state(lg.ListStateDescriptor[int]("values"))
        self.last = ctx.get_map_state(lg.MapStateDescriptor[int]("last"))
        self.summed = ctx.get_reducing_state(lg.ReducingStateDescriptor[int]("summed", lambda a, b: a + b))
        self.counted = ctx.get_aggregating_state(lg.AggregatingStateDescriptor("counted", Count()))
        self.recent = ctx.get_state(lg.ValueStateDescriptor[int]("recent", ttl=lg.StateTtlConfig(3600)))
        self.typed = ctx.get_state(
            lg.ValueStateDescriptor[Reading]("typed", serializer=lg.DataclassSerializer(Reading))
        )

    def process_element(self, record: tuple[str, int], ctx: lg.RuntimeContext) -> Iterator[Any]:
        value = record[1]
        self.total.update_nowait(self.total.value_nowait() + value)
        self.values.add_nowait(value)
        self.last.put_nowait(value % 4, value)
        self.summed.add_nowait(value)
        self.counted.add_nowait(value)
        self.recent.update_nowait(value)
        self.typed.update_nowait(Reading(value))
        ctx.timer_service().register_processing_time_timer(FAR + value)
        yield record


def reference(records: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """What :class:`Everything` holds per key after ``records``."""
    held: dict[str, dict[str, Any]] = {}
    for key, value in records:
        state = held.setdefault(key, {"total": 0, "values": [], "last": {}, "summed": 0, "counted": 0})
        state["total"] += value
        state["values"].append(value)
        state["last"][value % 4] = value
        state["summed"] += value
        state["counted"] += 1
        state["recent"] = value
        state["typed"] = {"value": value, "label": "r"}
    return held


def backend_of(name: str) -> lg.StateBackend:
    kind, _, incremental = name.partition("-")
    if kind == "rocksdb":
        return lg.RocksDBStateBackend(incremental=bool(incremental))
    return lg.HeapStateBackend(incremental=bool(incremental))


async def take(
    records: list[tuple[str, int]], parallelism: int, backend: str, storage: Path, save: str
) -> str:
    """Run :class:`Everything` over ``records`` and take a checkpoint or savepoint of it; the pointer."""
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=MAX_PARALLELISM, batch_size=3)
    env.set_state_backend(backend_of(backend))
    env.set_checkpoint_storage(storage.as_uri())
    env.enable_checkpointing(3600)
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid=f"src-{next(RUNS)}").key_by(lambda record: record[0])
    keyed.process(Everything(), uid="all").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("everything")
        half = len(records) // 2
        for record in records[:half]:
            await source.put(record)
        await until_or_failure(job, lambda: watch.until(half))
        await job.trigger_checkpoint()  # so an incremental backend's next one builds on it
        for record in records[half:]:
            await source.put(record)
        await until_or_failure(job, lambda: watch.until(len(records)))
        if save == "savepoint":
            pointer = await job.trigger_savepoint((storage / "savepoints").as_uri())
        else:
            pointer = (await job.trigger_checkpoint()).pointer
        await job.cancel()
    return pointer


async def read_all(savepoint: lg.Savepoint) -> dict[str, dict[str, Any]]:
    held: dict[str, dict[str, Any]] = {}
    async for key, states in savepoint.read_keyed("all"):
        assert key not in held  # every key once
        held[key] = states
    return held


records_strategy = st.lists(
    st.tuples(st.sampled_from([f"k{i}" for i in range(8)]), st.integers(0, 99)), max_size=30
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=records_strategy,
    backend=st.sampled_from(["heap", "heap-incremental", "rocksdb", "rocksdb-incremental"]),
    save=st.sampled_from(["savepoint", "checkpoint"]),
    parallelism=st.integers(1, 3),
)
async def test_a_savepoint_reads_back_exactly_the_state_the_job_held(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[tuple[str, int]],
    backend: str,
    save: str,
    parallelism: int,
) -> None:
    storage = tmp_path_factory.mktemp("reader")
    pointer = await take(records, parallelism, backend, storage, save)
    savepoint = await lg.Savepoint.load(pointer)
    expected = reference(records)
    assert await read_all(savepoint) == expected
    values = sorted((key, state["values"]) for key, state in expected.items())
    assert sorted([pair async for pair in savepoint.read_keyed_state("all", "values")]) == values
    batches = [batch async for batch in savepoint.read_keyed_state_batches("all", "values")]
    assert all(batches) and sorted(pair for batch in batches for pair in batch) == values
    timers = sorted([timer async for timer in savepoint.read_timers("all", "processing")])
    assert timers == sorted({(key, FAR + value) for key, value in records})
    (info,) = [op for op in savepoint.operators() if op.uid == "all"]
    assert info.parallelism == parallelism
    kinds = {state.name: (state.kind, state.entries) for state in info.states}
    assert kinds["total"] == ("value", len(expected)) and kinds["last"] == ("map", len(expected))
    if records:  # the timers' state exists once a timer was registered
        assert kinds[lg.state.timer_state_name("processing")][0] == "timers"


async def test_expired_entries_are_left_out_unless_asked_for(tmp_path: Path) -> None:
    records = [("a", 1), ("b", 2)]
    savepoint = await lg.Savepoint.load(await take(records, 1, "heap", tmp_path, "savepoint"))
    assert sorted([pair async for pair in savepoint.read_keyed_state("all", "recent")]) == records
    savepoint.clock = lambda: 10.0**12  # long after the hour the entries live
    assert [pair async for pair in savepoint.read_keyed_state("all", "recent")] == []
    expired = [pair async for pair in savepoint.read_keyed_state("all", "recent", include_expired=True)]
    assert sorted(expired) == records
    assert all("recent" not in states for _, states in [pair async for pair in savepoint.read_keyed("all")])


async def test_typed_values_read_as_their_plain_form_or_through_a_serializer(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class ReadingV2:  # the next version: a field added, one renamed
        amount: int = dataclasses.field(metadata=lg.field_alias("value"))
        unit: str = "kWh"

    savepoint = await lg.Savepoint.load(await take([("a", 5)], 2, "rocksdb", tmp_path, "checkpoint"))
    assert [pair async for pair in savepoint.read_keyed_state("all", "typed")] == [
        ("a", {"value": 5, "label": "r"})
    ]
    read = savepoint.read_keyed_state("all", "typed", serializer=lg.DataclassSerializer(ReadingV2))
    assert [pair async for pair in read] == [("a", ReadingV2(5))]
    with pytest.raises(lg.IncompatibleStateError, match=r"\$\.value: int became str"):
        retyped = dataclasses.make_dataclass("Reading", [("value", str)])
        [
            pair
            async for pair in savepoint.read_keyed_state(
                "all", "typed", serializer=lg.DataclassSerializer(retyped)
            )
        ]


async def test_asking_for_what_is_not_there_says_what_is(tmp_path: Path) -> None:
    savepoint = await lg.Savepoint.load(await take([("a", 5)], 1, "heap", tmp_path, "savepoint"))
    with pytest.raises(KeyError, match=r"no operator 'nope'; it has \['all', 'out', 'src-\d+', 'watch'\]"):
        [pair async for pair in savepoint.read_keyed_state("nope", "total")]
    with pytest.raises(KeyError, match=r"operator 'all' has no state 'nope'; it has \["):
        [pair async for pair in savepoint.read_keyed_state("all", "nope")]
    source = next(op for op in savepoint.operators() if op.uid.startswith("src-"))
    with pytest.raises(lg.ConfigurationError, match="is split operator state: read it with read_list_state"):
        [pair async for pair in savepoint.read_keyed_state(source.uid, source.states[0].name)]
    with pytest.raises(lg.ConfigurationError, match="is value state, not union state"):
        await savepoint.read_union_state("all", "total")
    with pytest.raises(lg.ConfigurationError, match="holds timers: read them with read_timers"):
        [pair async for pair in savepoint.read_keyed_state("all", lg.state.timer_state_name("processing"))]


async def test_operator_list_union_and_broadcast_state_read_back(tmp_path: Path) -> None:
    items = [("k", n) for n in range(10)]
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=MAX_PARALLELISM, batch_size=4)
    env.enable_checkpointing(3600)
    source, numbers = PausingSource(items, (10,)), PausingSource([1, 2], (2,))  # neither ends first
    stream = env.from_source(source, uid="src").rebalance()
    stream = stream.connect(env.from_source(numbers, uid="numbers").broadcast())
    stream.process(Buffers(), uid="buffers", parallelism=2).sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("operator-state")
        await numbers.reached(2)
        await source.reached(10)
        pointer = await job.stop_with_savepoint(tmp_path.as_uri())
    savepoint = await lg.Savepoint.load(pointer)
    assert sorted(await savepoint.read_list_state("buffers", "split")) == items
    assert sorted(await savepoint.read_union_state("buffers", "union")) == items
    assert await savepoint.read_broadcast_state("buffers", "shared") == {1: 10, 2: 20}
    kinds = {state.name: (state.kind, state.entries) for state in savepoint.operator("buffers").states}
    # Entries over every subtask: the list's and union's elements, the broadcast map's once.
    assert kinds == {"split": ("split", 10), "union": ("union", 10), "shared": ("broadcast", 2)}


async def test_window_contents_and_their_timers_read_back_by_window(tmp_path: Path) -> None:
    clicks = [("a", 1_000), ("a", 2_000), ("b", 61_000), ("a", 65_000)]
    # Timestamps without watermarks: no window ends while the job runs, every one is still open.
    strategy = lg.WatermarkStrategy.no_watermarks().with_timestamp_assigner(lambda click: click[1])
    env = lg.StreamEnvironment(parallelism=1, max_parallelism=MAX_PARALLELISM)
    env.enable_checkpointing(3600)
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource()
    watch = Watch()
    stream = env.from_source(source, uid="clicks", watermark_strategy=strategy).map(watch, uid="watch")
    windowed = stream.key_by(lambda click: click[0]).window(lg.TumblingEventTimeWindows.of(60))
    windowed.reduce(lambda x, y: (x[0], x[1] + y[1]), uid="sum").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("windows")
        for click in clicks:
            await source.put(click)
        await until_or_failure(job, lambda: watch.until(len(clicks)))
        pointer = await job.trigger_savepoint(tmp_path.as_uri())
        await job.cancel()
    savepoint = await lg.Savepoint.load(pointer)
    contents = sorted(
        [entry async for entry in savepoint.read_keyed_state("sum", "window-contents", windows=True)],
        key=repr,
    )
    assert contents == sorted(
        [
            ("a", lg.TimeWindow(0, 60_000), ("a", 3_000)),
            ("a", lg.TimeWindow(60_000, 120_000), ("a", 65_000)),
            ("b", lg.TimeWindow(60_000, 120_000), ("b", 61_000)),
        ],
        key=repr,
    )
    timers = sorted(
        [timer async for timer in savepoint.read_timers("sum", "event", namespaces=True)], key=repr
    )
    assert timers == sorted([(key, window.max_timestamp(), window) for key, window, _ in contents], key=repr)


async def test_keyed_state_as_a_data_frame_and_an_arrow_table(tmp_path: Path) -> None:
    records = [("a", 1), ("b", 2), ("a", 3)]
    savepoint = await lg.Savepoint.load(await take(records, 2, "heap", tmp_path, "savepoint"))
    frame = (await savepoint.to_pandas("all")).set_index("key").sort_index()
    assert list(frame.index) == ["a", "b"]
    assert frame.loc["a", "total"] == 4 and frame.loc["a", "values"] == [1, 3]
    assert frame.loc["b", "typed"] == {"value": 2, "label": "r"}
    with pytest.raises(lg.ConfigurationError, match="state 'last' of 'all' holds values pyarrow cannot type"):
        await savepoint.to_arrow("all")  # a map with int keys
    table = await savepoint.to_arrow("all", states=["total", "counted", "values"])
    rows = sorted(table.to_pylist(), key=lambda row: row["key"])
    assert rows == [
        {"key": "a", "total": 4, "counted": 2, "values": [1, 3]},
        {"key": "b", "total": 2, "counted": 1, "values": [2]},
    ]
