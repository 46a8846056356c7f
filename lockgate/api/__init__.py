"""The user-facing stream API: the environment and the streams."""

from lockgate.api._datastream import BroadcastConnectedStream, DataStream, KeyedStream
from lockgate.api._environment import NotReplayableSourceWarning, StreamEnvironment
from lockgate.api._windowed import WindowedStream

__all__ = [
    "BroadcastConnectedStream",
    "DataStream",
    "KeyedStream",
    "NotReplayableSourceWarning",
    "StreamEnvironment",
    "WindowedStream",
]
