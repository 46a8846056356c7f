"""Failures: a user function's error fails the job clearly, tears everything down, leaves no task;
misuse is refused while the graph is built."""

from __future__ import annotations

import operator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.state import key_group_for, subtask_for_key_group
from tests._tasks import running_task_count

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def fail_at(target: int) -> Any:
    def check(x: int) -> int:
        if x == target:
            raise Boom(f"record {x}")
        return x

    return check


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    total=st.integers(1, 400),
    data=st.data(),
    parallelism=st.integers(1, 4),
    batch_size=st.sampled_from([1, 7, 1000]),
)
async def test_any_failing_record_fails_the_job_naming_operator_and_cause(
    total: int, data: st.DataObject, parallelism: int, batch_size: int
) -> None:
    target = data.draw(st.integers(0, total - 1), label="failing record")
    before = running_task_count()
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=32, batch_size=batch_size)
    stream = env.from_collection(range(total)).rebalance().map(lambda x: x, uid="first")
    stream = stream.map(fail_at(target), uid="boom")  # chained behind "first": the error names "boom"
    stream.key_by(lambda x: x % 5).sum(uid="sum").sink(lg.CollectSink(), uid="out")
    with pytest.raises(lg.JobFailedError) as failure:
        await env.execute("failing")
    error = failure.value
    assert isinstance(error, lg.LockgateError)
    assert error.operator_uid == "boom"
    assert error.parallelism == parallelism
    assert 0 <= error.subtask_index < parallelism
    assert isinstance(error.__cause__, Boom)
    assert str(error.__cause__) == f"record {target}"
    assert "'boom'" in str(error) and f"record {target}" in str(error) and "'failing'" in str(error)
    assert running_task_count() == before  # every actor was cancelled and has ended


class FailsOnKey(lg.KeyedProcessFunction[int, int]):
    def __init__(self, bad_key: int) -> None:
        self.bad_key = bad_key

    def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
        if ctx.get_current_key() == self.bad_key:
            raise ValueError(f"bad key {self.bad_key}")
        yield value


async def test_the_failing_subtask_is_the_owner_of_the_failing_key() -> None:
    env = lg.StreamEnvironment(parallelism=3, max_parallelism=32)
    env.from_collection(range(100)).key_by(lambda x: x).process(FailsOnKey(42), uid="keyed").sink(
        lg.CollectSink()
    )
    with pytest.raises(lg.JobFailedError) as failure:
        await env.execute("keyed-failure")
    assert failure.value.operator_uid == "keyed"
    assert failure.value.subtask_index == subtask_for_key_group(32, 3, key_group_for(42, 32))
    assert isinstance(failure.value.__cause__, ValueError)


class FailsInOpen(lg.ProcessFunction[int, int]):
    def open(self, ctx: lg.RuntimeContext) -> None:
        raise RuntimeError("cannot connect")

    def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
        yield value


async def test_failures_in_open_sources_and_sinks_are_attributed() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1]).process(FailsInOpen(), uid="opener").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'opener'") as failure:
        await env.execute("open")
    assert str(failure.value.__cause__) == "cannot connect"

    async def broken() -> Any:
        yield 1
        raise OSError("source went away")

    env = lg.StreamEnvironment()
    env.from_async_iterable(broken(), uid="feed").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'feed'") as failure:
        await env.execute("source")
    assert isinstance(failure.value.__cause__, OSError)

    class BrokenWriter(lg.SinkWriter):
        async def write(self, records: list[Any]) -> None:
            raise ConnectionError("disk full")

    class BrokenSink(lg.Sink):
        def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
            return BrokenWriter()

    env = lg.StreamEnvironment()
    env.from_collection([1]).sink(BrokenSink(), uid="writer")
    with pytest.raises(lg.JobFailedError, match="'writer'") as failure:
        await env.execute("sink")
    assert isinstance(failure.value.__cause__, ConnectionError)


