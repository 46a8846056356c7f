"""Bounded channels from one producer subtask to one consumer subtask, and the mailbox that reads them.

A channel is a FIFO of messages, each a batch of records or a control event, so a record can never
overtake a control event on one channel. It holds at most ``capacity`` messages: a producer that finds
it full waits, which is how a slow consumer slows its producers (backpressure) and bounds memory.
Batches keep the cost of the hand-off per batch, not per record.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

import anyio

from lockgate.mailbox._events import Barrier, ControlEvent, Message


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of a channel's counters.

    Attributes:
        queued: Messages in the channel now.
        capacity: The most messages it holds.
        max_queued: The most messages it ever held at once.
        batches_sent: Batches of records sent through it.
        records_sent: Records sent through it.
        max_batch: The largest batch sent, in records.
    """

    queued: int
    capacity: int
    max_queued: int
    batches_sent: int
    records_sent: int
    max_batch: int


class Channel:
    """A bounded FIFO of messages from one producer to one :class:`Mailbox`."""

    __slots__ = (
        "_batches",
        "_blocked",
        "_blocked_since",
        "_mailbox",
        "_max_batch",
        "_max_queued",
        "_queue",
        "_records",
        "_space",
        "capacity",
        "name",
    )

    def __init__(self, capacity: int, name: str = "channel") -> None:
        if capacity < 1:
            raise ValueError(f"a channel's capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._queue: deque[Message] = deque()
        self._mailbox: Mailbox | None = None
        self._space: anyio.Event | None = None
        self._max_queued = 0
        self._batches = 0
        self._records = 0
        self._max_batch = 0
        self._blocked = 0.0  # seconds the producer waited for room, the wait under way aside
        self._blocked_since: float | None = None

    def __repr__(self) -> str:
        return f"<Channel {self.name} [{len(self._queue)}/{self.capacity} queued]>"

    async def send(self, message: Message) -> None:
        """Append ``message``, waiting while the channel is full. A batch must not be empty."""
        queue = self._queue
        if len(queue) >= self.capacity:
            await self._wait_for_space()
        queue.append(message)
        if len(queue) > self._max_queued:
            self._max_queued = len(queue)
        if not isinstance(message, ControlEvent):
            size = len(message)
            self._batches += 1
            self._records += size
            if size > self._max_batch:
                self._max_batch = size
        mailbox = self._mailbox
        if mailbox is not None and mailbox._wakeup is not None:
            mailbox._wakeup.set()

    async def wait_for_room(self) -> None:
        """Wait until the channel holds fewer than ``capacity`` messages. Cancel-safe: it changes nothing
        but :attr:`blocked_seconds`."""
        if len(self._queue) >= self.capacity:
            await self._wait_for_space()

    def blocked_seconds(self, now: float) -> float:
        """How long the producer has waited for room in all until ``now`` (``time.perf_counter()``),
        a wait under way included: the channel's backpressure."""
        since = self._blocked_since
        return self._blocked if since is None else self._blocked + now - since

    async def _wait_for_space(self) -> None:
        started = self._blocked_since = time.perf_counter()
        try:
            while len(self._queue) >= self.capacity:
                # One producer per channel, so one waiter at most.
                self._space = anyio.Event()
                await self._space.wait()
        finally:
            self._blocked_since = None
            self._blocked += time.perf_counter() - started

    def overtake(self, checkpoint_id: int) -> int:
        """Put barrier ``checkpoint_id`` ahead of the batches queued behind the last barrier, at
        once, even if the channel is full; return how many batches it overtook.

        A barrier never overtakes another barrier, nor the batches an earlier barrier still queued
        overtook (those belong before both), so barriers keep their order. It does overtake the
        end of input: a producer that has finished stays able to checkpoint what it sent before its
        end, while the consumer drains it. The overtaken batches still belong before the barrier: the
        barrier carries their count (:attr:`Barrier.overtaken`, the end of input not counted) so the
        consumer can tell them apart.
        """
        queue = self._queue
        position = len(queue)
        overtaken = 0
        while position and not isinstance(queue[position - 1], Barrier):
            position -= 1
            if not isinstance(queue[position], ControlEvent):
                overtaken += 1
        if position:  # behind the batches an earlier barrier overtook: they must stay right after it
            earlier = queue[position - 1]
            assert isinstance(earlier, Barrier)
            position += earlier.overtaken
            overtaken -= earlier.overtaken
        queue.insert(position, Barrier(checkpoint_id, overtaken))
        if len(queue) > self._max_queued:
            self._max_queued = len(queue)
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox._overtaken = True
            if mailbox._wakeup is not None:
                mailbox._wakeup.set()
        return overtaken

    def _take(self) -> Message:
        message = self._queue.popleft()
        space = self._space
        if space is not None:
            self._space = None
            space.set()
        return message

    def statistics(self) -> ChannelStatistics:
        """The channel's counters now."""
        return ChannelStatistics(
            queued=len(self._queue),
            capacity=self.capacity,
            max_queued=self._max_queued,
            batches_sent=self._batches,
            records_sent=self._records,
            max_batch=self._max_batch,
        )


#: The channel index :meth:`Mailbox.receive` reports for mail.
MAIL: Final = -1


class Mailbox:
    """The inbox of one actor: reads its input channels one message at a time.

    Channels are read round-robin, so no input starves another. A channel can be paused with
    :meth:`pause` (barrier alignment holds an input that delivered a barrier) and resumed later;
    messages wait in a paused channel, in order, and its producer feels the backpressure.

    Mail (:meth:`post`) is what others ask of the actor (trigger a checkpoint, a checkpoint is
    complete): it comes before any channel's messages, so the actor handles it between two messages,
    never in the middle of one.

    A barrier that overtook (:meth:`Channel.overtake`) is as urgent: once it heads its channel, it
    comes before the other channels' messages, whoever's turn it is, so an unaligned checkpoint does
    not wait for a batch of another input. Order within each channel never changes.
    """

    def __init__(self, channels: list[Channel]) -> None:
        for position, channel in enumerate(channels):
            if channel._mailbox is not None or channel in channels[:position]:
                raise ValueError(f"{channel!r} already feeds a mailbox")
        for channel in channels:  # claimed only once all are known to be free
            channel._mailbox = self
        self._channels = channels
        self._paused = [False] * len(channels)
        self._next = 0
        self._wakeup: anyio.Event | None = None
        self._mail: deque[Any] = deque()
        self._overtaken = False  # a barrier overtook into a channel, and may head it now
        self._waited = 0.0  # seconds receive() waited for anything to come, the wait under way aside
        self._waiting_since: float | None = None

    def __repr__(self) -> str:
        queued = sum(len(c._queue) for c in self._channels)
        paused = sum(self._paused)
        mail = f", {len(self._mail)} mail" if self._mail else ""
        return f"<Mailbox [{len(self._channels)} channels, {queued} queued, {paused} paused{mail}]>"

    def post(self, letter: Any) -> None:
        """Queue ``letter`` for the actor; :meth:`receive` hands it out before any message."""
        self._mail.append(letter)
        if self._wakeup is not None:
            self._wakeup.set()

    def take_mail(self) -> Any | None:
        """The oldest mail, or None if there is none."""
        return self._mail.popleft() if self._mail else None

    @property
    def channels(self) -> list[Channel]:
        """The input channels, by index."""
        return list(self._channels)

    def peek_batches(self, index: int, count: int) -> list[list[Any]]:
        """The first ``count`` batches queued in channel ``index``, left where they are; control events
        between them are passed over (a barrier that overtook them while an earlier one, already taken,
        was being handled sits ahead of them)."""
        batches = (message for message in self._channels[index]._queue if isinstance(message, list))
        return list(islice(batches, count))

    def waited_seconds(self, now: float) -> float:
        """How long :meth:`receive` has waited for anything to come, in all, until ``now``
        (``time.perf_counter()``), a wait under way included: the reader's idle time."""
        since = self._waiting_since
        return self._waited if since is None else self._waited + now - since

    def pause(self, index: int) -> None:
        """Stop reading channel ``index`` until :meth:`resume`."""
        self._paused[index] = True

    def resume(self, index: int) -> None:
        """Read channel ``index`` again."""
        self._paused[index] = False
        if self._wakeup is not None and self._channels[index]._queue:
            self._wakeup.set()

    def _heading_barrier(self) -> int | None:
        """The index of an unpaused channel that a barrier heads, if any; once there is none, overtaken
        barriers are no longer looked for (until the next one)."""
        for index, channel in enumerate(self._channels):
            queue = channel._queue
            if queue and not self._paused[index] and isinstance(queue[0], Barrier):
                return index
        self._overtaken = False
        return None

    async def receive(self) -> tuple[int, Any]:
        """The next mail as ``(MAIL, letter)``, else the next message of any unpaused channel with the
        channel's index; waits for one."""
        channels = self._channels
        paused = self._paused
        count = len(channels)
        while True:
            if self._mail:
                return MAIL, self._mail.popleft()
            if self._overtaken:
                urgent = self._heading_barrier()
                if urgent is not None:
                    return urgent, channels[urgent]._take()
            start = self._next
            for step in range(count):
                index = (start + step) % count
                if not paused[index] and channels[index]._queue:
                    self._next = (index + 1) % count
                    return index, channels[index]._take()
            # Nothing runs between the scan and here (no await), so no send can be missed.
            self._wakeup = anyio.Event()
            started = self._waiting_since = time.perf_counter()
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
                self._waiting_since = None
                self._waited += time.perf_counter() - started
