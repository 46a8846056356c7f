"""W6 stateless chain (BENCHMARKS.md): map -> filter -> map over ints, chained into one actor.

The baseline applies the same three functions in a plain loop, in the same process.

    python benchmarks/stateless.py [--n 2000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys

from _common import CountSink, compare, report

import lockgate as lg


def double(x: int) -> int:
    return x * 2


def keep(x: int) -> bool:
    return x % 3 != 0


def increment(x: int) -> int:
    return x + 1


def plain_loop(data: list[int]) -> int:
    count = 0
    out = []
    for x in data:
        y = double(x)
        if keep(y):
            out.append(increment(y))
            count += 1
    return count


def run_engine(data: list[int]) -> int:
    env = lg.StreamEnvironment(parallelism=1)
    sink = CountSink()
    env.from_collection(data).map(double).filter(keep).map(increment).sink(sink)
    env.execute_blocking("W6")
    return sink.count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    data = list(range(args.n))
    baseline_s, expected, engine_s, count = compare(
        args.repeat, lambda: plain_loop(data), lambda: run_engine(data)
    )
    report(
        {
            "workload": "W6",
            "n": args.n,
            "engine_rps": round(args.n / engine_s),
            "baseline_rps": round(args.n / baseline_s),
            "ratio": round(baseline_s / engine_s, 4),
            "correct": count == expected,
        }
    )
    return 0 if count == expected else 1


if __name__ == "__main__":
    sys.exit(main())
