"""Recovery: checkpoints taken on demand, where they go on disk, what happens when one times out or is
damaged, restarts, restores into a new job, and the settings that govern all of it.

The tests are stories. Records arrive through a ``QueueSource`` (or a collection source that pauses
where the test says), so every checkpoint is taken at an exact point of the stream; crashes are data
in the input (``CRASH``). Nothing waits on a clock to synchronise: the tests wait for events, and
``anyio.fail_after`` only guards against a hang. Every async test runs on asyncio and on trio.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import lockgate as lg
from lockgate.snapshots import METADATA_NAME, CheckpointLocation, CompletedCheckpoint, StateData
from lockgate.snapshots import StreamStateHandle as Handle
from lockgate.testing import Crash, FailureSchedule, inject_failures
from tests._sources import PausingSource

pytestmark = pytest.mark.anyio

Record = tuple[str, int]

#: The record that crashes the job (see :class:`CrashOnce`).
CRASH: Record = ("crash!", 0)

#: The longest any story may take before the test calls it a hang.
GUARD = 10


# ---- helpers: watching progress, crashing, pausing


class _Waiters:
    """Wakes whoever waits for a count to reach a number."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, anyio.Event]] = []

    def wake(self, count: int) -> None:
        for entry in [entry for entry in self._waiting if entry[0] <= count]:
            entry[1].set()
            self._waiting.remove(entry)

    async def until(self, count: int, current: int) -> None:
        if current < count:
            event = anyio.Event()
            self._waiting.append((count, event))
            with anyio.fail_after(GUARD):
                await event.wait()


class Watch:
    """A map function that records what reaches it, so a test can wait until n records have."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self._waiters = _Waiters()

    def __call__(self, record: Any) -> Any:
        self.seen.append(record)
        self._waiters.wake(len(self.seen))
        return record

    async def until(self, count: int) -> None:
        await self._waiters.until(count, len(self.seen))


class WatchedSink(lg.CollectSink[Any]):
    """A CollectSink a test can wait on: ``await sink.until(n)`` returns once n records are committed.

    (A completed checkpoint is committed by the sink when the sink's subtask handles the notification,
    which may be after ``trigger_checkpoint()`` returned.)
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiters = _Waiters()

    async def commit(self, transaction: tuple[str, list[Any]]) -> None:
        await super().commit(transaction)
        self._waiters.wake(len(self.results))

    async def until(self, count: int) -> None:
        await self._waiters.until(count, len(self.results))


class CrashOnce:
    """A flat-map function: drops :data:`CRASH` records, but raises on the first ``times`` of them."""

    def __init__(self, times: int = 1) -> None:
        self.times = times
        self.crashes = 0

    def __call__(self, record: Any) -> list[Any]:
        if record != CRASH:
            return [record]
        if self.crashes < self.times:
            self.crashes += 1
            raise RuntimeError(f"crash number {self.crashes}")
        return []


# ---- helpers: the pipeline and its expected output


def running_sums(
    stream: lg.DataStream,
    sink: lg.CollectSink[Any],
    *,
    crash: CrashOnce | None = None,
    watch: Watch | None = None,
    sum_uid: str = "sum",
) -> None:
    """source -> (crash) -> key_by(key) -> running sum of the values -> (watch) -> sink."""
    if crash is not None:
        stream = stream.flat_map(crash, uid="crash")
    sums = stream.key_by(lambda record: record[0]).sum(1, uid=sum_uid)
    if watch is not None:
        sums = sums.map(watch, uid="watch")
    sums.sink(sink, uid="out")


def expected_sums(records: list[Record]) -> list[Record]:
    """The running sum of each key after each of its records, in input order."""
    totals: dict[str, int] = {}
    out = []
    for key, value in records:
        if (key, value) == CRASH:
            continue
        totals[key] = totals.get(key, 0) + value
        out.append((key, totals[key]))
    return out


ITEMS: list[Record] = [(key, index) for index, key in enumerate("abcab" * 4)]  # 20 records, 3 keys


def checkpointing_env(**kwargs: Any) -> lg.StreamEnvironment:
    """An environment that checkpoints exactly-once, only when the test triggers a checkpoint."""
    env = lg.StreamEnvironment(**kwargs)
    env.enable_checkpointing(3600)
    return env


async def checkpoints_midway(
    root: Path, items: list[Record], at: tuple[int, ...], sink: lg.CollectSink[Any] | None = None
) -> list[CompletedCheckpoint]:
    """Job 1: the running sums of ``items`` with file checkpoints under ``root``, one taken when the source
    has emitted exactly ``at[i]`` items; all of them retained; then the job is cancelled."""
    env = checkpointing_env()
    env.set_checkpoint_storage(lg.FileCheckpointStorage(root, inline_threshold=0))  # state files to damage
    env.checkpoint_config.retained = len(at)
    source = PausingSource(items, at)
    running_sums(env.from_source(source, uid="src"), sink if sink is not None else lg.CollectSink())
    taken = []
    with anyio.fail_after(GUARD):
        job = await env.start("job-1")
        for index in at:
            await source.reached(index)
            taken.append(await job.trigger_checkpoint())
            source.resume(index)
        await job.cancel()
    return taken


def chk(root: Path, checkpoint_id: int) -> Path:
    return root / f"chk-{checkpoint_id}"


def listing(directory: Path) -> list[str]:
    """The names in a directory, sorted."""
    return sorted(path.name for path in directory.iterdir())


def state_files(directory: Path) -> list[Path]:
    """The state blobs of a checkpoint directory (everything but its metadata)."""
    return sorted(path for path in directory.iterdir() if path.name != METADATA_NAME)


