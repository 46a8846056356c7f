"""The end of a job is checkpointed: sources that have read everything keep taking part in
checkpoints, checkpoints go on while downstream drains, and the job ends with a final checkpoint
that every subtask takes after its end of input; sinks commit their last records only then."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import lockgate as lg
from lockgate.connectors import CollectionSource
from tests._sources import GUARD, PausingSource

pytestmark = pytest.mark.anyio

Record = tuple[str, int]
ITEMS: list[Record] = [(key, n) for n in range(30) for key in "abc"]


def expected_sums(records: list[Record]) -> Counter[Record]:
    totals: dict[str, int] = {}
    out: Counter[Record] = Counter()
    for key, value in records:
        totals[key] = totals.get(key, 0) + value
        out[(key, totals[key])] += 1
    return out


def committed_lines(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [
        line
        for file in directory.iterdir()
        if not file.name.startswith(".")
        for line in file.read_text().splitlines()
    ]


def complete_checkpoints(root: Path) -> list[int]:
    return sorted(
        int(path.name.removeprefix("chk-")) for path in root.glob("chk-*") if (path / "_metadata").exists()
    )


def environment(root: Path, *, unaligned: bool = False, backend: str = "heap") -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=4, channel_capacity=64)
    env.set_checkpoint_storage(root.as_uri())
    env.enable_checkpointing(3600)  # only the checkpoints the job takes by itself, or the test asks for
    env.checkpoint_config.unaligned = unaligned
    if backend == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend())
    return env


class CheckingFileSink(lg.FileSink):
    """A FileSink that, at each commit, notes which checkpoints of ``root`` are complete."""

    def __init__(self, directory: Path, root: Path) -> None:
        super().__init__(directory)
        self.root = root
        self.commits: list[list[int]] = []

    async def commit(self, transaction: Any) -> None:
        self.commits.append(complete_checkpoints(self.root))
        await super().commit(transaction)


@pytest.mark.parametrize("unaligned", [False, True])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
async def test_a_short_job_ends_with_a_final_checkpoint_and_commits_only_when_it_completes(
    tmp_path: Path, unaligned: bool, backend: str
) -> None:
    root, out = tmp_path / "checkpoints", tmp_path / "out"
    env = environment(root, unaligned=unaligned, backend=backend)
    sink = CheckingFileSink(out, root)
    env.from_collection(ITEMS, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").sink(sink, uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("short")
        await job.wait()
    final = complete_checkpoints(root)
    assert len(final) == 1  # retained = 1: the final checkpoint, taken after every end of input
    # The final checkpoint completed last. Unaligned, the one triggered at the sources' end may turn
    # out final while the one triggered at the subtasks' end is on its way: that one is given up as
    # moot, because the final one completed or because the job then finished.
    history = job.checkpoint_stats.history
    last = max(stats.id for stats in history if stats.status == "completed")
    moot = ("was the job's final one", "the job finished first")
    later = [stats for stats in history if stats.id > last]
    assert all(any(reason in (stats.failure or "") for reason in moot) for stats in later), history
    assert Counter(eval(line) for line in committed_lines(out)) == expected_sums(ITEMS)
    # Every commit came after a checkpoint had completed; the last ones after the final checkpoint.
    assert sink.commits and all(completed for completed in sink.commits)
    # (An older checkpoint that completes its metadata just after the final one is listed until it
    # is given up as subsumed: the last commit may see it beside the final one.)
    assert final[-1] in sink.commits[-1]

    # A restore from the final checkpoint commits again what it covers (nothing new) and replays nothing.
    env = environment(root, unaligned=unaligned, backend=backend)
    env.from_collection(ITEMS, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").sink(
        lg.FileSink(out), uid="out"
    )
    files = sorted(path.name for path in out.iterdir())
    await env.execute("again", restore_from=root.as_uri())
    assert sorted(path.name for path in out.iterdir()) == files
    assert Counter(eval(line) for line in committed_lines(out)) == expected_sums(ITEMS)


class _EndSignallingReader(lg.SourceReader):
    def __init__(self, inner: lg.SourceReader, source: EndSignallingSource) -> None:
        self._inner = inner
        self._source = source
        self._ended = False

    async def read(self, max_records: int) -> list[Any] | None:
        batch = await self._inner.read(max_records)
        if batch is None:
            self._ended = True
        return batch

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._inner.snapshot_state(checkpoint_id)
        if self._ended:  # its barrier goes out now, before the source task yields
            self._source.snapshotted_after_end.set()


class EndSignallingSource(lg.Source):
    """``from_collection`` at parallelism 1 that tells the test when it snapshots after its end."""

    fixed_parallelism = 1

    def __init__(self, items: list[Any]) -> None:
        self._inner = CollectionSource(items)
        self.snapshotted_after_end = anyio.Event()

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        return _EndSignallingReader(self._inner.create_reader(ctx), self)


class GatedCount(lg.MapFunction):
    """Counts records per key in keyed state. In the first run it holds at record ``hold_at`` until
    ``gate`` opens, and at record ``crash_at`` it waits for ``crash`` and raises. Notes what each
    run saw."""

    def __init__(self, hold_at: int, crash_at: int) -> None:
        self.gate, self.reached, self.crash = anyio.Event(), anyio.Event(), anyio.Event()
        self.hold_at, self.crash_at = hold_at, crash_at
        self.runs: dict[int, dict[str, Any]] = {}

    def __deepcopy__(self, memo: Any) -> GatedCount:
        return self  # one object for the single subtask, so the test sees what it noted

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))
        self.attempt = ctx.attempt
        self.runs[ctx.attempt] = {"restored": ctx.is_restored, "records": 0}

    async def map(self, value: Record) -> tuple[str, int]:
        run = self.runs[self.attempt]
        run["records"] += 1
        if self.attempt == 0 and run["records"] == self.hold_at:
            self.reached.set()
            await self.gate.wait()
        if self.attempt == 0 and run["records"] == self.crash_at:
            await self.crash.wait()
            raise RuntimeError("crash while draining")
        count = await self.count.value() + 1
        await self.count.update(count)
        return (value[0], count)


async def test_unaligned_checkpoints_complete_while_downstream_drains_and_a_crash_there_restores_from_one(
    tmp_path: Path,
) -> None:
    env = lg.StreamEnvironment(parallelism=1, max_parallelism=16, batch_size=2, channel_capacity=64)
    env.enable_checkpointing(3600)
    env.checkpoint_config.unaligned = True
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    source = EndSignallingSource(ITEMS)
    counting = GatedCount(hold_at=10, crash_at=14)
    sink = lg.CollectSink[Any]()
    (
        env.from_source(source, uid="src")
        .key_by(lambda r: r[0])
        .map(counting, uid="count")
        .sink(sink, uid="out")
    )
    taken: list[lg.CompletedCheckpoint] = []

    async def checkpoint() -> None:
        taken.append(await job.trigger_checkpoint())

    with anyio.fail_after(GUARD):
        job = await env.start("drain")
        await counting.reached.wait()  # the map holds at record 10; the source has read everything
        async with anyio.create_task_group() as group:
            group.start_soon(checkpoint)
            # The source has put its barrier ahead of the queued records and its end of input.
            await source.snapshotted_after_end.wait()
            counting.gate.set()
        counting.crash.set()  # the checkpoint is complete: crash in the middle of the drain
        await job.wait()
    [during] = [s for s in job.checkpoint_stats.history if s.id == taken[0].checkpoint_id]
    assert during.unaligned and during.in_flight_bytes > 0
    assert job.restarts == 1
    # The restart came from a checkpoint taken during the drain: the source had nothing left to read,
    # and the map got only the records that were in flight then.
    assert counting.runs[1]["restored"] and counting.runs[1]["records"] < len(ITEMS)
    per_key = Counter(key for key, _ in ITEMS)
    assert sorted(sink.results) == sorted((key, n) for key in per_key for n in range(1, per_key[key] + 1))


async def test_a_job_without_checkpointing_commits_at_its_end_and_takes_no_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = lg.StreamEnvironment(parallelism=2)
    env.from_collection(ITEMS, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").sink(
        lg.FileSink(out), uid="out"
    )
    job = await env.start("plain")
    await job.wait()
    assert job.checkpoint_stats.history == []
    assert Counter(eval(line) for line in committed_lines(out)) == expected_sums(ITEMS)


class SlowFirstLocation(lg.FileCheckpointStorage):
    """Creating checkpoint 1's location waits until checkpoint 2's exists, for a while at most: a
    checkpoint triggered meanwhile could otherwise reach the sources before it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.second_created = anyio.Event()

    async def create_checkpoint_location(self, checkpoint_id: int) -> Any:
        if checkpoint_id == 1:
            # Under a correct coordinator checkpoint 2 cannot begin before 1 has: this waits in vain.
            with anyio.move_on_after(0.3):
                await self.second_created.wait()
        location = await super().create_checkpoint_location(checkpoint_id)
        if checkpoint_id == 2:
            self.second_created.set()
        return location


