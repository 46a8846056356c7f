"""Running jobs: inside a running loop, in the background, from plain scripts; and backpressure."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest

import lockgate as lg
from tests._tasks import running_task_count

pytestmark = pytest.mark.anyio


async def test_execute_runs_inside_the_callers_loop_and_returns_a_result() -> None:
    env = lg.StreamEnvironment()
    out = env.from_collection([1, 2, 3]).map(lambda x: x * x).sink(lg.CollectSink())
    result = await env.execute("squares")
    assert out.results == [1, 4, 9]
    assert result.job_name == "squares"
    assert result.duration >= 0


async def test_start_runs_in_the_background_fed_by_a_queue_source() -> None:
    queue: lg.QueueSource[int] = lg.QueueSource(maxsize=4)
    env = lg.StreamEnvironment()
    out = env.from_source(queue, uid="queue").map(lambda x: x + 1).sink(lg.CollectSink())
    job = await env.start("service")
    assert job.status is lg.JobStatus.RUNNING
    for i in range(50):  # more than maxsize: put() waits for the job, which runs meanwhile
        await queue.put(i)
    queue.close()
    result = await job.wait()
    assert out.results == list(range(1, 51))
    assert job.status is lg.JobStatus.FINISHED and job.done
    assert result.job_name == "service"


async def test_cancel_stops_a_running_job_and_leaves_no_task() -> None:
    before = running_task_count()
    queue: lg.QueueSource[int] = lg.QueueSource()
    env = lg.StreamEnvironment(parallelism=2)
    env.from_source(queue).rebalance().map(lambda x: x).key_by(lambda x: x).sum().sink(lg.CollectSink())
    job = await env.start("endless")
    await queue.put(1)
    assert running_task_count() > before
    await job.cancel()
    assert job.status is lg.JobStatus.CANCELLED
    with pytest.raises(lg.JobCancelledError, match="endless"):
        await job.wait()
    # On asyncio the detached job task itself ends right after it sets done.
    await anyio.lowlevel.checkpoint()
    assert running_task_count() == before


async def test_cancelling_the_caller_cancels_execute() -> None:
    before = running_task_count()
    queue: lg.QueueSource[int] = lg.QueueSource()
    env = lg.StreamEnvironment(parallelism=2)
    env.from_source(queue).rebalance().map(lambda x: x).sink(lg.CollectSink())
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(env.execute, "endless")
            await queue.put(1)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert running_task_count() == before


async def test_execute_blocking_refuses_to_run_inside_a_loop() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1]).sink(lg.CollectSink())
    with pytest.raises(lg.ConfigurationError, match=r"await env\.execute"):
        env.execute_blocking("nested")


def test_execute_blocking_runs_a_plain_script() -> None:
    script = textwrap.dedent(
        """
        import lockgate as lg
        env = lg.StreamEnvironment(parallelism=2)
        out = env.from_collection(range(10)).key_by(lambda x: x % 2).sum().sink(lg.CollectSink())
        result = env.execute_blocking("script")
        print(sorted(out.results)[-2:], result.job_name)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[20, 25] script"


async def test_queue_source_refuses_puts_after_close_and_a_second_run() -> None:
    queue: lg.QueueSource[int] = lg.QueueSource(maxsize=2)
    queue.put_nowait(1)
    queue.put_nowait(2)
    with pytest.raises(anyio.WouldBlock):
        queue.put_nowait(3)
    queue.close()
    with pytest.raises(lg.LockgateError, match="closed"):
        await queue.put(3)
    env = lg.StreamEnvironment()
    out = env.from_source(queue).sink(lg.CollectSink())
    await env.execute("drain")
    assert out.results == [1, 2]  # what was accepted before close() is processed
    with pytest.raises(lg.ConfigurationError, match="one job run"):
        await env.execute("again")


class GatedSink(lg.Sink):
    """A sink whose writers wait for a gate before the first write: a sink slower than anything."""

    def __init__(self) -> None:
        self.gate: anyio.Event | None = None
        self.results: list[Any] = []

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _GatedWriter(self)


class _GatedWriter(lg.SinkWriter):
    def __init__(self, sink: GatedSink) -> None:
        self._sink = sink

    async def write(self, records: list[Any]) -> None:
        assert self._sink.gate is not None
        await self._sink.gate.wait()
        self._sink.results.extend(records)


async def test_a_slow_sink_bounds_the_records_in_flight() -> None:
    total, batch_size, capacity = 20_000, 10, 2
    read = 0

    def count(record: int) -> int:  # chained to the source: counts what the source has read
        nonlocal read
        read += 1
        return record

    env = lg.StreamEnvironment(parallelism=2, batch_size=batch_size, channel_capacity=capacity)
    sink = GatedSink()
    sink.gate = anyio.Event()
    stream = env.from_collection(range(total)).map(count, parallelism=1).rebalance().map(lambda x: x)
    stream.key_by(lambda x: x % 7).sum(uid="sum").sink(sink)
    runner_result: list[lg.JobResult] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            runner_result.append(await env.execute("backpressure"))

        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        # Everything upstream of the sink is blocked on full channels. Records in flight: at most
        # `capacity` batches per channel, plus one batch held by each of the 5 actors.
        channels = 2 + 4  # source->map (rebalance), map->sum (hash); the sink is chained to sum
        bound = (channels * capacity + 5) * batch_size
        assert read <= bound < total
        sink.gate.set()
    result = runner_result[0]
    assert len(sink.results) == total
    assert max(sink.results) == max(sum(range(r, total, 7)) for r in range(7))
    assert len(result.channels) == channels
    for stats in result.channels.values():
        assert stats.max_queued <= stats.capacity == capacity
        assert stats.max_batch <= batch_size
    assert sum(s.records_sent for name, s in result.channels.items() if "->sum" in name) == total


async def test_a_producer_blocked_on_put_is_released_when_the_job_fails() -> None:
    queue: lg.QueueSource[int] = lg.QueueSource(maxsize=2)
    env = lg.StreamEnvironment()

    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    env.from_source(queue).map(fail_on_three, uid="fails").sink(lg.CollectSink())
    job = await env.start("fails")
    refused: list[BaseException] = []

    async def produce() -> None:
        try:
            for i in range(100):
                await queue.put(i)
        except lg.LockgateError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        with pytest.raises(lg.JobFailedError, match="'fails'"):
            await job.wait()
    # The producer was not left waiting on a full buffer: its put() raised instead.
    assert len(refused) == 1 and "has ended" in str(refused[0])
    with pytest.raises(lg.LockgateError, match="has ended"):
        queue.put_nowait(1)