def damage(path: Path) -> None:
    """Flip one byte of the payload of a stored file: a bad disk."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


class HoldingStorage(lg.FileCheckpointStorage):
    """File storage whose state writes wait, while ``hold`` is set, until the test sets the event;
    it tells when it has discarded a checkpoint."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.hold: anyio.Event | None = None
        self.held = anyio.Event()  # set once a write is waiting
        self._discarded: dict[int, anyio.Event] = {}

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        if self.hold is not None:
            self.held.set()
            await self.hold.wait()
        return await super().write_state(location, name, data)

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        await super().discard_checkpoint(checkpoint_id)
        self._discarded.setdefault(checkpoint_id, anyio.Event()).set()

    async def discarded(self, checkpoint_id: int) -> None:
        """Wait until checkpoint ``checkpoint_id`` has been discarded."""
        await self._discarded.setdefault(checkpoint_id, anyio.Event()).wait()


class HoldingMemoryStorage(lg.MemoryCheckpointStorage):
    """Memory storage whose state writes wait, while ``hold`` is set, until the test sets the event."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: anyio.Event | None = None
        self.held = anyio.Event()

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        if self.hold is not None:
            self.held.set()
            await self.hold.wait()
        return await super().write_state(location, name, data)


class FullDiskStorage(lg.MemoryCheckpointStorage):
    """Memory storage that cannot write any state: every checkpoint fails."""

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        raise lg.CheckpointError("no space left on the device")


async def put_all(queue: lg.QueueSource[Any], records: list[Any]) -> None:
    for record in records:
        await queue.put(record)


# ---- 1. a checkpoint on demand


async def test_a_triggered_checkpoint_completes_and_commits_exactly_the_records_before_it() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()  # an hour's interval: only the checkpoints the test triggers happen
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, watch=watch)
    first, second, third = [("a", 1), ("b", 2), ("a", 3)], [("b", 10)], [("a", 100)]
    with anyio.fail_after(GUARD):
        job = await env.start("on-demand")
        await put_all(queue, first)
        await watch.until(3)  # the sums have seen them: the barrier will come after them
        assert sink.results == []  # exactly-once: nothing is visible before a checkpoint completes

        checkpoint = await job.trigger_checkpoint()
        assert isinstance(checkpoint, CompletedCheckpoint)
        assert checkpoint.checkpoint_id == 1
        await sink.until(3)
        assert sink.results == expected_sums(first)

        await put_all(queue, second)
        await watch.until(4)  # processed after checkpoint 1 ...
        assert sink.results == expected_sums(first)  # ... so not visible until the next one completes
        assert (await job.trigger_checkpoint()).checkpoint_id == 2
        await sink.until(4)
        assert sink.results == expected_sums(first + second)

        await put_all(queue, third)
        await watch.until(5)
        assert len(sink.results) == 4
        queue.close()
        result = await job.wait()
    assert sink.results == expected_sums(first + second + third)  # the end of the input commits the rest
    assert result.restarts == 0


async def test_checkpoint_stats_describe_each_checkpoint() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    watch = Watch()
    running_sums(env.from_source(queue, uid="src"), lg.CollectSink(), watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("stats")
        assert job.checkpoint_stats == lg.CheckpointStatsSnapshot(0, 0, 0, [])
        await put_all(queue, [("a", 1), ("b", 2)])
        await watch.until(2)
        checkpoint = await job.trigger_checkpoint()
        stats = job.checkpoint_stats
        queue.close()
        await job.wait()
    assert (stats.completed, stats.failed, stats.in_progress) == (1, 0, 0)
    [entry] = stats.history
    assert isinstance(entry, lg.CheckpointStats)
    assert entry.id == checkpoint.checkpoint_id == 1
    assert entry.status == "completed" and entry.failure is None
    assert entry.sync_duration >= 0 and entry.async_duration >= 0 and entry.alignment_duration >= 0
    assert entry.duration >= max(entry.sync_duration, entry.async_duration, entry.alignment_duration)
    assert entry.persisted_bytes > 0  # the sums' state, the source's position, the sink's transactions
    assert entry.full_bytes >= entry.persisted_bytes
    assert not entry.unaligned and entry.in_flight_bytes == 0


async def test_a_checkpoint_can_be_triggered_as_soon_as_the_job_has_started() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    sink = lg.CollectSink[Any]()
    running_sums(env.from_source(queue, uid="src"), sink)
    with anyio.fail_after(GUARD):
        job = await env.start("eager")
        try:
            assert job.status is lg.JobStatus.RUNNING
            checkpoint = await job.trigger_checkpoint()
        finally:
            queue.close()
            await job.wait()
    assert checkpoint.checkpoint_id == 1


async def test_trigger_checkpoint_without_checkpointing_says_to_enable_it() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = lg.StreamEnvironment()
    watch = Watch()
    running_sums(env.from_source(queue, uid="src"), lg.CollectSink(), watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("no-checkpoints")
        await queue.put(("a", 1))
        await watch.until(1)
        with pytest.raises(lg.CheckpointError, match=r"enable_checkpointing"):
            await job.trigger_checkpoint()
        assert job.checkpoint_stats.completed == 0
        queue.close()
        await job.wait()


class SlowFirstCheckpoint(lg.MemoryCheckpointStorage):
    """Memory storage that holds the state writes of checkpoint 1 until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.first_held = anyio.Event()
        self.release = anyio.Event()

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        if location.checkpoint_id == 1:
            self.first_held.set()
            await self.release.wait()
        return await super().write_state(location, name, data)


async def test_a_newer_checkpoint_that_completes_first_subsumes_the_older_one() -> None:
    storage = SlowFirstCheckpoint()
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(storage)
    env.checkpoint_config.max_concurrent = 2
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    sink = WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, crash=CrashOnce())

    async def first_is_subsumed() -> None:
        with pytest.raises(lg.CheckpointError, match="checkpoint 2 completed first"):
            await job.trigger_checkpoint()

    with anyio.fail_after(GUARD):
        job = await env.start("concurrent")
        await put_all(queue, ITEMS[:5])
        async with anyio.create_task_group() as group:
            group.start_soon(first_is_subsumed)
            await storage.first_held.wait()  # checkpoint 1 is stuck writing its state
            assert (await job.trigger_checkpoint()).checkpoint_id == 2
        storage.release.set()
        await put_all(queue, [CRASH, *ITEMS[5:]])
        queue.close()
        result = await job.wait()
    assert result.restarts == 1  # restored from checkpoint 2, the newest, not from the late one
    assert sorted(sink.results) == sorted(expected_sums(ITEMS))
    history = {stats.id: stats for stats in job.checkpoint_stats.history}
    assert history[1].status == "failed" and "completed first" in (history[1].failure or "")
    assert history[2].status == "completed"


