"""The base classes of user functions and their runtime context."""

from lockgate.functions._functions import (
    BroadcastProcessFunction,
    CheckpointedFunction,
    KeyedProcessFunction,
    KeyedStateStore,
    MapFunction,
    OutputTag,
    ProcessFunction,
    ProcessWindowFunction,
    RuntimeContext,
    TimerService,
    WindowContext,
)

__all__ = [
    "BroadcastProcessFunction",
    "CheckpointedFunction",
    "KeyedProcessFunction",
    "KeyedStateStore",
    "MapFunction",
    "OutputTag",
    "ProcessWindowFunction",
    "ProcessFunction",
    "RuntimeContext",
    "TimerService",
    "WindowContext",
]
