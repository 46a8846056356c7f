"""Channels and mailboxes: per-channel order, backpressure, fair reading, pausing and wake-ups.

Every wait is synchronised with anyio primitives: ``anyio.wait_all_tasks_blocked()`` to reach the point
where every task waits, and events for hand-offs. ``fail_after`` only turns a hang into a quick failure.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.mailbox import (
    END_OF_INPUT,
    MAIL,
    Barrier,
    Channel,
    ChannelStatistics,
    ControlEvent,
    EndOfInput,
    Mailbox,
)

pytestmark = pytest.mark.anyio

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HANG = 10  # seconds before a hang is reported as a failure


class Marker(ControlEvent):
    """A control event like a barrier: it must stay between the batches it was sent between."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Marker({self.n})"


def messages_for(channel_index: int) -> st.SearchStrategy[list[Any]]:
    """A channel's messages: non-empty batches and markers in any order, then END_OF_INPUT."""
    batch = st.lists(st.integers(0, 99).map(lambda v: (channel_index, v)), min_size=1, max_size=4)
    marker = st.integers(0, 99).map(Marker)
    return st.lists(batch | marker, max_size=12).map(lambda ms: [*ms, END_OF_INPUT])


@st.composite
def channel_plans(draw: st.DrawFn) -> tuple[list[int], list[list[Any]]]:
    count = draw(st.integers(1, 4))
    capacities = draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    plans = [draw(messages_for(i)) for i in range(count)]
    return capacities, plans


# --------------------------------------------------------------------------------------------------------
# FIFO


async def test_a_channel_is_fifo_with_events_between_batches() -> None:
    channel = Channel(10, "in")
    mailbox = Mailbox([channel])
    first, second, marker = [1, 2], [3], Marker(0)
    for message in (first, marker, second, END_OF_INPUT):
        await channel.send(message)
    received = [await mailbox.receive() for _ in range(4)]
    assert [index for index, _ in received] == [0, 0, 0, 0]
    assert [message for _, message in received] == [first, marker, second, END_OF_INPUT]
    # the very objects that were sent
    assert received[1][1] is marker and received[3][1] is END_OF_INPUT


@FAST
@given(plan=channel_plans())
async def test_every_channel_delivers_its_messages_in_order_under_concurrency(
    plan: tuple[list[int], list[list[Any]]],
) -> None:
    capacities, plans = plan
    channels = [Channel(capacity, f"c{i}") for i, capacity in enumerate(capacities)]
    mailbox = Mailbox(channels)
    received: list[list[Any]] = [[] for _ in channels]

    async def produce(channel: Channel, messages: list[Any]) -> None:
        for message in messages:
            await channel.send(message)

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            for channel, messages in zip(channels, plans, strict=True):
                tg.start_soon(produce, channel, messages)
            for _ in range(sum(len(messages) for messages in plans)):
                index, message = await mailbox.receive()
                received[index].append(message)

    for got, sent in zip(received, plans, strict=True):
        assert len(got) == len(sent)
        # identity, not just equality: nothing is copied, dropped, duplicated or reordered
        assert all(g is s for g, s in zip(got, sent, strict=True)), (got, sent)
    for channel, sent, capacity in zip(channels, plans, capacities, strict=True):
        stats = channel.statistics()
        batches = [m for m in sent if not isinstance(m, ControlEvent)]
        assert stats.queued == 0
        assert stats.capacity == capacity
        assert 1 <= stats.max_queued <= capacity
        assert stats.batches_sent == len(batches)
        assert stats.records_sent == sum(len(b) for b in batches)
        assert stats.max_batch == max((len(b) for b in batches), default=0)


# --------------------------------------------------------------------------------------------------------
# Backpressure


@FAST
@given(capacity=st.integers(1, 5), extra=st.integers(0, 8))
async def test_a_full_channel_blocks_its_producer_until_the_receiver_takes_one(
    capacity: int, extra: int
) -> None:
    total = capacity + extra
    channel = Channel(capacity, "bounded")
    mailbox = Mailbox([channel])
    sent = 0

    async def produce() -> None:
        nonlocal sent
        for i in range(total):
            await channel.send([i])
            sent += 1

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            # the producer filled the channel and waits (unless it had no more to send)
            assert sent == min(total, capacity)
            assert channel.statistics().queued == min(total, capacity)
            for taken in range(1, total + 1):
                index, message = await mailbox.receive()
                assert (index, message) == (0, [taken - 1])
                await anyio.wait_all_tasks_blocked()
                # taking one message let the producer send exactly one more
                assert sent == min(total, capacity + taken)
                assert channel.statistics().queued == sent - taken
                assert channel.statistics().max_queued <= capacity

    stats = channel.statistics()
    assert stats.max_queued == capacity
    assert stats.queued == 0
    assert stats.batches_sent == stats.records_sent == total


