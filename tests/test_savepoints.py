"""Savepoints: stop a job with one, change the job (parallelism, max parallelism is fixed, backend),
resume it, and the two runs together commit exactly what one uninterrupted run does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from tests._sources import GUARD, PausingSource

pytestmark = pytest.mark.anyio

Record = tuple[str, int]


class Tally(lg.KeyedProcessFunction[Record, tuple[str, int, int]]):
    """Emits (key, count, list length) per record; order-independent, so any parallelism gives the same."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))
        self.values = ctx.get_list_state(lg.ListStateDescriptor[int]("values"))

    def process_element(self, value: Record, ctx: lg.RuntimeContext) -> Iterator[tuple[str, int, int]]:
        count = self.count.value_nowait() + 1
        self.count.update_nowait(count)
        self.values.add_nowait(value[1])
        yield (value[0], count, len(self.values.get_nowait()))


def tally(stream: lg.DataStream, sink: lg.CollectSink[Any], parallelism: int) -> None:
    stream.key_by(lambda r: r[0]).process(Tally(), uid="tally", parallelism=parallelism).sink(
        sink, uid="out", parallelism=parallelism
    )


def expected(items: list[Record]) -> Counter[tuple[str, int, int]]:
    counts: Counter[str] = Counter()
    out: Counter[tuple[str, int, int]] = Counter()
    for key, _ in items:
        counts[key] += 1
        out[(key, counts[key], counts[key])] += 1
    return out


def environment(parallelism: int, max_parallelism: int, backend: str) -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=max_parallelism, batch_size=4)
    env.enable_checkpointing(3600)
    if backend == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend())
    return env


async def stop_at(env: lg.StreamEnvironment, source: PausingSource, split: int, url: str) -> str:
    """Run the job until its source waits before item ``split``, then stop it with a savepoint there."""
    with anyio.fail_after(GUARD):
        job = await env.start("before")
        await source.reached(split)
        savepoint = await job.stop_with_savepoint(url)
    assert job.status is lg.JobStatus.FINISHED
    return savepoint


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 9)), max_size=40),
    data=st.data(),
    before=st.integers(1, 4),
    after=st.integers(1, 4),
    max_parallelism=st.sampled_from([8, 16, 128]),
    backends=st.tuples(st.sampled_from(["heap", "rocksdb"]), st.sampled_from(["heap", "rocksdb"])),
)
async def test_a_job_resumed_from_a_savepoint_at_any_parallelism_and_backend_is_exactly_once(
    tmp_path: Path,
    items: list[Record],
    data: st.DataObject,
    before: int,
    after: int,
    max_parallelism: int,
    backends: tuple[str, str],
) -> None:
    split = data.draw(st.integers(0, len(items)), label="split")
    first, second = lg.CollectSink[Any](), lg.CollectSink[Any]()

    env = environment(before, max_parallelism, backends[0])
    source = PausingSource(items, (split,))
    tally(env.from_source(source, uid="src"), first, before)
    savepoint = await stop_at(env, source, split, tmp_path.as_uri())  # one more savepoint-<n> there

    env = environment(after, max_parallelism, backends[1])
    tally(env.from_collection(items, uid="src", parallelism=after), second, after)
    with anyio.fail_after(GUARD):
        await env.execute("after", restore_from=savepoint)

    assert Counter(first.results) == expected(items[:split])  # nothing after the barrier
    assert Counter(first.results) + Counter(second.results) == expected(items)


class Buffers(lg.BroadcastProcessFunction[Record, int, Record]):
    """Keeps every record in list and union list state, every broadcast number in broadcast state;
    reports what each subtask restored."""

    restored: ClassVar[dict[int, dict[str, Any]]] = {}
    shared = lg.MapStateDescriptor[int]("shared")

    def initialize_state(self, ctx: lg.RuntimeContext) -> None:
        self.split = ctx.get_list_state(lg.ListStateDescriptor[Record]("split"))
        self.union = ctx.get_union_list_state(lg.ListStateDescriptor[Record]("union"))
        if ctx.is_restored:
            Buffers.restored[ctx.subtask_index] = {
                "split": self.split.get_nowait(),
                "union": self.union.get_nowait(),
                "shared": ctx.get_broadcast_state(self.shared).to_dict_nowait(),
            }

    def process_element(self, value: Record, ctx: lg.RuntimeContext) -> Iterator[Record]:
        self.split.add_nowait(value)
        self.union.add_nowait(value)
        yield value

    def process_broadcast_element(self, value: int, ctx: lg.RuntimeContext) -> Iterator[Record]:
        ctx.get_broadcast_state(self.shared).put_nowait(value, value * 10)
        return iter(())


