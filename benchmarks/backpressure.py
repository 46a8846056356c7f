"""W4 backpressure (BENCHMARKS.md): checkpoint duration under backpressure, aligned against unaligned.

The pipeline: an endless source -> map -> key_by -> process (a running sum in ValueState, the W1a
form) -> a sink that sleeps 1 ms per batch, at parallelism 2. The sink is the bottleneck, so every
channel into the keyed process fills up. A job runs until those queues are full, then takes
``--checkpoints`` checkpoints one after another (each triggered by hand, ``--pause`` seconds after the
previous one ended, so the queues fill again), and is cancelled. Aligned and unaligned jobs run in
turn, ``--repeat`` times each, in the same process; checkpoints are written to a file URL in a
temporary directory (``--storage file``, the default) or kept in memory (``--storage memory``).

Aligned, a barrier waits behind every queued batch, each of which costs the sink a millisecond;
unaligned, it overtakes them and they are stored with the checkpoint (``in_flight_bytes``). The line
reports the median checkpoint duration (trigger to completion, ``CheckpointStats.duration``) of each
kind over all its checkpoints, and ``ratio`` = unaligned / aligned (the goal: at most 0.1). Writing
the snapshot costs both kinds alike (worker threads, fsync, on a busy event loop), so the line also
gives ``*_barrier``: the median of duration minus the longest asynchronous part, roughly how long the
barriers took to reach the last subtask, where alignment makes the difference (``barrier_ratio``).
``queue_fill`` is the mean share of the keyed channels' capacity that was queued when each checkpoint
was triggered. The check (``correct``): every checkpoint completed; the aligned ones stored nothing in
flight and the unaligned ones were taken unaligned, with in-flight records.

    python benchmarks/backpressure.py [--checkpoints 8] [--repeat 3] [--keys 10000] [--pause 0.05]
        [--storage file|memory] [--channel-capacity 8]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from _common import report
from keyed_sum import AwaitingSum

import lockgate as lg

PARALLELISM = 2
SINK_SLEEP = 0.001  # seconds per batch
FULL = 0.9  # a channel this full counts as full


class EndlessSource(lg.Source):
    """Emits ``(key, i)`` for i = 0, 1, 2, ... forever, the keys round-robin over ``keys`` names.
    Replayable: each subtask's next ``i`` is its operator state."""

    def __init__(self, keys: int) -> None:
        self.keys = [f"k{j}" for j in range(keys)]

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        positions = ctx.get_union_list_state(lg.ListStateDescriptor[tuple[int, int]]("positions"))
        return _EndlessReader(self.keys, ctx.subtask_index, ctx.parallelism, positions)


class _EndlessReader(lg.SourceReader):
    def __init__(self, keys: list[str], index: int, parallelism: int, positions: Any) -> None:
        self._keys = keys
        self._index = index
        self._step = parallelism
        self._positions = positions
        restored = [start for subtask, start in positions.get_nowait() if subtask == index]
        self._next = restored[0] if restored else index

    async def read(self, max_records: int) -> list[Any] | None:
        keys, count, start, step = self._keys, len(self._keys), self._next, self._step
        self._next = start + max_records * step
        return [(keys[i % count], i) for i in range(start, self._next, step)]

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._positions.update_nowait([(self._index, self._next)])


class SlowSink(lg.Sink):
    """Sleeps :data:`SINK_SLEEP` per batch: a sink that cannot keep up."""

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _SlowWriter()


class _SlowWriter(lg.SinkWriter):
    async def write(self, records: list[Any]) -> None:
        await anyio.sleep(SINK_SLEEP)


def keyed_channels(job: Any) -> list[lg.ChannelStatistics]:
    """The statistics of the channels into the keyed process (the ones that fill up)."""
    return [stats for name, stats in job.channel_stats.items() if "->sum[" in name]


def fill(job: Any) -> float:
    channels = keyed_channels(job)
    return sum(c.queued for c in channels) / sum(c.capacity for c in channels)


