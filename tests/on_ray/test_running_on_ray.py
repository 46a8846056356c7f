"""Jobs on the Ray runner give what they give on the local runner: records, event-time windows and
late records, unaligned checkpoints after crashes; savepoints move between the two runners; and what
goes wrong says so (a user's error reaches the caller with its type, a function that cannot reach the
workers fails the start, records a worker cannot unpickle fail the job naming the channel)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exactly_once import records, running_sums
from test_savepoints import Tally, expected, tally
from test_windows import assigner_of, assigners, job

import lockgate as lg
from lockgate.connectors import CollectionSource
from lockgate.testing import FailureSchedule, assert_exactly_once, failure_schedules
from tests._sources import GUARD, PausingSource

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("ray_session")]

Record = tuple[str, int]
EXAMPLES = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


LONG_WORDS = lg.OutputTag("long")


class Words(lg.ProcessFunction[str, tuple[str, int]]):
    """Each word of a line with a 1; words longer than three letters also to a side output."""

    def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:
        for word in value.split():
            if len(word) > 3:
                ctx.output(LONG_WORDS, word)
            yield (word, 1)


def split_and_count(
    items: list[str], env: lg.StreamEnvironment
) -> tuple[lg.CollectSink[Any], lg.CollectSink[Any]]:
    """Words counted per word (a keyed sum), and the long words through a side output."""
    counted = env.from_collection(items, uid="lines").process(Words(), uid="split")
    totals = counted.key_by(lambda pair: pair[0]).sum(1, uid="count").sink(lg.CollectSink(), uid="totals")
    long = counted.get_side_output(LONG_WORDS).rebalance().map(str.upper, uid="upper")
    return totals, long.sink(lg.CollectSink(), uid="long")


def last_per_key(pairs: list[tuple[str, int]]) -> dict[str, int]:
    return {key: max(count for k, count in pairs if k == key) for key, _ in pairs}


@EXAMPLES
@given(
    lines=st.lists(st.text("abcde ", max_size=12), max_size=30),
    parallelism=st.integers(1, 4),
    batch_size=st.sampled_from([1, 4, 100]),
)
async def test_a_job_on_ray_gives_what_it_gives_locally(
    lines: list[str], parallelism: int, batch_size: int
) -> None:
    local = lg.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    local_totals, local_long = split_and_count(lines, local)
    local_result = await local.execute("local")
    remote = lg.StreamEnvironment(
        parallelism=parallelism, batch_size=batch_size, runner=lg.RayRunner(frame_records=3)
    )
    totals, long = split_and_count(lines, remote)
    with anyio.fail_after(GUARD):
        result = await remote.execute("on ray")
    assert last_per_key(totals.results) == last_per_key(local_totals.results)
    assert Counter(long.results) == Counter(local_long.results)
    assert records_into(result.channels) == records_into(local_result.channels)


def records_into(channels: dict[str, Any]) -> Counter[str]:
    """How many records came through the channels into each operator (``"<uid>[i]-><uid>[j]"``)."""
    into: Counter[str] = Counter()
    for name, statistics in channels.items():
        into[name.split("->")[1].split("[")[0]] += statistics.records_sent
    return into


@EXAMPLES
@given(
    stream=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 120)), max_size=40),
    assigner=assigners,
    bound=st.integers(0, 20),
    parallelism=st.integers(1, 4),
)
async def test_event_time_windows_and_late_records_on_ray_equal_the_local_runners(
    stream: list[tuple[str, int]], assigner: Any, bound: int, parallelism: int
) -> None:
    records_with_positions = [(key, ts, position) for position, (key, ts) in enumerate(stream)]
    runs = []
    for runner in (None, lg.RayRunner(frame_records=2)):
        # One record a batch: watermarks then follow each record, so lateness does not depend on how
        # batches and frames happen to be cut.
        env, fired, lates = job(
            records_with_positions,
            assigner_of(assigner),
            lateness=5,
            bound=bound,
            batch_size=1,
            parallelism=parallelism,
        )
        env.runner = runner
        with anyio.fail_after(GUARD):
            await env.execute("windows")
        runs.append((Counter(fired.results), sorted(lates.results)))
    assert runs[0] == runs[1]


@EXAMPLES
@given(
    items=records,
    parallelism=st.integers(1, 4),
    schedule=failure_schedules(
        ["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8, kills=True
    ),
)
async def test_unaligned_checkpoints_on_ray_are_exactly_once(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    def make() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(
            parallelism=parallelism,
            max_parallelism=16,
            batch_size=2,
            channel_capacity=1,
            runner=lg.RayRunner(frame_records=2),
        )
        env.enable_checkpointing(3600.0)
        env.checkpoint_config.unaligned = True
        return env

    await assert_exactly_once(running_sums(items, parallelism), schedule, environment=make)


async def test_a_savepoint_moves_from_the_local_runner_to_ray_and_back(tmp_path: Path) -> None:
    items = [(key, n) for n in range(400) for key in "abcdef"]
    first, second, third = lg.CollectSink[Any](), lg.CollectSink[Any](), lg.CollectSink[Any]()

    def environment(parallelism: int, runner: lg.RayRunner | None) -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=16, batch_size=4, runner=runner)
        env.enable_checkpointing(3600)
        return env

    with anyio.fail_after(GUARD):
        local = environment(2, None)
        source = PausingSource(items, (50,))
        tally(local.from_source(source, uid="src"), first, 2)
        started = await local.start("local")
        await source.reached(50)
        savepoint = await started.stop_with_savepoint(tmp_path.as_uri())

        remote = environment(3, lg.RayRunner(frame_records=5))
        tally(remote.from_collection(items, uid="src", parallelism=3).map(slow, uid="slow"), second, 3)
        running = await remote.start("on ray", restore_from=savepoint)
        while not second.results:  # until a checkpoint has committed some of its records
            await running.trigger_checkpoint()  # well before its end: the map is slow
        savepoint = await running.stop_with_savepoint(tmp_path.as_uri())

        back = environment(1, None)
        tally(back.from_collection(items, uid="src", parallelism=3).map(lambda r: r, uid="slow"), third, 1)
        await back.execute("local again", restore_from=savepoint)

    assert Counter(first.results) == expected(items[:50])
    assert 0 < len(second.results) < len(items) - 50  # the Ray job stopped in the middle
    assert Counter(first.results) + Counter(second.results) + Counter(third.results) == expected(items)


def slow(record: Record) -> Record:
    """Each record takes a millisecond: the job runs long enough to be stopped in the middle."""
    import time

    time.sleep(0.001)
    return record


class Refused(Exception):
    pass


def refuse_three(value: int) -> int:
    if value == 3:
        raise Refused(f"no {value}s here")
    return value


async def test_a_users_error_reaches_the_caller_with_its_type_and_where_it_was_raised() -> None:
    env = lg.StreamEnvironment(parallelism=2, runner=lg.RayRunner())
    env.from_collection(list(range(10)), uid="numbers").map(refuse_three, uid="refuse").sink(
        lg.CollectSink(), uid="out"
    )
    with anyio.fail_after(GUARD), pytest.raises(lg.JobFailedError) as failed:
        await env.execute("failing")
    assert failed.value.operator_uid == "refuse"
    cause = failed.value.__cause__
    assert isinstance(cause, Refused) and str(cause) == "no 3s here"
    assert any("raised in a Ray worker" in note and "refuse_three" in note for note in cause.__notes__)


async def test_a_function_that_cannot_reach_the_workers_fails_the_start() -> None:
    import threading

    lock = threading.Lock()
    env = lg.StreamEnvironment(runner=lg.RayRunner())
    env.from_collection([1, 2], uid="numbers").map(lambda x: (lock, x)[1], uid="locked").sink(
        lg.CollectSink(), uid="out"
    )
    with pytest.raises(lg.ConfigurationError, match="cannot be pickled for the Ray workers"):
        await env.execute("unpicklable")


class Unloadable:
    """Pickles, but cannot be unpickled (as a record of a class the workers cannot import)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return refuse_three, (3,)


