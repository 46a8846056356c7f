"""lockgate: an asyncio, actor-based dataflow engine with Flink-grade state management.

Import it as ``import lockgate as lg``; everything public is importable from here.
"""

from lockgate._config import CheckpointConfig as CheckpointConfig
from lockgate._config import CheckpointingMode as CheckpointingMode
from lockgate._config import ExecutionConfig as ExecutionConfig
from lockgate._config import RestartStrategy as RestartStrategy
from lockgate._errors import CheckpointError as CheckpointError
from lockgate._errors import ConfigurationError as ConfigurationError
from lockgate._errors import CorruptCheckpointError as CorruptCheckpointError
from lockgate._errors import IncompatibleStateError as IncompatibleStateError
from lockgate._errors import JobCancelledError as JobCancelledError
from lockgate._errors import JobFailedError as JobFailedError
from lockgate._errors import KeySerializationError as KeySerializationError
from lockgate._errors import LockgateError as LockgateError
from lockgate._errors import StateMigrationError as StateMigrationError
from lockgate._errors import StateNotFoundError as StateNotFoundError
from lockgate._errors import StateSerializationError as StateSerializationError
from lockgate._errors import StateValueTooLargeError as StateValueTooLargeError
from lockgate.actors import GeneratedUidWarning as GeneratedUidWarning
from lockgate.actors import Job as Job
from lockgate.actors import JobResult as JobResult
from lockgate.actors import JobStatus as JobStatus
from lockgate.actors import QueryableStateClient as QueryableStateClient
from lockgate.api import BroadcastConnectedStream as BroadcastConnectedStream
from lockgate.api import DataStream as DataStream
from lockgate.api import KeyedStream as KeyedStream
from lockgate.api import NotReplayableSourceWarning as NotReplayableSourceWarning
from lockgate.api import StreamEnvironment as StreamEnvironment
from lockgate.api import WindowedStream as WindowedStream
from lockgate.checkpointing import CheckpointStats as CheckpointStats
from lockgate.checkpointing import CheckpointStatsSnapshot as CheckpointStatsSnapshot
from lockgate.connectors import CollectSink as CollectSink
from lockgate.connectors import FileSink as FileSink
from lockgate.connectors import FileSource as FileSource
from lockgate.connectors import PrintSink as PrintSink
from lockgate.connectors import QueueSource as QueueSource
from lockgate.connectors import Sink as Sink
from lockgate.connectors import SinkWriter as SinkWriter
from lockgate.connectors import Source as Source
from lockgate.connectors import SourceReader as SourceReader
from lockgate.connectors import TwoPhaseCommitSink as TwoPhaseCommitSink
from lockgate.eventtime import MAX_WATERMARK as MAX_WATERMARK
from lockgate.eventtime import MIN_WATERMARK as MIN_WATERMARK
from lockgate.eventtime import CountEvictor as CountEvictor
from lockgate.eventtime import CountTrigger as CountTrigger
from lockgate.eventtime import EventTimeSessionWindows as EventTimeSessionWindows
from lockgate.eventtime import EventTimeTrigger as EventTimeTrigger
from lockgate.eventtime import Evictor as Evictor
from lockgate.eventtime import GlobalWindow as GlobalWindow
from lockgate.eventtime import GlobalWindows as GlobalWindows
from lockgate.eventtime import ProcessingTimeSessionWindows as ProcessingTimeSessionWindows
from lockgate.eventtime import ProcessingTimeTrigger as ProcessingTimeTrigger
from lockgate.eventtime import PurgingTrigger as PurgingTrigger
from lockgate.eventtime import SlidingEventTimeWindows as SlidingEventTimeWindows
from lockgate.eventtime import SlidingProcessingTimeWindows as SlidingProcessingTimeWindows
from lockgate.eventtime import TimeDomain as TimeDomain
from lockgate.eventtime import TimeEvictor as TimeEvictor
from lockgate.eventtime import TimeWindow as TimeWindow
from lockgate.eventtime import Trigger as Trigger
from lockgate.eventtime import TriggerContext as TriggerContext
from lockgate.eventtime import TriggerResult as TriggerResult
from lockgate.eventtime import TumblingEventTimeWindows as TumblingEventTimeWindows
from lockgate.eventtime import TumblingProcessingTimeWindows as TumblingProcessingTimeWindows
from lockgate.eventtime import WatermarkStrategy as WatermarkStrategy
from lockgate.eventtime import WindowAssigner as WindowAssigner
from lockgate.functions import BroadcastProcessFunction as BroadcastProcessFunction
from lockgate.functions import CheckpointedFunction as CheckpointedFunction
from lockgate.functions import KeyedProcessFunction as KeyedProcessFunction
from lockgate.functions import MapFunction as MapFunction
from lockgate.functions import OutputTag as OutputTag
from lockgate.functions import ProcessFunction as ProcessFunction
from lockgate.functions import ProcessWindowFunction as ProcessWindowFunction
from lockgate.functions import RuntimeContext as RuntimeContext
from lockgate.functions import TimerService as TimerService
from lockgate.functions import WindowContext as WindowContext
from lockgate.mailbox import ChannelStatistics as ChannelStatistics
from lockgate.ray_runner import RayRunner as RayRunner
from lockgate.ray_runner import SubtaskLostError as SubtaskLostError
from lockgate.savepoint import Savepoint as Savepoint
from lockgate.savepoint import SavepointWriter as SavepointWriter
from lockgate.snapshots import CheckpointStorage as CheckpointStorage
from lockgate.snapshots import CompletedCheckpoint as CompletedCheckpoint
from lockgate.snapshots import FileCheckpointStorage as FileCheckpointStorage
from lockgate.snapshots import FsspecCheckpointStorage as FsspecCheckpointStorage
from lockgate.snapshots import MemoryCheckpointStorage as MemoryCheckpointStorage
from lockgate.state import AggregateFunction as AggregateFunction
from lockgate.state import AggregatingState as AggregatingState
from lockgate.state import AggregatingStateDescriptor as AggregatingStateDescriptor
from lockgate.state import BroadcastState as BroadcastState
from lockgate.state import Compatibility as Compatibility
from lockgate.state import DataclassSerializer as DataclassSerializer
from lockgate.state import FsStateBackend as FsStateBackend
from lockgate.state import HeapStateBackend as HeapStateBackend
from lockgate.state import KeyedStateBackend as KeyedStateBackend
from lockgate.state import ListState as ListState
from lockgate.state import ListStateDescriptor as ListStateDescriptor
from lockgate.state import MapState as MapState
from lockgate.state import MapStateDescriptor as MapStateDescriptor
from lockgate.state import MemoryStateBackend as MemoryStateBackend
from lockgate.state import MsgspecSerializer as MsgspecSerializer
from lockgate.state import OperatorListState as OperatorListState
from lockgate.state import PickleSerializer as PickleSerializer
from lockgate.state import PydanticSerializer as PydanticSerializer
from lockgate.state import ReducingState as ReducingState
from lockgate.state import ReducingStateDescriptor as ReducingStateDescriptor
from lockgate.state import RocksDBStateBackend as RocksDBStateBackend
from lockgate.state import Serializer as Serializer
from lockgate.state import SerializerSnapshot as SerializerSnapshot
from lockgate.state import StateBackend as StateBackend
from lockgate.state import StateTtlConfig as StateTtlConfig
from lockgate.state import ValueState as ValueState
from lockgate.state import ValueStateDescriptor as ValueStateDescriptor
from lockgate.state import field_alias as field_alias