# ---- 3. checkpoints on disk


async def test_file_checkpoints_are_directories_with_metadata_and_checksummed_state(tmp_path: Path) -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(lg.FileCheckpointStorage(tmp_path, inline_threshold=0))  # every blob a file
    watch = Watch()
    running_sums(env.from_source(queue, uid="src"), lg.CollectSink(), watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("on-disk")
        await put_all(queue, [("a", 1), ("b", 2)])
        await watch.until(2)
        checkpoint = await job.trigger_checkpoint()
        queue.close()
        await job.wait()
    assert checkpoint.pointer == chk(tmp_path, 1).as_uri()
    assert listing(tmp_path) == ["chk-2"]  # the final checkpoint, taken after the end of the input
    names = listing(chk(tmp_path, 2))
    assert METADATA_NAME in names
    assert not [name for name in names if name.startswith(".")]  # no temporary file left behind
    blobs = state_files(chk(tmp_path, 2))
    # One blob per stateful operator subtask, named after its uid: the source's position, the sums,
    # the sink's transactions.
    assert {blob.name.split("-")[0] for blob in blobs} == {"src", "sum", "out"}
    assert any(blob.name.startswith("sum-") and blob.name.endswith("-keyed") for blob in blobs)
    for path in [*blobs, chk(tmp_path, 2) / METADATA_NAME]:
        assert path.read_bytes()[:4] == b"LGCK"  # framed with a checksum


async def test_only_the_retained_number_of_checkpoints_stays_on_disk(tmp_path: Path) -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(tmp_path.as_uri())
    env.checkpoint_config.retained = 2
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("retention")
        for n in range(1, 5):
            await queue.put(("a", n))
            await watch.until(n)
            checkpoint = await job.trigger_checkpoint()
            assert checkpoint.checkpoint_id == n
        await sink.until(4)
        queue.close()
        await job.wait()
    assert listing(tmp_path) == ["chk-4", "chk-5"]  # chk-5: the final checkpoint
    assert (chk(tmp_path, 5) / METADATA_NAME).is_file()
    assert job.checkpoint_stats.completed == 5


# ---- 4. a checkpoint that times out


async def test_a_checkpoint_that_times_out_is_aborted_and_the_job_goes_on(tmp_path: Path) -> None:
    storage = HoldingStorage(tmp_path.as_uri())
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(storage)
    env.checkpoint_config.timeout = 0.2
    env.checkpoint_config.tolerable_failures = 1  # a timeout counts as a failure
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, watch=watch)
    records = [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    with anyio.fail_after(GUARD):
        job = await env.start("slow-disk")
        await put_all(queue, records[:2])
        await watch.until(2)
        storage.hold = anyio.Event()  # the disk hangs: the asynchronous part cannot finish
        with pytest.raises(lg.CheckpointError, match="timed out"):
            await job.trigger_checkpoint()  # waits for the timeout: the thing under test
        await storage.discarded(1)  # (the caller hears of the failure before the files are gone)
        assert not chk(tmp_path, 1).exists()  # an aborted checkpoint leaves nothing on disk
        stats = job.checkpoint_stats
        assert (stats.completed, stats.failed, stats.in_progress) == (0, 1, 0)
        [failed] = stats.history
        assert failed.id == 1 and failed.status == "failed"
        assert failed.failure is not None and "timed out" in failed.failure
        assert job.status is lg.JobStatus.RUNNING and sink.results == []

        await put_all(queue, records[2:3])  # records keep flowing meanwhile
        await watch.until(3)
        storage.hold.set()  # the disk recovers
        storage.hold = None
        checkpoint = await job.trigger_checkpoint()
        assert checkpoint.checkpoint_id == 2
        await sink.until(3)
        assert sink.results == expected_sums(records[:3])  # the aborted checkpoint's records too
        assert job.checkpoint_stats.completed == 1 and job.checkpoint_stats.failed == 1

        await put_all(queue, records[3:])
        queue.close()
        await job.wait()
    assert sink.results == expected_sums(records)
    assert listing(tmp_path) == ["chk-3"]  # the final checkpoint


# ---- 5. damaged checkpoints


async def test_a_restart_falls_back_past_a_damaged_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lockgate")
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(
        lg.FileCheckpointStorage(tmp_path, inline_threshold=0)
    )  # state files to damage
    env.checkpoint_config.retained = 2
    env.checkpoint_config.fall_back_past_damaged = True  # safe here: nothing between the two
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, crash=CrashOnce(), watch=watch)
    before, after = [("a", 1), ("b", 2)], [("b", 5), ("a", 7)]
    with anyio.fail_after(GUARD):
        job = await env.start("bad-disk")
        await put_all(queue, before)
        await watch.until(2)
        await job.trigger_checkpoint()
        await job.trigger_checkpoint()  # no record in between: checkpoint 1 holds the same state
        await sink.until(2)
        damaged = next(path for path in state_files(chk(tmp_path, 2)) if path.name.startswith("sum-"))
        damage(damaged)

        await put_all(queue, [CRASH, *after])  # the job fails, restarts, and must skip checkpoint 2
        queue.close()
        result = await job.wait()
    assert result.restarts == 1
    assert sink.results == expected_sums(before + after)  # exactly once
    warnings = [r.getMessage() for r in caplog.records if r.name == "lockgate" and r.levelname == "WARNING"]
    assert any(str(damaged) in message and "falling back" in message for message in warnings), warnings
    assert any("restart 1 from checkpoint 1" in message for message in warnings), warnings


