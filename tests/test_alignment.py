"""Barrier alignment at an actor with several input channels, for any number of channels and any
split of their records around the barrier."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.actors._actor import SubtaskActor
from lockgate.actors._context import SubtaskContext
from lockgate.actors._operators import StreamOperator
from lockgate.actors._output import OutputRouter
from lockgate.mailbox import END_OF_INPUT, JOB_FINISHED, Barrier, Channel, ControlEvent, Mailbox

pytestmark = pytest.mark.anyio


class Recorder(StreamOperator):
    def __init__(self, log: list[Any]) -> None:
        super().__init__(SubtaskContext("recorder", "recorder", 0, 1, 128))
        self.log = log

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        self.log.extend(batch)
        return []


class RecordingOutput(OutputRouter):
    def __init__(self, log: list[Any]) -> None:
        super().__init__([])
        self.log = log

    async def emit_event(self, event: ControlEvent) -> None:
        self.log.append(event)


class Runtime:
    """Runs the actor alone: no coordinator, so a barrier is aligned and passed on, nothing written."""

    coordinator = None
    asynchronous = True
    unaligned = False
    aligned_timeout = None

    def __init__(self, mode: lg.CheckpointingMode) -> None:
        self.mode = mode

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        raise AssertionError("nothing runs in the background without a coordinator")

    def actor_finished(self, actor: SubtaskActor) -> None:
        actor.post(JOB_FINISHED)


async def run_actor(channels: list[list[Any]], mode: lg.CheckpointingMode) -> list[Any]:
    """Fill one channel per list with its messages, run an actor over them, return what it saw."""
    log: list[Any] = []
    inputs = []
    for index, messages in enumerate(channels):
        channel = Channel(len(messages) + 1, f"in-{index}")
        for message in messages:
            await channel.send(message)
        inputs.append(channel)
    actor = SubtaskActor(
        "aligned",
        "recorder",
        0,
        1,
        [Recorder(log)],
        RecordingOutput(log),
        Runtime(mode),
        mailbox=Mailbox(inputs),
        channel_inputs=[0] * len(inputs),
        batch_size=10,
        keyed_backends=[],
    )
    await actor.run()
    return log


def channel_contents(split: list[tuple[list[int], list[int]]], barrier: bool) -> list[list[Any]]:
    channels = []
    for index, (before, after) in enumerate(split):
        messages: list[Any] = [[("before", index, n)] for n in before]
        if barrier:
            messages.append(Barrier(1))
        messages += [[("after", index, n)] for n in after]
        channels.append([*messages, END_OF_INPUT])
    return channels


splits = st.lists(
    st.tuples(st.lists(st.integers(0, 9), max_size=4), st.lists(st.integers(0, 9), max_size=4)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(split=splits)
async def test_exactly_once_holds_an_input_until_every_input_delivered_the_barrier(
    split: list[tuple[list[int], list[int]]],
) -> None:
    log = await run_actor(channel_contents(split, barrier=True), lg.CheckpointingMode.EXACTLY_ONCE)
    barrier = log.index(Barrier(1))
    assert all(entry[0] == "before" for entry in log[:barrier])
    assert all(entry[0] == "after" for entry in log[barrier + 1 : -1])
    assert log[-1] is END_OF_INPUT
    assert len(log) == sum(len(before) + len(after) for before, after in split) + 2


@settings(max_examples=60, deadline=None)
@given(split=splits)
async def test_at_least_once_reads_on_and_passes_the_barrier_once_all_delivered_it(
    split: list[tuple[list[int], list[int]]],
) -> None:
    log = await run_actor(channel_contents(split, barrier=True), lg.CheckpointingMode.AT_LEAST_ONCE)
    barrier = log.index(Barrier(1))
    # Every record before a barrier precedes it; records after it may too (they are not held).
    assert {entry for entry in log if isinstance(entry, tuple) and entry[0] == "before"} <= set(log[:barrier])
    assert sorted(entry for entry in log if isinstance(entry, tuple)) == sorted(
        [("before", i, n) for i, (before, _) in enumerate(split) for n in before]
        + [("after", i, n) for i, (_, after) in enumerate(split) for n in after]
    )


async def test_at_least_once_does_not_hold_a_fast_input() -> None:
    channels = [[[1], Barrier(1), [2], [3], END_OF_INPUT], [[10], [11], [12], [13], Barrier(1), END_OF_INPUT]]
    log = await run_actor(channels, lg.CheckpointingMode.AT_LEAST_ONCE)
    assert log.index(3) < log.index(Barrier(1))
    log = await run_actor(channels, lg.CheckpointingMode.EXACTLY_ONCE)
    assert log.index(2) > log.index(Barrier(1)) > log.index(13)


async def test_an_input_that_ends_without_the_barrier_counts_as_aligned() -> None:
    channels = [[[1], Barrier(1), [2], END_OF_INPUT], [[10], [11], END_OF_INPUT]]
    log = await run_actor(channels, lg.CheckpointingMode.EXACTLY_ONCE)
    assert log == [1, 10, 11, Barrier(1), 2, END_OF_INPUT]


async def test_at_least_once_passes_on_the_barriers_of_concurrent_checkpoints_in_order() -> None:
    # The first input delivers barrier 2 before the second delivers barrier 1: both checkpoints go on.
    channels = [
        [[1], Barrier(1), [2], Barrier(2), [3], END_OF_INPUT],
        [[10], [11], [12], Barrier(1), Barrier(2), END_OF_INPUT],
    ]
    log = await run_actor(channels, lg.CheckpointingMode.AT_LEAST_ONCE)
    assert [entry for entry in log if isinstance(entry, Barrier)] == [Barrier(1), Barrier(2)]
    assert log.index(12) < log.index(Barrier(1)) < log.index(Barrier(2))
    assert sorted(entry for entry in log if isinstance(entry, int)) == [1, 2, 3, 10, 11, 12]
