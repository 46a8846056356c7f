"""Channels, mailboxes, the control events that travel through channels and letters to mailboxes."""

from lockgate.mailbox._channel import MAIL as MAIL
from lockgate.mailbox._channel import Channel as Channel
from lockgate.mailbox._channel import ChannelStatistics as ChannelStatistics
from lockgate.mailbox._channel import Mailbox as Mailbox
from lockgate.mailbox._events import END_OF_INPUT as END_OF_INPUT
from lockgate.mailbox._events import Barrier as Barrier
from lockgate.mailbox._events import ControlEvent as ControlEvent
from lockgate.mailbox._events import EndOfInput as EndOfInput
from lockgate.mailbox._events import Message as Message
from lockgate.mailbox._letters import JOB_FINISHED as JOB_FINISHED
from lockgate.mailbox._letters import RESUME as RESUME
from lockgate.mailbox._letters import STOP as STOP
from lockgate.mailbox._letters import AlignmentTimedOut as AlignmentTimedOut
from lockgate.mailbox._letters import CheckpointComplete as CheckpointComplete
from lockgate.mailbox._letters import Signal as Signal
from lockgate.mailbox._letters import TriggerCheckpoint as TriggerCheckpoint
