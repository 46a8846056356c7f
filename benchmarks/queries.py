"""Queryable state under load: W1b (the keyed sum, fast form) at full speed while a client reads
the sums as fast as it can, in process (``job.query_state``) and over HTTP (``job.serve`` and
``lg.QueryableStateClient``), on the heap and on RocksDB.

Each stream's throughput is reported as a ratio to the same stream, same backend, with no queries,
run interleaved with it (``stream_ratio``); with queries/s and the latency of one query (p50, p99).

The in-process client runs in the job's event loop, as a service's code would: it asks ``--burst``
queries and then lets the loop run other tasks once (a loop that never yields would stop the job,
as any busy loop in an event loop does). Over HTTP, ``--connections`` requests are in flight at once.

    python benchmarks/queries.py [--n 2000000] [--keys 100000] [--repeat 3] [--burst 32]
        [--connections 4] [--backends heap,rocksdb]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
from _common import CountSink, report

import lockgate as lg
from lockgate.state import RocksDBStateBackend


class QueryableSum(lg.MapFunction[tuple[str, int], tuple[str, int]]):
    """W1b's function, its state marked queryable."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0).queryable("totals"))

    def map(self, value: tuple[str, int]) -> tuple[str, int]:
        total = self.total.value_nowait() + value[1]
        self.total.update_nowait(total)
        return (value[0], total)


class Queries:
    """What a client saw: the latency of every query, in seconds, and how many found no value."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # of every query, or of a sample
        self.count = 0
        self.misses = 0

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        if not ordered:
            return {"queries": 0, "qps": 0, "p50_us": None, "p99_us": None}
        return {
            "queries": self.count,
            "qps": round(self.count / seconds),
            "p50_us": round(statistics.median(ordered) * 1e6, 1),
            "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
        }


Client = Callable[[lg.Job, list[str], Queries, anyio.Event], Awaitable[None]]


async def in_process(job: lg.Job, keys: list[str], seen: Queries, stop: anyio.Event, burst: int) -> None:
    clock = time.perf_counter
    query = job.query_state
    position = 0
    while not stop.is_set():
        if job.done:
            return
        for key in keys[position : position + burst - 1]:
            if await query("sum", "total", key) is None:
                seen.misses += 1
        # One query of each burst is timed alone (timing every one would cost as much as a query).
        started = clock()
        value = await query("sum", "total", keys[position + burst - 1])
        seen.latencies.append(clock() - started)
        seen.misses += value is None
        seen.count += burst
        position = (position + burst) % (len(keys) - burst)
        await anyio.lowlevel.checkpoint()


async def over_http(job: lg.Job, keys: list[str], seen: Queries, stop: anyio.Event, connections: int) -> None:
    server = await job.serve(port=0)
    clock = time.perf_counter
    try:
        async with lg.QueryableStateClient(server.url) as client:

            async def ask(offset: int) -> None:
                position = offset
                while not stop.is_set():
                    started = clock()
                    try:
                        value = await client.get("totals", keys[position])
                    except lg.LockgateError:
                        if job.done:  # the stream ended while the query was under way
                            return
                        raise
                    seen.latencies.append(clock() - started)
                    seen.count += 1
                    seen.misses += value is None
                    position = (position + connections) % len(keys)

            async with anyio.create_task_group() as group:
                for offset in range(connections):
                    group.start_soon(ask, offset)
    finally:
        await server.aclose()


async def run_stream(
    records: list[tuple[str, int]],
    backend: str,
    client: Callable[..., Awaitable[None]] | None,
    keys: list[str],
) -> tuple[float, Queries, int]:
    """Seconds the stream took from start to end, what the client saw, and the records counted."""
    env = lg.StreamEnvironment(parallelism=1)
    if backend == "rocksdb":
        env.set_state_backend(RocksDBStateBackend())
    sink = CountSink()
    keyed = env.from_collection(records, uid="source").key_by(lambda r: r[0])
    keyed.map(QueryableSum(), uid="sum").sink(sink, uid="count")
    seen = Queries()
    stop = anyio.Event()
    started = time.perf_counter()
    job = await env.start("W1b-queries")
    async with anyio.create_task_group() as group:
        if client is not None:
            group.start_soon(client, job, keys, seen, stop)
        await job.wait()
        seconds = time.perf_counter() - started
        stop.set()
    return seconds, seen, sink.count


def measure(
    records: list[tuple[str, int]], keys: list[str], backend: str, repeat: int, burst: int, connections: int
) -> dict[str, Any]:
    async def in_process_client(job: lg.Job, keys: list[str], seen: Queries, stop: anyio.Event) -> None:
        await in_process(job, keys, seen, stop, burst)

    async def http_client(job: lg.Job, keys: list[str], seen: Queries, stop: anyio.Event) -> None:
        await over_http(job, keys, seen, stop, connections)

    clients: dict[str, Client | None] = {
        "alone": None,
        "in_process": in_process_client,
        "http": http_client,
    }
    times: dict[str, list[float]] = {name: [] for name in clients}
    seen: dict[str, Queries] = {}
    counts: list[int] = []
    for _ in range(repeat):
        for name, client in clients.items():
            seconds, queries, count = anyio.run(run_stream, records, backend, client, keys)
            times[name].append(seconds)
            counts.append(count)
            if name not in seen or queries.count > seen[name].count:
                seen[name] = queries  # the run of the median time would do too; the fullest is fairer
    alone = statistics.median(times["alone"])
    line: dict[str, Any] = {"stream_rps": round(len(records) / alone)}
    for name in ("in_process", "http"):
        seconds = statistics.median(times[name])
        line[name] = {"stream_ratio": round(alone / seconds, 3), **seen[name].summary(seconds)}
    line["correct"] = all(count == len(records) for count in counts)
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--backends", default="heap,rocksdb")
    args = parser.parse_args(argv)
    n, k = args.n, args.keys
    records = [(f"k{i % k}", i) for i in range(n)]
    keys = [f"k{j}" for j in range(k)]
    random.Random(7).shuffle(keys)
    line: dict[str, Any] = {"benchmark": "queries", "workload": "W1b", "n": n, "keys": k, "burst": args.burst}
    correct = True
    for backend in args.backends.split(","):
        result = measure(records, keys, backend, args.repeat, args.burst, args.connections)
        correct = correct and result.pop("correct")
        line[backend] = result
    line["correct"] = correct
    report(line)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