async def test_operator_state_is_split_unioned_and_copied_when_a_savepoint_is_rescaled(
    tmp_path: Path,
) -> None:
    items = [("k", n) for n in range(10)]
    env = environment(2, 16, "heap")
    source, numbers = PausingSource(items, (10,)), PausingSource([1, 2], (2,))  # neither ends first
    stream = env.from_source(source, uid="src").rebalance()
    stream = stream.connect(env.from_source(numbers, uid="numbers").broadcast())
    stream.process(Buffers(), uid="buffers", parallelism=2).sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("before")
        await numbers.reached(2)
        await source.reached(10)
        savepoint = await job.stop_with_savepoint(tmp_path.as_uri())

    Buffers.restored = {}
    env = environment(3, 16, "heap")
    stream = env.from_collection(items, uid="src").connect(
        env.from_collection([1, 2], uid="numbers").broadcast()
    )
    stream.process(Buffers(), uid="buffers", parallelism=3).sink(lg.CollectSink(), uid="out")
    await env.execute("after", restore_from=savepoint)

    restored = Buffers.restored
    assert sorted(restored) == [0, 1, 2]
    # List state: all elements, split evenly and contiguously over the new subtasks.
    parts = [restored[index]["split"] for index in range(3)]
    assert sorted(element for part in parts for element in part) == items
    assert sorted(len(part) for part in parts) == [3, 3, 4]
    # Union list state: every new subtask gets all of it.
    assert all(sorted(restored[index]["union"]) == items for index in range(3))
    # Broadcast state: a copy for every subtask.
    assert all(restored[index]["shared"] == {1: 10, 2: 20} for index in range(3))


async def test_a_running_job_takes_savepoints_and_goes_on(tmp_path: Path) -> None:
    items = [("a", n) for n in range(12)]
    env = environment(2, 16, "heap")
    env.set_checkpoint_storage((tmp_path / "checkpoints").as_uri())
    env.checkpoint_config.retained = 1
    sink = lg.CollectSink[Any]()
    source = PausingSource(items, (4, 8))
    tally(env.from_source(source, uid="src"), sink, 2)
    with anyio.fail_after(GUARD):
        job = await env.start("running")
        await source.reached(4)
        savepoint = await job.trigger_savepoint((tmp_path / "savepoints").as_uri())
        source.resume(4)
        await source.reached(8)
        await job.trigger_checkpoint()
        await job.trigger_checkpoint()  # retention keeps one checkpoint; the savepoint is never deleted
        source.resume(8)
        await job.wait()
    assert Counter(sink.results) == expected(items)
    assert (
        savepoint.endswith("/savepoint-1")
        and (Path(savepoint.removeprefix("file://")) / "_metadata").exists()
    )
    # chk-4 is the final checkpoint, taken once the source had read everything.
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["chk-4"]
    assert [stats.savepoint for stats in job.checkpoint_stats.history] == [True, False, False, False]

    # The savepoint holds the state after item 4: a new job resumes from there.
    resumed = lg.CollectSink[Any]()
    env = environment(1, 16, "rocksdb")
    tally(env.from_collection(items, uid="src"), resumed, 1)
    await env.execute("again", restore_from=savepoint)
    assert Counter(resumed.results) == expected(items) - expected(items[:4])


def damage_a_file(directory: Path, prefix: str) -> Path:
    """Flip the last byte of the first file in ``directory`` whose name starts with ``prefix``."""
    damaged = next(path for path in sorted(directory.iterdir()) if path.name.startswith(prefix))
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    return damaged