@pytest.mark.parametrize("fall_back", [False, True])
async def test_a_damaged_newest_checkpoint_is_refused_unless_a_fall_back_that_repeats_is_allowed(
    tmp_path: Path, fall_back: bool
) -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(
        lg.FileCheckpointStorage(tmp_path, inline_threshold=0)
    )  # state files to damage
    env.checkpoint_config.retained = 2
    env.checkpoint_config.fall_back_past_damaged = fall_back
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, crash=CrashOnce(), watch=watch)
    records = [("a", 1), ("b", 2), ("a", 10), ("b", 5)]
    with anyio.fail_after(GUARD):
        job = await env.start("bad-disk")
        await put_all(queue, records[:2])
        await watch.until(2)
        await job.trigger_checkpoint()
        await put_all(queue, records[2:3])  # between the two checkpoints
        await watch.until(3)
        await job.trigger_checkpoint()
        await sink.until(3)  # the sink committed checkpoint 2's records
        damaged = next(path for path in state_files(chk(tmp_path, 2)) if path.name.startswith("sum-"))
        damage(damaged)
        await put_all(queue, [CRASH, *records[3:]])
        queue.close()
        if not fall_back:
            # Refused by default: checkpoint 1 would replay what checkpoint 2 committed.
            with pytest.raises(lg.CorruptCheckpointError, match="fall_back_past_damaged") as refused:
                await job.wait()
            assert refused.value.path == str(damaged) and "checkpoint 1" in str(refused.value)
            assert sink.results == expected_sums(records[:3])  # nothing twice
            return
        await job.wait()
    # Allowed: checkpoint 2's records were committed before it was damaged, so the fallback replays
    # them: at-least-once for those, nothing lost.
    assert set(sink.results) == set(expected_sums(records))
    assert len(sink.results) > len(set(sink.results))


async def test_restore_from_a_damaged_checkpoint_names_the_file_and_a_directory_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lockgate")
    await checkpoints_midway(tmp_path, ITEMS, at=(5, 10))
    damaged = state_files(chk(tmp_path, 2))[0]  # any of its state files
    damage(damaged)

    env = checkpointing_env()
    sink = lg.CollectSink[Any]()
    running_sums(env.from_collection(ITEMS, uid="src"), sink)
    with pytest.raises(lg.CorruptCheckpointError) as refused:
        await env.execute("job-2", restore_from=chk(tmp_path, 2).as_uri())
    assert refused.value.path == str(damaged)
    assert "checksum" in refused.value.reason
    assert sink.results == []

    # Given the directory of checkpoints, the damaged newest is refused too, by default ...
    with pytest.raises(lg.CorruptCheckpointError, match="fall_back_past_damaged"):
        await env.execute("job-2", restore_from=tmp_path.as_uri())
    # ... and, allowed, the newest intact one is taken: checkpoint 1, after 5 items. What it held
    # pending (items 0-4) job 1 committed already, so this sink gets the rest only.
    env.checkpoint_config.fall_back_past_damaged = True
    await env.execute("job-2", restore_from=tmp_path.as_uri())
    assert sink.results == expected_sums(ITEMS)[5:]
    assert any(str(damaged) in record.getMessage() for record in caplog.records)


# ---- 6. a checkpoint without metadata


async def test_a_checkpoint_without_metadata_is_incomplete(tmp_path: Path) -> None:
    await checkpoints_midway(tmp_path, ITEMS, at=(5, 10))
    (chk(tmp_path, 2) / METADATA_NAME).unlink()  # a crash before the metadata was written

    env = checkpointing_env()
    sink = lg.CollectSink[Any]()
    running_sums(env.from_collection(ITEMS, uid="src"), sink)
    with pytest.raises(lg.CheckpointError, match=METADATA_NAME) as refused:
        await env.execute("job-2", restore_from=chk(tmp_path, 2).as_uri())
    assert isinstance(refused.value, lg.CorruptCheckpointError)
    assert Path(refused.value.path).name == METADATA_NAME

    await env.execute("job-2", restore_from=tmp_path)  # a plain path works too
    assert sink.results == expected_sums(ITEMS)[5:]  # from checkpoint 1, after items 0-4


async def test_restore_from_a_directory_without_any_complete_checkpoint_is_refused(tmp_path: Path) -> None:
    env = checkpointing_env()
    running_sums(env.from_collection(ITEMS, uid="src"), lg.CollectSink())
    with pytest.raises(lg.CheckpointError, match="no complete checkpoint"):
        await env.execute("nothing", restore_from=tmp_path.as_uri())


# ---- 7. restoring a new job from a checkpoint


@pytest.mark.parametrize("where", ["directory", "checkpoint"])
async def test_a_new_job_resumes_where_a_failed_job_left_off(tmp_path: Path, where: str) -> None:
    sink = lg.CollectSink[Any]()  # the external system both jobs commit to (by transaction: once each)
    env = checkpointing_env()
    env.set_checkpoint_storage(tmp_path.as_uri())
    inject_failures(env, FailureSchedule(crashes=(Crash("sum", 15),)))  # no restart strategy
    source = PausingSource(ITEMS, (10,))
    running_sums(env.from_source(source, uid="src"), sink)
    with anyio.fail_after(GUARD):
        job = await env.start("job-1")
        await source.reached(10)
        checkpoint = await job.trigger_checkpoint()
        source.resume(10)
        with pytest.raises(lg.JobFailedError, match="'sum'"):
            await job.wait()

    env2 = checkpointing_env(parallelism=2)  # the keyed sums may even run at another parallelism
    running_sums(env2.from_collection(ITEMS, uid="src"), sink)
    restore_from = tmp_path.as_uri() if where == "directory" else checkpoint.pointer
    with anyio.fail_after(GUARD):
        await env2.execute("job-2", restore_from=restore_from)
    assert Counter(sink.results) == Counter(expected_sums(ITEMS))


async def test_restore_refuses_another_max_parallelism(tmp_path: Path) -> None:
    await checkpoints_midway(tmp_path, ITEMS, at=(10,))
    env = checkpointing_env(max_parallelism=64)
    running_sums(env.from_collection(ITEMS, uid="src"), lg.CollectSink())
    with pytest.raises(lg.ConfigurationError, match="max_parallelism 128"):
        await env.execute("job-2", restore_from=tmp_path.as_uri())


