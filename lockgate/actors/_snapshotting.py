"""A subtask's part of a checkpoint: the synchronous part between two messages, the barrier passed on,
then the asynchronous part in the background (every operator's state written through the checkpoint's
writer, the in-flight records of an unaligned checkpoint stored, the acknowledgement sent).

The keyed state of every backend goes through one contract: the synchronous part returns
:class:`~lockgate.state.SnapshotResources`, whose asynchronous ``write(writer)`` returns handles to
what it persisted; how (whole or incremental) is the backend's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio

from lockgate._errors import StateSerializationError
from lockgate._threads import run_sync
from lockgate.actors._channel_state import ChannelStateRecording, completed_recording
from lockgate.actors._failure import OperatorFailure
from lockgate.checkpointing import SnapshotTarget, SubtaskAcknowledgement, SubtaskCoordinator
from lockgate.mailbox import Barrier
from lockgate.savepoint import encode_channel_state, encode_operator_state
from lockgate.snapshots import StreamStateHandle, SubtaskStateHandles, SubtaskStateWriter
from lockgate.state import OperatorStateSnapshot, SnapshotResources

if TYPE_CHECKING:
    from lockgate.actors._actor import SubtaskActor


@dataclass
class _Capture:
    """The synchronous part of one operator's snapshot."""

    uid: str
    operator_state: OperatorStateSnapshot | None
    keyed: SnapshotResources | None


@dataclass(frozen=True)
class _Part:
    """The synchronous part of a subtask's checkpoint, handed to the asynchronous part: where it goes,
    the captures, what the synchronous part and the alignment took (seconds), and whether the input
    had ended."""

    checkpoint_id: int
    target: SnapshotTarget
    captures: list[_Capture]
    sync_duration: float
    alignment: float
    finished: bool

    def release(self) -> None:
        for capture in self.captures:
            if capture.keyed is not None:
                capture.keyed.release()


