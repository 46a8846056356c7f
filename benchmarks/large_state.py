"""W3 large state (BENCHMARKS.md): 1 M keys of ValueState[int], then rounds in which 2 % of the keys
change, an incremental checkpoint after each round; the synchronous pause, the bytes each checkpoint
persists against the full size, and the time to restore from the last one.

One job at parallelism 2 (``--parallelism``; the ``QueueSource`` itself runs at 1) keeps one
``ValueState[int]`` per key, set the W1b way (a ``MapFunction`` on the keyed stream with
``update_nowait``), with incremental checkpoints to a file URL in a temporary directory:
``HeapStateBackend(incremental=True, max_chain_length=8)`` or ``RocksDBStateBackend(incremental=True)``.
Checkpointing is enabled with an interval of an hour, so that only this script's
``job.trigger_checkpoint()`` calls take checkpoints. Records go in through a ``QueueSource`` that is
never closed, so the job stays alive between rounds; a round has been processed when the sink has
counted all records put so far (an event the sink sets, no polling). First every key is filled and
checkpointed (the ``fill`` checkpoint, a full one); then each of ``--rounds`` rounds sets a new value
for 2 % of the keys, drawn afresh each round, waits until they are processed and triggers a checkpoint.

Figures of the round checkpoints, from ``job.checkpoint_stats.history``:

- ``sync_pause_*_ms``: ``sync_duration``, which the coordinator records as the longest synchronous
  part of any subtask: max and median over the round checkpoints (the fill checkpoint's is
  ``fill_sync_pause_ms``, apart: for RocksDB it flushes the whole fill).
- ``incremental_fraction_*``: ``persisted_bytes / full_bytes`` of the incremental round checkpoints,
  median and max. ``full_bytes`` is what a checkpoint consists of, shared blobs included (what a
  restore reads). A round checkpoint that persists more than half its full size is a *full upload*,
  counted in ``full_uploads``. With the heap backend these are the new bases, written every
  ``max_chain_length`` checkpoints (the fill checkpoint is the first base, so round
  ``max_chain_length`` writes the next); they are not incremental and are left out of
  ``incremental_fraction_*``. With RocksDB every checkpoint is incremental, and a full upload is one
  after a compaction that rewrote most SST files: it stays in (and shows in the max).
  ``amortised_fraction`` is the sum of persisted bytes over the sum of full bytes of all round
  checkpoints, full uploads included. ``fraction_of_fill_median`` measures the incremental
  checkpoints against the fill checkpoint's ``full_bytes`` (the whole state, written once), since a
  heap chain's ``full_bytes`` grows with its deltas.

The restore: ``env.execute(..., restore_from=<the last checkpoint>)`` of a job at the same
parallelism and backend whose keyed function registers the state in ``open()`` (which loads every
entry) and reads back a sample of the keys, as ``rescale.py`` does. ``restore_s`` runs from the call
until it returns, ``loaded_s`` until the last subtask's ``open()`` has registered the state; MB/s are
the last checkpoint's ``full_bytes`` over ``restore_s`` (1 MB = 10^6 bytes). Restores are repeated
``--restore-repeat`` times; the medians are reported.

The check (``correct``): every checkpoint completed, and the last one read back whole (untimed) holds
exactly one entry per key with its expected value; the restored job read every sampled key's
expected value (the sample mixes keys changed in the last round with keys drawn at random).

There is no baseline in the sense of W1: the goals are absolute (sync pause <= 1 ms heap, <= 20 ms
RocksDB; incremental <= 5 % of full), so ``ratio`` is ``incremental_fraction_median``.

    python benchmarks/large_state.py [--backend heap|rocksdb] [--keys 1000000] [--fraction 0.02]
        [--rounds 10] [--parallelism 2] [--max-chain-length 8] [--sample 3000] [--restore-repeat 3]
"""

from __future__ import annotations

import argparse
import pickle
import random
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from _common import report
from _restore import timed_restore

import lockgate as lg
from lockgate.savepoint import RestoredState
from lockgate.snapshots import load_from_pointer
from lockgate.state import RocksDBStateBackend

STATE_UID = "value-state"
STATE_NAME = "value"
#: A round checkpoint that persists more than this fraction of its full size is a full upload.
FULL_UPLOAD = 0.5

#: perf_counter() at the end of each restored subtask's open(); module-level, because every subtask
#: works on its own deep copy of the function.


