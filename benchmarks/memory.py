"""W10 memory (BENCHMARKS.md): peak RSS per million keys of ``ValueState[int]``, heap and RocksDB.

A job fills ``ValueState[int]`` with N distinct keys: a source that makes the records ``(f"k{i}", i)``
a batch at a time (so no list of N records is held), ``key_by(r[0])``, the W1 fast-form running sum
(``value_nowait``/``update_nowait``), a sink that counts. Each measurement runs in a fresh process,
which imports lockgate, builds the job and only then resets its peak (``/proc/self/clear_refs``,
else the peak so far stands) and reads its RSS: ``growth_mb`` is the peak RSS (``VmHWM``) over that.

- **heap**: the same N keys and values in a plain dict (``{f"k{i}": i}``, built in a process of its
  own the same way) are the baseline: they are the key and value objects themselves plus a dict.
  ``bytes_per_key`` is the job's growth per key, ``dict_bytes_per_key`` the dict's, and
  ``overhead_per_key`` the difference: what the heap backend costs per key beyond the objects it
  keeps (goal: at most 150 bytes). ``objects_bytes_per_key`` is ``sys.getsizeof`` of a key and its
  value, for scale.
- **rocksdb**: with ``memory_budget`` set to ``--budget-mb``, for each of ``--rocksdb-keys`` (1 M and
  10 M): the growth against ``budget_mb + 50`` (goal: within it, whatever the state size), with
  the seconds the fill took. RocksDB's files go to a temporary directory, removed afterwards.
  ``anon_growth_mb`` is the highest anonymous RSS seen (sampled every 0.1 s) over the one at the
  start: native and Python memory; ``file_rss_mb`` the highest file-backed RSS, whole (mostly the
  code of lockgate's and RocksDB's libraries, already mapped at the start).

    python benchmarks/memory.py [--heap-keys 1000000] [--rocksdb-keys 1000000,10000000]
        [--budget-mb 16] [--quick]

``--quick``: 200 k keys on the heap, 200 k and 1 M on RocksDB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import report

_MIB = 1024 * 1024
BATCH = 1000


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def peak_mb() -> float:
    """The peak resident memory since the last reset: Linux's VmHWM (``ru_maxrss`` cannot be reset)."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def reset_peak() -> bool:
    """Make VmHWM the current RSS (Linux: write 5 to clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


class _Sampler:
    """Samples RssAnon and RssFile every 0.1 s in a thread: which of them makes the peak."""

    def __init__(self) -> None:
        import threading

        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        self.anon = max(self.anon, _status_kib("RssAnon") or 0)
        self.file = max(self.file, _status_kib("RssFile") or 0)

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(0.1):
            self._sample()

    def stop(self) -> tuple[float, float]:
        """The highest RssAnon and RssFile seen, in MiB (a sample misses peaks shorter than 0.1 s)."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.anon / 1024, self.file / 1024


