"""RocksDBStateBackend: a job's RocksDB settings, checked, and the factory of its subtasks' keyed backends."""

from __future__ import annotations

import os
from collections.abc import Mapping

from lockgate._errors import ConfigurationError
from lockgate.snapshots import storage_for
from lockgate.state._keygroups import KeyGroupRange
from lockgate.state._presets import StatePreset
from lockgate.state._snapshot import KeyedStateManifest, PreparedKeyedState
from lockgate.state.rocksdb._keyed import RocksDBKeyedStateBackend
from lockgate.state.rocksdb._native import RocksDBManifest
from lockgate.state.rocksdb._options import _MIB, MAX_VALUE_SIZE_LIMIT, MIN_MEMORY_BUDGET


class RocksDBStateBackend(StatePreset):
    """Keeps live keyed state in RocksDB on local disk: state larger than memory, bounded memory use.

    With a ``checkpoint_url`` it is also a preset: ``env.set_state_backend`` then sends checkpoints
    to a :class:`~lockgate.FileCheckpointStorage` there; without one the environment's storage stays.

    Args:
        checkpoint_url: Where checkpoints go, such as ``"file:///data/ckpts"``, or None.
        incremental: Whether checkpoints upload only the SST files that are new since the last
            complete checkpoint, and reference the others (savepoints are always whole).
        local_dir: The directory under which each subtask makes its working directory (created if
            missing); the system temporary directory if None.
        memory_budget: Bytes of memory each keyed subtask's RocksDB state may use: RocksDB's block
            cache, index and filter blocks and memtables together (5/8 of it), and the value caches
            of its states (3/8). Its cache of RocksDB keys takes up to a quarter more, on top; what
            the allocator keeps after freeing is not counted.
        max_value_size: The largest serialised value in bytes; a larger one fails the job with
            :class:`~lockgate.StateValueTooLargeError` rather than slowing RocksDB down.
        native_metrics: Whether RocksDB collects its own statistics (a small cost on every access).

    Raises:
        ConfigurationError: An argument of the wrong type or out of range; the message says which.
    """

    def __init__(
        self,
        checkpoint_url: str | None = None,
        *,
        incremental: bool = True,
        local_dir: str | os.PathLike[str] | None = None,
        memory_budget: int = 64 * _MIB,
        max_value_size: int = 64 * _MIB,
        native_metrics: bool = False,
    ) -> None:
        if checkpoint_url is not None and (not isinstance(checkpoint_url, str) or not checkpoint_url):
            raise ConfigurationError(
                "checkpoint_url must be None or the URL of a checkpoint directory such as "
                f"'file:///data/ckpts', got {checkpoint_url!r}"
            )
        for name, flag in (("incremental", incremental), ("native_metrics", native_metrics)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
        if local_dir is not None:
            if not isinstance(local_dir, str | os.PathLike) or not os.fspath(local_dir):
                raise ConfigurationError(
                    f"local_dir must be None or the path of a local directory, got {local_dir!r}"
                )
            local_dir = os.path.abspath(os.fspath(local_dir))
            if os.path.exists(local_dir) and not os.path.isdir(local_dir):
                raise ConfigurationError(f"local_dir {local_dir!r} exists but is not a directory")
        if type(memory_budget) is not int or memory_budget < MIN_MEMORY_BUDGET:
            raise ConfigurationError(
                f"memory_budget must be an int of at least {MIN_MEMORY_BUDGET} bytes (4 MiB), "
                f"got {memory_budget!r}"
            )
        if type(max_value_size) is not int or not 1 <= max_value_size <= MAX_VALUE_SIZE_LIMIT:
            raise ConfigurationError(
                f"max_value_size must be an int from 1 to {MAX_VALUE_SIZE_LIMIT} bytes (RocksDB stores "
                f"no value of 4 GiB or more), got {max_value_size!r}"
            )
        super().__init__(checkpoint_storage=None if checkpoint_url is None else storage_for(checkpoint_url))
        self.checkpoint_url = checkpoint_url
        self.incremental = incremental
        self.local_dir: str | None = local_dir
        self.memory_budget = memory_budget
        self.max_value_size = max_value_size
        self.native_metrics = native_metrics

    def __repr__(self) -> str:
        return (
            f"RocksDBStateBackend({self.checkpoint_url!r}, incremental={self.incremental}, "
            f"local_dir={self.local_dir!r}, memory_budget={self.memory_budget}, "
            f"max_value_size={self.max_value_size}, native_metrics={self.native_metrics})"
        )

    def prepare_restore(
        self, manifest: KeyedStateManifest, shared: Mapping[str, tuple[bytes, str]]
    ) -> PreparedKeyedState | None:
        """Download an incremental RocksDB checkpoint's files, for a subtask to open as its database."""
        return manifest.download(shared) if isinstance(manifest, RocksDBManifest) else None

    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> RocksDBKeyedStateBackend:
        return RocksDBKeyedStateBackend(
            operator_uid,
            key_group_range,
            max_parallelism,
            local_dir=self.local_dir,
            memory_budget=self.memory_budget,
            max_value_size=self.max_value_size,
            native_metrics=self.native_metrics,
            incremental=self.incremental,
        )
