"""Queryable state under load: W1b (the keyed sum, fast form) at full speed while a client reads
the sums as fast as it can, in process (``job.query_state``) and over HTTP (``job.serve`` and
``lg.QueryableStateClient``), on the heap and on RocksDB.

Each stream's throughput is reported as a ratio to the same stream, same backend, with no queries,
run interleaved with it (``stream_ratio``); with queries/s and the latency of one query (p50, p99).
Throughput is measured from the moment the client is asking and a tenth of the records are through
(start-up is not charged to either side) to the stream's end.

The in-process client runs in the job's event loop, as a service's code would: it asks ``--burst``
queries and then lets the loop run other tasks once (a loop that never yields would stop the job,
as any busy loop in an event loop does). ``idle_client_ratio`` is the stream's ratio beside the same
client asking nothing: what a task that yields this often costs the stream by itself.

The HTTP client runs in a process of its own, as a dashboard would, with ``--connections`` requests
in flight: the stream's process pays for serving only. The server gives a busy stream its share of
the loop before each answer (``STREAM_SHARE`` in ``lockgate/actors/_server.py``), so answers/s is
what that share leaves, not what the client could ask.

    python benchmarks/queries.py [--n 3000000] [--rocksdb-n 600000] [--keys 100000] [--repeat 3]
        [--burst 48] [--connections 4] [--backends heap,rocksdb]
"""

from __future__ import annotations

import argparse
import json
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
    """What a client saw: how many queries, how many found no value, and latencies in seconds (of
    every query, or of a sample)."""

    def __init__(self) -> None:
        self.count = 0
        self.misses = 0
        self.latencies: list[float] = []
        self.seconds: float | None = None  # how long it asked, if it says so itself

    def restart(self) -> None:
        """Count from now on."""
        self.count = self.misses = 0
        self.latencies = []

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        if not ordered:
            return {"queries": 0, "qps": 0, "p50_us": None, "p99_us": None}
        return {
            "queries": self.count,
            "qps": round(self.count / (self.seconds or seconds)),
            "p50_us": round(statistics.median(ordered) * 1e6, 1),
            "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
        }


# A client: (job, keys, what it saw, set once it is asking) -> returns when the stream has ended.
Client = Callable[[lg.Job, list[str], Queries, anyio.Event], Awaitable[None]]


async def in_process(
    job: lg.Job, keys: list[str], seen: Queries, asking: anyio.Event, burst: int, ask: bool = True
) -> None:
    """Ask ``burst`` queries, let the loop run the job once, and again until the job ends. Without
    ``ask``, the same loop and yields with a stand-in for the query: what the client's own shape
    costs the stream."""
    clock = time.perf_counter

    async def stand_in(uid: str, state: str, key: str) -> int:
        if job.done:
            raise lg.ConfigurationError("the job has ended")
        return 0

    query = job.query_state if ask else stand_in
    position = 0
    asking.set()
    while True:
        try:
            for key in keys[position : position + burst - 1]:
                if await query("sum", "total", key) is None:
                    seen.misses += 1
            # One query of each burst is timed alone (timing every one would cost as much as a query).
            started = clock()
            value = await query("sum", "total", keys[position + burst - 1])
            seen.latencies.append(clock() - started)
        except lg.ConfigurationError:  # the stream has ended
            return
        seen.misses += value is None
        seen.count += burst
        position = (position + burst) % (len(keys) - burst)
        await anyio.lowlevel.checkpoint()


async def over_http(
    job: lg.Job, keys: list[str], seen: Queries, asking: anyio.Event, connections: int
) -> None:
    """Serve the job and run the HTTP client in a process of its own, which says when it is asking."""
    server = await job.serve(port=0)
    command = [sys.executable, __file__, "--client", server.url, "--connections", str(connections)]
    command += ["--keys", str(len(keys))]
    try:
        async with await anyio.open_process(command, stderr=None) as process:
            assert process.stdout is not None
            output = b""
            async for chunk in process.stdout:
                output += chunk
                if not asking.is_set() and b"\n" in output:
                    asking.set()  # its first line: it has had an answer
        asked = json.loads(output.split(b"\n", 1)[1])
        seen.count, seen.misses, seen.latencies = asked["count"], asked["misses"], asked["latencies"]
        seen.seconds = asked["seconds"]
    finally:
        await server.aclose()


