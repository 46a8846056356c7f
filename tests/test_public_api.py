"""The public surface: exactly the names in __all__, each importable from the top level."""

from __future__ import annotations

import lockgate as lg

# The names of ../shared/API.md that exist at this stage, plus the interfaces users implement.
EXPECTED = {
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
    "StateSerializationError",
    "StateValueTooLargeError",
    "ValueState",
    "ValueStateDescriptor",
    "CheckpointError",
    "CheckpointStorage",
    "CorruptCheckpointError",
    "FileCheckpointStorage",
    "FsStateBackend",
    "MemoryCheckpointStorage",
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
    "MemoryStateBackend",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(lg.__all__) == EXPECTED
    assert all(hasattr(lg, name) for name in lg.__all__)
    public = {name for name in vars(lg) if not name.startswith("_")}
    submodules = {
        "actors",
        "api",
        "checkpointing",
        "connectors",
        "functions",
        "graph",
        "mailbox",
        "savepoint",
        "snapshots",
        "state",
        "testing",
    }
    assert public - submodules == EXPECTED


def test_errors_form_one_hierarchy() -> None:
    for name in (
        "ConfigurationError",
        "JobFailedError",
        "JobCancelledError",
        "KeySerializationError",
        "CheckpointError",
        "CorruptCheckpointError",
    ):
        assert issubclass(getattr(lg, name), lg.LockgateError)
