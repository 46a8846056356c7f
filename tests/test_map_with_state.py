"""``KeyedStream.map_with_state``: the function takes each record and its key's value state and gives
an output and the next value. Whole jobs through the public API, on every backend and on both of
the runtime's paths (the state runs the batch; or each record awaits its state)."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _sources import PausingSource
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.testing import Crash, FailureSchedule, assert_exactly_once, failure_schedules
from tests.test_unaligned import expected_sums

pytestmark = pytest.mark.anyio

Record = tuple[str, int]
GUARD = 60

records = st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(-50, 50)), max_size=60)

# Each runs the state a different way: the heap's table without calls per record, the generic loop
# (TTL makes the heap's state general), RocksDB's buffers, and the awaited path for async functions.
BACKENDS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap": lambda: lg.HeapStateBackend(),
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True, max_chain_length=3),
    "rocksdb": lambda: lg.RocksDBStateBackend(),
}


def total_state(ttl: bool = False) -> lg.ValueStateDescriptor[int]:
    descriptor = lg.ValueStateDescriptor[int]("total", default=0)
    if ttl:
        descriptor = lg.ValueStateDescriptor[int]("total", default=0, ttl=lg.StateTtlConfig(3600))
    return descriptor


def running_sum(record: Record, total: int) -> tuple[Record, int]:
    total += record[1]
    return (record[0], total), total


async def running_sum_awaiting(record: Record, total: int) -> tuple[Record, int]:
    await anyio.lowlevel.checkpoint()
    return running_sum(record, total)


async def run(
    items: list[Record],
    fn: Callable[..., Any],
    *,
    parallelism: int = 1,
    backend: str = "heap",
    state: lg.ValueStateDescriptor[Any] | None = None,
    batch_size: int = 3,
    key_of: Callable[[Record], str] = lambda r: r[0],
) -> list[Any]:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=16, batch_size=batch_size)
    env.set_state_backend(BACKENDS[backend]())
    sink: lg.CollectSink[Any] = lg.CollectSink()
    keyed = env.from_collection(items, uid="src", parallelism=1).key_by(key_of)
    keyed.map_with_state(fn, state=state, uid="sum").sink(sink, uid="out")
    with anyio.fail_after(GUARD):
        await env.execute("map with state")
    return list(sink.results)


@settings(max_examples=30, deadline=None)
@given(
    items=records,
    parallelism=st.integers(1, 4),
    backend=st.sampled_from(sorted(BACKENDS)),
    form=st.sampled_from(["def", "def-ttl", "async def"]),
    key_of=st.sampled_from([lambda r: r[0], operator.itemgetter(0)]),  # a Python and a C selector
)
async def test_each_key_folds_its_records_in_order_on_every_backend_and_path(
    items: list[Record], parallelism: int, backend: str, form: str, key_of: Callable[[Record], str]
) -> None:
    fn = running_sum_awaiting if form == "async def" else running_sum
    state = total_state(form == "def-ttl")
    out = await run(items, fn, parallelism=parallelism, backend=backend, state=state, key_of=key_of)
    # One source subtask: each key's records reach their subtask in order, so each key's sums are
    # the reference's, in the reference's order.
    expected = expected_sums(items)
    assert Counter(out) == Counter(expected)
    for key in {key for key, _ in items}:
        assert [r for r in out if r[0] == key] == [r for r in expected if r[0] == key]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_a_new_value_of_none_clears_the_key_and_the_default_is_fresh_each_time(backend: str) -> None:
    def collect_until_three(record: Record, seen: list[int]) -> tuple[list[int], list[int] | None]:
        seen.append(record[1])  # the default list: a fresh copy for every key that has none
        return list(seen), (None if len(seen) == 3 else seen)

    items = [("a", n) for n in range(7)] + [("b", 100)]
    state = lg.ValueStateDescriptor[list[int]]("seen", default=[])
    out = await run(items, collect_until_three, backend=backend, state=state, batch_size=2)
    assert out == [[0], [0, 1], [0, 1, 2], [3], [3, 4], [3, 4, 5], [6], [100]]


async def test_without_a_descriptor_the_state_starts_as_none() -> None:
    out = await run([("a", 1), ("a", 2), ("b", 3)], lambda r, seen: ((r[0], seen), (seen or 0) + 1))
    assert out == [("a", None), ("a", 1), ("b", None)]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_a_function_that_does_not_return_a_pair_is_told_what_to_return(backend: str) -> None:
    with pytest.raises(lg.JobFailedError) as failed:
        await run([("a", 1)], lambda record, total: record[1] + total, backend=backend, state=total_state())
    cause = failed.value.__cause__
    assert isinstance(cause, TypeError)
    assert any("returns a pair (output, new_value)" in note for note in cause.__notes__)


async def test_an_error_of_the_function_itself_gets_no_note_about_pairs() -> None:
    def broken(record: Record, total: int) -> tuple[Record, int]:
        a, b = record[1], None  # noqa: F841
        raise ValueError("not enough values to unpack (a message of the user's own)")

    with pytest.raises(lg.JobFailedError) as failed:
        await run([("a", 1)], broken, state=total_state())
    assert not getattr(failed.value.__cause__, "__notes__", [])


class Opaque:
    """A key without a canonical form: it cannot be checkpointed or moved."""


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("position", [0, 4])
@pytest.mark.parametrize("bad_key", [Opaque, list], ids=["opaque", "unhashable"])
async def test_a_key_without_a_canonical_form_fails_the_job_at_parallelism_one(
    backend: str, position: int, bad_key: type
) -> None:
    # At parallelism 1 nothing routes by key group, so the operator (or the state) must check it.
    items: list[Any] = [("a", n) for n in range(6)]
    items[position] = (bad_key(), 1)
    env = lg.StreamEnvironment(parallelism=1, batch_size=3)
    env.set_state_backend(BACKENDS[backend]())
    keyed = env.from_collection(items, uid="src").key_by(lambda r: r[0])
    keyed.map_with_state(running_sum, state=total_state(), uid="sum").sink(lg.CollectSink(), uid="out")
    with pytest.raises(lg.JobFailedError) as failed, anyio.fail_after(GUARD):
        await env.execute("opaque key")
    assert isinstance(failed.value.__cause__, lg.KeySerializationError)
    assert bad_key.__name__ in str(failed.value.__cause__)


def counts(items: list[Record], in_place: bool) -> Callable[[lg.StreamEnvironment], Any]:
    """Each key's running count, as an int (a value RocksDB's cache keeps as it is) or as a list the
    function appends to in place, so a snapshot that shared it with the live table (no copy-on-write)
    would hold later records and a restore would count them twice. Whatever the order records of a
    key arrive in, the counts it emits are 1, 2, ..."""

    def count(record: Record, seen: int) -> tuple[tuple[str, int], int]:
        return (record[0], seen + 1), seen + 1

    def append(record: Record, seen: list[int]) -> tuple[tuple[str, int], list[int]]:
        seen.append(record[1])
        return (record[0], len(seen)), seen

    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        keyed = env.from_collection(items, uid="src", parallelism=2).key_by(lambda r: r[0])
        if in_place:
            state = lg.ValueStateDescriptor[Any]("seen", default=[])
            keyed.map_with_state(append, state=state, uid="count").sink(sink, uid="out")
        else:
            state = lg.ValueStateDescriptor[Any]("seen", default=0)
            keyed.map_with_state(count, state=state, uid="count").sink(sink, uid="out")
        return sink

    return build


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=st.integers(1, 3),
    backend=st.sampled_from(sorted(BACKENDS)),
    in_place=st.booleans(),
    schedule=failure_schedules(["src", "count", "out"], max_record=40, max_checkpoint_every=6),
)
@example(  # a restore from a checkpoint of state RocksDB's cache wrote inline (map_batch_nowait)
    items=[(key, n) for n in range(10) for key in "abc"],
    parallelism=1,
    backend="rocksdb",
    in_place=False,
    schedule=FailureSchedule((Crash("count", 25),), checkpoint_every=3),
)
async def test_counts_are_exactly_once_after_any_crashes(
    items: list[Record], parallelism: int, backend: str, in_place: bool, schedule: FailureSchedule
) -> None:
    def environment() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(
            parallelism=parallelism, max_parallelism=16, batch_size=3, channel_capacity=2
        )
        env.set_state_backend(BACKENDS[backend]())
        return env

    await assert_exactly_once(counts(items, in_place), schedule, environment=environment)


async def test_the_state_is_saved_under_its_name_and_queryable(tmp_path: Path) -> None:
    items = [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]
    env = lg.StreamEnvironment(batch_size=2)
    source = PausingSource(items, (len(items),))
    keyed = env.from_source(source, uid="src").key_by(lambda r: r[0])
    keyed.map_with_state(running_sum, state=total_state(), uid="sum").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("saved")
        await source.reached(len(items))
        assert await job.query_state("sum", "total", "a") == 9
        savepoint = await job.stop_with_savepoint((tmp_path / "savepoints").as_uri())
    saved = await lg.Savepoint.load(savepoint)
    assert sorted([pair async for pair in saved.read_keyed_state("sum", "total")]) == [("a", 9), ("b", 6)]


def test_the_state_must_be_a_value_state_descriptor() -> None:
    keyed = lg.StreamEnvironment().from_collection([("a", 1)]).key_by(lambda r: r[0])
    with pytest.raises(lg.ConfigurationError, match="ValueStateDescriptor"):
        keyed.map_with_state(running_sum, state=lg.ListStateDescriptor[int]("all"))  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="needs a function"):
        keyed.map_with_state(42)  # type: ignore[arg-type]