async def test_restore_refuses_to_drop_state_of_a_missing_uid_unless_allowed(tmp_path: Path) -> None:
    await checkpoints_midway(tmp_path, ITEMS, at=(10,))
    env = checkpointing_env()
    sink = lg.CollectSink[Any]()
    running_sums(env.from_collection(ITEMS, uid="src"), sink, sum_uid="total")  # "sum" was renamed
    with pytest.raises(lg.ConfigurationError, match=r"\['sum'\].*allow_non_restored_state"):
        await env.execute("job-2", restore_from=tmp_path.as_uri())
    assert sink.results == []

    await env.execute("job-2", restore_from=tmp_path.as_uri(), allow_non_restored_state=True)
    # The source resumed after item 10; the sums of "sum" were dropped, so "total" starts from zero.
    # (Items 0-9 were committed by job 1: its pending transactions are not committed twice.)
    assert sink.results == expected_sums(ITEMS[10:])


# ---- 8. restart strategies


async def test_no_restart_is_the_default_and_fails_at_once() -> None:
    env = checkpointing_env()
    crash = CrashOnce(times=1)
    running_sums(env.from_collection([("a", 1), CRASH, ("a", 2)], uid="src"), lg.CollectSink(), crash=crash)
    assert env.restart_strategy == lg.RestartStrategy.no_restart()
    with pytest.raises(lg.JobFailedError, match=r"'crash'.*crash number 1") as failed:
        await env.execute("fragile")
    assert crash.crashes == 1
    assert not getattr(failed.value, "__notes__", [])


async def test_fixed_delay_gives_up_after_its_attempts() -> None:
    env = checkpointing_env()
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=2))
    crash = CrashOnce(times=100)  # fails in every run
    running_sums(env.from_collection([("a", 1), CRASH], uid="src"), lg.CollectSink(), crash=crash)
    with anyio.fail_after(GUARD), pytest.raises(lg.JobFailedError, match="crash number 3") as failed:
        await env.execute("hopeless")
    assert crash.crashes == 3  # the first run and 2 restarts
    notes = " ".join(failed.value.__notes__)
    assert "restarted 2 time(s)" in notes and "fixed_delay(attempts=2" in notes


async def test_failure_rate_allows_that_many_failures_within_its_interval() -> None:
    env = checkpointing_env()
    env.set_restart_strategy(lg.RestartStrategy.failure_rate(max_failures=2, interval=60))
    crash = CrashOnce(times=100)
    running_sums(env.from_collection([("a", 1), CRASH], uid="src"), lg.CollectSink(), crash=crash)
    with anyio.fail_after(GUARD), pytest.raises(lg.JobFailedError, match="crash number 3") as failed:
        await env.execute("hopeless")
    assert crash.crashes == 3
    notes = " ".join(failed.value.__notes__)
    assert "restarted 2 time(s)" in notes and "more than 2 failure(s) within 60" in notes


async def test_a_job_that_recovered_counts_its_restarts() -> None:
    env = checkpointing_env()
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=5))
    items = [("a", 1), ("b", 2), CRASH, ("a", 3), CRASH, ("b", 4)]
    sink = lg.CollectSink[Any]()
    running_sums(env.from_collection(items, uid="src"), sink, crash=CrashOnce(times=2))
    with anyio.fail_after(GUARD):
        result = await env.execute("resilient")
    assert result.restarts == 2
    assert sink.results == expected_sums(items)  # no checkpoint: each restart began at the start


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: lg.RestartStrategy.fixed_delay(attempts=-1), "attempts"),
        (lambda: lg.RestartStrategy.fixed_delay(attempts=1.5), "attempts"),  # type: ignore[arg-type]
        (lambda: lg.RestartStrategy.fixed_delay(attempts=1, delay=-1), "delay"),
        (lambda: lg.RestartStrategy.failure_rate(max_failures=2, interval=0), "interval"),
        (lambda: lg.RestartStrategy.failure_rate(max_failures=0, interval=60), "max_failures"),
        (lambda: lg.RestartStrategy.failure_rate(max_failures=2, interval=float("inf")), "interval"),
    ],
    ids=["negative-attempts", "float-attempts", "negative-delay", "zero-interval", "no-failures", "inf"],
)
def test_bad_restart_strategies_are_refused_naming_the_argument(make: Any, message: str) -> None:
    with pytest.raises(lg.ConfigurationError, match=message):
        make()


def test_set_restart_strategy_takes_a_strategy() -> None:
    with pytest.raises(lg.ConfigurationError, match="fixed_delay"):
        lg.StreamEnvironment().set_restart_strategy(3)  # type: ignore[arg-type]


# ---- 9. checkpoint configuration


@pytest.mark.parametrize(
    ("interval", "mode", "message"),
    [
        (0, lg.CheckpointingMode.EXACTLY_ONCE, "interval"),
        (-1, lg.CheckpointingMode.EXACTLY_ONCE, "interval"),
        (float("nan"), lg.CheckpointingMode.EXACTLY_ONCE, "interval"),
        (1.0, "x", "CheckpointingMode"),
    ],
)
def test_enable_checkpointing_refuses_bad_settings(interval: float, mode: Any, message: str) -> None:
    env = lg.StreamEnvironment()
    with pytest.raises(lg.ConfigurationError, match=message):
        env.enable_checkpointing(interval, mode=mode)
    assert not env.checkpoint_config.enabled  # nothing was half-applied


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("unaligned", "yes", "unaligned"),
        ("aligned_timeout", 0, "aligned_timeout"),
        ("timeout", 0, "timeout"),
        ("retained", 0, "retained"),
        ("tolerable_failures", -1, "tolerable_failures"),
        ("max_concurrent", 0, "max_concurrent"),
        ("asynchronous", "yes", "asynchronous"),
    ],
)
async def test_bad_checkpoint_config_is_refused_at_execute(field: str, value: Any, message: str) -> None:
    env = checkpointing_env()
    setattr(env.checkpoint_config, field, value)
    sink = lg.CollectSink[Any]()
    running_sums(env.from_collection(ITEMS, uid="src"), sink)
    with pytest.raises(lg.ConfigurationError, match=message):
        await env.execute("misconfigured")
    assert sink.results == []


