"""Channels, mailboxes and the control events that travel through them."""

from lockgate.mailbox._channel import MAIL as MAIL
from lockgate.mailbox._channel import Channel as Channel
from lockgate.mailbox._channel import ChannelStatistics as ChannelStatistics
from lockgate.mailbox._channel import Mailbox as Mailbox
from lockgate.mailbox._events import END_OF_INPUT as END_OF_INPUT
from lockgate.mailbox._events import Barrier as Barrier
from lockgate.mailbox._events import ControlEvent as ControlEvent
from lockgate.mailbox._events import EndOfInput as EndOfInput
from lockgate.mailbox._events import Message as Message
