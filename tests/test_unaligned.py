"""Unaligned checkpoints: barriers overtake queued records, which are stored with the checkpoint as
channel state and replayed on restore.

First one channel and one actor alone (the record accounting, for any split of records around the
barrier and any point where an aligning subtask switches to unaligned), then whole jobs: exactly-once
under crashes, barriers overtaking a backpressured queue, the aligned timeout, savepoints, rescaling and
the settings. Nothing waits on a clock to synchronise: ``aligned_timeout`` is the one timer, and the
tests wait for events it causes.
"""

from __future__ import annotations

import itertools
import os
import pickle
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.actors._actor import SubtaskActor
from lockgate.actors._context import SubtaskContext
from lockgate.actors._operators import StreamOperator
from lockgate.actors._output import OutputRouter
from lockgate.checkpointing import SnapshotTarget, SubtaskAcknowledgement
from lockgate.mailbox import (
    END_OF_INPUT,
    JOB_FINISHED,
    AlignmentTimedOut,
    Barrier,
    Channel,
    ControlEvent,
    Mailbox,
)
from lockgate.savepoint import ChannelStateSnapshot
from lockgate.snapshots import MemoryCheckpointStorage, load_from_pointer
from lockgate.testing import FailureSchedule, assert_exactly_once, failure_schedules
from tests._sources import PausingSource
from tests.test_exactly_once import broadcast_and_operator_state, running_sums, unioned_reduce

pytestmark = pytest.mark.anyio

#: The longest any story may take before the test calls it a hang.
GUARD = 10


# ---- one channel


channel_operations = st.lists(st.sampled_from(["batch", "barrier", "overtake", "end"]), max_size=12)


@settings(max_examples=100, deadline=None)
@given(operations=channel_operations)
async def test_an_unaligned_barrier_overtakes_every_batch_no_earlier_barrier_covers(
    operations: list[str],
) -> None:
    # A producer sends batches, aligned barriers, unaligned (overtaking) barriers and its end of input,
    # in any order (only barriers after the end); the consumer then takes everything.
    channel = Channel(capacity=len(operations) + 1)
    sent_before: dict[int, int] = {}  # barrier id -> batches sent before it
    batches = 0
    ended = False
    for checkpoint_id, operation in enumerate(operations, 1):
        if operation == "batch" and not ended:
            await channel.send([batches])
            batches += 1
        elif operation == "barrier":
            await channel.send(Barrier(checkpoint_id))
            sent_before[checkpoint_id] = batches
        elif operation == "overtake":
            channel.overtake(checkpoint_id)  # at once, though the channel may be full
            sent_before[checkpoint_id] = batches
        elif operation == "end" and not ended:
            await channel.send(END_OF_INPUT)
            ended = True
    taken = [channel._take() for _ in range(len(channel._queue))]
    assert [m[0] for m in taken if type(m) is list] == list(range(batches))  # batches keep their order
    barriers = [m for m in taken if isinstance(m, Barrier)]
    assert [b.checkpoint_id for b in barriers] == sorted(sent_before)  # barriers keep theirs
    if END_OF_INPUT in taken:
        assert not [m for m in taken[taken.index(END_OF_INPUT) :] if type(m) is list]
    for position, message in enumerate(taken):
        if isinstance(message, Barrier):
            # Exactly the batches sent before it that come after it are overtaken, right behind it.
            after = [m[0] for m in taken[position + 1 :] if type(m) is list]
            behind = [n for n in after if n < sent_before[message.checkpoint_id]]
            assert message.overtaken == len(behind)
            assert [m[0] for m in taken[position + 1 : position + 1 + message.overtaken]] == behind


# ---- one actor


class Recorder(StreamOperator):
    """Keeps what it processed, by input; at each snapshot, what it had processed by then."""

    def __init__(self, hook: Callable[[int], None] = lambda count: None) -> None:
        super().__init__(SubtaskContext("recorder", "recorder", 0, 1, 128))
        self.processed: list[Any] = []
        self.at_snapshot: dict[int, list[Any]] = {}
        self._hook = hook

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        for record in batch:
            self.processed.append(record)
            self._hook(len(self.processed))
        return []

    async def process_batch2(self, batch: list[Any]) -> list[Any]:
        return await self.process_batch([("second", *record) for record in batch])

    async def prepare_snapshot(self, checkpoint_id: int) -> None:
        self.at_snapshot[checkpoint_id] = list(self.processed)