def backend_of(name: str, max_chain_length: int) -> lg.StateBackend:
    if name == "rocksdb":
        return RocksDBStateBackend(incremental=True)
    return lg.HeapStateBackend(incremental=True, max_chain_length=max_chain_length)


def value_of(i: int, round_no: int) -> int:
    """The value key ``k{i}`` gets in round ``round_no`` (0: the fill): neither its index nor the
    value of another round, so a stale or misplaced entry shows."""
    return i * 7 + 3 + round_no * 10_000_019


class SetValue(lg.MapFunction[tuple[str, int], str]):
    """Sets the key's value, the W1b way."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.value = ctx.get_state(lg.ValueStateDescriptor(STATE_NAME, default=0))

    def map(self, record: tuple[str, int]) -> str:
        self.value.update_nowait(record[1])
        return record[0]


class ProgressSink(lg.Sink):
    """Counts what it receives and wakes :meth:`reached` once a count is reached: how the driver
    knows a round's records have all been processed."""

    def __init__(self) -> None:
        self.count = 0
        self._target = 0
        self._event: anyio.Event | None = None

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _ProgressWriter(self)

    def add(self, count: int) -> None:
        self.count += count
        if self._event is not None and self.count >= self._target:
            self._event.set()

    async def reached(self, target: int) -> None:
        if self.count >= target:
            return
        self._target, self._event = target, anyio.Event()
        try:
            await self._event.wait()
        finally:
            self._event = None


class _ProgressWriter(lg.SinkWriter):
    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink

    async def write(self, records: list[Any]) -> None:
        self._sink.add(len(records))


async def processed(job: lg.Job, sink: ProgressSink, target: int) -> None:
    """Wait until the sink has counted ``target`` records; raise if the job ends first."""

    async def watch() -> None:
        await job.wait()  # raises what went wrong
        raise RuntimeError(f"the job ended after {sink.count} of {target} records")

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await sink.reached(target)
        group.cancel_scope.cancel()


async def write(
    args: argparse.Namespace, root: Path, expected: list[int], rng: random.Random
) -> tuple[Any, str, list[int]]:
    """Fill, checkpoint, then the rounds with a checkpoint each; the job's checkpoint statistics,
    the last checkpoint's URL and the indexes of the keys the last round changed."""
    n = args.keys
    env = lg.StreamEnvironment(parallelism=args.parallelism)
    env.set_state_backend(backend_of(args.backend, args.max_chain_length))
    env.set_checkpoint_storage((root / "checkpoints").as_uri())
    env.enable_checkpointing(3600.0)  # no periodic checkpoint within the run: only the triggers below
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource(maxsize=n)
    sink = ProgressSink()
    (
        env.from_source(source, uid="keys")
        .key_by(lambda r: r[0])
        .map(SetValue(), uid=STATE_UID)
        .sink(sink, uid="progress")
    )
    for i in range(n):
        source.put_nowait((f"k{i}", expected[i]))  # never closed: the job runs on between rounds
    put = n
    changed: list[int] = []
    job = await env.start("W3")
    try:
        await processed(job, sink, put)
        completed = await job.trigger_checkpoint()  # the fill checkpoint: a full one
        per_round = max(1, round(n * args.fraction))
        for round_no in range(1, args.rounds + 1):
            changed = rng.sample(range(n), per_round)
            for i in changed:
                expected[i] = value_of(i, round_no)
                await source.put((f"k{i}", expected[i]))
            put += per_round
            await processed(job, sink, put)
            completed = await job.trigger_checkpoint()
        stats = job.checkpoint_stats
    finally:
        await job.cancel()
    return stats, completed.pointer, changed