async def test_records_a_worker_cannot_unpickle_fail_the_job_naming_the_channel() -> None:
    env = lg.StreamEnvironment(parallelism=2, runner=lg.RayRunner())
    env.from_collection([1, 2, 3, 4], uid="numbers").map(lambda x: Unloadable(), uid="make").rebalance().map(
        lambda x: x, uid="take"
    ).sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD), pytest.raises(lg.JobFailedError) as failed:
        await env.execute("unloadable")
    message = str(failed.value.__cause__)
    assert "cannot be unpickled in this Ray worker" in message and "make[" in message and "->take[" in message


async def test_queryable_state_is_refused_on_ray_saying_why() -> None:
    env = lg.StreamEnvironment(runner=lg.RayRunner())
    env.from_collection([("a", 1)], uid="src").key_by(lambda r: r[0]).process(Tally(), uid="tally").sink(
        lg.CollectSink(), uid="out"
    )
    job_handle = await env.start("queries")
    try:
        with pytest.raises(
            lg.ConfigurationError, match="queryable state is answered by jobs whose subtasks run in"
        ):
            await job_handle.query_state("tally", "count", "a")
    finally:
        await job_handle.wait()


async def test_a_cancelled_job_ends_its_subtasks_and_its_workers_serve_the_next_job() -> None:
    # Small batches and frames: what is queued when the job is cancelled is processed quickly.
    env = lg.StreamEnvironment(parallelism=2, batch_size=10, runner=lg.RayRunner(frame_records=10))
    items = [("k", n) for n in range(100_000)]
    tally(env.from_collection(items, uid="src").map(slow, uid="slow"), lg.CollectSink(), 2)
    env.enable_checkpointing(3600)
    with anyio.fail_after(GUARD):
        running = await env.start("cancelled")
        await running.trigger_checkpoint()  # its subtasks run
        await running.cancel()
    assert running.status is lg.JobStatus.CANCELLED
    again = lg.StreamEnvironment(parallelism=2, runner=lg.RayRunner())
    sink: lg.CollectSink[Any] = lg.CollectSink()
    tally(again.from_collection(items[:100], uid="src"), sink, 2)
    with anyio.fail_after(GUARD):
        await again.execute("next")
    assert Counter(sink.results) == expected(items[:100])


class NoReader(lg.Source):
    """A source whose subtask 1 cannot make its reader."""

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        if ctx.subtask_index == 1:
            raise Refused("no reader for subtask 1")
        return CollectionSource([1, 2]).create_reader(ctx)


async def test_a_subtask_that_cannot_be_built_fails_the_job_with_its_error() -> None:
    env = lg.StreamEnvironment(parallelism=2, runner=lg.RayRunner())
    env.from_source(NoReader(), uid="src").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD), pytest.raises(lg.JobFailedError) as failed:
        await env.execute("unbuildable")
    assert failed.value.operator_uid == "src" and failed.value.subtask_index == 1
    assert isinstance(failed.value.__cause__, Refused)
