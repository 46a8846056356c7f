"""The ends of a channel across a transport that reorders and repeats (the Ray runner's channels):
whatever the transport does, the consumer gets every message once, in order, and no more than the
receiver's capacity is ever beyond what the consumer has taken."""

from __future__ import annotations

from collections import deque

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.mailbox import SequencedReceiver, SequencedSender

pytestmark = pytest.mark.anyio


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(0, 40),
    capacity=st.integers(1, 6),
    data=st.data(),
)
async def test_any_reordering_and_repetition_delivers_each_message_once_in_order(
    count: int, capacity: int, data: st.DataObject
) -> None:
    sender = SequencedSender(capacity)
    receiver: SequencedReceiver[str] = SequencedReceiver(capacity)
    in_transit: list[tuple[int, str]] = []  # messages on their way, in no order
    grants_in_transit: list[int] = []
    handed_on: deque[str] = deque()  # in order, waiting for the consumer
    consumed: list[str] = []
    highest = capacity  # the highest grant delivered: what the sender may send up to
    actions = ["send", "deliver", "repeat", "take", "grant", "repeat grant"]
    while len(consumed) < count:
        action = data.draw(st.sampled_from(actions))
        if action == "send" and sender.sent < count and sender.sent < sender.granted:
            number = await sender.number()  # room granted: it does not wait
            in_transit.append((number, f"message {number}"))
        elif action in ("deliver", "repeat") and in_transit:
            index = data.draw(st.integers(0, len(in_transit) - 1))
            number, message = in_transit[index] if action == "repeat" else in_transit.pop(index)
            handed_on.extend(receiver.accept(number, message))
        elif action == "take" and handed_on:
            consumed.append(handed_on.popleft())
            grants_in_transit.append(receiver.taken())
        elif action in ("grant", "repeat grant") and grants_in_transit:
            index = data.draw(st.integers(0, len(grants_in_transit) - 1))
            grant = grants_in_transit[index] if action == "repeat grant" else grants_in_transit.pop(index)
            sender.grant(grant)
            highest = max(highest, grant)
            assert sender.granted == highest  # a late or repeated grant takes no room back
        else:  # what was drawn cannot happen now: let things move in a fair order
            if sender.sent < count and sender.sent < sender.granted:
                number = await sender.number()
                in_transit.append((number, f"message {number}"))
            elif in_transit:
                handed_on.extend(receiver.accept(*in_transit.pop(0)))
            elif handed_on:
                consumed.append(handed_on.popleft())
                grants_in_transit.append(receiver.taken())
            else:
                highest = max(highest, grants_in_transit[0])
                sender.grant(grants_in_transit.pop(0))
        # Never more than the capacity beyond what the consumer has taken.
        assert sender.sent - len(consumed) <= capacity
        assert len(receiver.pending) + len(handed_on) <= capacity
    sent = [f"message {number}" for number in range(count)]
    assert consumed == sent


async def test_the_sender_waits_for_room_and_a_grant_lets_it_go_on() -> None:
    sender = SequencedSender(2)
    assert [await sender.number(), await sender.number()] == [0, 1]
    numbered: list[int] = []

    async def third() -> None:
        numbered.append(await sender.number())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(third)
            await anyio.lowlevel.checkpoint()
            assert numbered == []  # no room: it waits
            sender.grant(2)  # a late grant, lower than what is known, changes nothing
            await anyio.lowlevel.checkpoint()
            assert numbered == []
            sender.grant(3)
    assert numbered == [2]


def test_a_sender_beyond_its_credit_and_a_consumer_beyond_what_came_are_refused() -> None:
    receiver: SequencedReceiver[str] = SequencedReceiver(2)
    assert receiver.accept(1, "b") == []  # early: held
    assert receiver.accept(0, "a") == ["a", "b"]
    with pytest.raises(ValueError, match=r"beyond the room granted \(up to 2"):
        receiver.accept(2, "c")
    assert receiver.taken() == 3
    assert receiver.accept(2, "c") == ["c"]
    with pytest.raises(ValueError, match="taken 4 messages, but only 3 were handed on"):
        receiver.taken(3)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        SequencedSender(0)
