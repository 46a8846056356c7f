"""W1 keyed-sum side by side in one sitting: the plain loop, lockgate W1a, W1b (``map_with_state``), W1b
on RocksDB, the earlier fast form (``lockgate_w1b_map``: a MapFunction with ``value_nowait``), Bytewax.

Every round runs each system once, in the same order, and the line reports the median of the
``--repeat`` rounds (with the slowest and fastest run as the spread) and each system's ratio to the
plain CPython loop of the same sitting (its median time over the system's). The lockgate runs and the
loop run in this process over one record list, built before any clock starts; Bytewax runs the peers'
script (``../shared/peers/bytewax_keyed_sum.py``, input batches of 1,000) in its own interpreter, as a
subprocess per round, and its time is the one that script measures (its record list is built before
its clock starts too, and the interpreter's start is not counted).

Bytewax runs where a Python with bytewax is found: ``--bytewax-python``, else ``$BYTEWAX_PYTHON``, else
the peers' venv (``../shared/peers/.venvs/bytewax``, made by ``setup_venvs.sh``). Without one the line
says ``"bytewax": null`` and why (``bytewax_note``); nothing is installed.

Before the timed rounds, each lockgate variant runs once untimed with a sink that keeps the final sums,
checked against the loop and the closed form (``correct``).

    python benchmarks/compare.py [--n 2000000] [--keys 100000] [--repeat 3] [--bytewax-python PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import CountSink, report

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"


def find_bytewax(explicit: str | None) -> tuple[str | None, str]:
    """The Python to run Bytewax with and its version, or None and why there is none."""
    candidates = [explicit] if explicit else []
    if not explicit and os.environ.get("BYTEWAX_PYTHON"):
        candidates.append(os.environ["BYTEWAX_PYTHON"])
    if not explicit:
        candidates.append(str(PEERS / ".venvs" / "bytewax" / "bin" / "python"))
    if not (PEERS / "bytewax_keyed_sum.py").is_file():
        return None, f"the peers' script {PEERS / 'bytewax_keyed_sum.py'} is missing"
    tried = []
    for python in candidates:
        if not Path(python).is_file():
            tried.append(f"{python} (missing)")
            continue
        done = subprocess.run(
            [python, "-c", "from importlib.metadata import version; print(version('bytewax'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return python, done.stdout.strip()
        tried.append(f"{python} (no bytewax)")
    return None, "no Python with bytewax found, tried: " + "; ".join(tried)


def run_bytewax(python: str, n: int, k: int) -> tuple[float, bool]:
    """Seconds as the peers' script measures them (dataflow only), and whether its output was right."""
    done = subprocess.run(
        [
            python,
            str(PEERS / "bytewax_keyed_sum.py"),
            "--n",
            str(n),
            "--keys",
            str(k),
            "--batch-size",
            "1000",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=PEERS,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bytewax_keyed_sum.py printed no result (exit {done.returncode}): {done.stderr}")
    result = json.loads(lines[-1])
    return float(result["seconds"]), bool(result["correct"])


def timed_run(run: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bytewax-python", default=None, help="a Python with bytewax installed")
    args = parser.parse_args(argv)
    n, k = args.n, args.keys

    # Imported here so that --help answers without loading lockgate.
    from keyed_sum import FinalSums, expected_sum, plain_loop, run_engine

    from lockgate.state import RocksDBStateBackend

    bytewax_python, bytewax_note = find_bytewax(args.bytewax_python)
    records = [(f"k{i % k}", i) for i in range(n)]
    watch = [j for j in {0, 1, k // 2, k - 1} if j < n]
    state = plain_loop(records)
    correct: dict[str, bool] = {}

    def check(name: str, variant: str, backend_factory: Callable[[], Any] | None) -> None:
        final = FinalSums()
        run_engine(records, variant, final, None if backend_factory is None else backend_factory())
        correct[name] = all(final.last[f"k{j}"] == state[f"k{j}"] == expected_sum(j, n, k) for j in watch)

    check("lockgate_w1a", "a", None)
    check("lockgate_w1b", "b", None)
    check("lockgate_w1b_rocksdb", "b", RocksDBStateBackend)
    check("lockgate_w1b_map", "b-map", None)

    counts: dict[str, int] = {}

    def engine(name: str, variant: str, backend_factory: Callable[[], Any] | None) -> Callable[[], None]:
        def run() -> None:
            sink = run_engine(
                records, variant, CountSink(), None if backend_factory is None else backend_factory()
            )
            assert isinstance(sink, CountSink)
            counts[name] = sink.count

        return run

    runs: dict[str, Callable[[], float]] = {
        "plain_loop": lambda: timed_run(lambda: plain_loop(records)),
        "lockgate_w1a": lambda: timed_run(engine("lockgate_w1a", "a", None)),
        "lockgate_w1b": lambda: timed_run(engine("lockgate_w1b", "b", None)),
        "lockgate_w1b_rocksdb": lambda: timed_run(engine("lockgate_w1b_rocksdb", "b", RocksDBStateBackend)),
        "lockgate_w1b_map": lambda: timed_run(engine("lockgate_w1b_map", "b-map", None)),
    }
    if bytewax_python is not None:
        python = bytewax_python

        def bytewax_round() -> float:
            seconds, ok = run_bytewax(python, n, k)
            correct["bytewax"] = correct.get("bytewax", True) and ok
            return seconds

        runs["bytewax"] = bytewax_round

    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            times[name].append(run())
    for name, count in counts.items():
        correct[name] = correct[name] and count == n

    plain_s = statistics.median(times["plain_loop"])
    line: dict[str, Any] = {
        "workload": "W1",
        "n": n,
        "keys": k,
        "repeat": args.repeat,
        "key_selectors": "W1a lambda r: r[0]; the fast forms operator.itemgetter(0)",
    }
    for name, seconds in times.items():
        median_s = statistics.median(seconds)
        line[name] = {
            "rps": round(n / median_s),
            "ratio": round(plain_s / median_s, 4),
            "rps_min": round(n / max(seconds)),
            "rps_max": round(n / min(seconds)),
        }
    if bytewax_python is None:
        line["bytewax"] = None
    else:
        line["bytewax"]["version"] = bytewax_note
    line["bytewax_note"] = (
        bytewax_note if bytewax_python is None else f"{bytewax_python}, TestingSource batch 1000"
    )
    line["correct"] = correct
    report(line)
    return 0 if all(correct.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
