"""Pipelines give what a plain-Python reference gives, for any input and any parallelism."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg

pytestmark = pytest.mark.anyio

records = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(-1000, 1000)), max_size=300)
parallelisms = st.integers(1, 4)
batch_sizes = st.sampled_from([1, 3, 1000])
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class RunningSum(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int, int]]):
    """Emits (key, running sum, sequence number within the key)."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))
        self.seen = ctx.get_state(lg.ValueStateDescriptor("seen", default=0))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        total = await self.total.value() + value[1]
        seen = await self.seen.value() + 1
        await self.total.update(total)
        await self.seen.update(seen)
        yield (ctx.get_current_key(), total, seen)


class FastRunningSum(RunningSum):
    def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
        total = self.total.value_nowait() + value[1]
        seen = self.seen.value_nowait() + 1
        self.total.update_nowait(total)
        self.seen.update_nowait(seen)
        return [(ctx.get_current_key(), total, seen)]


def reference_running_sums(data: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    totals: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    out = []
    for key, value in data:
        totals[key] += value
        seen[key] += 1
        out.append((key, totals[key], seen[key]))
    return out


@FAST
@given(data=records, parallelism=parallelisms, batch_size=batch_sizes, fast=st.booleans())
async def test_keyed_running_sum_matches_reference_and_keeps_per_key_order(
    data: list[tuple[str, int]], parallelism: int, batch_size: int, fast: bool
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=16, batch_size=batch_size)
    function = FastRunningSum() if fast else RunningSum()
    # A rebalance first, so records reach the keyed operator from several subtasks.
    out = (
        env.from_collection(data)
        .rebalance()
        .map(lambda r: r, parallelism=parallelism)
        .key_by(lambda r: r[0])
        .process(function)
        .sink(lg.CollectSink())
    )
    await env.execute("running-sum")
    expected = reference_running_sums(data) if parallelism == 1 else None
    if expected is not None:
        assert out.results == expected  # one path end to end: the global order is kept too
    # Per key the sums arrive in order, so the sequence numbers of each key count 1, 2, 3...
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, _, seen in out.results:
        by_key[key].append(seen)
    assert all(seq == list(range(1, len(seq) + 1)) for seq in by_key.values())
    assert Counter(data_key for data_key, _ in data) == Counter({k: len(v) for k, v in by_key.items()})
    final = {key: total for key, total, _ in out.results}
    assert final == {key: sum(v for k, v in data if k == key) for key in {k for k, _ in data}}


@FAST
@given(
    data=st.lists(st.integers(-10_000, 10_000), max_size=300),
    parallelism=parallelisms,
    batch_size=batch_sizes,
    use_async=st.booleans(),
)
async def test_stateless_chain_matches_reference(
    data: list[int], parallelism: int, batch_size: int, use_async: bool
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)

    def double(x: int) -> int:
        return 2 * x

    async def double_async(x: int) -> int:
        return 2 * x

    def keep(x: int) -> bool:
        return x % 3 != 0

    async def keep_async(x: int) -> bool:
        return x % 3 != 0

    def explode(x: int) -> list[int]:
        return [x, -x] if x % 2 else []

    async def explode_async(x: int) -> Any:
        if x % 2:
            yield x
            yield -x

    stream = env.from_collection(data, parallelism=parallelism)
    if use_async:
        stream = stream.map(double_async).flat_map(lambda x: [x, x + 1]).filter(keep_async)
        stream = stream.flat_map(explode_async)
    else:
        stream = stream.map(double).flat_map(lambda x: [x, x + 1]).filter(keep).flat_map(explode)
    out = stream.sink(lg.CollectSink())
    await env.execute("stateless")
    expected = [z for x in data for y in (2 * x, 2 * x + 1) if y % 3 for z in ([y, -y] if y % 2 else [])]
    if parallelism == 1:
        assert out.results == expected
    else:
        assert Counter(out.results) == Counter(expected)


@FAST
@given(data=records, parallelism=parallelisms, sink_parallelism=parallelisms)
async def test_reduce_and_sum_emit_running_aggregates_per_key(
    data: list[tuple[str, int]], parallelism: int, sink_parallelism: int
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=32)
    keyed = env.from_collection(data).key_by(lambda r: r[0])
    sums = keyed.sum(1).sink(lg.CollectSink(), parallelism=sink_parallelism)
    maxima = keyed.reduce(lambda a, b: a if a[1] >= b[1] else b).sink(lg.CollectSink())
    await env.execute("aggregates")
    expected_sums = [(key, total, _) for key, total, _ in reference_running_sums(data)]
    assert Counter(sums.results) == Counter((key, total) for key, total, _ in expected_sums)
    expected_maxima: list[tuple[str, int]] = []
    best: dict[str, tuple[str, int]] = {}
    for record in data:
        if record[0] not in best or record[1] > best[record[0]][1]:
            best[record[0]] = record
        expected_maxima.append(best[record[0]])
    assert Counter(maxima.results) == Counter(expected_maxima)


@FAST
@given(
    left=st.lists(st.integers(0, 100), max_size=100),
    right=st.lists(st.integers(0, 100), max_size=100),
    parallelism=parallelisms,
)
async def test_union_rebalance_broadcast_and_forward_deliver_every_record(
    left: list[int], right: list[int], parallelism: int
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism)
    a = env.from_collection(left, parallelism=parallelism)
    b = env.from_collection(right)
    union = a.union(b).map(lambda x: x + 1).sink(lg.CollectSink())
    rebalanced = a.rebalance().map(lambda x: x).sink(lg.CollectSink())
    broadcast = b.broadcast().map(lambda x: x, parallelism=3).sink(lg.CollectSink(), parallelism=3)
    forwarded = a.forward().map(lambda x: -x).sink(lg.CollectSink())
    await env.execute("partitioning")
    assert Counter(union.results) == Counter(x + 1 for x in left + right)
    assert Counter(rebalanced.results) == Counter(left)
    assert Counter(broadcast.results) == Counter(right * 3)
    assert Counter(forwarded.results) == Counter(-x for x in left)


class Tagger(lg.ProcessFunction[int, tuple[int, int]]):
    """A non-keyed process function: tags each record with its subtask index."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.index = ctx.subtask_index

    def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
        yield (self.index, value)


async def test_process_function_instances_are_per_subtask() -> None:
    env = lg.StreamEnvironment(parallelism=3)
    out = env.from_collection(range(30)).rebalance().process(Tagger()).sink(lg.CollectSink())
    await env.execute("tagger")
    assert sorted(value for _, value in out.results) == list(range(30))
    # Each subtask's copy kept its own index, so all three indexes appear.
    assert {index for index, _ in out.results} == {0, 1, 2}


async def test_value_state_semantics() -> None:
    class Probe(lg.KeyedProcessFunction[str, Any]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.items = ctx.get_state(lg.ValueStateDescriptor("items", default=[]))

        async def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:
            items = await self.items.value()
            items.append(value)  # the default is a fresh copy: mutating it touches no other key
            if value.endswith("!"):
                await self.items.update(None)  # update(None) clears
            else:
                await self.items.update(items)
            yield (value, list(items))

    env = lg.StreamEnvironment()
    out = env.from_collection(["a", "b", "a", "a!", "a"]).key_by(lambda s: s[0]).process(Probe())
    sink = out.sink(lg.CollectSink())
    await env.execute("semantics")
    assert sink.results == [
        ("a", ["a"]),
        ("b", ["b"]),
        ("a", ["a", "a"]),
        ("a!", ["a", "a", "a!"]),
        ("a", ["a"]),
    ]


async def test_equal_keys_of_any_supported_type_share_one_subtask_and_state() -> None:
    # 1, 1.0 and True are one key in Python, and so in lockgate: one key group, one state entry.
    keys = [None, 1, 1.0, True, "1", b"1", (1, "a"), (1.0, "a"), 2.5, -0.0, 0]
    env = lg.StreamEnvironment(parallelism=4, max_parallelism=64)
    out = env.from_collection([(k, 1) for k in keys * 3]).key_by(lambda r: r[0]).sum(1)
    sink = out.sink(lg.CollectSink())
    await env.execute("keys")
    final: dict[Any, int] = {}
    for key, count in sink.results:
        final[key] = max(final.get(key, 0), count)
    assert final == dict(Counter(keys * 3))


async def test_from_async_iterable_and_print_sink(capsys: pytest.CaptureFixture[str]) -> None:
    async def numbers() -> Any:
        for i in range(5):
            yield i

    env = lg.StreamEnvironment()
    env.from_async_iterable(numbers()).map(lambda x: x * 10).sink(lg.PrintSink())
    await env.execute("print")
    assert capsys.readouterr().out.splitlines() == ["0", "10", "20", "30", "40"]


async def test_print_sink_prefixes_subtask_numbers_above_parallelism_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = lg.StreamEnvironment(parallelism=2)
    env.from_collection(range(4), parallelism=2).sink(lg.PrintSink())
    await env.execute("print")
    assert sorted(capsys.readouterr().out.splitlines()) == ["1> 0", "1> 2", "2> 1", "2> 3"]


class CountForms:
    """The four forms process_element may take; each emits (key, count so far), none for "skip"."""

    class AsyncGenerator(lg.KeyedProcessFunction[str, tuple[str, int]]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

        async def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:
            count = await self.count.value() + 1
            await self.count.update(count)
            if value != "skip":
                yield (value, count)

    class Coroutine(AsyncGenerator):
        async def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
            count = await self.count.value() + 1
            await self.count.update(count)
            return None if value == "skip" else [(value, count)]

    class Generator(AsyncGenerator):
        def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
            count = self.count.value_nowait() + 1
            self.count.update_nowait(count)
            if value != "skip":
                yield (value, count)

    class Function(AsyncGenerator):
        def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
            count = self.count.value_nowait() + 1
            self.count.update_nowait(count)
            return None if value == "skip" else [(value, count)]


@pytest.mark.parametrize("form", ["AsyncGenerator", "Coroutine", "Generator", "Function"])
async def test_every_form_of_process_element_gives_the_same_results(form: str) -> None:
    words = ["a", "b", "skip", "a", "c", "a", "skip", "b"]
    env = lg.StreamEnvironment(parallelism=2)
    function = getattr(CountForms, form)()
    out = env.from_collection(words).key_by(lambda w: w).process(function).sink(lg.CollectSink())
    await env.execute(form)
    assert sorted(out.results) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]


class CountingMap(lg.MapFunction[tuple[str, int], tuple[str, int, int]]):
    """The fast keyed form: a MapFunction with keyed state and no await."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))
        self.seen = ctx.get_state(lg.ValueStateDescriptor("seen", default=0))

    def map(self, value: tuple[str, int]) -> tuple[str, int, int]:
        total = self.total.value_nowait() + value[1]
        seen = self.seen.value_nowait() + 1
        self.total.update_nowait(total)
        self.seen.update_nowait(seen)
        return (value[0], total, seen)


class AwaitingMap(CountingMap):
    async def map(self, value: tuple[str, int]) -> tuple[str, int, int]:  # type: ignore[override]
        total = await self.total.value() + value[1]
        seen = await self.seen.value() + 1
        await self.total.update(total)
        await self.seen.update(seen)
        return (value[0], total, seen)


@FAST
@given(data=records, parallelism=parallelisms, awaiting=st.booleans())
async def test_a_map_function_on_a_keyed_stream_keeps_keyed_state(
    data: list[tuple[str, int]], parallelism: int, awaiting: bool
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=16)
    function = AwaitingMap() if awaiting else CountingMap()
    out = env.from_collection(data).key_by(lambda r: r[0]).map(function).sink(lg.CollectSink())
    await env.execute("keyed-map")
    if parallelism == 1:
        assert out.results == reference_running_sums(data)
    else:
        assert Counter(out.results) == Counter(reference_running_sums(data))


async def test_a_map_function_is_opened_and_closed_once_per_subtask() -> None:
    events: list[tuple[str, int]] = []

    class Tracked(lg.MapFunction[int, int]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.index = ctx.subtask_index
            events.append(("open", self.index))

        def map(self, value: int) -> int:
            return value * 10

        def close(self) -> None:
            events.append(("close", self.index))

    env = lg.StreamEnvironment(parallelism=3)
    out = env.from_collection(range(9)).rebalance().map(Tracked()).sink(lg.CollectSink())
    await env.execute("tracked")
    assert sorted(out.results) == [x * 10 for x in range(9)]
    assert sorted(events) == [("close", 0), ("close", 1), ("close", 2), ("open", 0), ("open", 1), ("open", 2)]
