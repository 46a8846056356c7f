"""W5 rescale (BENCHMARKS.md): a savepoint of 1 M keys of ValueState[int] taken at parallelism 2 and
restored at parallelism 3, against the time to write it.

A job at parallelism 2 fills one ``ValueState[int]`` per key (the W1b fast form: a ``MapFunction`` on
the keyed stream with ``update_nowait``), fed through a ``QueueSource`` so that it is still running
once every key is in; then it stops with a savepoint. The baseline is the time to write that state:
from calling ``job.stop_with_savepoint`` until it returns the savepoint's URL (the snapshot, its
encoding, the files, the end of the job).

The restore is a job at parallelism 3 whose keyed function registers the same state in ``open()``,
which loads every entry of its key groups; its input is only a sample of the keys, read back through
the restored state for the correctness check, so restoring dominates. ``restore_s`` runs from calling
``env.execute(..., restore_from=url)`` until it returns; ``loaded_s`` until the last subtask's
``open()`` has registered the state (everything but the tiny input and the end of the job).
``state_bytes`` is the sum of the savepoint's state files (its metadata file aside); the MB/s are
``state_bytes`` over the seconds (1 MB = 10^6 bytes).

The two run in turn ``--repeat`` times, each restore reading the savepoint just written; the line
reports medians. The check: the savepoint holds exactly one entry per key, every subtask of the
restore loaded state, and every sampled key reads back its value.

    python benchmarks/rescale.py [--backend heap|rocksdb] [--restore-backend heap|rocksdb]
        [--keys 1000000] [--sample 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import CountSink, report
from _restore import timed_restore

import lockgate as lg
from lockgate.savepoint import RestoredState
from lockgate.snapshots import METADATA_NAME, load_from_pointer
from lockgate.state import RocksDBStateBackend

WRITE_PARALLELISM = 2
RESTORE_PARALLELISM = 3
STATE_UID = "value-state"


#: perf_counter() at the end of each restored subtask's open(); module-level, because every subtask
#: works on its own deep copy of the function.
def backend_of(name: str) -> lg.StateBackend:
    return RocksDBStateBackend() if name == "rocksdb" else lg.HeapStateBackend()


def value_of(i: int) -> int:
    """The value key ``k{i}`` holds: not its index, so a key read from the wrong entry shows."""
    return i * 7 + 3


class Fill(lg.MapFunction[tuple[str, int], str]):
    """Sets the key's value, the W1b way."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.value = ctx.get_state(lg.ValueStateDescriptor("value", default=0))

    def map(self, record: tuple[str, int]) -> str:
        self.value.update_nowait(record[1])
        return record[0]


async def write(records: list[tuple[str, int]], backend: str, root: Path) -> tuple[float, str]:
    """Fill the state at parallelism 2, then stop with a savepoint; its seconds and URL."""
    env = lg.StreamEnvironment(parallelism=WRITE_PARALLELISM)
    env.set_state_backend(backend_of(backend))
    env.set_checkpoint_storage((root / "checkpoints").as_uri())
    env.enable_checkpointing(3600.0)  # savepoints need checkpointing on; no periodic checkpoint
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource(maxsize=len(records))
    for record in records:
        source.put_nowait(record)  # not closed: the job runs on, so it can stop with a savepoint
    sink = CountSink()
    (
        env.from_source(source, uid="keys")
        .key_by(lambda r: r[0])
        .map(Fill(), uid=STATE_UID)
        .sink(sink, uid="count")
    )
    job = await env.start("W5-write")
    try:
        while sink.count < len(records):
            if job.done:
                await job.wait()  # raises what went wrong
                raise RuntimeError("the filling job ended before it had every key")
            await anyio.sleep(0.01)
        gc.collect()
        started = time.perf_counter()
        url = await job.stop_with_savepoint((root / "savepoints").as_uri())
        seconds = time.perf_counter() - started
    finally:
        await job.cancel()  # does nothing if the job has ended
    return seconds, url


def state_bytes(url: str) -> int:
    """The bytes of the savepoint's state files (its metadata file aside)."""
    directory = Path(url.removeprefix("file://"))
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file() and f.name != METADATA_NAME)


async def entry_count(url: str) -> int:
    """How many entries of the state the savepoint holds, over all the subtasks that wrote it."""
    restored = RestoredState.from_checkpoint(await load_from_pointer(url))
    return sum(snapshot.entry_count() for snapshot in restored.keyed[STATE_UID])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["heap", "rocksdb"], default="heap")
    parser.add_argument("--restore-backend", choices=["heap", "rocksdb"], default=None)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.keys
    restore_backend = args.restore_backend or args.backend
    records = [(f"k{i}", value_of(i)) for i in range(n)]
    rng = random.Random(5)
    sample_indexes = rng.sample(range(n), min(args.sample, n))
    sample = [f"k{i}" for i in sample_indexes]
    expected = {f"k{i}": value_of(i) for i in sample_indexes}

    write_times: list[float] = []
    restore_times: list[float] = []
    loaded_times: list[float] = []
    sizes: list[int] = []
    correct = True
    root = Path(tempfile.mkdtemp(prefix="lockgate-w5-"))
    try:
        for run in range(args.repeat):
            run_root = root / f"run-{run}"

            async def one_run(run_root: Path = run_root) -> tuple[float, float, float, str, dict[str, int]]:
                write_s, url = await write(records, args.backend, run_root)
                restore_s, loaded_s, values = await timed_restore(
                    url,
                    backend_of(restore_backend),
                    RESTORE_PARALLELISM,
                    sample,
                    state_uid=STATE_UID,
                    state_name="value",
                    job_name="W5-restore",
                )
                return write_s, restore_s, loaded_s, url, values

            write_s, restore_s, loaded_s, url, values = anyio.run(one_run)
            write_times.append(write_s)
            restore_times.append(restore_s)
            loaded_times.append(loaded_s)
            sizes.append(state_bytes(url))
            # Checked untimed: one entry per key in the savepoint, every sampled key read back right.
            correct = correct and anyio.run(entry_count, url) == n and values == expected
            shutil.rmtree(run_root, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    size = sizes[-1]
    write_s = statistics.median(write_times)
    restore_s = statistics.median(restore_times)
    loaded_s = statistics.median(loaded_times)
    line: dict[str, Any] = {
        "workload": "W5",
        "backend": args.backend,
        "restore_backend": restore_backend,
        "n_keys": n,
        "parallelism": f"{WRITE_PARALLELISM}->{RESTORE_PARALLELISM}",
        "state_bytes": size,
        "write_s": round(write_s, 4),
        "restore_s": round(restore_s, 4),
        "loaded_s": round(loaded_s, 4),
        "write_mb_s": round(size / write_s / 1e6, 2),
        "restore_mb_s": round(size / restore_s / 1e6, 2),
        "ratio": round(restore_s / write_s, 4),
        "runs": args.repeat,
        "correct": correct,
    }
    report(line)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
