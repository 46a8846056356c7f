"""Where a subtask's outputs go: one router per subtask, one edge output per outgoing job edge."""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Any

from lockgate.actors._failure import OperatorFailure
from lockgate.functions import OutputTag
from lockgate.mailbox import Channel, ControlEvent, StampedBatch
from lockgate.state import key_group_owners, stable_key_hash


class EdgeOutput:
    """Sends batches to the channels of one edge; batches larger than ``batch_size`` are split."""

    def __init__(self, channels: list[Channel], batch_size: int) -> None:
        self.channels = channels
        self.batch_size = batch_size

    async def _send(self, channel: Channel, batch: list[Any]) -> None:
        size = self.batch_size
        if len(batch) <= size:
            await channel.send(batch)
        else:
            for start in range(0, len(batch), size):
                await channel.send(batch[start : start + size])

    async def emit(self, batch: list[Any]) -> None:
        """Send a non-empty batch of records."""
        raise NotImplementedError

    async def emit_event(self, event: ControlEvent) -> None:
        """Send a control event to every channel of the edge."""
        for channel in self.channels:
            await channel.send(event)

    async def wait_for_room(self) -> None:
        """Wait until every channel of the edge has room for a message."""
        for channel in self.channels:
            await channel.wait_for_room()

    def overtake(self, checkpoint_id: int) -> None:
        """Put an unaligned barrier ahead of what is queued in every channel of the edge."""
        for channel in self.channels:
            channel.overtake(checkpoint_id)


class ForwardOutput(EdgeOutput):
    async def emit(self, batch: list[Any]) -> None:
        await self._send(self.channels[0], batch)


class BroadcastOutput(EdgeOutput):
    async def emit(self, batch: list[Any]) -> None:
        for channel in self.channels:  # one list shared by all: records are never mutated downstream
            await self._send(channel, batch)


class RebalanceOutput(EdgeOutput):
    """Round-robin by record, continuing where the last batch stopped."""

    def __init__(self, channels: list[Channel], batch_size: int, start: int) -> None:
        super().__init__(channels, batch_size)
        self._next = start % len(channels)

    async def emit(self, batch: list[Any]) -> None:
        count = len(self.channels)
        first = self._next
        for offset in range(min(count, len(batch))):
            await self._send(self.channels[(first + offset) % count], batch[offset::count])
        self._next = (first + len(batch)) % count


class KeyGroupOutput(EdgeOutput):
    """Each record goes to the owner of its key's key group."""

    def __init__(
        self,
        channels: list[Channel],
        batch_size: int,
        key_selector: Callable[[Any], Any],
        max_parallelism: int,
        operator_uid: str = "",
    ) -> None:
        super().__init__(channels, batch_size)
        self._key_selector = key_selector
        self._max_parallelism = max_parallelism
        self._owners = key_group_owners(max_parallelism, len(channels))
        self._operator_uid = operator_uid  # the keyed operator the key selector belongs to
        self._emitted = 0

    async def emit(self, batch: list[Any]) -> None:
        channels = self.channels
        if len(channels) == 1:
            await self._send(channels[0], batch)
            return
        buckets: list[list[Any]] = [[] for _ in channels]
        appends = [bucket.append for bucket in buckets]
        owners, max_parallelism, key_of = self._owners, self._max_parallelism, self._key_selector
        stamped = type(batch) is StampedBatch
        try:
            if stamped:  # records with their timestamps, as pairs
                for pair in zip(batch, batch.timestamps, strict=True):  # type: ignore[attr-defined]
                    appends[owners[stable_key_hash(key_of(pair[0])) % max_parallelism]](pair)
            else:
                for record in batch:
                    appends[owners[stable_key_hash(key_of(record)) % max_parallelism]](record)
        except Exception as exc:
            index = sum(map(len, buckets))  # the records before it were placed
            exc.add_note(
                f"the key selector of operator {self._operator_uid!r} raised on the record "
                f"{reprlib.repr(batch[index])}, number {self._emitted + index + 1} this subtask sent it"
            )
            raise OperatorFailure(self._operator_uid) from exc
        self._emitted += len(batch)
        for channel, bucket in zip(channels, buckets, strict=True):
            if bucket:
                if stamped:
                    bucket = StampedBatch([record for record, _ in bucket], [ts for _, ts in bucket])
                await self._send(channel, bucket)


class OutputRouter:
    """All outputs of one subtask: the edges of its main output, and of the side outputs that have
    consumers, by (operator uid, tag). Control events go along all of them."""

    def __init__(
        self, main: list[EdgeOutput], side: dict[tuple[str, OutputTag], list[EdgeOutput]] | None = None
    ) -> None:
        self.main = main
        self.side = side or {}
        self.edges = main + [edge for edges in self.side.values() for edge in edges]

    async def emit(self, batch: list[Any]) -> None:
        """Send a non-empty batch along every edge of the main output."""
        for edge in self.main:
            await edge.emit(batch)

    async def emit_side(self, uid: str, tag: OutputTag, batch: list[Any]) -> None:
        """Send a non-empty batch of operator ``uid``'s side output ``tag`` to its consumers (none: it
        is dropped, as a stream nobody reads)."""
        for edge in self.side.get((uid, tag), ()):
            await edge.emit(batch)

    async def emit_event(self, event: ControlEvent) -> None:
        """Send a control event to every downstream channel."""
        for edge in self.edges:
            await edge.emit_event(event)

    async def wait_for_room(self) -> None:
        """Wait until every downstream channel has room for a message (cancel-safe)."""
        for edge in self.edges:
            await edge.wait_for_room()

    def overtake(self, checkpoint_id: int) -> None:
        """Send barrier ``checkpoint_id`` unaligned: ahead of what is queued in every downstream
        channel, without waiting for room (see :meth:`Channel.overtake`)."""
        for edge in self.edges:
            edge.overtake(checkpoint_id)