async def test_a_damaged_savepoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    items = [("a", n) for n in range(6)]
    env = environment(1, 16, "heap")
    env.set_checkpoint_storage(lg.MemoryCheckpointStorage(inline_threshold=0))  # the savepoint's too
    source = PausingSource(items, (3,))
    tally(env.from_source(source, uid="src"), lg.CollectSink(), 1)
    savepoint = Path((await stop_at(env, source, 3, tmp_path.as_uri())).removeprefix("file://"))
    damaged = damage_a_file(savepoint, "tally")

    env = environment(1, 16, "heap")
    tally(env.from_collection(items, uid="src"), lg.CollectSink(), 1)
    with pytest.raises(lg.CorruptCheckpointError) as refused:
        await env.execute("after", restore_from=savepoint.as_uri())
    assert refused.value.path == str(damaged)


async def test_operators_without_a_uid_get_a_warning_when_their_state_is_saved(tmp_path: Path) -> None:
    items = [("a", n) for n in range(4)]
    env = environment(1, 16, "heap")
    source = PausingSource(items, (2,))
    env.from_source(source, uid="src").key_by(lambda r: r[0]).process(Tally()).sink(
        lg.CollectSink(), uid="out"
    )
    with pytest.warns(lg.GeneratedUidWarning, match="set uid="):
        await stop_at(env, source, 2, tmp_path.as_uri())


@pytest.mark.parametrize("sink_kind", ["collect", "file"])
async def test_a_job_without_checkpointing_stops_with_a_savepoint_and_resumes_from_it(
    tmp_path: Path, sink_kind: str
) -> None:
    items = [("a", n) for n in range(5)] + [("b", n) for n in range(5)]

    def build(env: lg.StreamEnvironment, source: lg.DataStream) -> Callable[[], list[Any]]:
        stream = source.key_by(lambda r: r[0]).process(Tally(), uid="tally")
        if sink_kind == "collect":
            collected = lg.CollectSink[Any]()
            stream.sink(collected, uid="out")
            return lambda: list(collected.results)
        stream.sink(lg.FileSink(tmp_path / "out", encoder=repr), uid="out")
        return lambda: [
            eval(line)  # the lines are reprs of tuples of str and int
            for file in (tmp_path / "out").iterdir()
            if not file.name.startswith(".")
            for line in file.read_text().splitlines()
        ]

    env = lg.StreamEnvironment(batch_size=2)  # no enable_checkpointing
    source = PausingSource(items, (6,))
    results = build(env, env.from_source(source, uid="src"))
    savepoint = await stop_at(env, source, 6, (tmp_path / "savepoints").as_uri())
    assert Counter(results()) == expected(items[:6])
    assert savepoint.endswith("/savepoint-1")

    env = lg.StreamEnvironment(batch_size=2)
    resumed = build(env, env.from_collection(items, uid="src"))
    await env.execute("after", restore_from=savepoint)
    outputs = resumed() if sink_kind == "collect" else results()
    before = Counter() if sink_kind == "collect" else expected(items[:6])
    assert Counter(outputs) == before + (expected(items) - expected(items[:6]))


def renamed(savepoint: str, name: str) -> str:
    source = Path(savepoint.removeprefix("file://"))
    return source.rename(source.with_name(name)).as_uri()


async def test_a_savepoint_directory_can_be_moved_under_another_name(tmp_path: Path) -> None:
    items = [("a", n) for n in range(6)]
    first, second = lg.CollectSink[Any](), lg.CollectSink[Any]()
    env = environment(1, 16, "heap")
    source = PausingSource(items, (3,))
    tally(env.from_source(source, uid="src"), first, 1)
    savepoint = renamed(await stop_at(env, source, 3, tmp_path.as_uri()), "savepoint-77")

    env = environment(2, 16, "heap")
    tally(env.from_collection(items, uid="src"), second, 2)
    await env.execute("after", restore_from=savepoint)
    assert Counter(first.results) + Counter(second.results) == expected(items)


class TimedTally(Tally):
    def open(self, ctx: lg.RuntimeContext) -> None:
        ttl = lg.StateTtlConfig(3600)
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0, ttl=ttl))
        self.values = ctx.get_list_state(lg.ListStateDescriptor[int]("values"))


