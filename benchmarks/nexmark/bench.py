"""Nexmark q5, q7 and q8: each as a lockgate job and as plain Python (``reference.py``) over the same
events, timed in the same run. One JSON line per query: events/s of each, ``ratio`` (lockgate's
events/s over plain Python's), and whether the rows are equal.

    python benchmarks/nexmark/bench.py [--events 200000] [--rate 10000] [--queries q5,q7,q8] [--repeat 3]
    python benchmarks/nexmark/bench.py --backend rocksdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import compare, report

import lockgate as lg
from nexmark import reference
from nexmark.generator import events
from nexmark.queries import QUERIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000, help="events per second of event time")
    parser.add_argument("--queries", default="q5,q7,q8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["heap", "rocksdb"], default="heap")
    args = parser.parse_args()
    stream = list(events(args.events, events_per_second=args.rate))
    for name in args.queries.split(","):
        plain = getattr(reference, name)

        def engine(name: str = name) -> list[tuple[object, ...]]:
            env = lg.StreamEnvironment(parallelism=1)
            if args.backend == "rocksdb":
                env.set_state_backend(lg.RocksDBStateBackend())
            sink = QUERIES[name](env, stream)
            env.execute_blocking(f"nexmark-{name}")
            return sorted(sink.results)

        plain_seconds, plain_rows, engine_seconds, engine_rows = compare(
            args.repeat, lambda plain=plain: plain(stream), engine
        )
        report(
            {
                "workload": f"nexmark_{name}",
                "events": args.events,
                "backend": args.backend,
                "plain_events_per_s": round(args.events / plain_seconds),
                "lockgate_events_per_s": round(args.events / engine_seconds),
                "ratio": round(plain_seconds / engine_seconds, 3),
                "rows": len(plain_rows),
                "equal": plain_rows == engine_rows,
            }
        )


if __name__ == "__main__":
    main()
