"""Checkpoint storage in the coordinator's memory: the default, for tests and small state.

Checkpoints kept here live as long as the storage object: they survive a job restart inside the same
process, never the process. Each state blob is limited to ``max_state_size`` bytes, as in Flink's
memory storage, so a job whose state grows does not quietly fill the coordinator's memory.
Blobs are stored framed with a checksum (see :mod:`lockgate.snapshots._format`), byte for byte what
:class:`~lockgate.snapshots.FileCheckpointStorage` would write to a file.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import Final

from lockgate._errors import CheckpointError, ConfigurationError, CorruptCheckpointError
from lockgate.snapshots._format import byte_view, crc32, frame, unframe
from lockgate.snapshots._storage import (
    DEFAULT_INLINE_THRESHOLD,
    METADATA_NAME,
    CheckpointLocation,
    CheckpointStorage,
    CompletedCheckpoint,
    SharedStateHandle,
    StateData,
    StreamStateHandle,
    check_checkpoint_id,
    check_inline_threshold,
    check_state_data,
    check_state_name,
    consuming,
    read_inline,
)

DEFAULT_MAX_STATE_SIZE: Final = 5 * 1024 * 1024

_instances = itertools.count(1)


@dataclass
class _Checkpoint:
    blobs: dict[str, bytes] = field(default_factory=dict)  # name -> framed bytes
    metadata: bytes | None = None  # framed; set exactly when the checkpoint is complete


class MemoryCheckpointStorage(CheckpointStorage):
    """Keeps checkpoints in memory, in the checkpoint coordinator.

    Args:
        max_state_size: The largest state blob in bytes (default 5 MiB). A larger one fails its
            checkpoint with a :class:`CheckpointError` naming it; metadata is not limited.
        inline_threshold: A state blob of fewer bytes is kept in the checkpoint's metadata, as file
            storage keeps it (default 20 KiB, at most 1 MiB; 0: never).

    Blobs are referenced as ``memory:<storage>/chk-<id>/<name>``, shared ones as
    ``memory:<storage>/shared/<name>``.
    """

    outlives_process = False

    def __init__(
        self,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        *,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
    ) -> None:
        if not isinstance(max_state_size, int) or isinstance(max_state_size, bool) or max_state_size < 1:
            raise ConfigurationError(
                f"max_state_size is the largest state blob in bytes, a positive int, got {max_state_size!r}"
            )
        self.max_state_size = max_state_size
        self.inline_threshold = check_inline_threshold(inline_threshold)
        self._prefix = f"memory:{next(_instances)}"
        self._checkpoints: dict[int, _Checkpoint] = {}
        self._shared: dict[str, bytes] = {}  # name -> framed bytes

    def __repr__(self) -> str:
        return f"MemoryCheckpointStorage(max_state_size={self.max_state_size})"

    def _pointer(self, checkpoint_id: int, name: str | None = None) -> str:
        pointer = f"{self._prefix}/chk-{checkpoint_id}"
        return pointer if name is None else f"{pointer}/{name}"

    def _in_progress(self, location: CheckpointLocation) -> _Checkpoint:
        checkpoint = self._checkpoints.get(location.checkpoint_id)
        if checkpoint is None:
            raise CheckpointError(
                f"checkpoint {location.checkpoint_id} has no location in {self!r}: it was discarded, or its "
                "location was not created with create_checkpoint_location()"
            )
        if checkpoint.metadata is not None:
            raise CheckpointError(
                f"checkpoint {location.checkpoint_id} is already complete; it takes no more writes"
            )
        return checkpoint

    async def create_checkpoint_location(self, checkpoint_id: int) -> CheckpointLocation:
        check_checkpoint_id(checkpoint_id)
        existing = self._checkpoints.get(checkpoint_id)
        if existing is not None and existing.metadata is not None:
            raise CheckpointError(f"checkpoint {checkpoint_id} is already complete; it is never overwritten")
        self._checkpoints[checkpoint_id] = _Checkpoint()
        return CheckpointLocation(checkpoint_id, self._pointer(checkpoint_id))

    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        if isinstance(data, bytes | bytearray | memoryview):  # the limit holds for inline blobs too
            self._check_size(location.checkpoint_id, name, byte_view(data).nbytes)
        inline = self.inline_handle(location, name, data)
        if inline is not None:
            return inline
        check_state_name(name)
        check_state_data(data)
        checkpoint = self._in_progress(location)
        self._check_free(checkpoint, location.checkpoint_id, name)
        if isinstance(data, AsyncIterable):
            framed, size, checksum = await self._collect(location.checkpoint_id, name, data)
            # The chunks were awaited: the checkpoint may have been completed, discarded or retried since.
            if self._in_progress(location) is not checkpoint:
                raise CheckpointError(
                    f"checkpoint {location.checkpoint_id} was discarded while {name!r} was being written"
                )
            self._check_free(checkpoint, location.checkpoint_id, name)
        else:
            payload = byte_view(data)
            size = payload.nbytes
            self._check_size(location.checkpoint_id, name, size)
            framed, checksum = frame(payload, self.signing_key)
        checkpoint.blobs[name] = framed
        pointer = self._pointer(location.checkpoint_id, name)
        return StreamStateHandle(location.checkpoint_id, name, pointer, size, checksum)

    async def _collect(
        self, checkpoint_id: int, name: str, chunks: AsyncIterable[bytes]
    ) -> tuple[bytes, int, int]:
        parts: list[bytes] = []
        size = checksum = 0
        async with consuming(chunks) as iterable:
            async for chunk in iterable:
                part = bytes(byte_view(chunk))
                size += len(part)
                self._check_size(checkpoint_id, name, size, streamed=True)
                checksum = crc32(part, checksum)
                parts.append(part)
        payload = b"".join(parts)
        return frame(payload, self.signing_key)[0], size, checksum

    def _check_free(self, checkpoint: _Checkpoint, checkpoint_id: int, name: str) -> None:
        if name in checkpoint.blobs:
            raise CheckpointError(f"checkpoint {checkpoint_id} already has a state blob named {name!r}")

    def _check_size(self, checkpoint_id: int, name: str, size: int, *, streamed: bool = False) -> None:
        if size > self.max_state_size:
            amount = f"at least {size}" if streamed else str(size)
            raise CheckpointError(
                f"state {name!r} of checkpoint {checkpoint_id} is {amount} bytes, more than the "
                f"{self.max_state_size} bytes the memory checkpoint storage holds per state "
                f"(max_state_size); raise the limit with MemoryCheckpointStorage(max_state_size=...), or "
                f"keep checkpoints on disk with FileCheckpointStorage('file:///path/to/checkpoints')"
            )

    async def read_state(self, handle: StreamStateHandle) -> bytes:
        if handle.inline is not None:
            return read_inline(handle)
        check_state_name(handle.name)
        pointer = self._pointer(handle.checkpoint_id, handle.name)
        checkpoint = self._checkpoints.get(handle.checkpoint_id)
        framed = None if checkpoint is None else checkpoint.blobs.get(handle.name)
        if framed is None:
            raise CorruptCheckpointError(pointer, "missing: no such state blob in this storage")
        return unframe(
            framed,
            pointer,
            expected_size=handle.size,
            expected_checksum=handle.checksum,
            key=self.signing_key,
        )

    async def write_metadata(self, location: CheckpointLocation, data: bytes) -> CompletedCheckpoint:
        checkpoint = self._in_progress(location)
        checkpoint.metadata, _ = frame(data, self.signing_key)
        return CompletedCheckpoint(location.checkpoint_id, self._pointer(location.checkpoint_id))

    async def read_metadata(self, checkpoint_id: int) -> bytes:
        check_checkpoint_id(checkpoint_id)
        checkpoint = self._checkpoints.get(checkpoint_id)
        if checkpoint is None or checkpoint.metadata is None:
            raise CheckpointError(f"checkpoint {checkpoint_id} is not complete in {self!r}")
        return unframe(checkpoint.metadata, self._pointer(checkpoint_id, METADATA_NAME), key=self.signing_key)

    async def completed_checkpoints(self) -> list[CompletedCheckpoint]:
        return [
            CompletedCheckpoint(checkpoint_id, self._pointer(checkpoint_id))
            for checkpoint_id, checkpoint in sorted(self._checkpoints.items())
            if checkpoint.metadata is not None
        ]

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        check_checkpoint_id(checkpoint_id)
        self._checkpoints.pop(checkpoint_id, None)

    # ---- the shared area

    async def write_shared(self, name: str, data: StateData) -> SharedStateHandle:
        check_state_name(name)
        check_state_data(data)
        if name in self._shared:
            raise CheckpointError(f"the shared area of {self!r} already has a blob named {name!r}")
        if isinstance(data, AsyncIterable):
            framed, size, checksum = await self._collect(0, name, data)
        else:
            payload = byte_view(data)
            size = payload.nbytes
            self._check_size(0, name, size)
            framed, checksum = frame(payload, self.signing_key)
        self._shared[name] = framed
        return SharedStateHandle(name, f"{self._prefix}/shared/{name}", size, checksum)

    async def read_shared(self, handle: SharedStateHandle) -> bytes:
        check_state_name(handle.name)
        pointer = f"{self._prefix}/shared/{handle.name}"
        framed = self._shared.get(handle.name)
        if framed is None:
            raise CorruptCheckpointError(pointer, "missing: no such shared blob in this storage")
        return unframe(
            framed,
            pointer,
            expected_size=handle.size,
            expected_checksum=handle.checksum,
            key=self.signing_key,
        )

    async def discard_shared(self, names: Iterable[str]) -> None:
        for name in names:
            self._shared.pop(name, None)

    async def shared_names(self) -> set[str]:
        return set(self._shared)
