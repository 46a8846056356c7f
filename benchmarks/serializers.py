"""Typed serializers against pickle: W1's keyed running sum with a record value per key.

Each key holds ``Account(balance, count)`` in a ``ValueState`` whose descriptor names the serializer
under test, updated the W1b way (a ``MapFunction`` on the keyed stream with ``value_nowait`` and
``update_nowait``). ``dataclass`` is ``DataclassSerializer(Account)``, a dataclass; ``msgspec`` is
``MsgspecSerializer(AccountStruct)``, a msgspec Struct with the same fields (it takes only Structs).
The baseline is the default ``PickleSerializer`` with the dataclass, the same job in the same run: the
three run in turn, ``--repeat`` times each, and medians are compared. One JSON line per typed
serializer.

- ``--backend rocksdb``: the whole job's records/s on RocksDB, where every read decodes and every
  write encodes; ``ratio`` is typed records/s over pickle records/s (> 1: typed is faster).
- ``--backend heap``: checkpoints of the full state. A job fills every key through a ``QueueSource``
  kept open, takes one untimed checkpoint, then ``--checkpoints`` timed ones (``job.trigger_checkpoint()``,
  full heap snapshots of unchanged state); ``checkpoint_s`` is the median ``duration`` of the job's
  checkpoint statistics (``async_s``: the asynchronous part). Then a job restores the last checkpoint
  and reads a sample of keys back (``restore_s``, the whole ``execute``). ``ratio`` is pickle's
  checkpoint time over the typed one's (> 1: typed is faster), ``restore_ratio`` likewise.

``correct``: the final state of sampled keys (RocksDB: the last output per key; heap: read back after
the restore) equals the expected sums and counts, for every serializer.

    python benchmarks/serializers.py [--backend heap|rocksdb] [--records 2000000] [--keys 100000]
        [--repeat 3] [--checkpoints 3] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _common import CountSink, report, timed
from keyed_sum import FinalSums, expected_sum

import lockgate as lg
from lockgate.state import RocksDBStateBackend

STATE_UID = "accounts"


@dataclass
class Account:
    balance: int
    count: int


class AccountStruct(msgspec.Struct):
    balance: int
    count: int


#: name -> (value class, serializer factory); "pickle" is the baseline.
SERIALIZERS: dict[str, tuple[type[Any], Callable[[], lg.Serializer[Any]]]] = {
    "pickle": (Account, lg.PickleSerializer),
    "dataclass": (Account, lambda: lg.DataclassSerializer(Account)),
    "msgspec": (AccountStruct, lambda: lg.MsgspecSerializer(AccountStruct)),
}


def descriptor(serializer: str) -> lg.ValueStateDescriptor[Any]:
    return lg.ValueStateDescriptor("account", serializer=SERIALIZERS[serializer][1]())


class UpdateAccount(lg.MapFunction[tuple[str, int], tuple[str, Any]]):
    """Adds the amount to the key's balance and counts it; emits the new account."""

    def __init__(self, serializer: str) -> None:
        self.serializer = serializer
        self.cls = SERIALIZERS[serializer][0]

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.account = ctx.get_state(descriptor(self.serializer))

    def map(self, record: tuple[str, int]) -> tuple[str, Any]:
        old = self.account.value_nowait()
        new = self.cls(record[1], 1) if old is None else self.cls(old.balance + record[1], old.count + 1)
        self.account.update_nowait(new)
        return (record[0], new)


class ReadAccount(lg.MapFunction[str, tuple[str, Any]]):
    """Registers the state (which loads the restored entries) and reads the key's account back."""

    def __init__(self, serializer: str) -> None:
        self.serializer = serializer

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.account = ctx.get_state(descriptor(self.serializer))

    def map(self, key: str) -> tuple[str, Any]:
        return (key, self.account.value_nowait())


