"""The base classes of user functions and their runtime context."""

from lockgate.functions._functions import BroadcastProcessFunction as BroadcastProcessFunction
from lockgate.functions._functions import CheckpointedFunction as CheckpointedFunction
from lockgate.functions._functions import KeyedProcessFunction as KeyedProcessFunction
from lockgate.functions._functions import MapFunction as MapFunction
from lockgate.functions._functions import ProcessFunction as ProcessFunction
from lockgate.functions._functions import RuntimeContext as RuntimeContext