async def test_a_background_job_that_fails_reports_through_wait() -> None:
    before = running_task_count()
    env = lg.StreamEnvironment(parallelism=2)
    env.from_collection(range(10)).rebalance().map(fail_at(7), uid="boom").sink(lg.CollectSink())
    job = await env.start("background")
    with pytest.raises(lg.JobFailedError, match="'boom'"):
        await job.wait()
    assert job.status is lg.JobStatus.FAILED
    await job.cancel()  # cancelling an ended job does nothing
    assert running_task_count() <= before + 1  # at most the ending job task on asyncio


async def test_close_is_called_on_every_subtask_even_when_the_job_fails() -> None:
    closed: list[int] = []

    class Tracked(lg.ProcessFunction[int, int]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.index = ctx.subtask_index

        def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
            if value == 3:
                raise Boom("3")
            yield value

        def close(self) -> None:
            closed.append(self.index)

    env = lg.StreamEnvironment(parallelism=2)
    env.from_collection(range(10)).rebalance().process(Tracked()).sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError):
        await env.execute("close")
    assert sorted(closed) == [0, 1]


# ---- misuse is refused while the graph is built


def test_key_by_needs_a_function() -> None:
    stream = lg.StreamEnvironment().from_collection([1])
    with pytest.raises(lg.ConfigurationError, match=r"key_by\(\) needs a function"):
        stream.key_by(None)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match=r"key_by\(\) needs a function"):
        stream.key_by(0)  # type: ignore[arg-type]


def test_map_filter_flat_map_need_functions() -> None:
    stream = lg.StreamEnvironment().from_collection([1])
    for method in (stream.map, stream.filter, stream.flat_map):
        with pytest.raises(lg.ConfigurationError, match="needs a function"):
            method("not a function")  # type: ignore[operator]


def test_process_needs_a_function_instance_of_the_right_kind() -> None:
    stream = lg.StreamEnvironment().from_collection([1])
    with pytest.raises(lg.ConfigurationError, match=r"pass FailsInOpen\(\) instead"):
        stream.process(FailsInOpen)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="ProcessFunction"):
        stream.process(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="KeyedProcessFunction"):
        stream.key_by(lambda x: x).process(FailsInOpen())  # type: ignore[arg-type]


def test_a_uid_may_be_used_once() -> None:
    env = lg.StreamEnvironment()
    stream = env.from_collection([1], uid="src")
    stream.map(lambda x: x, uid="m")
    with pytest.raises(lg.ConfigurationError, match="uid 'm' is already used"):
        stream.map(lambda x: x, uid="m")
    with pytest.raises(lg.ConfigurationError, match="uid 'src' is already used"):
        stream.sink(lg.CollectSink(), uid="src")


def test_parallelism_above_max_parallelism_is_refused() -> None:
    with pytest.raises(lg.ConfigurationError, match="above max_parallelism 4"):
        lg.StreamEnvironment(parallelism=5, max_parallelism=4)
    env = lg.StreamEnvironment(max_parallelism=4)
    with pytest.raises(lg.ConfigurationError, match="above max_parallelism 4"):
        env.from_collection([1]).map(lambda x: x, parallelism=8)
    with pytest.raises(lg.ConfigurationError, match="positive"):
        env.from_collection([1]).map(lambda x: x, parallelism=0)


async def test_graph_errors_surface_before_anything_runs() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1]).map(lambda x: x)
    with pytest.raises(lg.ConfigurationError, match="no sink"):
        await env.execute("no-sink")

    env = lg.StreamEnvironment(parallelism=2)
    env.from_collection([1]).forward().map(lambda x: x).sink(lg.CollectSink())
    with pytest.raises(lg.ConfigurationError, match="forward needs equal parallelism"):
        await env.execute("forward")

    with pytest.raises(lg.ConfigurationError, match="parallelism 1 only"):
        env.from_source(lg.QueueSource(), parallelism=2)
    with pytest.raises(lg.ConfigurationError, match="from_source"):
        env.from_source([1, 2])  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="async iterable"):
        env.from_async_iterable([1, 2])  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="sink"):
        env.from_collection([1]).sink(print)  # type: ignore[type-var]