async def test_state_declared_otherwise_than_it_was_saved_is_refused(tmp_path: Path) -> None:
    items = [("a", n) for n in range(4)]
    env = environment(1, 16, "heap")
    source = PausingSource(items, (2,))
    tally(env.from_source(source, uid="src"), lg.CollectSink(), 1)
    savepoint = await stop_at(env, source, 2, tmp_path.as_uri())

    env = environment(1, 16, "heap")
    stream = env.from_collection(items, uid="src").key_by(lambda r: r[0])
    stream.process(TimedTally(), uid="tally").sink(lg.CollectSink(), uid="out")
    with pytest.raises(lg.JobFailedError, match=r"'count' was saved .* without a TTL.*with a TTL") as failed:
        await env.execute("after", restore_from=savepoint)
    refusal = failed.value.__cause__
    assert isinstance(refusal, lg.IncompatibleStateError)
    assert (refusal.operator_uid, refusal.state) == ("tally", "count")
    assert refusal.old.endswith("without a TTL") and refusal.new.endswith("with a TTL")


async def test_a_savepoint_holds_the_last_state_of_a_part_of_the_job_that_has_finished(
    tmp_path: Path,
) -> None:
    """One pipeline of the job reads a finite input and finishes; the other is still running when the
    job is stopped with a savepoint. Both resume from it (another parallelism, another backend)."""
    finite, endless = [("f", n) for n in range(6)], [("e", n) for n in range(8)]
    sinks = [lg.CollectSink[Any]() for _ in range(4)]
    env = environment(2, 16, "heap")
    source = PausingSource(endless, (4,))
    tally(env.from_source(source, uid="endless"), sinks[0], 2)
    done = env.from_collection(finite, uid="finite").key_by(lambda r: r[0])
    done.process(Tally(), uid="finite-tally").sink(sinks[1], uid="finite-out")
    with anyio.fail_after(GUARD):
        job = await env.start("before")
        await source.reached(4)
        savepoint = await job.stop_with_savepoint(tmp_path.as_uri())

    env = environment(3, 16, "rocksdb")
    tally(env.from_collection(endless, uid="endless"), sinks[2], 3)
    done = env.from_collection(finite, uid="finite").key_by(lambda r: r[0])
    done.process(Tally(), uid="finite-tally").sink(sinks[3], uid="finite-out")
    await env.execute("after", restore_from=savepoint)
    assert Counter(sinks[0].results) + Counter(sinks[2].results) == expected(endless)
    assert Counter(sinks[1].results) + Counter(sinks[3].results) == expected(finite)


async def test_plain_maps_and_filters_need_no_uid(tmp_path: Path) -> None:
    # The suite turns warnings into errors: a GeneratedUidWarning here would fail the test.
    items = [("a", n) for n in range(4)]
    env = environment(1, 16, "heap")
    source = PausingSource(items, (2,))
    stream = env.from_source(source, uid="src").map(lambda r: r).filter(lambda r: True)
    tally(stream, lg.CollectSink(), 1)
    await stop_at(env, source, 2, tmp_path.as_uri())


_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[3])
import anyio
import lockgate as lg
from tests._sources import PausingSource
from tests.test_savepoints import Tally

items = [(key, n) for n in range(5) for key in "abc"]
step, url = sys.argv[1], sys.argv[2]

async def main():
    env = lg.StreamEnvironment(batch_size=2)
    env.enable_checkpointing(3600)
    sink = lg.CollectSink()
    if step == "stop":
        source = PausingSource(items, (7,))
        stream = env.from_source(source, uid="src")
    else:
        stream = env.from_collection(items, uid="src")
    stream.key_by(lambda r: r[0]).process(Tally(), uid="tally").sink(sink, uid="out")
    if step == "stop":
        job = await env.start("before")
        await source.reached(7)
        await job.stop_with_savepoint(url)
    else:
        await env.execute("after", restore_from=url)
    print(json.dumps(sink.results))

