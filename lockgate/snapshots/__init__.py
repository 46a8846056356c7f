"""Where checkpoints and savepoints go, and how their files are written and read back.

:class:`CheckpointStorage` (in memory, in files, in object storage through fsspec, or any URL scheme
registered with :func:`register_checkpoint_storage`; :func:`storage_for` opens any of them), the framed,
checksummed form of every stored blob, the ``_metadata`` of a checkpoint (JSON), the naming and writing
of a subtask's blobs (:class:`SubtaskStateWriter`), and loading (:func:`load_checkpoint`, :func:`load_newest`,
:func:`load_from_pointer`). What the blobs hold is :mod:`lockgate.savepoint`'s and :mod:`lockgate.state`'s
business: this package imports no other part of lockgate.
"""

from lockgate.snapshots._blobs import SHARED_NAME, OperatorStateWriter, SubtaskStateWriter
from lockgate.snapshots._file import FileCheckpointStorage, fsync_directory, parse_file_url
from lockgate.snapshots._fsspec import FsspecCheckpointStorage
from lockgate.snapshots._loading import (
    Blob,
    LoadedCheckpoint,
    checkpoints_at,
    load_checkpoint,
    load_from_pointer,
    load_newest,
    read_checkpoint_metadata,
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
    DEFAULT_INLINE_THRESHOLD,
    METADATA_NAME,
    CheckpointLocation,
    CheckpointStorage,
    CompletedCheckpoint,
    SharedStateHandle,
    StateData,
    StreamStateHandle,
    read_inline,
)

__all__ = [
    "Blob",
    "CheckpointLocation",
    "CheckpointMetadata",
    "CheckpointStorage",
    "CompletedCheckpoint",
    "DEFAULT_INLINE_THRESHOLD",
    "DEFAULT_MAX_STATE_SIZE",
    "FileCheckpointStorage",
    "FsspecCheckpointStorage",
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
    "checkpoints_at",
    "load_checkpoint",
    "load_from_pointer",
    "read_checkpoint_metadata",
    "read_inline",
    "load_newest",
    "parse_file_url",
    "register_checkpoint_storage",
    "storage_for",
    "storage_loader",
    "supported_schemes",
    "unpickle_state",
]