class EventLog(OutputRouter):
    """The output of the actor under test: the barriers it passes on, and how."""

    def __init__(self) -> None:
        super().__init__([])
        self.events: list[Any] = []
        self.overtook = anyio.Event()

    async def emit_event(self, event: ControlEvent) -> None:
        self.events.append(event)

    def overtake(self, checkpoint_id: int) -> None:
        self.events.append(("overtake", checkpoint_id))
        self.overtook.set()


@dataclass
class Coordinator:
    """Stands in for the checkpoint coordinator: one checkpoint (or savepoint) in memory storage."""

    storage: MemoryCheckpointStorage
    target_of: SnapshotTarget
    acks: dict[int, SubtaskAcknowledgement] = field(default_factory=dict)
    declined: dict[int, str] = field(default_factory=dict)
    acknowledged: anyio.Event = field(default_factory=anyio.Event)

    @classmethod
    async def create(cls, savepoint: bool = False) -> Coordinator:
        storage = MemoryCheckpointStorage()
        location = await storage.create_checkpoint_location(1)
        return cls(storage, SnapshotTarget(storage, location, canonical=savepoint))

    def target(self, checkpoint_id: int) -> SnapshotTarget | None:
        return self.target_of if checkpoint_id == 1 else None

    async def acknowledge(self, checkpoint_id: int, key: Any, ack: SubtaskAcknowledgement) -> None:
        self.acks[checkpoint_id] = ack
        self.acknowledged.set()

    async def decline(
        self, checkpoint_id: int, key: Any, reason: str, *, counts: bool = True, cause: Any = None
    ) -> None:
        self.declined[checkpoint_id] = reason

    def source_finished(self, key: Any) -> None:
        """No final checkpoint here: the runtime ends the actor once its input has ended."""

    async def channel_state(self, ack: SubtaskAcknowledgement) -> list[tuple[int, list[Any]]]:
        handle = ack.states["recorder"].channel
        if handle is None:
            return []
        snapshot = pickle.loads(await self.storage.read_state(handle))
        assert isinstance(snapshot, ChannelStateSnapshot)
        return snapshot.batches


class Runtime:
    """Runs one actor in exactly-once mode; background work goes into a task group of the test."""

    mode = lg.CheckpointingMode.EXACTLY_ONCE
    asynchronous = True

    def __init__(
        self, coordinator: Coordinator, group: TaskGroup, unaligned: bool, aligned_timeout: float | None
    ) -> None:
        self.coordinator = coordinator
        self.group = group
        self.unaligned = unaligned
        self.aligned_timeout = aligned_timeout

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.group.start_soon(function, *args)

    def actor_finished(self, actor: SubtaskActor) -> None:
        actor.post(JOB_FINISHED)


@dataclass
class Outcome:
    """What one actor did with its channels around barrier 1."""

    recorder: Recorder
    output: EventLog
    ack: SubtaskAcknowledgement | None
    channel_state: list[tuple[int, list[Any]]]
    declined: dict[int, str]


async def run_actor(
    channels: list[list[Any]],
    *,
    unaligned: bool = True,
    aligned_timeout: float | None = None,
    channel_inputs: list[int] | None = None,
    switch_at: int | None = None,
    savepoint: bool = False,
) -> Outcome:
    """Queue each channel's messages (``"overtake"`` stands for an unaligned barrier 1), run one actor
    over them, and return what it did. ``switch_at``: the alignment timer fires when the actor has
    processed that many records (a stand-in for the clock)."""
    coordinator = await Coordinator.create(savepoint)
    inputs = []
    for index, contents in enumerate(channels):
        channel = Channel(len(contents) + 1, f"in-{index}")
        for message in contents:
            if message == "overtake":
                channel.overtake(1)
            elif savepoint and message == Barrier(1):
                await channel.send(Barrier(1, savepoint=True))  # a savepoint's barrier says so
            else:
                await channel.send(message)
        inputs.append(channel)
    actor: SubtaskActor | None = None

    def hook(count: int) -> None:
        if count == switch_at and actor is not None:
            actor.post(AlignmentTimedOut(1))

    recorder, output = Recorder(hook), EventLog()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            actor = SubtaskActor(
                "under-test",
                "recorder",
                0,
                1,
                [recorder],
                output,
                Runtime(coordinator, group, unaligned, aligned_timeout),  # type: ignore[arg-type]
                mailbox=Mailbox(inputs),
                channel_inputs=channel_inputs or [0] * len(inputs),
                batch_size=10,
                keyed_backends=[],
            )
            await actor.run()
    ack = coordinator.acks.get(1)
    channel_state = [] if ack is None else await coordinator.channel_state(ack)
    return Outcome(recorder, output, ack, channel_state, coordinator.declined)


