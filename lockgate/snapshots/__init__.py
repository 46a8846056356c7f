"""Checkpoint storage, snapshot and savepoint formats, their readers and writers.

So far: where checkpoints go (:class:`CheckpointStorage`, in memory or in files) and the framed,
checksummed format of every stored blob. The checkpoint coordinator writes checkpoints through these.
This package imports nothing from ``lockgate.state`` or ``lockgate.actors``.
"""

from lockgate.snapshots._blobs import SHARED_NAME as SHARED_NAME
from lockgate.snapshots._blobs import OperatorStateWriter as OperatorStateWriter
from lockgate.snapshots._blobs import SubtaskStateWriter as SubtaskStateWriter
from lockgate.snapshots._blobs import blob_name as blob_name
from lockgate.snapshots._file import CHECKPOINT_PREFIX as CHECKPOINT_PREFIX
from lockgate.snapshots._file import SAVEPOINT_PREFIX as SAVEPOINT_PREFIX
from lockgate.snapshots._file import SHARED_DIRECTORY as SHARED_DIRECTORY
from lockgate.snapshots._file import FileCheckpointStorage as FileCheckpointStorage
from lockgate.snapshots._file import fsync_directory as fsync_directory
from lockgate.snapshots._file import parse_file_url as parse_file_url
from lockgate.snapshots._loading import Blob as Blob
from lockgate.snapshots._loading import LoadedCheckpoint as LoadedCheckpoint
from lockgate.snapshots._loading import Loader as Loader
from lockgate.snapshots._loading import load_checkpoint as load_checkpoint
from lockgate.snapshots._loading import load_from_pointer as load_from_pointer
from lockgate.snapshots._loading import load_newest as load_newest
from lockgate.snapshots._loading import storage_loader as storage_loader
from lockgate.snapshots._loading import unpickle_state as unpickle_state
from lockgate.snapshots._memory import DEFAULT_MAX_STATE_SIZE as DEFAULT_MAX_STATE_SIZE
from lockgate.snapshots._memory import MemoryCheckpointStorage as MemoryCheckpointStorage
from lockgate.snapshots._metadata import CheckpointMetadata as CheckpointMetadata
from lockgate.snapshots._metadata import OperatorCheckpointState as OperatorCheckpointState
from lockgate.snapshots._metadata import SubtaskStateHandles as SubtaskStateHandles
from lockgate.snapshots._registry import StorageFactory as StorageFactory
from lockgate.snapshots._registry import register_checkpoint_storage as register_checkpoint_storage
from lockgate.snapshots._registry import storage_for as storage_for
from lockgate.snapshots._registry import supported_schemes as supported_schemes
from lockgate.snapshots._shared import SharedStateRegistry as SharedStateRegistry
from lockgate.snapshots._storage import METADATA_NAME as METADATA_NAME
from lockgate.snapshots._storage import CheckpointLocation as CheckpointLocation
from lockgate.snapshots._storage import CheckpointStorage as CheckpointStorage
from lockgate.snapshots._storage import CompletedCheckpoint as CompletedCheckpoint
from lockgate.snapshots._storage import SharedStateHandle as SharedStateHandle
from lockgate.snapshots._storage import StateData as StateData
from lockgate.snapshots._storage import StreamStateHandle as StreamStateHandle