def holds_expected(accounts: dict[str, Any], watch: list[int], n: int, k: int) -> bool:
    """Whether the sampled keys ``k{j}`` hold their expected sum and count (j in ``watch``)."""
    return all(
        (accounts[f"k{j}"].balance, accounts[f"k{j}"].count) == (expected_sum(j, n, k), (n - j + k - 1) // k)
        for j in watch
    )


def run_rocksdb(records: list[tuple[str, int]], serializer: str) -> FinalSums:
    env = lg.StreamEnvironment(parallelism=1)
    env.set_state_backend(RocksDBStateBackend())
    keyed = env.from_collection(records, uid="source").key_by(lambda r: r[0])
    # The sink keeps the last account per key for the check: its cost is the same for every serializer.
    sink = FinalSums()
    keyed.map(UpdateAccount(serializer), uid=STATE_UID).sink(sink, uid="final")
    env.execute_blocking(f"serializers-{serializer}")
    return sink


async def ended(job: lg.Job) -> None:
    await job.wait()  # raises what went wrong
    raise RuntimeError("the job ended before the state was filled")


async def checkpoint_heap(
    records: list[tuple[str, int]], serializer: str, url: str, checkpoints: int
) -> tuple[list[Any], str]:
    """Fill the heap state, then take checkpoints of it: the timed checkpoints' statistics and the
    last one's pointer."""
    env = lg.StreamEnvironment(parallelism=1)
    env.set_checkpoint_storage(url)
    env.enable_checkpointing(3600.0)  # no periodic checkpoint within the run: only the triggers below
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource(maxsize=len(records))
    sink = CountSink(len(records))
    keyed = env.from_source(source, uid="source").key_by(lambda r: r[0])
    keyed.map(UpdateAccount(serializer), uid=STATE_UID).sink(sink, uid="progress")
    for record in records:
        source.put_nowait(record)  # never closed: the job stays alive for the checkpoints
    job = await env.start(f"serializers-{serializer}")
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(ended, job)  # rather than wait forever, should the job fail while filling
            await sink.reached.wait()
            group.cancel_scope.cancel()
        await job.trigger_checkpoint()  # untimed: its completion frees the records the source kept
        for _ in range(checkpoints):
            completed = await job.trigger_checkpoint()
        history = job.checkpoint_stats.history[-checkpoints:]
    finally:
        await job.cancel()
    return history, completed.pointer


async def restore_heap(url: str, serializer: str, sample: list[str]) -> tuple[float, dict[str, Any]]:
    """Seconds to run a job restoring ``url`` that reads ``sample`` back, and the accounts read."""
    env = lg.StreamEnvironment(parallelism=1)
    read = FinalSums()
    keys = env.from_collection(sample, uid="sample").key_by(lambda key: key)
    keys.map(ReadAccount(serializer), uid=STATE_UID).sink(read, uid="read")
    gc.collect()  # so earlier garbage is not charged to the restore
    started = time.perf_counter()
    # The checkpoint also holds the filling job's source, which this job drops.
    await env.execute("serializers-restore", restore_from=url, allow_non_restored_state=True)
    return time.perf_counter() - started, read.last


def heap_main(args: argparse.Namespace, records: list[tuple[str, int]], watch: list[int]) -> bool:
    n, k = args.records, args.keys
    sample = [f"k{j}" for j in watch]
    stats: dict[str, list[Any]] = {name: [] for name in SERIALIZERS}
    restores: dict[str, list[float]] = {name: [] for name in SERIALIZERS}
    correct = {name: True for name in SERIALIZERS}
    root = Path(tempfile.mkdtemp(prefix="lockgate-serializers-"))
    try:
        for run in range(args.repeat):
            for name in SERIALIZERS:  # in turn, so all see the same conditions
                url = (root / f"{name}-{run}").as_uri()
                history, pointer = anyio.run(checkpoint_heap, records, name, url, args.checkpoints)
                stats[name] += history
                seconds, read = anyio.run(restore_heap, pointer, name, sample)
                restores[name].append(seconds)
                done = all(c.status == "completed" for c in history)
                correct[name] = correct[name] and done and holds_expected(read, watch, n, k)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(c, field) for c in stats[name])

    for name in list(SERIALIZERS)[1:]:
        restore_s, pickle_restore_s = statistics.median(restores[name]), statistics.median(restores["pickle"])
        report(
            {
                "benchmark": "serializers",
                "backend": "heap",
                "serializer": name,
                "records": n,
                "keys": k,
                "checkpoint_s": round(median(name, "duration"), 4),
                "pickle_checkpoint_s": round(median("pickle", "duration"), 4),
                "ratio": round(median("pickle", "duration") / median(name, "duration"), 4),
                "async_s": round(median(name, "async_duration"), 4),
                "pickle_async_s": round(median("pickle", "async_duration"), 4),
                "bytes": stats[name][-1].full_bytes,
                "pickle_bytes": stats["pickle"][-1].full_bytes,
                "restore_s": round(restore_s, 4),
                "pickle_restore_s": round(pickle_restore_s, 4),
                "restore_ratio": round(pickle_restore_s / restore_s, 4),
                "correct": correct[name] and correct["pickle"],
            }
        )
    return all(correct.values())


def rocksdb_main(args: argparse.Namespace, records: list[tuple[str, int]], watch: list[int]) -> bool:
    n, k = args.records, args.keys
    times: dict[str, list[float]] = {name: [] for name in SERIALIZERS}
    correct = {name: True for name in SERIALIZERS}
    for _ in range(args.repeat):
        for name in SERIALIZERS:  # in turn, so all see the same conditions
            seconds, sink = timed(partial(run_rocksdb, records, name))
            times[name].append(seconds)
            correct[name] = correct[name] and holds_expected(sink.last, watch, n, k)
    pickle_s = statistics.median(times["pickle"])
    for name in list(SERIALIZERS)[1:]:
        seconds = statistics.median(times[name])
        report(
            {
                "benchmark": "serializers",
                "backend": "rocksdb",
                "serializer": name,
                "records": n,
                "keys": k,
                "records_per_s": round(n / seconds),
                "pickle_records_per_s": round(n / pickle_s),
                "ratio": round(pickle_s / seconds, 4),
                "correct": correct[name] and correct["pickle"],
            }
        )
    return all(correct.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["heap", "rocksdb"], default="heap")
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, default=3, help="timed checkpoints per heap run")
    parser.add_argument("--quick", action="store_true", help="50 k records over 5 k keys, once: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.keys, args.repeat, args.checkpoints = 50_000, 5_000, 1, 2
    n, k = args.records, args.keys
    records = [(f"k{i % k}", i) for i in range(n)]
    watch = [j for j in {0, 1, k // 2, k - 1} if j < n]
    correct = (heap_main if args.backend == "heap" else rocksdb_main)(args, records, watch)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