def around_barrier(split: list[tuple[list[int], list[int], bool]]) -> list[list[Any]]:
    """One channel per entry: its batches before barrier 1, the barrier (overtaking those before it
    when the flag says so), its batches after, the end of input. Records name their place."""
    channels = []
    for index, (before, after, overtake) in enumerate(split):
        contents: list[Any] = [[("before", index, position, n)] for position, n in enumerate(before)]
        contents.append("overtake" if overtake else Barrier(1))
        contents += [[("after", index, position, n)] for position, n in enumerate(after)]
        channels.append([*contents, END_OF_INPUT])
    return channels


splits = st.lists(
    st.tuples(
        st.lists(st.integers(0, 9), max_size=4), st.lists(st.integers(0, 9), max_size=4), st.booleans()
    ),
    min_size=1,
    max_size=4,
)


def records_of(split: list[tuple[list[int], list[int], bool]], kind: str) -> list[Any]:
    return [
        (kind, index, position, n)
        for index, (before, after, _) in enumerate(split)
        for position, n in enumerate(before if kind == "before" else after)
    ]


def assert_accounted(outcome: Outcome, split: list[tuple[list[int], list[int], bool]]) -> None:
    """Every record before the barrier is in the snapshot's effect or in the channel state, never
    both, never lost; no record after it is in either; every record is processed exactly once."""
    assert outcome.ack is not None and not outcome.declined
    in_snapshot = outcome.recorder.at_snapshot[1]
    in_flight = [record for _, batch in outcome.channel_state for record in batch]
    before = records_of(split, "before")
    assert sorted(in_snapshot + in_flight) == sorted(before)
    assert not set(in_snapshot) & set(in_flight)
    assert sorted(outcome.recorder.processed) == sorted(before + records_of(split, "after"))
    for index in range(len(split)):  # each channel's in-flight records keep their order
        mine = [record for record in in_flight if record[1] == index]
        assert mine == sorted(mine)
    stored = outcome.ack.states["recorder"].channel
    assert outcome.ack.in_flight_bytes == (0 if stored is None else stored.size)
    assert (stored is None) == (not in_flight)


@settings(max_examples=80, deadline=None)
@given(split=splits)
async def test_unaligned_every_record_before_the_barrier_is_in_the_snapshot_or_in_flight(
    split: list[tuple[list[int], list[int], bool]],
) -> None:
    outcome = await run_actor(around_barrier(split))
    assert_accounted(outcome, split)
    assert outcome.ack is not None and outcome.ack.unaligned
    assert outcome.output.events[0] == ("overtake", 1)  # passed on at once, ahead of queued records


@settings(max_examples=80, deadline=None)
@given(split=splits, switch_at=st.one_of(st.none(), st.integers(1, 20)))
async def test_an_aligning_subtask_may_switch_at_any_point_and_still_accounts_for_every_record(
    split: list[tuple[list[int], list[int], bool]], switch_at: int | None
) -> None:
    outcome = await run_actor(around_barrier(split), aligned_timeout=3600.0, switch_at=switch_at)
    assert_accounted(outcome, split)
    assert outcome.ack is not None
    if not outcome.ack.unaligned:  # aligned in time: everything before the barrier is in the snapshot
        assert outcome.channel_state == []
        assert outcome.output.events[0] == Barrier(1)
        assert sorted(outcome.recorder.at_snapshot[1]) == sorted(records_of(split, "before"))
    else:
        assert switch_at is not None
        assert outcome.output.events[0] == ("overtake", 1)


@settings(max_examples=40, deadline=None)
@given(split=splits)
async def test_in_flight_records_remember_the_operator_input_they_came_for(
    split: list[tuple[list[int], list[int], bool]],
) -> None:
    inputs = [index % 2 for index in range(len(split))]
    outcome = await run_actor(around_barrier(split), channel_inputs=inputs)
    for input_index, batch in outcome.channel_state:
        for record in batch:
            assert input_index == inputs[record[1]]
    for record in outcome.recorder.processed:  # the second input's records reach its second input
        second = record[0] == "second"
        assert second == bool(inputs[record[2] if second else record[1]])


