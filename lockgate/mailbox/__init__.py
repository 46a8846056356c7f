"""Channels, mailboxes, the control events that travel through channels and letters to mailboxes; the
two ends of a channel across a transport that reorders and repeats (sequence numbers and credit)."""

from lockgate.mailbox._channel import MAIL, Channel, ChannelStatistics, Mailbox
from lockgate.mailbox._events import (
    ACTIVE,
    END_OF_INPUT,
    IDLE,
    Barrier,
    ControlEvent,
    EndOfInput,
    Message,
    StampedBatch,
    Watermark,
    WatermarkStatus,
)
from lockgate.mailbox._letters import (
    JOB_FINISHED,
    RESUME,
    STOP,
    AlignmentTimedOut,
    CheckpointComplete,
    Signal,
    TriggerCheckpoint,
)
from lockgate.mailbox._sequenced import SequencedReceiver, SequencedSender

__all__ = [
    "ACTIVE",
    "IDLE",
    "StampedBatch",
    "Watermark",
    "WatermarkStatus",
    "AlignmentTimedOut",
    "Barrier",
    "Channel",
    "ChannelStatistics",
    "CheckpointComplete",
    "ControlEvent",
    "END_OF_INPUT",
    "EndOfInput",
    "JOB_FINISHED",
    "MAIL",
    "Mailbox",
    "Message",
    "RESUME",
    "STOP",
    "SequencedReceiver",
    "SequencedSender",
    "Signal",
    "TriggerCheckpoint",
]
