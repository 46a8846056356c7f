"""The two ends of a channel whose messages cross a transport that may reorder or repeat them.

Between processes (subtasks in Ray actors) a channel's messages travel as calls, and calls to an
async actor may arrive in any order, even from one caller; a call retried after a lost answer may
arrive twice. The sender numbers each message and sends only as far as the receiver has granted room
(credit-based backpressure: at most the receiver's capacity is ever in flight or held); the receiver
puts them back in order, drops repeats, and grants more room as its consumer takes messages.

Credit travels back as a high-water mark ("you may send up to, not including, message n"), so grants
too may arrive late, out of order or twice: the sender keeps the highest. Neither end does any I/O:
the runner moves the numbered messages and the grants.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import anyio

M = TypeVar("M")


class SequencedSender:
    """Numbers a channel's outgoing messages and holds the producer back while the receiver has
    granted no room.

    Args:
        capacity: How many messages the receiver holds: the room it grants at the start.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a channel's capacity must be at least 1, got {capacity}")
        self._next = 0
        self._granted = capacity
        self._room: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<SequencedSender [sent {self._next}, granted up to {self._granted}]>"

    @property
    def sent(self) -> int:
        """How many messages have been numbered (the next one's number)."""
        return self._next

    @property
    def granted(self) -> int:
        """The number of the first message the receiver has not granted room for yet."""
        return self._granted

    async def number(self) -> int:
        """The number of the next message, once the receiver has granted room for it (waits until
        then: this is the channel's backpressure)."""
        await self.wait_for_room()
        return self.take_number()

    @property
    def has_room(self) -> bool:
        """Whether the receiver has granted room for the next message."""
        return self._next < self._granted

    async def wait_for_room(self) -> None:
        """Wait until the receiver has granted room for the next message (cancel-safe; one waiter)."""
        while self._next >= self._granted:
            self._room = anyio.Event()
            await self._room.wait()

    def take_number(self, *, beyond_room: bool = False) -> int:
        """The number of the next message, now: there must be room for it, unless ``beyond_room``
        (a priority message, such as an unaligned barrier, which must not wait behind the
        backpressure it overtakes; the receiver takes it as such, and later messages wait for the
        room it used)."""
        if not (beyond_room or self._next < self._granted):
            raise ValueError(f"no room granted for message {self._next} (up to {self._granted})")
        number = self._next
        self._next += 1
        return number

    def grant(self, up_to: int) -> None:
        """The receiver may take messages up to, not including, ``up_to``. Grants are high-water
        marks: one lower than what is known (late, or repeated) changes nothing."""
        if up_to > self._granted:
            self._granted = up_to
            room, self._room = self._room, None
            if room is not None:
                room.set()


class SequencedReceiver(Generic[M]):
    """Puts a channel's numbered messages back in order, drops repeats, and tells how much room to
    grant the sender.

    Args:
        capacity: How many messages it holds at most, out of order or waiting for the consumer:
            the sender never has more than this many beyond what the consumer has taken.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a channel's capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._next = 0  # the number of the next message to hand on, in order
        self._taken = 0  # how many the consumer has taken
        self._early: dict[int, M] = {}  # arrived ahead of their turn

    def __repr__(self) -> str:
        return f"<SequencedReceiver [next {self._next}, {len(self._early)} early, taken {self._taken}]>"

    def accept(self, number: int, message: M, *, beyond_room: bool = False) -> list[M]:
        """Take message ``number`` as it arrived; return the messages now in order, oldest first
        (none if it came early, or was a repeat). ``beyond_room``: the sender sent it as a priority
        message, without waiting for room (:meth:`SequencedSender.take_number`).

        Raises:
            ValueError: The sender sent beyond the room granted to it (a bug in the sender).
        """
        if number < self._next or number in self._early:
            return []  # a repeat of one handed on or held already
        if number >= self._taken + self.capacity and not beyond_room:
            raise ValueError(
                f"message {number} is beyond the room granted (up to {self._taken + self.capacity}): "
                "the sender did not wait for credit"
            )
        self._early[number] = message
        ready: list[M] = []
        while self._next in self._early:
            ready.append(self._early.pop(self._next))
            self._next += 1
        return ready

    def taken(self, count: int = 1) -> int:
        """The consumer has taken ``count`` more of the messages handed on; return the grant to send
        back (the room up to which the sender may now send)."""
        if self._taken + count > self._next:
            raise ValueError(f"taken {self._taken + count} messages, but only {self._next} were handed on")
        self._taken += count
        return self.grant()

    def grant(self) -> int:
        """The room the sender has now: up to, not including, this message number."""
        return self._taken + self.capacity

    @property
    def pending(self) -> dict[int, Any]:
        """The messages that came early, by number (a copy)."""
        return dict(self._early)
