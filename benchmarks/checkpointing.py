"""W2 checkpoint overhead (BENCHMARKS.md): W1 with a checkpoint every second, against W1 without.

Both runs use W1's pipeline (``keyed_sum.py``; variant a by default) and the same state backend; the
one with checkpoints writes them to a file URL in a temporary directory. The two are measured in the
same process, interleaved, and the line reports the ratio of medians: records/s with checkpoints over
records/s without.

The checkpoint figures come from ``job.checkpoint_stats`` of the timed runs with checkpoints:
``checkpoints`` is the fewest completed in any one run (``checkpoints_total``: in all runs),
``failed`` the failed ones of all runs (the one in progress when a run ends counts as failed), the
durations are over every completed checkpoint of all runs, and ``persisted_bytes`` is that of the
last checkpoint of the last run. A run shorter than the interval takes no checkpoint, so the line
adds a ``note`` when a run completed fewer than 3 (raise ``--n`` then), and says so when fewer were
triggered than the run's length had room for: a checkpoint stalled and held back the next ones.

    python benchmarks/checkpointing.py [--backend heap|heap-incremental|rocksdb|rocksdb-full]
        [--variant a|b|b-map] [--n 2000000]
        [--keys 100000] [--repeat 5] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from _common import CountSink, compare, report
from keyed_sum import VARIANTS, FinalSums, expected_sum, key_selector, summed

import lockgate as lg
from lockgate.state import RocksDBStateBackend

FEW_CHECKPOINTS = 3
# Besides the heap's full snapshots: its incremental chains, RocksDB incremental (its default) and full.
BACKENDS = {
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True),
    "rocksdb": lambda: RocksDBStateBackend(incremental=True),
    "rocksdb-full": lambda: RocksDBStateBackend(incremental=False),
}


def run_engine(
    records: list[tuple[str, int]],
    variant: str,
    backend: str,
    sink: lg.Sink,
    checkpoints: str | None = None,
    interval: float = 1.0,
) -> tuple[lg.Sink, Any]:
    """W1's job, with a checkpoint every ``interval`` seconds to the file URL ``checkpoints`` if one
    is given; returns the sink and the job's checkpoint statistics."""
    env = lg.StreamEnvironment(parallelism=1)
    if backend in BACKENDS:
        env.set_state_backend(BACKENDS[backend]())
    if checkpoints is not None:
        env.set_checkpoint_storage(checkpoints)
        env.enable_checkpointing(interval)
    keyed = env.from_collection(records, uid="source").key_by(key_selector(variant))
    summed(keyed, variant).sink(sink, uid="count")

    async def main() -> Any:
        job = await env.start(f"W2{variant}")
        await job.wait()
        return job.checkpoint_stats

    return sink, anyio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["heap", *BACKENDS], default="heap")
    parser.add_argument("--variant", choices=VARIANTS, default="a")
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    n, k, variant, backend = args.n, args.keys, args.variant, args.backend
    records = [(f"k{i % k}", i) for i in range(n)]
    watch = [j for j in {0, 1, k // 2, k - 1} if j < n]
    root = Path(tempfile.mkdtemp(prefix="lockgate-w2-"))
    runs = 0

    def checkpoint_url() -> str:
        """A fresh directory per run, so no run restores or counts another's checkpoints."""
        nonlocal runs
        runs += 1
        return (root / f"run-{runs}").as_uri()

    stats: list[Any] = []

    def with_checkpoints() -> CountSink:
        sink, job_stats = run_engine(records, variant, backend, CountSink(), checkpoint_url(), args.interval)
        stats.append(job_stats)
        assert isinstance(sink, CountSink)
        return sink

    try:
        # Correctness first, in runs of their own: the timed runs' sink only counts.
        final, _ = run_engine(records, variant, backend, FinalSums())
        final_ckpt, _ = run_engine(records, variant, backend, FinalSums(), checkpoint_url(), args.interval)
        baseline_s, baseline_counter, engine_s, counter = compare(
            args.repeat,
            lambda: run_engine(records, variant, backend, CountSink())[0],
            with_checkpoints,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    assert isinstance(final, FinalSums) and isinstance(final_ckpt, FinalSums)
    correct = (
        counter.count == n
        and baseline_counter.count == n
        and all(final.last[f"k{j}"] == final_ckpt.last[f"k{j}"] == expected_sum(j, n, k) for j in watch)
        and final.last["k0"] == final_ckpt.last["k0"] == sum(range(0, n, k))
    )
    completed = [c for s in stats for c in s.history if c.status == "completed"]
    durations = [c.duration for c in completed]
    fewest = min(s.completed for s in stats)
    line: dict[str, Any] = {
        "workload": "W2",
        "variant": variant,
        "backend": backend,
        "n": n,
        "keys": k,
        "interval": args.interval,
        "engine_rps": round(n / engine_s),
        "baseline_rps": round(n / baseline_s),
        "ratio": round(baseline_s / engine_s, 4),
        "checkpoints": fewest,
        "checkpoints_total": len(completed),
        "failed": sum(s.failed for s in stats),
        "max_duration": round(max(durations), 4) if durations else None,
        "median_duration": round(statistics.median(durations), 4) if durations else None,
        "max_sync_duration": round(max(c.sync_duration for c in completed), 6) if completed else None,
        "persisted_bytes": next(
            (c.persisted_bytes for c in reversed(stats[-1].history) if c.status == "completed"), None
        ),
        "correct": correct,
    }
    if fewest < FEW_CHECKPOINTS:
        triggered = min(len(s.history) for s in stats)
        room = math.ceil(engine_s / args.interval) - 1  # trigger times before the run's end
        line["note"] = (
            f"a run completed only {fewest} of {triggered} triggered checkpoint(s) in {engine_s:.2f} s at an "
            f"interval of {args.interval} s; for more, raise --n (now {n})"
        )
        if triggered < room - 1:  # one in progress holds back the next (max_concurrent=1)
            line["note"] += f"; but {room} triggers had room: a checkpoint stalled"
    report(line)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
