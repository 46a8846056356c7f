"""The stored form of the in-flight records of unaligned checkpoints (a subtask's channel state).

A restore replays them, before any new input, at the subtask of the chain's first operator that
recorded them (see ``lockgate.actors._channel_state``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from lockgate.snapshots import Blob, unpickle_state

#: A batch to replay and the operator input it came for (0, or 1 for a two-input operator's second).
InFlightBatch = tuple[int, list[Any]]


@dataclass(frozen=True)
class ChannelStateSnapshot:
    """What is stored for one subtask's channel state: each recorded batch, pickled as it was taken,
    with the operator input it came for, in the order the subtask recorded them (each channel's order
    is kept)."""

    frozen: list[tuple[int, bytes]]

    @property
    def batches(self) -> list[InFlightBatch]:
        """The recorded batches, to replay."""
        return [(input_index, pickle.loads(data)) for input_index, data in self.frozen]


#: Recorded batches, each pickled as it was taken: (operator input, the batch's pickle).
FrozenBatches = list[tuple[int, bytes]]


def encode_channel_state(frozen: FrozenBatches) -> bytes:
    """The stored form of the recorded batches: a :class:`ChannelStateSnapshot`."""
    return pickle.dumps(ChannelStateSnapshot(frozen), protocol=5)


def decode_channel_state(blob: Blob) -> list[InFlightBatch]:
    """The batches a stored channel state holds, in the order they were recorded.

    Raises:
        CorruptCheckpointError: The blob does not hold channel state; the error names it.
    """
    return unpickle_state(blob, ChannelStateSnapshot).batches