__version__ = "0.1.0"

__all__ = [
    "CountEvictor",
    "CountTrigger",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "Evictor",
    "GlobalWindow",
    "GlobalWindows",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "TimeEvictor",
    "TimeWindow",
    "Trigger",
    "TriggerContext",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "WindowAssigner",
    "ProcessWindowFunction",
    "WindowContext",
    "WindowedStream",
    "ExecutionConfig",
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "OutputTag",
    "TimeDomain",
    "TimerService",
    "WatermarkStrategy",
    "BroadcastConnectedStream",
    "BroadcastProcessFunction",
    "BroadcastState",
    "CheckpointedFunction",
    "OperatorListState",
    "ChannelStatistics",
    "CollectSink",
    "ConfigurationError",
    "DataStream",
    "FileSource",
    "HeapStateBackend",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobResult",
    "JobStatus",
    "KeySerializationError",
    "KeyedProcessFunction",
    "KeyedStateBackend",
    "KeyedStream",
    "LockgateError",
    "MapFunction",
    "PrintSink",
    "ProcessFunction",
    "QueueSource",
    "QueryableStateClient",
    "RuntimeContext",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceReader",
    "StateBackend",
    "StreamEnvironment",
    "AggregateFunction",
    "AggregatingState",
    "AggregatingStateDescriptor",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "ReducingState",
    "ReducingStateDescriptor",
    "RocksDBStateBackend",
    "StateTtlConfig",
    "StateMigrationError",
    "StateSerializationError",
    "StateValueTooLargeError",
    "ValueState",
    "ValueStateDescriptor",
    "CheckpointError",
    "CheckpointStorage",
    "CorruptCheckpointError",
    "IncompatibleStateError",
    "StateNotFoundError",
    # savepoints offline
    "Savepoint",
    "SavepointWriter",
    # state schema evolution
    "Compatibility",
    "DataclassSerializer",
    "MsgspecSerializer",
    "PickleSerializer",
    "PydanticSerializer",
    "Serializer",
    "SerializerSnapshot",
    "field_alias",
    "FileCheckpointStorage",
    "FsspecCheckpointStorage",
    "RayRunner",
    "SubtaskLostError",
    "FsStateBackend",
    "MemoryCheckpointStorage",
    "MemoryStateBackend",
    "CheckpointConfig",
    "CheckpointingMode",
    "CheckpointStats",
    "CheckpointStatsSnapshot",
    "CompletedCheckpoint",
    "GeneratedUidWarning",
    "FileSink",
    "NotReplayableSourceWarning",
    "RestartStrategy",
    "TwoPhaseCommitSink",
]
