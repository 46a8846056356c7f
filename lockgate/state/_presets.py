"""The seed's presets: a state backend bundled with a checkpoint storage, as Flink's legacy backends were.

Where live state lives (the state backend) and where snapshots go (the checkpoint storage) are
independent choices. A preset makes both at once::

    env.set_state_backend(lg.FsStateBackend("file:///data/ckpts"))
    # is
    env.set_state_backend(lg.HeapStateBackend()).set_checkpoint_storage("file:///data/ckpts")

A preset is a :class:`StatePreset`: a state backend that also carries ``checkpoint_storage`` and
``asynchronous``. A backend that can be a preset (RocksDB is one) subclasses :class:`StatePreset` and
calls its ``__init__``::

    class RocksDBStateBackend(StatePreset):
        def __init__(self, checkpoint_url=None, *, incremental=True, ...):
            storage = None if checkpoint_url is None else storage_for(checkpoint_url)
            super().__init__(checkpoint_storage=storage)
            ...

A preset whose ``checkpoint_storage`` is None leaves the environment's storage as it is.
"""

from __future__ import annotations

import os

from lockgate._errors import ConfigurationError
from lockgate.snapshots import (
    DEFAULT_MAX_STATE_SIZE,
    CheckpointStorage,
    MemoryCheckpointStorage,
    storage_for,
)
from lockgate.state._backend import StateBackend
from lockgate.state.heap import HeapStateBackend


class StatePreset(StateBackend):
    """A state backend that also chooses the checkpoint storage and how snapshots are taken.

    :meth:`StreamEnvironment.set_state_backend` given a preset also sets the environment's checkpoint
    storage to :attr:`checkpoint_storage`, unless that is None. The environment's storage is the one used;
    a later :meth:`StreamEnvironment.set_checkpoint_storage` replaces it.

    Attributes:
        checkpoint_storage: Where this preset's checkpoints go, or None to keep the environment's.
        asynchronous: Whether snapshots are written in the background while records keep flowing
            (True), or entirely inside the synchronous part of the snapshot (False).
    """

    def __init__(self, *, checkpoint_storage: CheckpointStorage | None, asynchronous: bool = True) -> None:
        super().__init__()
        if checkpoint_storage is not None and not isinstance(checkpoint_storage, CheckpointStorage):
            raise ConfigurationError(
                f"checkpoint_storage must be a CheckpointStorage, got {checkpoint_storage!r}"
            )
        if not isinstance(asynchronous, bool):
            raise ConfigurationError(f"asynchronous must be True or False, got {asynchronous!r}")
        self.checkpoint_storage = checkpoint_storage
        self.asynchronous = asynchronous


class MemoryStateBackend(StatePreset, HeapStateBackend):
    """Live state on the heap, checkpoints in the coordinator's memory: the default of an environment.

    Args:
        max_state_size: The largest state blob of a checkpoint in bytes, as for
            :class:`MemoryCheckpointStorage`.
        asynchronous: Whether snapshots are written in the background.
    """

    checkpoint_storage: MemoryCheckpointStorage

    def __init__(self, max_state_size: int = DEFAULT_MAX_STATE_SIZE, asynchronous: bool = True) -> None:
        super().__init__(
            checkpoint_storage=MemoryCheckpointStorage(max_state_size), asynchronous=asynchronous
        )

    def __repr__(self) -> str:
        return (
            f"MemoryStateBackend(max_state_size={self.checkpoint_storage.max_state_size}, "
            f"asynchronous={self.asynchronous})"
        )


class FsStateBackend(StatePreset, HeapStateBackend):
    """Live state on the heap, checkpoints in files under a directory URL.

    Args:
        url: Where checkpoints go: ``file:///absolute/path``, or a plain path (see
            :class:`FileCheckpointStorage`); any URL scheme with a registered storage works.
        asynchronous: Whether snapshots are written in the background.

    Raises:
        ConfigurationError: The URL is not usable; the message says why.
    """

    checkpoint_storage: CheckpointStorage

    def __init__(self, url: str | os.PathLike[str], asynchronous: bool = True) -> None:
        if isinstance(url, CheckpointStorage) or not isinstance(url, str | os.PathLike):
            raise ConfigurationError(
                f"FsStateBackend takes the URL of a checkpoint directory, such as 'file:///data/ckpts', "
                f"got {url!r}; to use a storage object, pass it to env.set_checkpoint_storage()"
            )
        super().__init__(checkpoint_storage=storage_for(url), asynchronous=asynchronous)

    def __repr__(self) -> str:
        url = getattr(self.checkpoint_storage, "url", self.checkpoint_storage)
        return f"FsStateBackend({url!r}, asynchronous={self.asynchronous})"
