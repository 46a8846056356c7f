"""Recording the in-flight records of an unaligned checkpoint at a subtask (its channel state).

A subtask that takes an unaligned checkpoint snapshots its state at the first barrier and passes the
barrier on at once; the batches that logically precede the barrier but are taken after the snapshot
(those a barrier overtook, and those of channels whose barrier has not come yet) are its channel state.
They are processed as usual *and* recorded here, so a restore from the checkpoint processes them again,
before any new input, and nothing is lost or counted twice. Their stored form is
:mod:`lockgate.savepoint`'s.
"""

from __future__ import annotations

from typing import Any

import anyio

from lockgate._errors import CheckpointError
from lockgate.savepoint import FrozenBatches
from lockgate.state import DEFAULT_SERIALIZER


class ChannelStateRecording:
    """Collects the channel state of one unaligned checkpoint at one subtask.

    The actor records batches while channels have not yet delivered the checkpoint's barrier and
    completes the recording once all have (or ended); the asynchronous part of the snapshot waits for
    :meth:`finished` before it encodes and stores the result and acknowledges the checkpoint.

    A batch is pickled when it is recorded, before the operators see it: a function that changes the
    records it is given in place must not change what a restore replays.
    """

    def __init__(self, operator_uid: str = "") -> None:
        self.operator_uid = operator_uid  # the chain's first operator, whose inputs are recorded
        self._batches: FrozenBatches = []
        self._done = anyio.Event()
        self._abandoned = False

    def __repr__(self) -> str:
        state = "abandoned" if self._abandoned else "complete" if self._done.is_set() else "recording"
        return f"<ChannelStateRecording [{len(self._batches)} batches | {state}]>"

    def record(self, input_index: int, batch: list[Any]) -> None:
        """Keep ``batch`` as it is now, which came for operator input ``input_index``.

        Raises:
            CheckpointError: A record cannot be pickled, so no unaligned checkpoint can store it.
        """
        try:
            data = DEFAULT_SERIALIZER.dumps(batch)
        except Exception as exc:
            raise CheckpointError(
                f"a record in flight to operator {self.operator_uid!r} cannot be stored with an unaligned "
                f"checkpoint ({type(exc).__name__}: {exc}); records must pickle to be stored in flight: "
                "make them picklable, or set checkpoint_config.unaligned = False"
            ) from exc
        self._batches.append((input_index, data))

    def complete(self) -> None:
        """Every channel has delivered the barrier or ended: nothing more belongs to the checkpoint."""
        self._done.set()

    def abandon(self) -> None:
        """The subtask gave the checkpoint up: whoever waits stops waiting and stores nothing."""
        self._abandoned = True
        self._done.set()

    async def finished(self) -> FrozenBatches | None:
        """Wait until the recording is complete; the recorded batches, or None if it was abandoned.

        A recording complete already returns at once, without a turn of the event loop (which an
        anyio event's ``wait`` takes even when it is set): the acknowledgement waits for this."""
        if not self._done.is_set():
            await self._done.wait()
        if self._abandoned:
            return None
        return self._batches


def completed_recording() -> ChannelStateRecording:
    """An empty recording that is complete already: a source's unaligned checkpoint stores no records."""
    recording = ChannelStateRecording()
    recording.complete()
    return recording