async def test_a_control_event_takes_a_slot_like_a_batch() -> None:
    channel = Channel(2, "events")
    mailbox = Mailbox([channel])
    done = anyio.Event()

    async def produce() -> None:
        await channel.send(Marker(1))
        await channel.send(Marker(2))
        await channel.send(END_OF_INPUT)
        done.set()

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            assert channel.statistics().queued == 2
            _, first = await mailbox.receive()
            await done.wait()
            rest = [(await mailbox.receive())[1] for _ in range(2)]
    assert isinstance(first, Marker) and first.n == 1
    assert isinstance(rest[0], Marker) and rest[0].n == 2
    assert rest[1] is END_OF_INPUT
    stats = channel.statistics()
    assert (stats.batches_sent, stats.records_sent, stats.max_batch) == (0, 0, 0)


# --------------------------------------------------------------------------------------------------------
# Round-robin reading


@pytest.mark.parametrize(("count", "capacity"), [(2, 1), (3, 4), (5, 2)])
async def test_full_channels_are_read_round_robin(count: int, capacity: int) -> None:
    channels = [Channel(capacity, f"c{i}") for i in range(count)]
    mailbox = Mailbox(channels)
    for i, channel in enumerate(channels):
        for j in range(capacity):
            await channel.send([(i, j)])
    received = [await mailbox.receive() for _ in range(count * capacity)]
    indices = [index for index, _ in received]
    for before, after in itertools.pairwise(indices):
        assert after == (before + 1) % count, indices
    for i in range(count):
        assert [m for index, m in received if index == i] == [[(i, j)] for j in range(capacity)]


@pytest.mark.parametrize("count", [2, 3])
async def test_no_input_starves_while_every_producer_keeps_its_channel_full(count: int) -> None:
    # A reader that drained one channel while it had messages would never get to the others here,
    # because each producer refills its channel as soon as a slot is free.
    rounds = 6
    channels = [Channel(2, f"c{i}") for i in range(count)]
    mailbox = Mailbox(channels)

    async def produce(channel: Channel, i: int) -> None:
        for j in range(2 + rounds * count):
            await channel.send([(i, j)])

    indices = []
    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            for i, channel in enumerate(channels):
                tg.start_soon(produce, channel, i)
            for _ in range(rounds * count):
                await anyio.wait_all_tasks_blocked()
                assert all(c.statistics().queued == 2 for c in channels)  # every input is full
                index, _ = await mailbox.receive()
                indices.append(index)
            tg.cancel_scope.cancel()
    for before, after in itertools.pairwise(indices):
        assert after == (before + 1) % count, indices
    assert sorted(indices) == sorted(list(range(count)) * rounds)


async def test_round_robin_skips_empty_channels() -> None:
    channels = [Channel(5, f"c{i}") for i in range(3)]
    mailbox = Mailbox(channels)
    for j in range(4):
        await channels[2].send([("c2", j)])
    await channels[0].send([("c0", 0)])
    received = [await mailbox.receive() for _ in range(5)]
    assert sorted(index for index, _ in received) == [0, 2, 2, 2, 2]
    # channel 2's messages stay in order however they interleave with channel 0's
    assert [m for i, m in received if i == 2] == [[("c2", j)] for j in range(4)]


@FAST
@given(
    queued=st.lists(st.integers(0, 4), min_size=2, max_size=4),
    turn=st.integers(0, 3),
    target=st.integers(0, 3),
    paused=st.booleans(),
)
async def test_a_barrier_that_overtook_to_the_head_of_its_channel_is_taken_next(
    queued: list[int], turn: int, target: int, paused: bool
) -> None:
    # Whoever's turn it is, an unaligned barrier heading its channel comes before other channels'
    # batches (an unaligned checkpoint need not wait for one more batch); unless its channel is paused.
    # Either way, every channel keeps its order.
    count = len(queued)
    target %= count
    channels = [Channel(8, f"c{i}") for i in range(count)]
    mailbox = Mailbox(channels)
    for i, channel in enumerate(channels):
        for j in range(queued[i]):
            await channel.send([(i, j)])
    for _ in range(turn % count):  # move the round-robin turn along
        if any(queued):
            index, _ = await mailbox.receive()
            queued[index] -= 1
    if paused:
        mailbox.pause(target)
    assert channels[target].overtake(7) == queued[target]
    if paused:
        if any(queued[i] for i in range(count) if i != target):
            index, message = await mailbox.receive()
            assert index != target and isinstance(message, list)
        mailbox.resume(target)
    else:
        index, message = await mailbox.receive()
        assert index == target and isinstance(message, Barrier) and message.checkpoint_id == 7
    received: dict[int, list[Any]] = {i: [] for i in range(count)}
    while any(channel.statistics().queued for channel in channels):
        index, message = await mailbox.receive()
        received[index].append(message)
    for i in range(count):
        batches = [m for m in received[i] if isinstance(m, list)]
        assert batches == sorted(batches), (i, received[i])  # each channel in its order


