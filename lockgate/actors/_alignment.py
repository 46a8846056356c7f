"""Barriers at a subtask with input channels, in the three modes: aligned (exactly-once), unaligned
(exactly-once with barriers overtaking queued records, and in-flight records stored), and at-least-once
(inputs never held). Savepoints are aligned in every mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from lockgate._config import CheckpointingMode
from lockgate.actors._channel_state import ChannelStateRecording
from lockgate.mailbox import AlignmentTimedOut, Barrier

if TYPE_CHECKING:
    from lockgate.actors._actor import SubtaskActor


@dataclass
class BarrierProgress:
    """Where one checkpoint stands at a subtask with input channels, in exactly-once mode.

    Aligned, a channel has *delivered* the barrier once the barrier and every batch it overtook have
    been taken, and it is paused until all channels have. Unaligned, the snapshot is taken at once,
    nothing is paused, and the channel state is recorded: batches as they are taken from a channel
    whose barrier has not come yet, and the batches a barrier overtook as soon as the barrier is taken
    (they are still queued, and processed later as usual); a channel has delivered the barrier then.
    """

    checkpoint_id: int
    started: float
    savepoint: bool  # aligned whatever the mode
    delivered: set[int] = field(default_factory=set)
    # Channels whose barrier came ahead of batches still to take: how many of them remain.
    overtaken: dict[int, int] = field(default_factory=dict)
    unaligned: bool = False  # the snapshot is taken and the barrier passed on, before all delivered it
    recording: ChannelStateRecording | None = None  # None if unaligned but aborted meanwhile
    timer: anyio.CancelScope | None = None  # the alignment timer, with aligned_timeout


class BarrierAlignment:
    """The barriers of one subtask actor's input channels: when to take its part of a checkpoint, which
    inputs to hold meanwhile, and what to record as channel state.

    Attributes:
        progress: Exactly-once: the checkpoint whose barriers are on their way in, if any. The actor's
            loop reads it for every batch, to tell a batch that precedes the barrier.
    """

    def __init__(self, actor: SubtaskActor) -> None:
        self.actor = actor
        self.progress: BarrierProgress | None = None
        self.ended: set[int] = set()  # channels whose producer ended: they deliver every later barrier
        # At-least-once: the channels that delivered each checkpoint's barrier, and since when.
        self._tracked: dict[int, tuple[set[int], float]] = {}

    def describe(self) -> str:
        progress = self.progress
        if progress is None:
            return ""
        doing = "recording" if progress.unaligned else "aligning"
        delivered = len(progress.delivered | self.ended)
        return f" | barrier {progress.checkpoint_id} {doing} {delivered}/{len(self.actor.mailbox.channels)}"

    async def on_barrier(self, index: int, barrier: Barrier) -> None:
        actor = self.actor
        checkpoint_id = barrier.checkpoint_id
        savepoint = barrier.savepoint  # aligned in every mode: a restored job must not see a record twice
        if actor.runtime.mode is not CheckpointingMode.EXACTLY_ONCE and not savepoint:
            await self._track_barrier(index, checkpoint_id)
            return
        progress = self.progress
        if progress is None or checkpoint_id > progress.checkpoint_id:
            if checkpoint_id <= actor.snapshots.last_checkpoint:
                return  # a checkpoint this subtask has passed on already
            if progress is not None:  # a newer barrier: the older checkpoint cannot complete
                await self._give_up(progress, f"barrier {checkpoint_id} overtook it")
            progress = self.progress = BarrierProgress(checkpoint_id, time.perf_counter(), savepoint)
            if actor.runtime.unaligned and not savepoint:
                timeout = actor.runtime.aligned_timeout
                if timeout is None:
                    await self._unalign(progress)
                else:
                    progress.timer = self._start_alignment_timer(checkpoint_id, timeout)
        elif checkpoint_id < progress.checkpoint_id:
            return  # the barrier of a checkpoint already given up
        if barrier.overtaken and not progress.unaligned:
            # The batches it overtook still come first: the channel delivers the barrier after them.
            progress.overtaken[index] = barrier.overtaken
        else:
            self._record_queued(progress, index, barrier.overtaken)
            self._deliver(progress, index)
        await self._check_delivered()

    async def on_end_of_channel(self, index: int) -> None:
        """Channel ``index`` has ended: it counts as having delivered every barrier still to come."""
        self.ended.add(index)
        if self.progress is not None:
            await self._check_delivered()
        if self._tracked:
            await self._check_tracked()

    async def on_timeout(self, letter: AlignmentTimedOut) -> None:
        """The alignment timer fired: a checkpoint still aligning is taken unaligned now."""
        progress = self.progress
        if progress is not None and progress.checkpoint_id == letter.checkpoint_id and not progress.unaligned:
            await self._unalign(progress)
            await self._check_delivered()

    def _record_queued(self, progress: BarrierProgress, index: int, count: int) -> None:
        """Record the next ``count`` batches queued in channel ``index``: they precede the barrier
        (which overtook them) but come after the snapshot. They stay queued, to be processed as usual.
        A newer barrier may have overtaken them meanwhile (while this one was handled, the producer
        ran); it sits ahead of them and is passed over."""
        if progress.recording is not None and count:
            input_index = self.actor.channel_inputs[index]
            batches = self.actor.mailbox.peek_batches(index, count)
            assert len(batches) == count, (count, batches)  # they stay queued until taken
            for batch in batches:
                progress.recording.record(input_index, batch)

    async def take_before_barrier(self, progress: BarrierProgress, index: int, batch: list[Any]) -> None:
        """Process a batch of a channel that has not delivered the checkpoint's barrier: it precedes
        the barrier, so an unaligned checkpoint records it as channel state."""
        actor = self.actor
        if progress.recording is not None:
            progress.recording.record(actor.channel_inputs[index], batch)
        if actor.channel_inputs[index]:
            await actor.process_second_input(batch)
        else:
            await actor.process(batch, 0)
        remaining = progress.overtaken.get(index)
        if remaining is not None:  # one of the batches its barrier overtook
            if remaining > 1:
                progress.overtaken[index] = remaining - 1
            else:
                del progress.overtaken[index]
                self._deliver(progress, index)
                await self._check_delivered()

    def _deliver(self, progress: BarrierProgress, index: int) -> None:
        progress.delivered.add(index)
        if not progress.unaligned:
            self.actor.mailbox.pause(index)  # hold this input until every input delivered the barrier

    async def _check_delivered(self) -> None:
        """Once every channel has delivered the barrier (or ended): take the aligned snapshot, or
        complete the unaligned one's channel state."""
        progress = self.progress
        assert progress is not None
        if len(progress.delivered | self.ended) < len(self.actor.mailbox.channels):
            return
        self.progress = None
        if progress.unaligned:
            if progress.recording is not None:
                progress.recording.complete()
                # Let the snapshot's asynchronous part, waiting for this, go before the next batch.
                await anyio.lowlevel.checkpoint()
            return
        self._stop_timer(progress)
        alignment = time.perf_counter() - progress.started
        await self.actor.snapshots.take(progress.checkpoint_id, alignment, savepoint=progress.savepoint)
        self._release_inputs(progress)

    async def _unalign(self, progress: BarrierProgress) -> None:
        """Take the checkpoint unaligned now: snapshot, barrier passed on ahead of queued records,
        every input read again; what precedes the barrier from here on is recorded."""
        self._stop_timer(progress)
        progress.unaligned = True
        self._release_inputs(progress)
        alignment = time.perf_counter() - progress.started
        progress.recording = await self.actor.snapshots.take(
            progress.checkpoint_id, alignment, unaligned=True
        )
        for index, remaining in progress.overtaken.items():  # aligning had not reached them yet
            self._record_queued(progress, index, remaining)
            progress.delivered.add(index)
        progress.overtaken.clear()

    async def _give_up(self, progress: BarrierProgress, reason: str) -> None:
        self._stop_timer(progress)
        if progress.recording is not None:
            progress.recording.abandon()
        await self.actor.decline(progress.checkpoint_id, reason, counts=False)
        self._release_inputs(progress)

    def _release_inputs(self, progress: BarrierProgress) -> None:
        for index in progress.delivered:  # ended ones too: later barriers come through them
            self.actor.mailbox.resume(index)

    def _start_alignment_timer(self, checkpoint_id: int, timeout: float) -> anyio.CancelScope:
        """Post :class:`AlignmentTimedOut` to the actor after ``timeout`` seconds, unless cancelled."""
        scope = anyio.CancelScope()
        self.actor.runtime.spawn(self._post_after, scope, timeout, AlignmentTimedOut(checkpoint_id))
        return scope

    async def _post_after(self, scope: anyio.CancelScope, delay: float, letter: Any) -> None:
        with scope:
            await anyio.sleep(delay)
            self.actor.post(letter)

    @staticmethod
    def _stop_timer(progress: BarrierProgress) -> None:
        if progress.timer is not None:
            progress.timer.cancel()
            progress.timer = None

    async def _track_barrier(self, index: int, checkpoint_id: int) -> None:
        """At-least-once: inputs are never held, so the barriers of several checkpoints may be on their
        way at once; each is passed on once every input delivered it (or ended), in id order."""
        if checkpoint_id <= self.actor.snapshots.last_checkpoint:
            return  # a checkpoint this subtask has passed on, or given up for a newer one
        seen, _ = self._tracked.setdefault(checkpoint_id, (set(), time.perf_counter()))
        seen.add(index)
        await self._check_tracked()

    async def _check_tracked(self) -> None:
        actor = self.actor
        last = actor.snapshots.last_checkpoint
        for passed in [cid for cid in self._tracked if cid <= last]:
            del self._tracked[passed]  # a newer checkpoint (an aligned savepoint) got through first
        everyone = len(actor.mailbox.channels)
        for checkpoint_id in sorted(self._tracked):
            seen, started = self._tracked[checkpoint_id]
            if len(seen | self.ended) < everyone:
                continue
            for older in [cid for cid in self._tracked if cid < checkpoint_id]:
                del self._tracked[older]  # a newer checkpoint got through first: it subsumes them
                reason = f"checkpoint {checkpoint_id} got through this subtask first"
                await actor.decline(older, reason, counts=False)
            del self._tracked[checkpoint_id]
            await actor.snapshots.take(checkpoint_id, time.perf_counter() - started)