async def test_a_function_that_cannot_be_copied_per_subtask_is_refused_at_start() -> None:
    import threading

    class HoldsLock(lg.KeyedProcessFunction[int, int]):
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
            yield value

    env = lg.StreamEnvironment()
    env.from_collection([1]).key_by(lambda x: x).process(HoldsLock(), uid="locked").sink(lg.CollectSink())
    with pytest.raises(lg.ConfigurationError, match="create resources such as clients in open"):
        await env.execute("copy")


async def test_keyed_state_outside_a_keyed_stream_is_a_clear_error() -> None:
    class WantsState(lg.ProcessFunction[int, int]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            ctx.get_state(lg.ValueStateDescriptor("x"))

        def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
            yield value

    env = lg.StreamEnvironment()
    env.from_collection([1]).process(WantsState(), uid="unkeyed").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError) as failure:
        await env.execute("state")
    assert isinstance(failure.value.__cause__, lg.ConfigurationError)
    assert "after key_by" in str(failure.value.__cause__)


async def test_returning_a_string_from_a_flat_map_is_refused() -> None:
    env = lg.StreamEnvironment()
    env.from_collection(["ab"]).flat_map(lambda s: s.upper(), uid="upper").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="split into characters"):
        await env.execute("strings")


async def test_a_key_without_canonical_form_fails_at_its_first_record_at_any_parallelism() -> None:
    for parallelism in (1, 2):
        env = lg.StreamEnvironment(parallelism=parallelism)
        env.from_collection([[1, 2], [3]]).key_by(lambda r: r).sum(uid="by-list").sink(lg.CollectSink())
        with pytest.raises(lg.JobFailedError) as failure:
            await env.execute("bad-keys")
        assert isinstance(failure.value.__cause__, lg.KeySerializationError)
        assert "list" in str(failure.value.__cause__)


async def test_every_subtask_resource_is_released_even_when_closing_raises() -> None:
    from tests.test_state_backend import AsyncOnlyBackend, AsyncOnlyStateBackend

    AsyncOnlyBackend.disposed.clear()

    class BadClose(lg.KeyedProcessFunction[int, int]):
        def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
            yield value

        def close(self) -> None:
            raise OSError("cannot close")

    env = lg.StreamEnvironment().set_state_backend(AsyncOnlyStateBackend())
    keyed = env.from_collection([1, 2]).key_by(lambda x: x)
    keyed.process(BadClose(), uid="first").map(lambda x: x, uid="mid").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'first'") as failure:
        await env.execute("close")
    assert isinstance(failure.value.__cause__, OSError)
    assert AsyncOnlyBackend.disposed == ["first"]  # disposed although the function's close raised


@pytest.mark.anyio
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("written_in", ["python", "c"])
async def test_a_raising_key_selector_is_reported_as_the_keyed_operators_failure_with_the_record(
    parallelism: int, written_in: str
) -> None:
    def key_of(record: tuple[str, int]) -> str:
        if record[1] == 5:
            raise ValueError("no key for this one")
        return record[0]

    items: list[Any] = [("a", n) for n in range(8)]
    selector: Any = key_of
    if written_in == "c":  # operator.itemgetter runs no Python frame: the record is found by asking again
        items[5], selector = 5, operator.itemgetter(0)
    env = lg.StreamEnvironment(parallelism=parallelism, batch_size=4)
    env.from_collection(items, uid="src", parallelism=1).key_by(selector).sum(1, uid="sum").sink(
        lg.CollectSink(), uid="out"
    )
    with pytest.raises(lg.JobFailedError) as failed:
        await env.execute("keys")
    assert failed.value.operator_uid == "sum"
    cause = failed.value.__cause__
    assert isinstance(cause, ValueError if written_in == "python" else TypeError)
    notes = getattr(cause, "__notes__", [])
    assert any("key selector" in note and f"on the record {items[5]!r}, number" in note for note in notes)
