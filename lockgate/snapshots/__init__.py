"""Checkpoint storage, snapshot and savepoint formats, their readers and writers.

So far: where checkpoints go (:class:`CheckpointStorage`, in memory or in files) and the framed,
checksummed format of every stored blob. The checkpoint coordinator writes checkpoints through these.
This package imports nothing from ``lockgate.state`` or ``lockgate.actors``.
"""

from lockgate.snapshots._blobs import SHARED_NAME, OperatorStateWriter, SubtaskStateWriter
from lockgate.snapshots._file import FileCheckpointStorage, fsync_directory, parse_file_url
from lockgate.snapshots._loading import (
    Blob,
    LoadedCheckpoint,
    load_checkpoint,
    load_from_pointer,
    load_newest,
    storage_loader,
    unpickle_state,
)
from lockgate.snapshots._memory import DEFAULT_MAX_STATE_SIZE, MemoryCheckpointStorage
from lockgate.snapshots._metadata import CheckpointMetadata, OperatorCheckpointState, SubtaskStateHandles
from lockgate.snapshots._registry import (
    StorageFactory,
    register_checkpoint_storage,
    storage_for,
    supported_schemes,
)
from lockgate.snapshots._shared import SharedStateRegistry
from lockgate.snapshots._storage import (
    METADATA_NAME,
    CheckpointLocation,
    CheckpointStorage,
    CompletedCheckpoint,
    SharedStateHandle,
    StateData,
    StreamStateHandle,
)

__all__ = [
    "Blob",
    "CheckpointLocation",
    "CheckpointMetadata",
    "CheckpointStorage",
    "CompletedCheckpoint",
    "DEFAULT_MAX_STATE_SIZE",
    "FileCheckpointStorage",
    "LoadedCheckpoint",
    "METADATA_NAME",
    "MemoryCheckpointStorage",
    "OperatorCheckpointState",
    "OperatorStateWriter",
    "SHARED_NAME",
    "SharedStateHandle",
    "SharedStateRegistry",
    "StateData",
    "StorageFactory",
    "StreamStateHandle",
    "SubtaskStateHandles",
    "SubtaskStateWriter",
    "fsync_directory",
    "load_checkpoint",
    "load_from_pointer",
    "load_newest",
    "parse_file_url",
    "register_checkpoint_storage",
    "storage_for",
    "storage_loader",
    "supported_schemes",
    "unpickle_state",
]