async def test_a_savepoint_is_aligned_even_when_checkpoints_are_unaligned() -> None:
    channels = [[[1], Barrier(1), [2], END_OF_INPUT], [[10], [11], Barrier(1), [12], END_OF_INPUT]]
    outcome = await run_actor(channels, savepoint=True)
    assert outcome.ack is not None and not outcome.ack.unaligned
    assert outcome.output.events[0] == Barrier(1, savepoint=True)  # passed on aligned, as a savepoint's
    assert sorted(outcome.recorder.at_snapshot[1]) == [1, 10, 11]
    assert outcome.channel_state == [] and outcome.ack.states["recorder"].channel is None


async def test_the_alignment_timer_switches_a_subtask_that_waits_too_long() -> None:
    """Channel 1's barrier comes only after the subtask switched: aligned, it would never come."""
    coordinator = await Coordinator.create()
    first, second = Channel(8, "first"), Channel(8, "second")
    for message in ([1], Barrier(1), [2], END_OF_INPUT):
        await first.send(message)
    await second.send([10])
    recorder, output = Recorder(), EventLog()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            actor = SubtaskActor(
                "under-test",
                "recorder",
                0,
                1,
                [recorder],
                output,
                Runtime(coordinator, group, unaligned=True, aligned_timeout=0.01),  # type: ignore[arg-type]
                mailbox=Mailbox([first, second]),
                channel_inputs=[0, 0],
                batch_size=10,
                keyed_backends=[],
            )
            group.start_soon(actor.run)
            await output.overtook.wait()  # the timer fired: snapshot taken, barrier passed on
            assert recorder.at_snapshot[1] == [1, 10]
            for message in ([11], Barrier(1), [12], END_OF_INPUT):
                await second.send(message)
            await coordinator.acknowledged.wait()
    ack = coordinator.acks[1]
    assert ack.unaligned and ack.alignment_duration >= 0.01
    assert [record for _, batch in await coordinator.channel_state(ack) for record in batch] == [11]
    assert sorted(recorder.processed) == [1, 2, 10, 11, 12]


# ---- whole jobs: exactly-once under crashes


def unaligned_environment(
    parallelism: int, aligned_timeout: float | None = None, **kwargs: Any
) -> Callable[[], lg.StreamEnvironment]:
    """Small batches and channels, so queues fill and barriers overtake records."""

    def make() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(
            parallelism=parallelism, max_parallelism=16, batch_size=2, channel_capacity=2, **kwargs
        )
        env.enable_checkpointing(3600.0)
        env.checkpoint_config.unaligned = True
        env.checkpoint_config.aligned_timeout = aligned_timeout
        return env

    return make


