"""W1a, W1b, W2 and W6 in two source trees of lockgate, run in turn, paired: is a change slower?

On a shared, noisy machine two benchmark runs minutes apart differ by more than a few per cent, so
before/after figures of separate runs cannot show a 3 % change. Here one worker process per tree
imports its lockgate once and runs the workload on request; the runs alternate (base, new, new, base,
...) and each pair's ratio new/base is taken, so slow drifts of the machine cancel. One JSON line per
workload: the median of the paired ratios (above 1: the new tree is faster), and the medians of each
tree's records per second.

    git worktree add /tmp/base <commit>
    python benchmarks/compare_trees.py /tmp/base . [--workloads W1a,W1b,W2,W6] [--pairs 10] [--n 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = ("W1a", "W1b", "W2", "W6")


def worker(n: int) -> None:
    """Serve requests on stdin: a workload's name in, its records per second out."""
    sys.path.insert(0, str(Path.cwd() / "benchmarks"))
    import checkpointing
    import keyed_sum
    import stateless

    records = [(f"k{i % 100_000}", i) for i in range(n)]
    numbers = list(range(n))
    for line in sys.stdin:
        workload = line.strip()
        started = time.perf_counter()
        if workload in ("W1a", "W1b"):
            keyed_sum.run_engine(records, workload[-1], keyed_sum.CountSink())
        elif workload == "W6":
            stateless.run_engine(numbers)
        elif workload == "W2":
            with tempfile.TemporaryDirectory() as directory:
                url = Path(directory).as_uri()
                checkpointing.run_engine(records, "a", "heap", keyed_sum.CountSink(), url, 0.5)
        else:
            raise SystemExit(f"unknown workload {workload!r}")
        print(n / (time.perf_counter() - started), flush=True)


class Tree:
    def __init__(self, root: Path, n: int) -> None:
        environment = {**os.environ, "PYTHONPATH": str(root)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--n", str(n)],
            cwd=root,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, workload: str) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(workload + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit(f"the worker of {self.process.args} ended; see its error above")
        return float(answer)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", type=Path)
    parser.add_argument("new", nargs="?", type=Path)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.n)
        return 0
    if args.base is None or args.new is None:
        parser.error("give the base tree and the new tree")
    trees = {"base": Tree(args.base.resolve(), args.n), "new": Tree(args.new.resolve(), args.n)}
    try:
        for workload in args.workloads.split(","):
            for tree in trees.values():
                tree.run(workload)  # warm: imports, first allocations
            ratios: list[float] = []
            rates: dict[str, list[float]] = {"base": [], "new": []}
            for pair in range(args.pairs):
                order = ("base", "new") if pair % 2 == 0 else ("new", "base")
                got = {name: trees[name].run(workload) for name in order}
                for name, rate in got.items():
                    rates[name].append(rate)
                ratios.append(got["new"] / got["base"])
            line = {
                "workload": workload,
                "n": args.n,
                "pairs": args.pairs,
                "ratio": round(statistics.median(ratios), 4),
                "base_rps": round(statistics.median(rates["base"])),
                "new_rps": round(statistics.median(rates["new"])),
                "ratios": [round(ratio, 3) for ratio in ratios],
            }
            print(json.dumps(line), flush=True)
    finally:
        for tree in trees.values():
            tree.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