class SnapshotOrderSource(PausingSource):
    """A pausing source that notes the id of every checkpoint it takes its part of, in order."""

    def __init__(self, items: list[Any], pauses: tuple[int, ...]) -> None:
        super().__init__(items, pauses)
        self.snapshots: list[int] = []

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        return _NotingReader(super().create_reader(ctx), self.snapshots)


class _NotingReader(lg.SourceReader):
    def __init__(self, inner: lg.SourceReader, snapshots: list[int]) -> None:
        self._inner = inner
        self._snapshots = snapshots

    async def read(self, max_records: int) -> list[Any] | None:
        return await self._inner.read(max_records)

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._snapshots.append(checkpoint_id)
        self._inner.snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._inner.notify_checkpoint_complete(checkpoint_id)

    async def close(self) -> None:
        await self._inner.close()


async def test_checkpoints_triggered_together_reach_the_sources_in_id_order(tmp_path: Path) -> None:
    # A source that took checkpoint 2 before 1 gave a sink's last transaction to checkpoint 2; when 1
    # then completed first as the final checkpoint, the job ended with that transaction uncommitted.
    items = list(range(20))
    source = SnapshotOrderSource(items, (10,))
    env = lg.StreamEnvironment(parallelism=2)
    env.set_checkpoint_storage(SlowFirstLocation(tmp_path.as_uri()))
    env.enable_checkpointing(3600)
    sink = lg.CollectSink[int]()
    env.from_source(source, uid="src").sink(sink, uid="out")
    job = await env.start("two-at-once")
    await source.reached(10)

    async def trigger() -> None:
        with contextlib.suppress(lg.CheckpointError):  # subsumed by the other, which completed first
            await job.trigger_checkpoint()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            group.start_soon(trigger)
            group.start_soon(trigger)
        source.resume(10)
        await job.wait()
    assert source.snapshots == sorted(source.snapshots) and source.snapshots[:2] == [1, 2]
    assert sorted(sink.results) == items