class SubtaskSnapshots:
    """Takes the checkpoints of one subtask actor (its chain of operators, its source if it has one)."""

    def __init__(self, actor: SubtaskActor) -> None:
        self.actor = actor
        self.last_checkpoint = 0  # the newest checkpoint this subtask has taken its part of

    async def take(
        self, checkpoint_id: int, alignment: float, *, savepoint: bool = False, unaligned: bool = False
    ) -> ChannelStateRecording | None:
        """Take this subtask's part of a checkpoint: the synchronous part now, between two messages;
        the barrier moves on; the asynchronous part runs in the background (or now, if the job's
        snapshots are synchronous and the checkpoint is aligned).

        ``unaligned``: the barrier overtakes what is queued downstream, and the acknowledgement waits
        for the channel state, recorded into the returned recording (None if the checkpoint was
        aborted meanwhile; a source's is empty and complete).
        """
        actor = self.actor
        self.last_checkpoint = max(self.last_checkpoint, checkpoint_id)
        coordinator = actor.runtime.coordinator
        target = None if coordinator is None else coordinator.target(checkpoint_id)
        if target is None or target.aborted:  # pass the barrier on all the same, so downstream aligns
            await self._pass_barrier(checkpoint_id, savepoint, unaligned)
            return None
        assert coordinator is not None
        started = time.perf_counter()
        captures = await self._capture(checkpoint_id)
        sync_duration = time.perf_counter() - started
        part = _Part(checkpoint_id, target, captures, sync_duration, alignment, actor.input_ended)
        if unaligned:
            # The channel state is complete only after the barrier has moved on: always in the background.
            recording = completed_recording() if actor.is_source else ChannelStateRecording(actor.head_uid)
            await self._pass_barrier(checkpoint_id, savepoint, unaligned)
            actor.runtime.spawn(self._persist, coordinator, part, recording)
            return recording
        if actor.runtime.asynchronous:
            await actor.output.emit_event(Barrier(checkpoint_id, savepoint=savepoint))
            actor.runtime.spawn(self._persist, coordinator, part)
        else:
            await self._persist(coordinator, part)
            await actor.output.emit_event(Barrier(checkpoint_id, savepoint=savepoint))
        return None

    async def _pass_barrier(self, checkpoint_id: int, savepoint: bool, unaligned: bool) -> None:
        if unaligned:
            self.actor.output.overtake(checkpoint_id)
        else:
            await self.actor.output.emit_event(Barrier(checkpoint_id, savepoint=savepoint))

    async def _capture(self, checkpoint_id: int) -> list[_Capture]:
        actor = self.actor
        captures: list[_Capture] = []
        source = actor.source
        if source is not None:
            try:
                source.reader.snapshot_state(checkpoint_id)
            except Exception as exc:
                raise OperatorFailure(source.uid) from exc
            backend = source.ctx.operator_backend
            captures.append(
                _Capture(source.uid, backend.snapshot(actor.subtask_index, actor.parallelism), None)
            )
        for operator in actor.operators:
            if source is not None and operator.ctx is source.ctx:
                continue  # the source's own watermark generator: its state is the source's, taken above
            try:
                await operator.prepare_snapshot(checkpoint_id)
                operator_state = operator.snapshot_operator_state()
                keyed_backend = operator.ctx.keyed_backend
                keyed = None if keyed_backend is None else await keyed_backend.snapshot_capture(checkpoint_id)
            except Exception as exc:
                for capture in captures:
                    if capture.keyed is not None:
                        capture.keyed.release()
                raise OperatorFailure(operator.uid) from exc
            captures.append(_Capture(operator.uid, operator_state, keyed))
        return captures

    async def _persist(
        self, coordinator: SubtaskCoordinator, part: _Part, in_flight: ChannelStateRecording | None = None
    ) -> None:
        """The asynchronous part: write every operator's captured state, then, for an unaligned
        checkpoint, its channel state once ``in_flight`` is complete, and acknowledge the checkpoint.

        One task does it all, in order: each hand-over between tasks would wait for a turn of the
        event loop, which every subtask of a local job shares.

        Shared blobs that incremental snapshots wrote are deleted again if the checkpoint fails or
        does not take the acknowledgement."""
        actor = self.actor
        started = time.perf_counter()
        checkpoint_id, target = part.checkpoint_id, part.target
        writer = SubtaskStateWriter(
            target.storage, target.location, actor.subtask_index, canonical=target.canonical
        )
        try:
            try:
                states = await self._write(part, writer)
            finally:
                part.release()
            if states is None:  # aborted meanwhile
                await _discard(writer)
                return
            ack = SubtaskAcknowledgement(
                states,
                part.sync_duration,
                time.perf_counter() - started,
                part.alignment,
                frozenset(handle.name for handle in writer.uploaded),
                finished=part.finished,
            )
            if in_flight is not None:
                stored, handle = await self._store_channel_state(coordinator, part, in_flight)
                if not stored:
                    await _discard(writer)
                    return
                ack = self._with_channel_state(ack, handle, time.perf_counter() - started)
        except StateSerializationError:
            # No later checkpoint can take it either: the job fails now, whatever failures it tolerates.
            await _discard(writer)
            raise
        except Exception as exc:
            await _discard(writer)
            await coordinator.decline(checkpoint_id, actor.key, f"{type(exc).__name__}: {exc}", cause=exc)
            return
        except BaseException:  # the attempt is cancelled: no checkpoint will take the uploads
            await _discard(writer)
            raise
        if not await coordinator.acknowledge(checkpoint_id, actor.key, ack):
            await _discard(writer)

    @staticmethod
    async def _write(part: _Part, writer: SubtaskStateWriter) -> dict[str, SubtaskStateHandles] | None:
        """Write the captured state of every operator; its handles by uid, or None if the checkpoint
        was aborted meanwhile."""
        states: dict[str, SubtaskStateHandles] = {}
        for capture in part.captures:
            if part.target.aborted:
                return None
            operator_writer = writer.for_operator(capture.uid)
            keyed = None if capture.keyed is None else await capture.keyed.write(operator_writer)
            state = capture.operator_state
            operator = None
            if state is not None and state.states:
                operator = await operator_writer.write_blob("operator", encode_operator_state(state))
            states[capture.uid] = SubtaskStateHandles(
                None if keyed is None else keyed.handle, operator, () if keyed is None else keyed.shared
            )
        return states

    async def _store_channel_state(
        self, coordinator: SubtaskCoordinator, part: _Part, recording: ChannelStateRecording
    ) -> tuple[bool, StreamStateHandle | None]:
        """Wait for an unaligned checkpoint's channel state to be complete and write it, as a blob of
        the chain's first operator. Whether the checkpoint may be acknowledged (not if it was given
        up, aborted, or declined here because the records could not be stored), and the blob's handle
        (None if nothing was in flight)."""
        actor = self.actor
        recorded = await recording.finished()
        if recorded is None or part.target.aborted:
            return False, None  # given up or aborted: nothing to store
        if not recorded:
            return True, None
        try:
            data = await run_sync(encode_channel_state, recorded)
            writer = SubtaskStateWriter(
                part.target.storage, part.target.location, actor.subtask_index, canonical=False
            )
            handle = await writer.for_operator(actor.head_uid).write_blob("channel", data)
        except Exception as exc:
            reason = f"its in-flight records could not be stored: {type(exc).__name__}: {exc}"
            await coordinator.decline(part.checkpoint_id, actor.key, reason, cause=exc)
            return False, None
        return True, handle

    def _with_channel_state(
        self, ack: SubtaskAcknowledgement, handle: StreamStateHandle | None, async_duration: float
    ) -> SubtaskAcknowledgement:
        """``ack`` of an unaligned checkpoint, with the channel state's handle in the chain's first
        operator's handles."""
        states = dict(ack.states)
        head_uid = self.actor.head_uid
        if handle is not None:
            head = states.get(head_uid, SubtaskStateHandles())
            states[head_uid] = replace(head, channel=handle)
        return replace(
            ack,
            states=states,
            async_duration=async_duration,
            unaligned=True,
            in_flight_bytes=0 if handle is None else handle.size,
        )


async def _discard(writer: SubtaskStateWriter) -> None:
    with anyio.CancelScope(shield=True):
        await writer.discard()
