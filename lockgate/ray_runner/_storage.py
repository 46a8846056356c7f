"""Checkpoint storage that lives in the driver's process, reached from subtasks in Ray workers.

A storage whose files outlive its process (a file system, object storage) is used by each worker
directly: its pickled copy writes to the same place. One that keeps its files in the process's memory
(:class:`~lockgate.snapshots.MemoryCheckpointStorage`, fsspec's ``memory://``) would keep each
worker's files in that worker: the workers write through :class:`DriverStorage` instead, whose every
call runs on the driver's storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lockgate._driver import driver_link, resident_token
from lockgate.snapshots import (
    CheckpointLocation,
    CheckpointStorage,
    CompletedCheckpoint,
    SharedStateHandle,
    StateData,
    StreamStateHandle,
    read_inline,
)


class DriverStorage(CheckpointStorage):
    """Stands in a worker for a storage in the driver's process: each call runs there."""

    outlives_process = False

    def __init__(self, storage: CheckpointStorage) -> None:
        self._name = repr(storage)
        self._storage: CheckpointStorage | None = storage  # in the driver's process only
        self._token = resident_token(storage)
        self.inline_threshold = storage.inline_threshold  # small blobs go inline here, with no call

    def __repr__(self) -> str:
        return f"DriverStorage({self._name})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "_name": self._name,
            "_storage": None,
            "_token": self._token,
            "inline_threshold": self.inline_threshold,
        }

    async def _call(self, method: str, *args: Any) -> Any:
        if self._storage is not None:  # in the driver itself
            return await getattr(self._storage, method)(*args)
        link = driver_link()
        if link is None:
            raise RuntimeError(f"{self!r} is used away from its driver, in a process that has no link to it")
        return await link.call(self._token, method, *args)

    async def create_checkpoint_location(self, checkpoint_id: int) -> CheckpointLocation:
        location: CheckpointLocation = await self._call("create_checkpoint_location", checkpoint_id)
        return location

    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        inline = self.inline_handle(location, name, data)
        if inline is not None:
            return inline
        handle: StreamStateHandle = await self._call("write_state", location, name, await _whole(data))
        return handle

    async def read_state(self, handle: StreamStateHandle) -> bytes:
        if handle.inline is not None:
            return read_inline(handle)
        data: bytes = await self._call("read_state", handle)
        return data

    async def write_metadata(self, location: CheckpointLocation, data: bytes) -> CompletedCheckpoint:
        completed: CompletedCheckpoint = await self._call("write_metadata", location, data)
        return completed

    async def read_metadata(self, checkpoint_id: int) -> bytes:
        data: bytes = await self._call("read_metadata", checkpoint_id)
        return data

    async def completed_checkpoints(self) -> list[CompletedCheckpoint]:
        completed: list[CompletedCheckpoint] = await self._call("completed_checkpoints")
        return completed

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        await self._call("discard_checkpoint", checkpoint_id)

    async def write_shared(self, name: str, data: StateData) -> SharedStateHandle:
        handle: SharedStateHandle = await self._call("write_shared", name, await _whole(data))
        return handle

    async def read_shared(self, handle: SharedStateHandle) -> bytes:
        data: bytes = await self._call("read_shared", handle)
        return data

    async def discard_shared(self, names: Iterable[str]) -> None:
        await self._call("discard_shared", list(names))

    async def shared_names(self) -> set[str]:
        names: set[str] = await self._call("shared_names")
        return names


async def _whole(data: StateData) -> bytes:
    """``data`` as one bytes object (a stream of chunks joined): it travels in one call."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return b"".join([chunk async for chunk in data])


def reachable_from_workers(storage: CheckpointStorage) -> CheckpointStorage:
    """``storage`` as workers must use it: itself if its files outlive its process, else through the
    driver."""
    return storage if storage.outlives_process else DriverStorage(storage)
