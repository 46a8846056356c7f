"""The two ends of a channel between subtasks in different Ray actors.

A channel's messages (batches and control events, in order) travel in frames: the producer's end
gathers messages until a frame holds ``frame_records`` records, a control event comes, or the frame has
waited ``linger`` seconds, and sends it as one pickled call; a call costs about half a millisecond
however small it is, so frames, not batches, must cross. Frames are numbered and sent only into the
room the consumer granted (:class:`~lockgate.mailbox.SequencedSender`): Ray may deliver calls out of
order, and the consumer's backpressure must reach the producer. The consumer's end puts frames back
in order and appends their messages to a local :class:`~lockgate.mailbox.Channel` its mailbox reads,
so alignment, watermarks and the end of input run exactly as in the local runner; it grants more room
as the mailbox takes the frames' messages.

An unaligned barrier cannot wait for room: it goes at once, beyond the granted room, in a frame of its
own with the messages the producer had not sent yet, and at the consumer it overtakes what is queued
there (:meth:`Channel.overtake`), as in the local runner. It arrives after the frames sent before it,
which are already on their way (never held back by backpressure: they were sent into granted room).
"""

from __future__ import annotations

import pickle
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle

from lockgate._errors import LockgateError
from lockgate.mailbox import (
    Barrier,
    Channel,
    ChannelStatistics,
    ControlEvent,
    Message,
    SequencedReceiver,
    SequencedSender,
)


class FrameError(LockgateError):
    """A frame of records could not be pickled or unpickled between two subtasks."""


class Overtake:
    """The last entry of a frame sent for an unaligned barrier: barrier ``checkpoint_id`` overtakes
    what is queued at the consumer (the frame's messages included)."""

    __slots__ = ("checkpoint_id",)

    def __init__(self, checkpoint_id: int) -> None:
        self.checkpoint_id = checkpoint_id

    def __reduce__(self) -> tuple[Any, ...]:
        return Overtake, (self.checkpoint_id,)


#: A frame as it travels: its messages (an :class:`Overtake` last, for an unaligned barrier) and the
#: snapshot target of each barrier in it, by checkpoint id (a subtask downstream learns from it where
#: its part of the checkpoint goes).
Frame = tuple[list[Any], dict[int, Any]]