def child(mode: str, n: int, budget_mb: int) -> dict[str, Any]:
    """In a fresh process: fill ``n`` keys one way; the memory it took and the seconds."""
    import gc

    import lockgate as lg
    from lockgate.state import RocksDBStateBackend

    local_dir = tempfile.mkdtemp(prefix="lockgate-memory-") if mode == "rocksdb" else None
    try:
        if mode == "dict":
            job = None
        else:
            from _common import CountSink
            from keyed_sum import FastSum

            class Keys(lg.Source):
                """The records (f"k{i}", i) for i below n, made a batch at a time."""

                fixed_parallelism = 1

                def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
                    return KeysReader()

            class KeysReader(lg.SourceReader):
                def __init__(self) -> None:
                    self.next = 0

                async def read(self, max_records: int) -> list[Any] | None:
                    start = self.next
                    if start >= n:
                        return None
                    stop = self.next = min(n, start + min(max_records, BATCH))
                    return [(f"k{i}", i) for i in range(start, stop)]

            env = lg.StreamEnvironment(parallelism=1)
            if mode == "rocksdb":
                env.set_state_backend(
                    RocksDBStateBackend(local_dir=local_dir, memory_budget=budget_mb * _MIB)
                )
            sink = CountSink()
            keyed = env.from_source(Keys(), uid="keys").key_by(lambda r: r[0])
            keyed.map(FastSum(), uid="sum").sink(sink, uid="count")
            job = env

        gc.collect()
        reset = reset_peak()
        base = rss_mb()
        base_anon = (_status_kib("RssAnon") or 0) / 1024
        sampler = _Sampler()
        started = time.perf_counter()
        if job is None:
            table: dict[str, int] = {}
            for i in range(n):
                table[f"k{i}"] = 0 + i  # a new int, as the running sum makes one
            count = len(table)
        else:
            job.execute_blocking(f"memory-{mode}")
            count = sink.count
        seconds = time.perf_counter() - started
        peak = peak_mb()
        anon, file = sampler.stop()
        objects = sys.getsizeof(f"k{n - 1}") + sys.getsizeof(n - 1)
        return {
            "mode": mode,
            "n": n,
            "count": count,
            "seconds": round(seconds, 2),
            "base_mb": round(base, 1),
            "peak_mb": round(peak, 1),
            "growth_mb": round(peak - base, 1),
            "peak_reset": reset,
            "anon_growth_mb": round(anon - base_anon, 1),
            "file_rss_mb": round(file, 1),
            "objects_bytes": objects,
        }
    finally:
        if local_dir is not None:
            shutil.rmtree(local_dir, ignore_errors=True)


def run_child(mode: str, n: int, budget_mb: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, str(n), str(budget_mb)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {mode} child ({n} keys) failed (exit {done.returncode}): {done.stderr}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heap-keys", type=int, default=1_000_000)
    parser.add_argument("--rocksdb-keys", default="1000000,10000000", help="comma-separated key counts")
    parser.add_argument("--budget-mb", type=int, default=16, help="RocksDB memory_budget in MiB")
    parser.add_argument(
        "--quick", action="store_true", help="200 k keys on the heap, 200 k and 1 M on RocksDB"
    )
    parser.add_argument("--child", nargs=3, metavar=("MODE", "N", "BUDGET_MB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, n, budget = args.child
        print(json.dumps(child(mode, int(n), int(budget))), flush=True)
        return 0
    heap_keys = 200_000 if args.quick else args.heap_keys
    rocksdb_keys = [200_000, 1_000_000] if args.quick else [int(k) for k in args.rocksdb_keys.split(",")]

    baseline = run_child("dict", heap_keys, args.budget_mb)
    heap = run_child("heap", heap_keys, args.budget_mb)
    n = heap_keys
    per_key = heap["growth_mb"] * _MIB / n
    dict_per_key = baseline["growth_mb"] * _MIB / n
    ok = heap["count"] == n and baseline["count"] == n
    line: dict[str, Any] = {
        "workload": "W10",
        "heap": {
            "keys": n,
            "growth_mb": heap["growth_mb"],
            "dict_growth_mb": baseline["growth_mb"],
            "bytes_per_key": round(per_key),
            "dict_bytes_per_key": round(dict_per_key),
            "objects_bytes_per_key": heap["objects_bytes"],
            "overhead_per_key": round(per_key - dict_per_key),
            "goal_bytes": 150,
            "meets_goal": per_key - dict_per_key <= 150,
            "seconds": heap["seconds"],
        },
        "rocksdb": [],
        "budget_mb": args.budget_mb,
    }
    resets = [baseline["peak_reset"], heap["peak_reset"]]
    for keys in rocksdb_keys:
        rocks = run_child("rocksdb", keys, args.budget_mb)
        ok = ok and rocks["count"] == keys
        resets.append(rocks["peak_reset"])
        line["rocksdb"].append(
            {
                "keys": keys,
                "base_mb": rocks["base_mb"],
                "peak_mb": rocks["peak_mb"],
                "growth_mb": rocks["growth_mb"],
                "anon_growth_mb": rocks["anon_growth_mb"],
                "file_rss_mb": rocks["file_rss_mb"],
                "limit_mb": args.budget_mb + 50,
                "meets_goal": rocks["growth_mb"] <= args.budget_mb + 50,
                "seconds": rocks["seconds"],
            }
        )
    line["peak_reset"] = all(resets)
    line["correct"] = ok
    report(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
