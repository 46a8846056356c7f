"""The backend-independent format of what a checkpoint or savepoint holds, and its decoding.

A loaded checkpoint (:mod:`lockgate.snapshots`) becomes a :class:`RestoredState`: every operator's keyed,
operator and channel state, decoded and ready to be handed to the subtasks of a job at any parallelism
(up to the max parallelism). This part uses :mod:`lockgate.state` and :mod:`lockgate.snapshots` only,
never the runtime, so savepoints can be read without a job. The on-disk layout is
``docs/savepoint-format.md``.
"""

from lockgate.savepoint._channel_state import (
    ChannelStateSnapshot,
    FrozenBatches,
    InFlightBatch,
    decode_channel_state,
    encode_channel_state,
)
from lockgate.savepoint._operator_state import decode_operator_state, encode_operator_state
from lockgate.savepoint._reader import OperatorInfo, Savepoint, StateInfo
from lockgate.savepoint._restore import RestoredState
from lockgate.savepoint._writer import SavepointWriter

__all__ = [
    "ChannelStateSnapshot",
    "FrozenBatches",
    "InFlightBatch",
    "OperatorInfo",
    "RestoredState",
    "Savepoint",
    "SavepointWriter",
    "StateInfo",
    "decode_channel_state",
    "decode_operator_state",
    "encode_channel_state",
    "encode_operator_state",
]