# --------------------------------------------------------------------------------------------------------
# Pause and resume


async def test_a_paused_channel_is_not_read_keeps_its_order_and_backpressures() -> None:
    held, live = Channel(3, "held"), Channel(3, "live")
    mailbox = Mailbox([held, live])
    mailbox.pause(0)
    sent_held = 0
    result: list[tuple[int, Any]] = []
    got_one = anyio.Event()

    async def produce_held() -> None:
        nonlocal sent_held
        for j in range(6):
            await held.send([f"h{j}"])
            sent_held += 1

    async def receive_one() -> None:
        result.append(await mailbox.receive())
        got_one.set()

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce_held)
            await anyio.wait_all_tasks_blocked()
            # the paused channel filled up and its producer waits: backpressure
            assert sent_held == 3
            assert held.statistics().queued == 3

            # the other channel is still read, although the paused one is full and came first
            await live.send(["l0"])
            assert await mailbox.receive() == (1, ["l0"])

            # with only the paused channel holding messages, receive() waits
            tg.start_soon(receive_one)
            await anyio.wait_all_tasks_blocked()
            assert result == []
            assert sent_held == 3

            # resuming wakes the waiting receiver with the paused channel's first message
            mailbox.resume(0)
            await got_one.wait()
            assert result == [(0, ["h0"])]
            await anyio.wait_all_tasks_blocked()
            assert sent_held == 4  # a slot was freed, the producer sent one more

            rest = [await mailbox.receive() for _ in range(5)]
    assert rest == [(0, [f"h{j}"]) for j in range(1, 6)]


async def test_pausing_holds_messages_already_queued_and_resume_delivers_them_in_order() -> None:
    a, b = Channel(4, "a"), Channel(4, "b")
    mailbox = Mailbox([a, b])
    for j in range(3):
        await a.send([("a", j)])
    mailbox.pause(0)
    await b.send([("b", 0)])
    await a.send(END_OF_INPUT)
    assert await mailbox.receive() == (1, [("b", 0)])
    assert a.statistics().queued == 4
    mailbox.resume(0)
    got = [await mailbox.receive() for _ in range(4)]
    assert got == [(0, [("a", 0)]), (0, [("a", 1)]), (0, [("a", 2)]), (0, END_OF_INPUT)]


async def test_a_send_to_a_paused_channel_does_not_end_a_wait_but_one_to_another_does() -> None:
    a, b = Channel(2, "a"), Channel(2, "b")
    mailbox = Mailbox([a, b])
    mailbox.pause(0)
    result: list[tuple[int, Any]] = []

    async def receive_one() -> None:
        result.append(await mailbox.receive())

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive_one)
            await anyio.wait_all_tasks_blocked()
            await a.send(["paused"])
            await anyio.wait_all_tasks_blocked()
            assert result == []
            await b.send(["open"])
    assert result == [(1, ["open"])]
    assert a.statistics().queued == 1


# --------------------------------------------------------------------------------------------------------
# Wake-ups


@pytest.mark.parametrize("target", [0, 1, 2])
async def test_receive_waits_and_is_woken_by_a_send(target: int) -> None:
    channels = [Channel(1, f"c{i}") for i in range(3)]
    mailbox = Mailbox(channels)
    result: list[tuple[int, Any]] = []
    woken = anyio.Event()

    async def receive_one() -> None:
        result.append(await mailbox.receive())
        woken.set()

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive_one)
            await anyio.wait_all_tasks_blocked()
            assert result == []  # nothing to read: it waits
            await channels[target].send(["hello"])
            await woken.wait()
    assert result == [(target, ["hello"])]


@FAST
@given(count=st.integers(1, 3), messages=st.integers(1, 30))
async def test_a_receiver_waiting_on_empty_channels_never_misses_a_send(count: int, messages: int) -> None:
    # The receiver runs dry before each send, so every message needs a wake-up; a lost one would hang.
    channels = [Channel(1, f"c{i}") for i in range(count)]
    mailbox = Mailbox(channels)
    received: list[tuple[int, Any]] = []

    async def consume() -> None:
        for _ in range(messages):
            received.append(await mailbox.receive())

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for n in range(messages):
                await anyio.wait_all_tasks_blocked()
                assert len(received) == n  # the receiver is waiting on empty channels
                await channels[n % count].send([n])
    assert received == [(n % count, [n]) for n in range(messages)]