async def ask_over_http(url: str, keys: list[str], connections: int) -> dict[str, Any]:
    """The HTTP client's process: ask as fast as ``connections`` requests in flight allow until the
    job has ended (503), and report what it saw."""
    seen = Queries()
    clock = time.perf_counter
    async with lg.QueryableStateClient(url) as client, anyio.create_task_group() as group:
        await client.get("totals", keys[0])
        print("asking", flush=True)
        started_asking = clock()

        async def ask(offset: int) -> None:
            position = offset
            while True:
                started = clock()
                try:
                    value = await client.get("totals", keys[position])
                except lg.LockgateError as exc:
                    if "503" in str(exc):  # the stream has ended
                        group.cancel_scope.cancel()
                        return
                    raise
                seen.latencies.append(clock() - started)
                seen.count += 1
                seen.misses += value is None
                position = (position + connections) % len(keys)

        for offset in range(connections):
            group.start_soon(ask, offset)
    seconds = clock() - started_asking
    return {"count": seen.count, "misses": seen.misses, "latencies": seen.latencies, "seconds": seconds}


async def run_stream(
    records: list[tuple[str, int]], backend: str, client: Client | None, keys: list[str]
) -> tuple[float, int, Queries, int]:
    """The measured window's seconds and records (see the module's doc), what the client saw, and
    the records counted."""
    env = lg.StreamEnvironment(parallelism=1)
    if backend == "rocksdb":
        env.set_state_backend(RocksDBStateBackend())
    sink = CountSink(target=len(records) // 10)
    keyed = env.from_collection(records, uid="source").key_by(lambda r: r[0])
    keyed.map(QueryableSum(), uid="sum").sink(sink, uid="count")
    seen = Queries()
    asking = anyio.Event()
    job = await env.start("W1b-queries")
    async with anyio.create_task_group() as group:
        if client is None:
            asking.set()
        else:
            group.start_soon(client, job, keys, seen, asking)
        await asking.wait()
        await sink.reached.wait()
        started, before = time.perf_counter(), sink.count
        seen.restart()  # in process: what it asks in the window (the HTTP client reports its own)
        await job.wait()
        seconds = time.perf_counter() - started
    if before > len(records) * 0.8:
        raise SystemExit(f"the client took {before} of {len(records)} records to start: raise --n")
    return seconds, len(records) - before, seen, sink.count


def measure(
    records: list[tuple[str, int]], keys: list[str], backend: str, repeat: int, burst: int, connections: int
) -> dict[str, Any]:
    async def in_process_client(job: lg.Job, keys: list[str], seen: Queries, asking: anyio.Event) -> None:
        await in_process(job, keys, seen, asking, burst)

    async def idle_client(job: lg.Job, keys: list[str], seen: Queries, asking: anyio.Event) -> None:
        await in_process(job, keys, seen, asking, burst, ask=False)

    async def http_client(job: lg.Job, keys: list[str], seen: Queries, asking: anyio.Event) -> None:
        await over_http(job, keys, seen, asking, connections)

    clients: dict[str, Client | None] = {
        "alone": None,
        "idle_client": idle_client,
        "in_process": in_process_client,
        "http": http_client,
    }
    rates: dict[str, list[float]] = {name: [] for name in clients}
    seen: dict[str, list[tuple[float, Queries]]] = {name: [] for name in clients}
    correct = True
    for _ in range(repeat):
        for name, client in clients.items():
            seconds, measured, queries, count = anyio.run(run_stream, records, backend, client, keys)
            rates[name].append(measured / seconds)
            seen[name].append((seconds, queries))
            correct = correct and count == len(records)
    alone = statistics.median(rates["alone"])
    line: dict[str, Any] = {
        "n": len(records),
        "stream_rps": round(alone),
        "idle_client_ratio": round(statistics.median(rates["idle_client"]) / alone, 3),
    }
    for name in ("in_process", "http"):
        # The client's figures of the run with the median stream rate.
        median_run = sorted(range(repeat), key=lambda i: rates[name][i])[repeat // 2]
        seconds, queries = seen[name][median_run]
        line[name] = {"stream_ratio": round(rates[name][median_run] / alone, 3), **queries.summary(seconds)}
    line["correct"] = correct
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3_000_000)
    parser.add_argument("--rocksdb-n", type=int, default=600_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--burst", type=int, default=48)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--backends", default="heap,rocksdb")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the HTTP client's process
    args = parser.parse_args(argv)
    keys = [f"k{j}" for j in range(args.keys)]
    random.Random(7).shuffle(keys)
    if args.client:
        print(json.dumps(anyio.run(ask_over_http, args.client, keys, args.connections)))
        return 0
    line: dict[str, Any] = {"benchmark": "queries", "workload": "W1b", "keys": args.keys, "burst": args.burst}
    correct = True
    for backend in args.backends.split(","):
        n = args.rocksdb_n if backend == "rocksdb" else args.n
        records = [(f"k{i % args.keys}", i) for i in range(n)]
        result = measure(records, keys, backend, args.repeat, args.burst, args.connections)
        correct = correct and result.pop("correct")
        line[backend] = result
    line["correct"] = correct
    report(line)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
