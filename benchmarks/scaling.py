"""Scaling on Ray: W1 (the keyed sum, heap, fast form) and a CPU-heavy map (about 20 µs of Python work
per record) at parallelism 1, 2 and 4 on a local Ray, against the in-process runner at parallelism 1,
interleaved in one run; the line reports each speed-up (in-process seconds over Ray seconds, medians),
and what a small job takes once the workers are up (``small_job_s``: the fixed cost of a job on Ray).

Both jobs read from a source that makes its records (so no job ships a list of millions of records to
its workers) and end in a sink that counts, each subtask sending its count to the driver at its end.
Ray starts once, on 127.0.0.1 only: outside a network namespace with loopback alone, the script runs
itself again inside one (``tests/on_ray/loopback.py``). The first Ray job at the highest parallelism
warms the pool of workers, untimed (``startup_s`` says what it took): a new worker process takes
seconds to start, and the runner keeps its workers for later jobs.

    python benchmarks/scaling.py [--n 2000000] [--keys 100000] [--heavy-n 300000] [--work-us 20]
        [--parallelism 1 2 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lockgate as lg

REPOSITORY = Path(__file__).resolve().parent.parent


class Generated(lg.Source):
    """Records ``(f"k{i % keys}", i)`` for i below ``n``, each subtask the i of its own residue."""

    def __init__(self, n: int, keys: int) -> None:
        self.n = n
        self.keys = keys

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        return _GeneratedReader(self, ctx.subtask_index, ctx.parallelism)


class _GeneratedReader(lg.SourceReader):
    def __init__(self, source: Generated, index: int, parallelism: int) -> None:
        self._next = index
        self._step = parallelism
        self._n = source.n
        self._keys = source.keys

    async def read(self, max_records: int) -> list[Any] | None:
        start, step, n, keys = self._next, self._step, self._n, self._keys
        if start >= n:
            return None
        stop = min(n, start + max_records * step)
        self._next = stop + (start - stop) % step
        return [(f"k{i % keys}", i) for i in range(start, stop, step)]


class Counted(lg.CollectSink[int]):
    """Counts what each subtask receives; each sends its count once, at its end (to the driver, on
    Ray), so the sink costs next to nothing wherever it runs."""

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _CountingWriter(self)


class _CountingWriter(lg.SinkWriter):
    def __init__(self, sink: Counted) -> None:
        self._sink = sink
        self._count = 0

    async def write(self, records: list[Any]) -> None:
        self._count += len(records)

    async def close(self) -> None:
        transaction = await self._sink.begin_transaction()
        transaction[1].append(self._count)
        await self._sink.commit(transaction)


class FastSum(lg.MapFunction[tuple[str, int], tuple[str, int]]):
    """W1b's running sum."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))

    def map(self, value: tuple[str, int]) -> tuple[str, int]:
        total = self.total.value_nowait() + value[1]
        self.total.update_nowait(total)
        return (value[0], total)


class Work:
    """About ``work_us`` µs of pure Python per record (calibrated here, in the driver)."""

    def __init__(self, work_us: float) -> None:
        self.rounds = calibrate(work_us)

    def __call__(self, record: tuple[str, int]) -> tuple[str, int]:
        accumulator = record[1]
        for step in range(self.rounds):
            accumulator = (accumulator * 31 + step) % 1_000_003
        return (record[0], accumulator)


def calibrate(work_us: float) -> int:
    rounds = 1000
    started = time.perf_counter()
    for _ in range(200):
        accumulator = 0
        for step in range(rounds):
            accumulator = (accumulator * 31 + step) % 1_000_003
    per_round = (time.perf_counter() - started) / (200 * rounds)
    return max(1, round(work_us * 1e-6 / per_round))


def run(job: str, args: argparse.Namespace, parallelism: int, runner: lg.RayRunner | None) -> int:
    env = lg.StreamEnvironment(parallelism=parallelism, runner=runner)
    sink = Counted()
    if job == "W1":
        stream = env.from_source(Generated(args.n, args.keys), uid="source").key_by(lambda r: r[0])
        stream.map(FastSum(), uid="sum").sink(sink, uid="count")
    else:
        records = env.from_source(Generated(args.heavy_n, args.keys), uid="source")
        records.map(Work(args.work_us), uid="work").sink(sink, uid="count")
    env.execute_blocking(f"{job} p={parallelism}")
    return sum(sink.results)


def loopback_only() -> bool:
    return sorted(name for _, name in socket.if_nameindex()) == ["lo"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000, help="W1's records")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--heavy-n", type=int, default=300_000, help="the CPU-heavy map's records")
    parser.add_argument("--work-us", type=float, default=20.0)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not loopback_only():  # Ray must see loopback alone: run again inside a namespace that has only it
        launcher = REPOSITORY / "tests" / "on_ray" / "loopback.py"
        os.execv(sys.executable, [sys.executable, str(launcher), sys.executable, __file__, *sys.argv[1:]])

    import ray

    ray.init(num_cpus=max(args.parallelism) * 2, include_dashboard=False, log_to_driver=False)
    load = os.getloadavg()
    started = time.perf_counter()
    small = argparse.Namespace(**{**vars(args), "n": 10_000})
    run("W1", small, max(args.parallelism), lg.RayRunner())  # warms the pool: the most workers any job uses
    startup = time.perf_counter() - started
    begun = time.perf_counter()
    run("W1", small, max(args.parallelism), lg.RayRunner())
    overhead = time.perf_counter() - begun
    line: dict[str, Any] = {"benchmark": "scaling", "cores": os.cpu_count(), "load_before": round(load[0], 2)}
    correct = True
    for job, n in (("W1", args.n), ("heavy", args.heavy_n)):
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for label, parallelism, runner in [("local", 1, None)] + [
                (f"ray_p{p}", p, lg.RayRunner()) for p in args.parallelism
            ]:
                begun = time.perf_counter()
                counted = run(job, args, parallelism, runner)
                times.setdefault(label, []).append(time.perf_counter() - begun)
                correct = correct and counted == n
        local = statistics.median(times["local"])
        line[job] = {
            "n": n,
            "local_rps": round(n / local),
            **{
                f"speedup_{label}": round(local / statistics.median(seconds), 3)
                for label, seconds in times.items()
                if label != "local"
            },
        }
    line["heavy"]["work_us"] = args.work_us
    line["startup_s"] = round(startup, 2)
    line["small_job_s"] = round(overhead, 3)  # 10 k records of W1 at the highest parallelism, warm
    line["correct"] = correct
    print(json.dumps(line), flush=True)
    ray.shutdown()
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