# ---- 10. synchronous snapshots


@pytest.mark.parametrize("how", ["config", "preset"])
async def test_synchronous_snapshots_still_checkpoint_and_recover(how: str) -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    if how == "config":
        env.checkpoint_config.asynchronous = False
    else:
        env.set_state_backend(lg.MemoryStateBackend(asynchronous=False))
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, crash=CrashOnce(), watch=watch)
    before, after = [("a", 1), ("b", 2), ("a", 3)], [("b", 4), ("a", 5)]
    with anyio.fail_after(GUARD):
        job = await env.start("synchronous")
        await put_all(queue, before)
        await watch.until(3)
        await job.trigger_checkpoint()
        await sink.until(3)
        await put_all(queue, [("b", 10), CRASH, *after])  # ("b", 10) is replayed after the restart
        queue.close()
        result = await job.wait()
    assert result.restarts == 1
    assert sink.results == expected_sums([*before, ("b", 10), *after])
    assert job.checkpoint_stats.history[0].status == "completed"


@pytest.mark.parametrize("asynchronous", [True, False])
async def test_only_a_synchronous_snapshot_holds_the_stream_while_it_is_written(asynchronous: bool) -> None:
    storage = HoldingMemoryStorage()
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(storage)
    env.checkpoint_config.asynchronous = asynchronous
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("hold")
        await queue.put(("a", 1))
        await watch.until(1)
        storage.hold = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(job.trigger_checkpoint)
            await storage.held.wait()  # the source's snapshot is being written
            await queue.put(("a", 2))
            if asynchronous:
                await watch.until(2)  # records flow while the snapshot is written
            else:
                await anyio.wait_all_tasks_blocked()
                assert len(watch.seen) == 1  # the barrier, and the records after it, wait for the write
            storage.hold.set()
            storage.hold = None
        await watch.until(2)
        queue.close()
        await job.wait()
    assert sink.results == [("a", 1), ("a", 3)]


# ---- 11. sources that cannot replay