Record = tuple[str, int]
records = st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(-50, 50)), min_size=5, max_size=60)
parallelisms = st.integers(1, 4)
# None: unaligned from the first barrier; a tiny timeout: aligned or switched, as the clock decides.
aligned_timeouts = st.sampled_from([None, None, 0.0005])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    source_parallelism=parallelisms,
    aligned_timeout=aligned_timeouts,
    schedule=failure_schedules(["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8),
)
async def test_keyed_counts_are_exactly_once_with_unaligned_checkpoints(
    items: list[Record],
    parallelism: int,
    source_parallelism: int,
    aligned_timeout: float | None,
    schedule: FailureSchedule,
) -> None:
    await assert_exactly_once(
        running_sums(items, source_parallelism),
        schedule,
        environment=unaligned_environment(parallelism, aligned_timeout),
    )


def on_files(parallelism: int, root: Path) -> Callable[[], lg.StreamEnvironment]:
    """:func:`unaligned_environment` with its checkpoints in files, a new directory for each job, and
    nothing inline: keyed state and in-flight records go to files written unsynced, which the
    metadata's write makes durable (``FileCheckpointStorage._write_metadata``)."""
    runs = itertools.count()

    def make() -> lg.StreamEnvironment:
        env = unaligned_environment(parallelism)()
        env.set_checkpoint_storage(lg.FileCheckpointStorage(root / f"job-{next(runs)}", inline_threshold=0))
        return env

    return make


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=6),
)
async def test_keyed_counts_are_exactly_once_restoring_unaligned_checkpoints_from_files(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-unaligned-") as root:
        await assert_exactly_once(
            running_sums(items, 2), schedule, environment=on_files(parallelism, Path(root))
        )


def bump(record: list[Any]) -> list[Any]:
    """Changes the record it is given, in place, as functions may."""
    record[1] += 1000
    return record


def changed_in_place(items: list[Record]) -> Callable[[lg.StreamEnvironment], Any]:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        (
            env.from_collection(items, uid="src", parallelism=1)  # one source: each key's order is fixed
            .map(lambda r: [r[0], r[1]], uid="fresh", parallelism=1)  # a new list at every read
            .key_by(lambda r: r[0])
            .map(bump, uid="bump")  # the first operator behind the shuffle: it records channel state
            .map(tuple, uid="freeze")
            .key_by(lambda r: r[0])
            .sum(1, uid="sum")
            .sink(sink, uid="out")
        )
        return sink

    return build


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(
        ["src", "fresh", "bump", "freeze", "sum", "out"], max_record=40, max_checkpoint_every=6
    ),
)
async def test_in_flight_records_are_stored_as_they_arrived_not_as_functions_changed_them(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        changed_in_place(items), schedule, environment=unaligned_environment(parallelism)
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    left=records,
    right=records,
    parallelism=parallelisms,
    aligned_timeout=aligned_timeouts,
    schedule=failure_schedules(
        ["left", "right", "negate", "one", "reduce", "after", "out"], max_record=40, max_checkpoint_every=8
    ),
)
async def test_a_union_of_two_sources_is_exactly_once_with_unaligned_checkpoints(
    left: list[Record],
    right: list[Record],
    parallelism: int,
    aligned_timeout: float | None,
    schedule: FailureSchedule,
) -> None:
    await assert_exactly_once(
        unioned_reduce(left, right), schedule, environment=unaligned_environment(parallelism, aligned_timeout)
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(
        ["items", "factors", "scale", "sign", "sum", "out"], max_record=40, max_checkpoint_every=8
    ),
)
async def test_a_two_input_operator_replays_in_flight_records_into_the_right_input(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        broadcast_and_operator_state(items, [3]), schedule, environment=unaligned_environment(parallelism)
    )


# ---- whole jobs: stories


class Gate:
    """A map function that holds every record until the gate opens: a sink that cannot keep up."""

    def __init__(self) -> None:
        self.opened = anyio.Event()

    async def __call__(self, record: Any) -> Any:
        await self.opened.wait()
        return record


class Shared:
    """Something a function shares with the test: the per-subtask copy of the function keeps it."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        return self


class OnSnapshot(lg.ProcessFunction[Any, Any]):
    """Passes records on; runs an action at each synchronous snapshot of its subtask."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Iterator[Any]:
        yield value

    def snapshot_state(self, ctx: lg.RuntimeContext) -> None:
        self.shared.action()


#: How many records fill the queues of :func:`gated_sums` at batch size 2 and 2 batches per channel,
#: all but one slot: the gate holds a batch, the channel before it 2, the sums a batch, the channel
#: before them 1 (with that one full, the source would wait for room instead of reading on to its pause).
FILLS_QUEUES = 10


def gated_sums(stream: lg.DataStream, gate: Gate, sink: lg.CollectSink[Any], parallelism: int = 1) -> None:
    """source -> (the source's snapshot opens the gate) -> running sums -> gate -> sink, in three actors
    with a channel between each two. The source's chain runs at parallelism 1, so the records of a key
    come in order whatever ``parallelism`` the rest has."""
    opener = stream.process(OnSnapshot(Shared(gate.opened.set)), uid="opener", parallelism=1)
    sums = opener.key_by(lambda record: record[0]).sum(1, uid="sum", parallelism=parallelism)
    gated = sums.rebalance().map(gate, uid="gate", parallelism=parallelism)
    gated.sink(sink, uid="out", parallelism=parallelism)


def expected_sums(items: list[Record]) -> list[Record]:
    totals: dict[str, int] = {}
    out = []
    for key, value in items:
        totals[key] = totals.get(key, 0) + value
        out.append((key, totals[key]))
    return out


ITEMS: list[Record] = [(key, index) for index, key in enumerate("abcab" * 8)]  # 40 records, 3 keys