def encode_frame(frame: Frame, channel: str) -> bytes:
    """``frame`` as bytes: by pickle, or by cloudpickle for records of classes that pickle cannot name
    in another process (defined in ``__main__`` or a notebook, or locally)."""
    try:
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        data = b""
    if data and b"__main__" not in data:
        return data
    try:  # cloudpickle sends such classes by value; it is slower, so it is the second choice
        return bytes(cloudpickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise FrameError(
            f"the records sent on channel {channel} cannot be pickled ({type(exc).__name__}: {exc}); records "
            "that cross between Ray actors must be picklable"
        ) from exc


def decode_frame(data: bytes, channel: str) -> Frame:
    """The frame ``data`` holds.

    Raises:
        FrameError: It cannot be unpickled here; the message says what is missing.
    """
    try:
        frame: Frame = pickle.loads(data)
    except Exception as exc:
        raise FrameError(
            f"the records that came on channel {channel} cannot be unpickled in this Ray worker "
            f"({type(exc).__name__}: {exc}); the modules that define the records' classes must be "
            "importable on every worker (install them there, or pass them in Ray's runtime_env)"
        ) from exc
    return frame


#: Ray passes a call's arguments up to this size (``max_direct_call_object_size``) in the call itself,
#: from worker to worker; larger ones go through its object store, a slower path.
INLINE_BYTES = 100 * 1024


class RemoteOutputChannel:
    """The producer's end of a channel to a subtask in another Ray actor; an edge output sends into it
    as into a local :class:`Channel`.

    Frames hold up to ``frame_records`` records, fewer if that many would not fit in a call
    (:data:`INLINE_BYTES`): the channel learns from the size of the frames it sends.

    Args:
        name: The channel's name (``"<uid>[<i>]-><uid>[<j>]"``).
        capacity: How many frames the consumer holds: the room it grants at the start.
        frame_records: The most records a frame holds; it is sent once it holds this many.
        push: Sends frame number n and returns its size in bytes: ``push(n, messages, priority)``.
    """

    def __init__(
        self, name: str, capacity: int, frame_records: int, push: Callable[[int, list[Any], bool], int]
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._most_records = frame_records
        self._frame_records = frame_records  # what fits in a call, as far as the channel knows
        self._push = push
        self._sender = SequencedSender(capacity)
        self._buffer: list[Any] = []
        self._records = 0  # records in the buffer
        self.buffered_since = 0.0  # when the buffer's first message came (time.monotonic())
        self._blocked = 0.0
        self._blocked_since: float | None = None
        self._batches = 0
        self._records_sent = 0
        self._max_batch = 0

    def __repr__(self) -> str:
        return f"<RemoteOutputChannel {self.name} [{len(self._buffer)} buffered, {self._sender!r}]>"

    async def send(self, message: Message) -> None:
        """Add ``message`` to the frame being gathered; send the frame if it is full or ``message``
        is a control event (waiting for room: backpressure)."""
        buffer = self._buffer
        if not buffer:
            self.buffered_since = time.monotonic()
        buffer.append(message)
        if isinstance(message, ControlEvent):
            await self.flush()
            return
        size = len(message)
        self._batches += 1
        self._records_sent += size
        if size > self._max_batch:
            self._max_batch = size
        self._records += size
        if self._records >= self._frame_records:
            await self.flush()

    async def wait_for_room(self) -> None:
        """Wait until a message can be added without waiting: the frame is not full, or has been sent
        (cancel-safe)."""
        if self._records >= self._frame_records:
            await self.flush()

    async def flush(self) -> None:
        """Send what is gathered, once the consumer has granted room for it."""
        while self._buffer:
            if not self._sender.has_room:
                await self._wait_for_room()
                continue
            self._send_now()

    def flush_if_waited(self, since: float) -> None:
        """Send what is gathered if it has waited since before ``since`` and there is room now."""
        if self._buffer and self.buffered_since <= since and self._sender.has_room:
            self._send_now()

    async def _wait_for_room(self) -> None:
        started = self._blocked_since = time.perf_counter()
        try:
            await self._sender.wait_for_room()
        finally:
            self._blocked_since = None
            self._blocked += time.perf_counter() - started

    def _send_now(self, overtake: int | None = None) -> None:
        messages, records, self._buffer, self._records = self._buffer, self._records, [], 0
        if overtake is not None:
            messages.append(Overtake(overtake))
        number = self._sender.take_number(beyond_room=overtake is not None)
        size = self._push(number, messages, overtake is not None)
        if records:
            self._fit(records, size)

    def _fit(self, records: int, size: int) -> None:
        """Aim the next frames at three quarters of :data:`INLINE_BYTES`, from a frame of ``records``
        records that took ``size`` bytes."""
        target = INLINE_BYTES * 3 // 4
        if size > INLINE_BYTES:
            self._frame_records = max(1, records * target // size)
        elif size < target // 2 and records >= self._frame_records:  # a full frame, well under
            self._frame_records = min(self._most_records, self._frame_records * 2)

    def grant(self, up_to: int) -> None:
        """The consumer grants room up to, not including, frame ``up_to``."""
        self._sender.grant(up_to)

    def overtake(self, checkpoint_id: int) -> int:
        """Send unaligned barrier ``checkpoint_id`` now, without waiting for room, after what is
        gathered; at the consumer it overtakes whatever is queued. Returns 0: what it overtakes is
        counted where it is queued, at the consumer."""
        self._send_now(overtake=checkpoint_id)
        return 0

    def blocked_seconds(self, now: float) -> float:
        """How long the producer has waited for room in all until ``now``, a wait under way included."""
        since = self._blocked_since
        return self._blocked if since is None else self._blocked + now - since

    def statistics(self) -> ChannelStatistics:
        """The producer's counters: ``queued`` is what it gathered and has not sent yet."""
        return ChannelStatistics(
            queued=len(self._buffer),
            capacity=self.capacity,
            max_queued=len(self._buffer),
            batches_sent=self._batches,
            records_sent=self._records_sent,
            max_batch=self._max_batch,
        )


class RemoteInputChannel(Channel):
    """The consumer's end of a channel from a subtask in another Ray actor: a local channel its mailbox
    reads, filled frame by frame in order, granting room as the mailbox takes the frames' messages.

    Args:
        capacity: How many frames it holds at most (besides an unaligned barrier's).
        name: The channel's name.
        grant: Sends the producer a grant: ``grant(up_to)``.
    """

    __slots__ = ("_frames", "_grant", "_grant_every", "_granted", "receiver")

    def __init__(self, capacity: int, name: str, grant: Callable[[int], None]) -> None:
        super().__init__(capacity, name)
        self.receiver: SequencedReceiver[bytes] = SequencedReceiver(capacity)
        self._frames: deque[int] = deque()  # how many messages of each frame are still queued
        self._grant = grant
        self._grant_every = max(1, capacity // 2)  # grants are calls too: not one per frame
        self._granted = self.receiver.grant()

    def deliver(self, messages: list[Any]) -> None:
        """Queue the messages of the next frame in order (an :class:`Overtake` last: its barrier goes
        ahead of what is queued)."""
        overtake = messages.pop() if messages and type(messages[-1]) is Overtake else None
        queue = self._queue
        queue.extend(messages)
        for message in messages:
            if not isinstance(message, ControlEvent):
                size = len(message)
                self._batches += 1
                self._records += size
                if size > self._max_batch:
                    self._max_batch = size
        count = len(messages)
        if overtake is not None:
            self.overtake(overtake.checkpoint_id)
            count += 1
        if len(queue) > self._max_queued:
            self._max_queued = len(queue)
        if count:
            self._frames.append(count)
        else:  # nothing to take: the frame is done with
            self._frame_taken()
        mailbox = self._mailbox
        if mailbox is not None and mailbox._wakeup is not None:
            mailbox._wakeup.set()

    def _take(self) -> Message:
        message = self._queue.popleft()
        frames = self._frames
        frames[0] -= 1
        if not frames[0]:
            frames.popleft()
            self._frame_taken()
        return message

    def _frame_taken(self) -> None:
        up_to = self.receiver.taken(1)
        if up_to - self._granted >= self._grant_every:
            self._granted = up_to
            self._grant(up_to)


def barrier_ids(messages: list[Any]) -> list[int]:
    """The checkpoint ids of the barriers among ``messages`` (an unaligned one's included)."""
    return [m.checkpoint_id for m in messages if type(m) is Barrier or type(m) is Overtake]
