"""The in-flight records of unaligned checkpoints: recorded at a subtask, stored as one blob, replayed on
restore.

A subtask that takes an unaligned checkpoint snapshots its state at the first barrier and passes the
barrier on at once; the batches that logically precede the barrier but are taken after the snapshot
(those a barrier overtook, and those of channels whose barrier has not come yet) are its channel state.
They are processed as usual *and* recorded here, so a restore from the checkpoint processes them again,
before any new input, and nothing is lost or counted twice.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import anyio
import cloudpickle

#: A batch to replay and the operator input it came for (0, or 1 for a two-input operator's second).
InFlightBatch = tuple[int, list[Any]]


@dataclass(frozen=True)
class ChannelStateSnapshot:
    """What is stored for one subtask's channel state: each recorded batch with the operator input it
    came for, in the order the subtask recorded them (each channel's order is kept)."""

    batches: list[InFlightBatch]


def encode_channel_state(snapshot: ChannelStateSnapshot) -> bytes:
    """The stored form of ``snapshot``: the costly part, run in a worker thread."""
    try:
        return pickle.dumps(snapshot, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):  # a record only cloudpickle can write
        return cloudpickle.dumps(snapshot, protocol=5)  # type: ignore[no-any-return]


class ChannelStateRecording:
    """Collects the channel state of one unaligned checkpoint at one subtask.

    The actor records batches while channels have not yet delivered the checkpoint's barrier and
    completes the recording once all have (or ended); the asynchronous part of the snapshot waits for
    :meth:`finished` before it encodes and stores the result and acknowledges the checkpoint.

    A recorded batch is a copy of the list, but the records are the ones the operators receive: like
    broadcast outputs, which share records among subtasks, this relies on records not being mutated
    by the operators that receive them.
    """

    def __init__(self) -> None:
        self._batches: list[InFlightBatch] = []
        self._done = anyio.Event()
        self._abandoned = False

    def __repr__(self) -> str:
        state = "abandoned" if self._abandoned else "complete" if self._done.is_set() else "recording"
        return f"<ChannelStateRecording [{len(self._batches)} batches | {state}]>"

    def record(self, input_index: int, batch: list[Any]) -> None:
        """Keep ``batch``, which came for operator input ``input_index``."""
        self._batches.append((input_index, list(batch)))

    def complete(self) -> None:
        """Every channel has delivered the barrier or ended: nothing more belongs to the checkpoint."""
        self._done.set()

    def abandon(self) -> None:
        """The subtask gave the checkpoint up: whoever waits stops waiting and stores nothing."""
        self._abandoned = True
        self._done.set()

    async def finished(self) -> ChannelStateSnapshot | None:
        """Wait until the recording is complete; its snapshot, or None if it was abandoned."""
        await self._done.wait()
        if self._abandoned:
            return None
        return ChannelStateSnapshot(self._batches)


def completed_recording() -> ChannelStateRecording:
    """An empty recording that is complete already: a source's unaligned checkpoint stores no records."""
    recording = ChannelStateRecording()
    recording.complete()
    return recording
