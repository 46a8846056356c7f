"""The user-facing stream API: the environment and the streams."""

from lockgate.api._datastream import BroadcastConnectedStream as BroadcastConnectedStream
from lockgate.api._datastream import DataStream as DataStream
from lockgate.api._datastream import KeyedStream as KeyedStream
from lockgate.api._environment import NotReplayableSourceWarning as NotReplayableSourceWarning
from lockgate.api._environment import StreamEnvironment as StreamEnvironment