async def holds_exactly(url: str, expected: list[int]) -> bool:
    """Whether the checkpoint at ``url`` holds one entry per key, each with its expected value."""
    restored = RestoredState.from_checkpoint(await load_from_pointer(url))
    seen = 0
    for snapshot in restored.keyed[STATE_UID]:
        pairs: list[tuple[Any, Any]] = []
        for table in snapshot.tables.get(STATE_NAME, {}).values():
            pairs.extend(table.items())
        for group in snapshot.entries.get(STATE_NAME, {}).values():
            pairs.extend((key, pickle.loads(data)) for key, _, data in group)
        for key, value in pairs:
            if value != expected[int(key[1:])]:
                return False
        seen += len(pairs)
    return seen == len(expected)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["heap", "rocksdb"], default="heap")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--fraction", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--max-chain-length", type=int, default=8)
    parser.add_argument("--sample", type=int, default=3000)
    parser.add_argument("--restore-repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.keys
    rng = random.Random(args.seed)
    expected = [value_of(i, 0) for i in range(n)]

    root = Path(tempfile.mkdtemp(prefix="lockgate-w3-"))
    try:
        started = time.perf_counter()
        stats, url, last_changed = anyio.run(write, args, root, expected, rng)
        write_s = time.perf_counter() - started
        # The sample: keys the last round changed, and keys drawn at random (most never changed).
        half = args.sample // 2
        indexes = sorted(set(last_changed[:half]) | set(rng.sample(range(n), min(args.sample - half, n))))
        sample = [f"k{i}" for i in indexes]
        restore_times: list[float] = []
        loaded_times: list[float] = []
        read_back = True
        for _ in range(args.restore_repeat):
            restore_s, loaded_s, values = anyio.run(
                partial(
                    timed_restore,
                    url,
                    backend_of(args.backend, args.max_chain_length),
                    args.parallelism,
                    sample,
                    state_uid=STATE_UID,
                    state_name=STATE_NAME,
                    job_name="W3-restore",
                )
            )
            restore_times.append(restore_s)
            loaded_times.append(loaded_s)
            read_back = read_back and values == {f"k{i}": expected[i] for i in indexes}
        whole = anyio.run(holds_exactly, url, expected)  # untimed
    finally:
        shutil.rmtree(root, ignore_errors=True)

    history = [c for c in stats.history if not c.savepoint]
    completed = [c for c in history if c.status == "completed"]
    fill, rounds = completed[0], completed[1:]
    full_uploads = [c for c in rounds if c.persisted_bytes > FULL_UPLOAD * c.full_bytes]
    # Heap bases are not incremental checkpoints; RocksDB's are all incremental, compactions or not.
    incremental = [c for c in rounds if c not in full_uploads] if args.backend == "heap" else rounds
    fractions = [c.persisted_bytes / c.full_bytes for c in incremental]
    of_fill = [c.persisted_bytes / fill.full_bytes for c in incremental]
    pauses = [c.sync_duration for c in rounds]
    last = completed[-1]
    restore_s = statistics.median(restore_times)
    correct = len(history) == len(completed) == args.rounds + 1 and whole and read_back
    line: dict[str, Any] = {
        "workload": "W3",
        "backend": args.backend,
        "keys": n,
        "parallelism": args.parallelism,
        "changed_fraction": args.fraction,
        "rounds": args.rounds,
        "sync_pause_max_ms": ms(max(pauses)),
        "sync_pause_median_ms": ms(statistics.median(pauses)),
        "fill_sync_pause_ms": ms(fill.sync_duration),
        "incremental_fraction_median": round(statistics.median(fractions), 5) if fractions else None,
        "incremental_fraction_max": round(max(fractions), 5) if fractions else None,
        "fraction_of_fill_median": round(statistics.median(of_fill), 5) if of_fill else None,
        "full_uploads": len(full_uploads),
        "amortised_fraction": round(
            sum(c.persisted_bytes for c in rounds) / sum(c.full_bytes for c in rounds), 5
        ),
        "fill_full_bytes": fill.full_bytes,
        "full_bytes": last.full_bytes,
        "persisted_bytes_median": round(statistics.median(c.persisted_bytes for c in incremental))
        if incremental
        else None,
        "checkpoint_duration_max_s": round(max(c.duration for c in rounds), 4),
        "restore_s": round(restore_s, 4),
        "loaded_s": round(statistics.median(loaded_times), 4),
        "restore_mb_s": round(last.full_bytes / restore_s / 1e6, 2),
        "write_s": round(write_s, 2),
        "ratio": round(statistics.median(fractions), 5) if fractions else None,
        "correct": correct,
    }
    if args.backend == "heap":
        line["note"] = (
            f"heap chains: a full base every {args.max_chain_length} checkpoints (the fill checkpoint is "
            "the first); round bases count in full_uploads and amortised_fraction, not in "
            "incremental_fraction_*"
        )
    else:
        line["note"] = (
            "rocksdb: full_uploads are round checkpoints after a compaction that rewrote most SST "
            "files; they count in incremental_fraction_* (the max) and amortised_fraction"
        )
    report(line)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