async def snapshot_full_queues(
    root: Path, sink: lg.CollectSink[Any], *, savepoint: bool = False, inline: bool = True
) -> Any:
    """Job 1: the gated sums of :data:`ITEMS`, held by a closed gate until every queue is full, then a
    checkpoint (or savepoint) whose barrier leaves the source as the gate opens; then cancelled.
    Returns the snapshot's pointer and statistics. Not ``inline``: every blob is a file."""
    env = unaligned_environment(1)()
    env.set_checkpoint_storage(
        root.as_uri() if inline else lg.FileCheckpointStorage(root, inline_threshold=0)
    )
    source = PausingSource(ITEMS, (FILLS_QUEUES,))
    gated_sums(env.from_source(source, uid="src"), Gate(), sink)
    with anyio.fail_after(GUARD):
        job = await env.start("job-1")
        await source.reached(FILLS_QUEUES)  # emitted all before it: the queues are full
        if savepoint:
            pointer = await job.trigger_savepoint((root / "savepoints").as_uri())
        else:
            pointer = (await job.trigger_checkpoint()).pointer
        stats = job.checkpoint_stats.history[-1]
        await job.cancel()
    return pointer, stats


def restored_job(parallelism: int, sink: lg.CollectSink[Any]) -> lg.StreamEnvironment:
    """Job 2: the same pipeline over the same items, its gate open."""
    env = unaligned_environment(1)()
    gate = Gate()
    gate.opened.set()
    gated_sums(env.from_collection(ITEMS, uid="src"), gate, sink, parallelism)
    return env


@pytest.mark.parametrize("inline", [True, False])
async def test_barriers_overtake_full_queues_and_a_restore_replays_what_they_overtook(
    tmp_path: Path, inline: bool
) -> None:
    sink = lg.CollectSink[Any]()  # both jobs commit to it, each transaction once
    pointer, stats = await snapshot_full_queues(tmp_path, sink, inline=inline)
    assert stats.status == "completed" and stats.unaligned
    assert stats.in_flight_bytes > 0
    assert stats.persisted_bytes >= stats.in_flight_bytes
    loaded = await load_from_pointer(pointer)
    assert set(loaded.channel) <= {"sum", "gate"} and loaded.channel  # where records were in flight
    if not inline:  # in files written unsynced, made durable with the metadata
        assert any(name.endswith("-channel") for name in os.listdir(Path(pointer.removeprefix("file://"))))

    with anyio.fail_after(GUARD):
        await restored_job(1, sink).execute("job-2", restore_from=pointer)
    assert sink.results == expected_sums(ITEMS)  # nothing lost, nothing twice, in order


async def test_a_checkpoint_with_in_flight_records_cannot_restore_at_another_parallelism(
    tmp_path: Path,
) -> None:
    sink = lg.CollectSink[Any]()
    pointer, _ = await snapshot_full_queues(tmp_path, sink)
    with pytest.raises(lg.ConfigurationError) as refused:
        await restored_job(2, sink).execute("job-2", restore_from=pointer)
    message = str(refused.value)
    assert "'gate'" in message or "'sum'" in message
    assert "keep the parallelism" in message and "aligned checkpoint or a savepoint" in message


async def test_a_savepoint_under_unaligned_config_is_aligned_and_restores_at_any_parallelism(
    tmp_path: Path,
) -> None:
    sink = lg.CollectSink[Any]()
    pointer, stats = await snapshot_full_queues(tmp_path, sink, savepoint=True)
    assert stats.savepoint and stats.status == "completed"
    assert not stats.unaligned and stats.in_flight_bytes == 0
    loaded = await load_from_pointer(pointer)
    assert loaded.channel == {}
    assert all(
        handles.channel is None
        for operator in loaded.metadata.operators.values()
        for handles in operator.subtasks.values()
    )
    with anyio.fail_after(GUARD):
        await restored_job(2, sink).execute("job-2", restore_from=pointer)
    assert sorted(sink.results) == sorted(expected_sums(ITEMS))  # keys stay in order at any parallelism


class HoldOnce:
    """A map function that holds :data:`HOLD` until released; says when it started holding."""

    def __init__(self) -> None:
        self.holding = anyio.Event()
        self.released = anyio.Event()

    async def __call__(self, record: Any) -> Any:
        if record == HOLD:
            self.holding.set()
            await self.released.wait()
        return record


HOLD: Record = ("hold", 0)


