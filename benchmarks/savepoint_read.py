"""Reading a savepoint offline: 1 M keys of ``ValueState[int]`` through ``Savepoint.read_keyed_state``.

    python benchmarks/savepoint_read.py [--keys 1000000] [--max-parallelism 128] [--repeat 3]

A savepoint of ``--keys`` keys (one subtask) is written with ``SavepointWriter``; then, each in a fresh
process (so its peak memory is its own), the reader iterates every ``(key, value)`` (and, in
``batches_*``, every list of them that ``read_keyed_state_batches`` hands out), and a baseline
does the least any reader must: read the file and unpickle every key group, decoding nothing. Reported:
the reader's MB/s of serialized state, ``ratio`` (the baseline's time over the reader's), and each
process's peak RSS above what it held once lockgate was imported, against the same state loaded whole
(``whole_rss_mb``): a reader that holds one key group at a time stays far below it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report

import lockgate as lg


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM, as ``ru_maxrss`` keeps the peak of the
    parent a process was forked from (this script's, which wrote the savepoint)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def read_all(savepoint: lg.Savepoint) -> tuple[int, int]:
    entries = total = 0
    async for _, value in savepoint.read_keyed_state("count", "total"):
        entries += 1
        total += value
    return entries, total


async def read_batches(savepoint: lg.Savepoint) -> tuple[int, int]:
    entries = total = 0
    async for batch in savepoint.read_keyed_state_batches("count", "total"):
        entries += len(batch)
        total += sum(value for _, value in batch)
    return entries, total


def child(mode: str, url: str) -> dict[str, float]:
    """Run in a fresh process: read the savepoint at ``url`` one way; seconds, entries and memory."""
    import io
    import pickle

    from lockgate.state._snapshot import load_keyed_state, read_key_groups

    before = peak_rss_mb()  # lockgate imported, nothing read
    savepoint = asyncio.run(lg.Savepoint.load(url))
    handles = savepoint._subtasks("count")[0]
    assert handles.keyed is not None
    size, path = handles.keyed.size, handles.keyed.pointer
    started = time.perf_counter()
    entries = total = 0
    if mode == "reader":
        entries, total = asyncio.run(read_all(savepoint))
    elif mode == "batches":
        entries, total = asyncio.run(read_batches(savepoint))
    elif mode == "baseline":  # the file, and every key group unpickled: nothing decoded or handed out
        with open(path, "rb") as file:
            file.seek(20)  # the frame's header
            header = pickle.load(file)
            for _, states in read_key_groups(file, header.states):
                entries += len(states["total"])
    else:  # whole: the state loaded at once, as a restore does
        with open(path, "rb") as file:
            snapshot = load_keyed_state(io.BytesIO(file.read()[20:]))
        entries = sum(len(group) for group in snapshot.entries["total"].values())  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "entries": entries,
        "total": total,
        "bytes": size,
        "rss_mb": peak_rss_mb() - before,
    }


def run_child(mode: str, url: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, url], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--max-parallelism", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    root = Path(tempfile.mkdtemp(prefix="lockgate-savepoint-read-"))
    try:
        writer = lg.SavepointWriter.new(max_parallelism=args.max_parallelism)
        writer.with_keyed_state("count", "total", ((f"key-{i}", i) for i in range(args.keys)))
        url = asyncio.run(writer.write(root.as_uri()))
        readers, batches, baselines = [], [], []
        for _ in range(args.repeat):  # in turn, so all see the same conditions
            readers.append(run_child("reader", url))
            batches.append(run_child("batches", url))
            baselines.append(run_child("baseline", url))
        whole = run_child("whole", url)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seconds = statistics.median(r["seconds"] for r in readers)
    batch_seconds = statistics.median(r["seconds"] for r in batches)
    baseline = statistics.median(b["seconds"] for b in baselines)
    size = readers[0]["bytes"]
    report(
        {
            "benchmark": "savepoint_read",
            "keys": args.keys,
            "max_parallelism": args.max_parallelism,
            "bytes": size,
            "seconds": round(seconds, 3),
            "mb_per_s": round(size / seconds / 1e6, 1),
            "baseline_mb_per_s": round(size / baseline / 1e6, 1),
            "ratio": round(baseline / seconds, 3),
            "batches_mb_per_s": round(size / batch_seconds / 1e6, 1),
            "batches_ratio": round(baseline / batch_seconds, 3),
            "rss_mb": round(max(r["rss_mb"] for r in readers), 1),
            "baseline_rss_mb": round(max(b["rss_mb"] for b in baselines), 1),
            "whole_rss_mb": round(whole["rss_mb"], 1),
            "correct": all(
                r["entries"] == args.keys and r["total"] == args.keys * (args.keys - 1) // 2
                for r in readers + batches
            ),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