class FailsAfterTheFinal(lg.FileCheckpointStorage):
    """Checkpoint 1 completes only once checkpoint 2 is being written; checkpoint 2's writes then
    fail, as those of a snapshot whose files the ending subtasks deleted do."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.first_started, self.second_writing, self.first_complete = (
            anyio.Event(),
            anyio.Event(),
            anyio.Event(),
        )

    async def create_checkpoint_location(self, checkpoint_id: int) -> Any:
        location = await super().create_checkpoint_location(checkpoint_id)
        if checkpoint_id == 1:
            self.first_started.set()
        return location

    async def write_state(self, location: Any, name: str, data: Any) -> Any:
        if location.checkpoint_id == 2:
            self.second_writing.set()
            await self.first_complete.wait()
            raise OSError("the subtask has ended: its snapshot's files are gone")
        return await super().write_state(location, name, data)

    async def write_metadata(self, location: Any, data: bytes) -> Any:
        if location.checkpoint_id == 1:
            await self.second_writing.wait()
        completed = await super().write_metadata(location, data)
        if location.checkpoint_id == 1:
            self.first_complete.set()
        return completed


async def test_a_checkpoint_still_in_progress_when_the_final_one_completes_does_not_fail_the_job(
    tmp_path: Path,
) -> None:
    items = list(range(10))
    storage = FailsAfterTheFinal(tmp_path.as_uri())
    env = lg.StreamEnvironment(parallelism=2)
    env.set_checkpoint_storage(storage)
    env.enable_checkpointing(3600)  # the final checkpoint (1) is the only one the job takes itself
    env.checkpoint_config.max_concurrent = 2
    env.checkpoint_config.tolerable_failures = 0
    sink = lg.CollectSink[int]()
    env.from_collection(items, uid="src").key_by(lambda n: n % 3).map(lambda n: n, uid="keyed").sink(
        sink, uid="out"
    )
    with anyio.fail_after(GUARD):
        job = await env.start("ends-with-two-pending")
        await storage.first_started.wait()
        with pytest.raises(lg.CheckpointError, match="checkpoint 1 was the job's final one"):
            await job.trigger_checkpoint()  # checkpoint 2: its writes fail once 1 is complete
        result = await job.wait()
    assert sorted(sink.results) == items
    assert result.restarts == 0
