"""W1b when the state does not fit (issue 20, item 1b): a keyed running sum over more keys than RocksDB's
``memory_budget`` holds, against the heap in the same run.

The job is W1b's (``keyed_sum.FastSum``: ``value_nowait``/``update_nowait`` on a keyed stream, a sink that
counts); a source makes the records a batch at a time, so no list of them is held. First it fills:
one record ``(f"k{i}", 1)`` for each of the ``--keys`` keys, in order. Then the *random phase*: ``--reads``
records whose keys are drawn uniformly from all of them (a fixed seed), so nearly every record reads a
key the caches do not hold. The sink notes when it has counted the fill, so each phase is timed on its
own: ``fill_rps`` and ``random_rps``. The same job runs on the heap first (it holds every key in a
dict: about 130 bytes a key, 1.3 GB for 10 M) and then on RocksDB with ``--budget-mb``;
``vs_heap`` is RocksDB's ``random_rps`` over the heap's (goal: at least 0.25).

W1b itself reads each key again in the order it wrote them (``keys`` per pass, ``n / keys`` passes):
with 10 M keys and 20 M records a RocksDB run took over 25 minutes at about 25 k records/s, and that
benchmark runs it four times. Here one fill and a shorter random phase measure the same thing in a
few minutes: the cost of a record whose key is not cached.

The check (``correct``): both runs counted every record, and the final sum of a sample of keys is
one plus the number of times the random phase drew it.

    python benchmarks/large_keyspace.py [--keys 10000000] [--reads 1000000] [--budget-mb 16]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from _common import report
from keyed_sum import FastSum

import lockgate as lg
from lockgate.state import RocksDBStateBackend

_MIB = 1024 * 1024
BATCH = 1000
SEED = 20
SAMPLE = 1000


def random_keys(keys: int, reads: int) -> list[int]:
    """The key numbers of the random phase."""
    draw = random.Random(SEED).randrange
    return [draw(keys) for _ in range(reads)]


class Records(lg.Source):
    """The fill, then the random phase, made a batch at a time."""

    fixed_parallelism = 1

    def __init__(self, keys: int, drawn: list[int]) -> None:
        self.keys = keys
        self.drawn = drawn

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        return _RecordsReader(self.keys, self.drawn)


class _RecordsReader(lg.SourceReader):
    def __init__(self, keys: int, drawn: list[int]) -> None:
        self.keys = keys
        self.drawn = drawn
        self.next = 0

    async def read(self, max_records: int) -> list[Any] | None:
        start, keys = self.next, self.keys
        end = keys + len(self.drawn)
        if start >= end:
            return None
        stop = self.next = min(end, start + min(max_records, BATCH))
        if stop <= keys:
            return [(f"k{i}", 1) for i in range(start, stop)]
        return [(f"k{i}", 1) for i in range(start, keys)] + [
            (f"k{j}", 1) for j in self.drawn[max(start, keys) - keys : stop - keys]
        ]


class PhaseSink(lg.Sink):
    """Counts records, notes the time the fill's last one arrived, and keeps the sums of ``watched``."""

    def __init__(self, fill: int, watched: set[str]) -> None:
        self.fill = fill
        self.watched = watched
        self.count = 0
        self.filled_at = 0.0
        self.sums: dict[str, int] = {}

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _PhaseWriter(self)


class _PhaseWriter(lg.SinkWriter):
    def __init__(self, sink: PhaseSink) -> None:
        self.sink = sink

    async def write(self, records: list[Any]) -> None:
        sink = self.sink
        before = sink.count
        sink.count += len(records)
        if before < sink.fill <= sink.count:
            sink.filled_at = time.perf_counter()
        watched = sink.watched
        for key, total in records:
            if key in watched:
                sink.sums[key] = total


def run(keys: int, drawn: list[int], watched: set[str], backend: lg.StateBackend | None) -> dict[str, Any]:
    env = lg.StreamEnvironment(parallelism=1)
    if backend is not None:
        env.set_state_backend(backend)
    sink = PhaseSink(keys, watched)
    keyed = env.from_source(Records(keys, drawn), uid="records").key_by(lambda r: r[0])
    keyed.map(FastSum(), uid="sum").sink(sink, uid="count")
    started = time.perf_counter()
    env.execute_blocking("W1b-large-keyspace")
    ended = time.perf_counter()
    fill_s, random_s = sink.filled_at - started, ended - sink.filled_at
    return {
        "count": sink.count,
        "sums": sink.sums,
        "fill_s": round(fill_s, 2),
        "fill_rps": round(keys / fill_s),
        "random_s": round(random_s, 2),
        "random_rps": round(len(drawn) / random_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--budget-mb", type=int, default=16, help="RocksDB memory_budget in MiB")
    args = parser.parse_args(argv)
    keys, reads = args.keys, args.reads
    drawn = random_keys(keys, reads)
    times = Counter(drawn)
    sample = random.Random(SEED + 1).sample(range(keys), min(SAMPLE, keys))
    watched = {f"k{j}": 1 + times[j] for j in sample}

    heap = run(keys, drawn, set(watched), None)
    local_dir = tempfile.mkdtemp(prefix="lockgate-keyspace-")
    try:
        rocks = run(
            keys,
            drawn,
            set(watched),
            RocksDBStateBackend(local_dir=local_dir, memory_budget=args.budget_mb * _MIB),
        )
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    n = keys + reads
    correct = all(result["count"] == n and result["sums"] == watched for result in (heap, rocks))
    for result in (heap, rocks):
        del result["count"], result["sums"]
    report(
        {
            "workload": "W1b-large-keyspace",
            "keys": keys,
            "reads": reads,
            "budget_mb": args.budget_mb,
            "heap": heap,
            "rocksdb": rocks,
            "vs_heap": round(rocks["random_rps"] / heap["random_rps"], 4),
            "fill_vs_heap": round(rocks["fill_rps"] / heap["fill_rps"], 4),
            "goal": 0.25,
            "correct": correct,
        }
    )
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
