"""The base classes of user functions and their runtime context."""

from lockgate.functions._functions import (
    BroadcastProcessFunction,
    CheckpointedFunction,
    KeyedProcessFunction,
    MapFunction,
    ProcessFunction,
    RuntimeContext,
)

__all__ = [
    "BroadcastProcessFunction",
    "CheckpointedFunction",
    "KeyedProcessFunction",
    "MapFunction",
    "ProcessFunction",
    "RuntimeContext",
]