async def test_an_aligning_subtask_switches_to_unaligned_after_the_aligned_timeout() -> None:
    """One input's barrier is stuck behind a record that is held until the union's subtask snapshots:
    aligned, it never would; once the timeout has passed it switches, snapshots, and the held record
    arrives as in-flight data."""
    env = unaligned_environment(1, aligned_timeout=0.05)()
    held, steady = lg.QueueSource[Record](), lg.QueueSource[Record]()
    hold = HoldOnce()
    sink = lg.CollectSink[Any]()
    first = env.from_source(held, uid="held").map(hold, uid="hold")
    merged = first.union(env.from_source(steady, uid="steady"))
    merged.process(OnSnapshot(Shared(hold.released.set)), uid="merge").sink(sink, uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("timeout")
        await held.put(HOLD)
        await steady.put(("s", 1))
        await hold.holding.wait()
        await job.trigger_checkpoint()
        stats = job.checkpoint_stats.history[-1]
        held.close()
        steady.close()
        await job.wait()
    assert stats.unaligned and stats.in_flight_bytes > 0
    assert stats.alignment_duration >= 0.05
    assert sorted(sink.results) == sorted([HOLD, ("s", 1)])


async def test_with_an_aligned_timeout_a_quick_alignment_stays_aligned() -> None:
    env = unaligned_environment(1, aligned_timeout=60.0)()
    queue = lg.QueueSource[Record]()
    sink = lg.CollectSink[Any]()
    gate = Gate()
    gate.opened.set()
    gated_sums(env.from_source(queue, uid="src"), gate, sink, parallelism=2)
    with anyio.fail_after(GUARD):
        job = await env.start("aligned")
        for item in ITEMS[:5]:
            await queue.put(item)
        await job.trigger_checkpoint()
        queue.close()
        await job.wait()
    stats, *ends = job.checkpoint_stats.history  # then those at the sources' and subtasks' ends
    assert stats.status == "completed" and not stats.unaligned and stats.in_flight_bytes == 0
    assert any(end.status == "completed" for end in ends)  # the final checkpoint
    assert sorted(sink.results) == sorted(expected_sums(ITEMS[:5]))


# ---- settings


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_a_bad_aligned_timeout_is_refused(value: Any) -> None:
    env = lg.StreamEnvironment()
    env.checkpoint_config.unaligned = True
    env.checkpoint_config.aligned_timeout = value
    with pytest.raises(lg.ConfigurationError, match="aligned_timeout"):
        env.enable_checkpointing(1.0)


def test_unaligned_checkpoints_need_exactly_once() -> None:
    env = lg.StreamEnvironment()
    env.checkpoint_config.unaligned = True
    with pytest.raises(lg.ConfigurationError, match="EXACTLY_ONCE") as refused:
        env.enable_checkpointing(1.0, lg.CheckpointingMode.AT_LEAST_ONCE)
    assert "unaligned = False" in str(refused.value)
    assert not env.checkpoint_config.enabled  # nothing was half-applied


async def test_unaligned_at_least_once_is_refused_when_the_job_starts() -> None:
    env = lg.StreamEnvironment()
    env.enable_checkpointing(3600.0, lg.CheckpointingMode.AT_LEAST_ONCE)
    env.checkpoint_config.unaligned = True
    env.from_collection([1, 2], uid="src").sink(lg.CollectSink(), uid="out")
    with pytest.raises(lg.ConfigurationError, match="EXACTLY_ONCE"):
        await env.execute("misconfigured")


def test_an_aligned_timeout_is_accepted_with_unaligned_checkpoints() -> None:
    env = lg.StreamEnvironment()
    env.checkpoint_config.unaligned = True
    env.checkpoint_config.aligned_timeout = 0.5
    env.enable_checkpointing(1.0)
    assert (env.checkpoint_config.unaligned, env.checkpoint_config.aligned_timeout) == (True, 0.5)


async def test_a_barrier_handled_while_a_newer_one_overtakes_still_records_its_own_batches() -> None:
    # The consumer has taken barrier 1 (which overtook two batches) and is still handling it when the
    # producer overtakes with barrier 2: with barrier 1 gone from the queue, barrier 2 goes to its head,
    # ahead of barrier 1's batches. Barrier 1's recording must still find exactly those two.
    channel = Channel(capacity=8)
    for n in range(2):
        await channel.send([n])
    channel.overtake(1)
    mailbox = Mailbox([channel])
    _, first = await mailbox.receive()
    assert first == Barrier(1, 2)
    channel.overtake(2)  # meanwhile
    assert mailbox.peek_batches(0, first.overtaken) == [[0], [1]]
    _, second = await mailbox.receive()
    assert second == Barrier(2, 2)  # it overtook them too: they precede both barriers