class Numbers:
    """An async iterable of (key, n) records that is not a generator (nothing to finalise)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._Iterator(self.count)

    class _Iterator:
        def __init__(self, count: int) -> None:
            self._items = iter([("a", n) for n in range(count)] + [CRASH])

        def __aiter__(self) -> Numbers._Iterator:
            return self

        async def __anext__(self) -> Record:
            try:
                return next(self._items)
            except StopIteration:
                raise StopAsyncIteration from None


async def test_an_async_iterable_under_exactly_once_warns_and_cannot_restart() -> None:
    env = checkpointing_env()
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    running_sums(env.from_async_iterable(Numbers(3), uid="numbers"), lg.CollectSink(), crash=CrashOnce())
    with anyio.fail_after(GUARD):
        with pytest.warns(lg.NotReplayableSourceWarning, match="'numbers'.*cannot be replayed"):
            job = await env.start("not-replayable")
        with pytest.raises(lg.JobFailedError, match="async iterable, which cannot replay") as failed:
            await job.wait()
    # The failure it could not recover from, with a note saying why the restart failed.
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert any("could not restart" in note for note in failed.value.__notes__)


async def test_an_async_iterable_without_exactly_once_does_not_warn() -> None:
    env = lg.StreamEnvironment()
    env.enable_checkpointing(3600, lg.CheckpointingMode.AT_LEAST_ONCE)
    sink = lg.CollectSink[Any]()
    running_sums(env.from_async_iterable(Numbers(3), uid="numbers"), sink, crash=CrashOnce(times=0))
    await env.execute("at-least-once")  # warnings are errors in this suite
    assert sink.results == [("a", 0), ("a", 1), ("a", 3)]


# ---- 12. tolerable checkpoint failures


async def test_more_failed_checkpoints_in_a_row_than_tolerable_fail_the_job() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(FullDiskStorage())
    env.checkpoint_config.tolerable_failures = 1
    watch = Watch()
    running_sums(env.from_source(queue, uid="src"), lg.CollectSink(), watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("full-disk")
        await queue.put(("a", 1))
        await watch.until(1)
        with pytest.raises(lg.CheckpointError, match="no space left"):
            await job.trigger_checkpoint()
        assert not job.done  # one failure is tolerated
        with pytest.raises(lg.CheckpointError, match="no space left"):
            await job.trigger_checkpoint()
        with pytest.raises(
            lg.CheckpointError, match=r"2 checkpoint\(s\) in a row failed.*tolerable_failures=1"
        ):
            await job.wait()
    assert job.status is lg.JobStatus.FAILED
    stats = job.checkpoint_stats
    assert (stats.completed, stats.failed) == (0, 2)
    assert all(entry.failure and "no space left" in entry.failure for entry in stats.history)


class RecoveringDiskStorage(lg.MemoryCheckpointStorage):
    """Memory storage whose state writes fail while ``full`` is set."""

    full = True

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        if self.full:
            raise lg.CheckpointError("no space left on the device")
        return await super().write_state(location, name, data)


async def test_a_failed_checkpoint_fails_the_job_by_default_with_the_storage_error_as_cause() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_checkpoint_storage(FullDiskStorage())
    assert env.checkpoint_config.tolerable_failures == 0
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("full-disk")
        await queue.put(("a", 1))
        await watch.until(1)
        with pytest.raises(lg.CheckpointError, match="no space left"):
            await job.trigger_checkpoint()
        with pytest.raises(lg.CheckpointError, match=r"tolerable_failures=0") as failed:
            await job.wait()
    assert isinstance(failed.value.__cause__, lg.CheckpointError)
    assert "no space left" in str(failed.value.__cause__)
    assert sink.results == []  # nothing committed outside a completed checkpoint


async def test_tolerated_failed_checkpoints_let_the_job_go_on_to_its_final_checkpoint() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    storage = RecoveringDiskStorage()
    env.set_checkpoint_storage(storage)
    env.checkpoint_config.tolerable_failures = None
    watch, sink = Watch(), WatchedSink()
    running_sums(env.from_source(queue, uid="src"), sink, watch=watch)
    records = [("a", 1), ("b", 2), ("a", 3)]
    with anyio.fail_after(GUARD):
        job = await env.start("full-disk")
        for n, record in enumerate(records, 1):
            await queue.put(record)
            await watch.until(n)
            with pytest.raises(lg.CheckpointError, match="no space left"):
                await job.trigger_checkpoint()
        assert job.status is lg.JobStatus.RUNNING
        storage.full = False  # the disk recovers before the end: the final checkpoint gets through
        queue.close()
        await job.wait()
    assert job.checkpoint_stats.failed == 3 and job.checkpoint_stats.completed == 1
    assert sink.results == expected_sums(records)  # the final checkpoint commits everything


# ---- 13. at-least-once


async def test_at_least_once_loses_nothing_and_may_repeat_what_followed_the_checkpoint() -> None:
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = lg.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(3600, lg.CheckpointingMode.AT_LEAST_ONCE)
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    watch, sink = Watch(), lg.CollectSink[Any]()
    # A stateless pipeline: every record should reach the sink, whatever is replayed.
    (
        env.from_source(queue, uid="src")
        .flat_map(CrashOnce(), uid="crash")
        .key_by(lambda record: record[0])
        .map(watch, uid="watch")
        .sink(sink, uid="out")
    )
    before, between, after = [("a", 1), ("b", 2)], [("a", 3), ("c", 4)], [("b", 5)]
    with anyio.fail_after(GUARD):
        job = await env.start("at-least-once")
        await put_all(queue, before)
        await watch.until(2)
        assert Counter(sink.results) == Counter(before)  # appended as they arrive: no transactions
        await job.trigger_checkpoint()
        await put_all(queue, between)
        await watch.until(4)
        assert Counter(sink.results) == Counter(before + between)  # they reached the sink before the crash
        await put_all(queue, [CRASH, *after])
        queue.close()
        result = await job.wait()
    assert result.restarts == 1
    counts = Counter(sink.results)
    assert set(counts) == set(before + between + after)  # nothing lost
    assert all(counts[record] == 1 for record in before)  # covered by the checkpoint
    assert all(counts[record] == 2 for record in between)  # replayed from the checkpoint: twice


# ---- 14. checkpoints after some subtasks have finished


async def test_checkpoints_go_on_after_a_source_has_read_all_its_input() -> None:
    """A finite input (here the second of a union) ends; the job keeps checkpointing, and a restore
    from a later checkpoint does not read that input again."""
    queue: lg.QueueSource[Record] = lg.QueueSource()
    env = checkpointing_env()
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
    sink, watch = WatchedSink(), Watch()
    finite = env.from_collection([("b", 100), ("b", 200)], uid="finite")
    running_sums(env.from_source(queue, uid="src").union(finite), sink, crash=CrashOnce(), watch=watch)
    with anyio.fail_after(GUARD):
        job = await env.start("partly finished")
        await put_all(queue, [("a", 1)])
        await watch.until(3)  # the finite input has been read whole, and its source has finished
        first = await job.trigger_checkpoint()
        await put_all(queue, [("a", 2), CRASH, ("a", 3)])
        queue.close()
        result = await job.wait()
    assert first.checkpoint_id == 1 and result.restarts == 1
    assert sorted(sink.results) == [("a", 1), ("a", 3), ("a", 6), ("b", 100), ("b", 300)]


def test_the_stats_table_shows_the_last_checkpoints_with_units_and_failures() -> None:
    history = [
        lg.CheckpointStats(n, "completed", 0.5, persisted_bytes=3 << 20, full_bytes=3 << 20) for n in (1, 2)
    ]
    history.append(lg.CheckpointStats(3, "failed", 0.25, failure="it timed out after 0.25 s"))
    history.append(
        lg.CheckpointStats(4, "completed", 0.01, persisted_bytes=900, full_bytes=900, savepoint=True)
    )
    table = lg.CheckpointStatsSnapshot(3, 1, 0, history).table(last=3)
    summary, header, *rows = table.splitlines()
    assert summary == "3 completed, 1 failed, 0 in progress (the last 3 of 4 shown)"
    assert header.split()[:3] == ["id", "kind", "status"]
    assert [row.split()[0] for row in rows] == ["2", "3", "4"]
    assert "3.0 MB" in rows[0] and "500.0 ms" in rows[0]
    assert "failed: it timed out after 0.25 s" in rows[1]
    assert rows[2].split()[1] == "savepoint" and "900 B" in rows[2]
    assert str(lg.CheckpointStatsSnapshot(3, 1, 0, history)).count("\n") == 5


async def test_a_checkpoint_directory_that_cannot_be_created_fails_the_job_with_a_lockgate_error(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # Its parent is a file; or it lies where no directory can be made, even by root.
    for url in [(blocker / "checkpoints").as_uri(), "file:///proc/lockgate-test/checkpoints"]:
        env = checkpointing_env()
        env.set_checkpoint_storage(url)
        sink = lg.CollectSink[Any]()
        running_sums(env.from_collection([("a", 1), ("b", 2)], uid="src"), sink)
        with anyio.fail_after(GUARD), pytest.raises(lg.CheckpointError) as failed:
            await env.execute("unwritable")  # a LockgateError, never a bare ExceptionGroup
        assert failed.value.__cause__ is not None
        assert sink.results == []  # nothing committed outside a completed checkpoint


class HoldsALock(lg.KeyedProcessFunction[Record, Record]):
    """Keeps a value that cannot be pickled for key "bad"."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.held = ctx.get_state(lg.ValueStateDescriptor[Any]("held"))

    async def process_element(self, value: Record, ctx: lg.RuntimeContext) -> Any:
        await self.held.update(threading.Lock() if value[0] == "bad" else value[1])
        yield value