# --------------------------------------------------------------------------------------------------------
# Construction, ownership, statistics and reprs


@pytest.mark.parametrize("capacity", [0, -1, -100])
def test_a_channel_needs_room_for_a_message(capacity: int) -> None:
    with pytest.raises(ValueError, match=rf"capacity must be at least 1, got {capacity}"):
        Channel(capacity)


def test_a_channel_of_capacity_one_is_fine() -> None:
    assert Channel(1).statistics() == ChannelStatistics(0, 1, 0, 0, 0, 0)


def test_a_channel_cannot_feed_two_mailboxes() -> None:
    shared = Channel(2, "shared")
    Mailbox([shared])
    with pytest.raises(ValueError, match=r"<Channel shared .*> already feeds a mailbox"):
        Mailbox([shared])
    with pytest.raises(ValueError, match="already feeds a mailbox"):
        Mailbox([Channel(1, "fresh"), shared])


def test_a_channel_cannot_appear_twice_in_one_mailbox() -> None:
    twice = Channel(2, "twice")
    with pytest.raises(ValueError, match="already feeds a mailbox"):
        Mailbox([twice, twice])


def test_a_rejected_mailbox_does_not_claim_the_other_channels() -> None:
    shared = Channel(2, "shared")
    Mailbox([shared])
    fresh = Channel(2, "fresh")
    with pytest.raises(ValueError, match="already feeds a mailbox"):
        Mailbox([fresh, shared])
    # the failed construction must leave ``fresh`` free for the mailbox that is built instead
    mailbox = Mailbox([fresh])
    assert mailbox.channels == [fresh]


async def test_a_mailbox_lists_its_channels_by_index() -> None:
    channels = [Channel(1, f"c{i}") for i in range(3)]
    mailbox = Mailbox(channels)
    listed = mailbox.channels
    assert listed == channels
    listed.clear()  # a copy: the mailbox keeps its inputs
    assert mailbox.channels == channels
    await channels[1].send(["x"])
    assert await mailbox.receive() == (1, ["x"])


async def test_statistics_count_batches_records_and_the_high_water_mark() -> None:
    channel = Channel(5, "stats")
    mailbox = Mailbox([channel])
    await channel.send([1, 2, 3])
    await channel.send(Marker(0))
    await channel.send([4])
    await channel.send(END_OF_INPUT)
    assert channel.statistics() == ChannelStatistics(
        queued=4, capacity=5, max_queued=4, batches_sent=2, records_sent=4, max_batch=3
    )
    await mailbox.receive()
    await mailbox.receive()
    await channel.send([5, 6])
    stats = channel.statistics()
    assert (stats.queued, stats.max_queued) == (3, 4)  # the high-water mark stays
    assert (stats.batches_sent, stats.records_sent, stats.max_batch) == (3, 6, 3)
    with pytest.raises(AttributeError):
        stats.queued = 0  # type: ignore[misc]
    assert lg.ChannelStatistics is ChannelStatistics


async def test_reprs_show_the_state() -> None:
    a, b = Channel(3, "src-0"), Channel(2, "src-1")
    assert "src-0" in repr(a) and "0/3" in repr(a)
    mailbox = Mailbox([a, b])
    await a.send([1])
    await a.send([2])
    await b.send([3])
    assert "src-0" in repr(a) and "2/3" in repr(a)
    assert "src-1" in repr(b) and "1/2" in repr(b)
    mailbox.pause(1)
    text = repr(mailbox)
    assert "2 channels" in text and "3 queued" in text and "1 paused" in text
    await mailbox.receive()
    assert "1/3" in repr(a)
    assert "2 queued" in repr(mailbox)
    mailbox.resume(1)
    assert "0 paused" in repr(mailbox)


def test_end_of_input_is_a_single_control_event() -> None:
    assert isinstance(END_OF_INPUT, EndOfInput)
    assert isinstance(END_OF_INPUT, ControlEvent)
    assert repr(END_OF_INPUT) == "END_OF_INPUT"


async def test_mail_comes_before_queued_messages_and_wakes_a_waiting_receive() -> None:
    channel = Channel(4)
    mailbox = Mailbox([channel])
    await channel.send([1])
    mailbox.post("trigger")
    assert await mailbox.receive() == (MAIL, "trigger")
    assert await mailbox.receive() == (0, [1])
    assert "1 mail" not in repr(mailbox)

    async with anyio.create_task_group() as group:
        received: list[Any] = []

        async def receive() -> None:
            received.append(await mailbox.receive())

        group.start_soon(receive)
        await anyio.wait_all_tasks_blocked()
        mailbox.post("complete")
    assert received == [(MAIL, "complete")]
    assert mailbox.take_mail() is None