anyio.run(main)
"""


def test_a_collect_sink_resumed_in_another_process_does_not_repeat_what_the_savepoint_committed(
    tmp_path: Path,
) -> None:
    import json
    import subprocess
    import sys

    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    url = (tmp_path / "savepoints").as_uri()

    def run(step: str, where: str) -> list[tuple[str, int, int]]:
        done = subprocess.run(
            [sys.executable, str(script), step, where, str(Path(__file__).parent.parent)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=Path(__file__).parent.parent,
        )
        return [tuple(record) for record in json.loads(done.stdout.splitlines()[-1])]

    before = run("stop", url)
    [savepoint] = (tmp_path / "savepoints").glob("savepoint-*")
    after = run("resume", savepoint.as_uri())
    items = [(key, n) for n in range(5) for key in "abc"]
    assert Counter(before) == expected(items[:7])
    assert Counter(before) + Counter(after) == expected(items)


async def test_restore_from_the_url_given_to_stop_with_savepoint_takes_the_newest_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = [(key, n) for n in range(4) for key in "ab"]
    url = (tmp_path / "savepoints").as_uri()
    for split in (3, 6):  # two runs stop into the same directory: savepoint-1, then savepoint-2
        env = environment(1, 16, "heap")
        source = PausingSource(items, (split,))
        tally(env.from_source(source, uid="src"), lg.CollectSink(), 1)
        await stop_at(env, source, split, url)
    assert sorted(path.name for path in (tmp_path / "savepoints").iterdir()) == ["savepoint-1", "savepoint-2"]
    resumed = lg.CollectSink[Any]()
    env = environment(1, 16, "heap")
    tally(env.from_collection(items, uid="src"), resumed, 1)
    with caplog.at_level("INFO", logger="lockgate"):
        await env.execute("after", restore_from=url)
    assert Counter(resumed.results) == expected(items) - expected(items[:6])
    assert "savepoint-2" in caplog.text


class Gate:
    """A map that holds at record ``at`` until opened; a test waits until it is reached."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0
        self.reached, self.opened = anyio.Event(), anyio.Event()

    async def __call__(self, record: Any) -> Any:
        self.seen += 1
        if self.seen == self.at:
            self.reached.set()
            await self.opened.wait()
        return record


async def test_a_service_upgrades_its_queue_fed_job_through_a_savepoint_and_loses_no_record(
    tmp_path: Path,
) -> None:
    items = [("k", n) for n in range(15)]

    def job(
        env: lg.StreamEnvironment, queue: lg.QueueSource[Record], gate: Any, sink: lg.CollectSink[Any]
    ) -> None:
        stream = env.from_source(queue, uid="src").key_by(lambda r: r[0]).map(gate, uid="gate")
        stream.key_by(lambda r: r[0]).process(Tally(), uid="tally").sink(sink, uid="out")

    first_queue: lg.QueueSource[Record] = lg.QueueSource(maxsize=100)
    env = lg.StreamEnvironment(batch_size=1, channel_capacity=1)  # the queue keeps what the job cannot take
    gate, before = Gate(at=2), lg.CollectSink[Any]()
    job(env, first_queue, gate, before)
    url = (tmp_path / "savepoints").as_uri()
    with anyio.fail_after(GUARD):
        running = await env.start("v1")
        for item in items[:10]:
            await first_queue.put(item)
        await gate.reached.wait()  # the job is stuck at record 2: most records wait in the queue
        async with anyio.create_task_group() as group:
            stopped: list[str] = []

            async def stop() -> None:
                stopped.append(await running.stop_with_savepoint(url))

            group.start_soon(stop)
            while first_queue.accepting:  # until the source has taken what its queue buffered
                await anyio.wait_all_tasks_blocked()
            with pytest.raises(lg.LockgateError, match="resumes from that savepoint"):
                first_queue.put_nowait(items[10])  # refused, saying where it goes
            gate.opened.set()
    [savepoint] = stopped

    second_queue: lg.QueueSource[Record] = lg.QueueSource()
    env = lg.StreamEnvironment()
    after = lg.CollectSink[Any]()
    job(env, second_queue, lambda record: record, after)
    with anyio.fail_after(GUARD):
        resumed = await env.start("v2", restore_from=savepoint)
        for item in items[10:]:
            await second_queue.put(item)
        second_queue.close()
        await resumed.wait()
    assert Counter(before.results) + Counter(after.results) == expected(items)