@pytest.mark.parametrize("backend", ["heap", "heap-incremental", "rocksdb", "rocksdb-full"])
@pytest.mark.parametrize("unaligned", [False, True])
async def test_a_state_value_that_cannot_be_pickled_fails_the_job_naming_operator_state_and_key(
    backend: str, unaligned: bool
) -> None:
    env = checkpointing_env(parallelism=2)
    env.checkpoint_config.unaligned = unaligned
    env.checkpoint_config.tolerable_failures = None  # it fails all the same: no checkpoint could hold it
    env.set_state_backend(
        {
            "heap": lambda: lg.HeapStateBackend(),
            "heap-incremental": lambda: lg.HeapStateBackend(incremental=True),
            "rocksdb": lambda: lg.RocksDBStateBackend(incremental=True),
            "rocksdb-full": lambda: lg.RocksDBStateBackend(incremental=False),
        }[backend]()
    )
    sink = lg.CollectSink[Any]()
    records = [("a", 1), ("bad", 2), ("b", 3)]
    env.from_collection(records, uid="src").key_by(lambda r: r[0]).process(HoldsALock(), uid="keeper").sink(
        sink, uid="out"
    )
    with anyio.fail_after(GUARD), pytest.raises(lg.LockgateError) as failed:
        await env.execute("unpicklable")
    error: BaseException | None = failed.value
    while error is not None and not isinstance(error, lg.StateSerializationError):
        error = error.__cause__
    assert isinstance(error, lg.StateSerializationError), failed.value
    assert (error.operator_uid, error.state, error.key) == ("keeper", "held", "bad")
    assert "'keeper'" in str(error) and "'held'" in str(error) and "'bad'" in str(error)
    assert sink.results == []


async def test_a_second_job_on_a_claimed_checkpoint_directory_is_refused_and_a_stale_claim_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import sys

    first_queue: lg.QueueSource[Record] = lg.QueueSource()
    first = checkpointing_env()
    first.set_checkpoint_storage(tmp_path.as_uri())
    sink = WatchedSink()
    running_sums(first.from_source(first_queue, uid="src"), sink)
    with anyio.fail_after(GUARD):
        job = await first.start("first")
        await first_queue.put(("a", 1))
        await job.trigger_checkpoint()
        second = checkpointing_env()
        second.set_checkpoint_storage(tmp_path.as_uri())
        running_sums(second.from_collection([("b", 1)], uid="src"), lg.CollectSink())
        with pytest.raises(lg.CheckpointError, match=r"in use by job 'first' \(process \d+"):
            await second.execute("second")
        assert chk(tmp_path, 1).is_dir()  # the refused job touched nothing of the first one's
        first_queue.close()
        await job.wait()
    assert sink.results == [("a", 1)]
    assert not (tmp_path / "_claim").exists()  # released at the end

    # A claim left by a process that no longer runs (killed) is taken over, saying so.
    dead = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    host = __import__("socket").gethostname()
    claim = {"job": "killed", "pid": int(dead.stdout.decode()), "host": host, "since": 0}
    (tmp_path / "_claim").write_text(json.dumps(claim))
    third = checkpointing_env()
    third.set_checkpoint_storage(tmp_path.as_uri())
    running_sums(third.from_collection([("c", 1)], uid="src"), lg.CollectSink())
    with caplog.at_level("WARNING", logger="lockgate"):
        await third.execute("third")
    assert "took over the checkpoint directory" in caplog.text and "'killed'" in caplog.text


def killed_but_not_reaped() -> Any:
    """A child process killed by SIGKILL that has exited but is not reaped: a zombie, as a killed job is
    while its supervisor has not waited for it yet. The caller reaps it (``wait()``)."""
    import os
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    child.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it has exited; leaves it unreaped
    return child


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told by /proc (Linux)")
async def test_the_claim_of_a_killed_process_not_yet_reaped_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A supervisor that restarts a job killed by SIGKILL may start the new process before it reaps the
    # old one: the old pid is a zombie then, which runs no job, and its claim must not block the new one.
    import json
    import socket

    killed = killed_but_not_reaped()
    try:
        claim = {"job": "killed", "pid": killed.pid, "host": socket.gethostname(), "since": 0}
        (tmp_path / "_claim").write_text(json.dumps(claim))
        env = checkpointing_env()
        env.set_checkpoint_storage(tmp_path.as_uri())
        running_sums(env.from_collection([("c", 1)], uid="src"), lg.CollectSink())
        with caplog.at_level("WARNING", logger="lockgate"):
            await env.execute("restarted")
        assert "took over the checkpoint directory" in caplog.text and "'killed'" in caplog.text
    finally:
        killed.wait()  # reaped only now


async def test_retention_covers_the_checkpoints_earlier_runs_left_in_the_directory(tmp_path: Path) -> None:
    for run in range(3):  # each short run leaves its final checkpoint
        env = checkpointing_env()
        env.set_checkpoint_storage(tmp_path.as_uri())
        env.checkpoint_config.retained = 2
        running_sums(env.from_collection([("a", run)], uid="src"), lg.CollectSink())
        await env.execute(f"run-{run}")
    assert listing(tmp_path) == ["chk-2", "chk-3"]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


async def test_a_crafted_metadata_file_never_runs_code(tmp_path: Path) -> None:
    import pickle

    from lockgate.snapshots._format import frame

    marker = tmp_path / "code-ran"
    root = tmp_path / "checkpoints"
    (root / "chk-1").mkdir(parents=True)
    framed, _ = frame(pickle.dumps(_RunsCode(marker)))
    (root / "chk-1" / METADATA_NAME).write_bytes(framed)

    env = checkpointing_env()  # merely setting the directory lists and reads what is there
    env.set_checkpoint_storage(root.as_uri())
    sink = lg.CollectSink[Any]()
    running_sums(env.from_collection([("a", 1)], uid="src"), sink)
    await env.execute("lists-it")
    assert sink.results == [("a", 1)]
    env = checkpointing_env()
    running_sums(env.from_collection([("a", 1)], uid="src"), lg.CollectSink())
    with pytest.raises(lg.CorruptCheckpointError, match="pickle"):
        await env.execute("restores-it", restore_from=(root / "chk-1").as_uri())
    assert not marker.exists()