async def run_job(unaligned: bool, url: str, args: argparse.Namespace) -> tuple[list[Any], list[float]]:
    """One job: fill the queues, take the checkpoints, cancel; their statistics and the queue fill
    at each trigger."""
    env = lg.StreamEnvironment(parallelism=PARALLELISM, channel_capacity=args.channel_capacity)
    if args.storage == "file":
        env.set_checkpoint_storage(url)
    else:
        env.set_checkpoint_storage(lg.MemoryCheckpointStorage(max_state_size=64 * 1024 * 1024))
    env.enable_checkpointing(3600.0)  # only the checkpoints triggered here
    env.checkpoint_config.unaligned = unaligned
    source = env.from_source(EndlessSource(args.keys), uid="source")
    stream = source.map(lambda r: (r[0], r[1] * 2), uid="map")
    stream.key_by(lambda r: r[0]).process(AwaitingSum(), uid="sum").sink(SlowSink(), uid="sink")
    fills = []
    job = await env.start(f"W4-{'unaligned' if unaligned else 'aligned'}")
    try:
        with anyio.fail_after(60):
            # Channels tell no one when they are full; the queues fill within milliseconds.
            while fill(job) < FULL:  # noqa: ASYNC110 - a benchmark may poll its job's statistics
                await anyio.sleep(0.005)
            for _ in range(args.checkpoints):
                fills.append(fill(job))
                await job.trigger_checkpoint()
                await anyio.sleep(args.pause)
        stats = job.checkpoint_stats.history
    finally:
        await job.cancel()
    return stats, fills


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--storage", choices=["file", "memory"], default="file")
    # The environment's default; deeper queues make aligned checkpoints wait longer, unaligned ones not.
    parser.add_argument("--channel-capacity", type=int, default=8)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lockgate-w4-"))
    results: dict[bool, list[Any]] = {False: [], True: []}
    fills: list[float] = []
    try:
        for run in range(args.repeat):
            for unaligned in (False, True):
                url = (root / f"run-{run}-{'unaligned' if unaligned else 'aligned'}").as_uri()
                stats, job_fills = anyio.run(run_job, unaligned, url, args)
                results[unaligned] += stats
                fills += job_fills
    finally:
        shutil.rmtree(root, ignore_errors=True)

    aligned, unaligned = results[False], results[True]
    expected = args.checkpoints * args.repeat
    correct = (
        len(aligned) == len(unaligned) == expected
        and all(c.status == "completed" for c in aligned + unaligned)
        and all(not c.unaligned and c.in_flight_bytes == 0 for c in aligned)
        and all(c.unaligned and c.in_flight_bytes > 0 for c in unaligned)
    )
    aligned_duration = statistics.median(c.duration for c in aligned)
    unaligned_duration = statistics.median(c.duration for c in unaligned)
    aligned_barrier = statistics.median(c.duration - c.async_duration for c in aligned)
    unaligned_barrier = statistics.median(c.duration - c.async_duration for c in unaligned)
    line: dict[str, Any] = {
        "workload": "W4",
        "backend": "heap",
        "storage": args.storage,
        "parallelism": PARALLELISM,
        "sink_sleep_ms": SINK_SLEEP * 1000,
        "channel_capacity": args.channel_capacity,
        "checkpoints": expected,
        "aligned_duration": round(aligned_duration, 4),
        "unaligned_duration": round(unaligned_duration, 4),
        "ratio": round(unaligned_duration / aligned_duration, 4),
        "aligned_barrier": round(aligned_barrier, 4),
        "unaligned_barrier": round(unaligned_barrier, 4),
        "barrier_ratio": round(unaligned_barrier / aligned_barrier, 4),
        "aligned_max": round(max(c.duration for c in aligned), 4),
        "unaligned_max": round(max(c.duration for c in unaligned), 4),
        "aligned_alignment": round(statistics.median(c.alignment_duration for c in aligned), 4),
        "unaligned_sync": round(statistics.median(c.sync_duration for c in unaligned), 6),
        "in_flight_bytes": round(statistics.median(c.in_flight_bytes for c in unaligned)),
        "persisted_bytes": round(statistics.median(c.persisted_bytes for c in unaligned)),
        "queue_fill": round(statistics.mean(fills), 3),
        "correct": correct,
    }
    report(line)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
