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

from lockgate._errors import CorruptCheckpointError

#: A batch to replay and the operator input it came for (0, or 1 for a two-input operator's second).
InFlightBatch = tuple[int, list[Any]]


@dataclass(frozen=True)
class ChannelStateSnapshot:
    """What is stored for one subtask's channel state: each recorded batch, pickled, with the operator
    input it came for, in the order the subtask took them (each channel's order is kept)."""

    batches: list[tuple[int, bytes]]

    def decode(self, where: str) -> list[InFlightBatch]:
        """The batches unpickled; ``where`` names the blob in errors.

        Raises:
            CorruptCheckpointError: A batch cannot be read.
        """
        decoded: list[InFlightBatch] = []
        for input_index, data in self.batches:
            try:
                batch = pickle.loads(data)
            except Exception as exc:
                raise CorruptCheckpointError(where, f"an in-flight batch cannot be read ({exc})") from exc
            decoded.append((input_index, batch))
        return decoded


class ChannelStateRecording:
    """Collects the channel state of one unaligned checkpoint at one subtask.

    The actor records batches while channels have not yet delivered the checkpoint's barrier and
    completes the recording once all have (or ended); the asynchronous part of the snapshot waits for
    :meth:`finished` before it stores the result and acknowledges the checkpoint.

    Batches are pickled when recorded: what an operator later does to a record (user functions may
    mutate their input) must not change what is replayed.
    """

    def __init__(self) -> None:
        self._batches: list[tuple[int, bytes]] = []
        self._done = anyio.Event()
        self._abandoned = False
        self.failure: str | None = None  # why a batch could not be recorded, if one could not

    def __repr__(self) -> str:
        state = "abandoned" if self._abandoned else "complete" if self._done.is_set() else "recording"
        return f"<ChannelStateRecording [{len(self._batches)} batches | {state}]>"

    def record(self, input_index: int, batch: list[Any]) -> None:
        """Keep a copy of ``batch``, which came for operator input ``input_index``."""
        if self.failure is not None:
            return  # the checkpoint is declined anyway: spare the cost
        try:
            data = pickle.dumps(batch, protocol=5)
        except (pickle.PicklingError, AttributeError, TypeError):
            try:
                data = cloudpickle.dumps(batch, protocol=5)
            except Exception as exc:
                self.failure = f"an in-flight record cannot be pickled: {type(exc).__name__}: {exc}"
                return
        self._batches.append((input_index, data))

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
