"""The checkpoint storage interface: where snapshots go, as Flink's ``CheckpointStorage`` decides it.

A checkpoint coordinator uses a storage like this::

    location = await storage.create_checkpoint_location(7)          # chk-7, empty, not complete
    handle = await storage.write_state(location, "sum-0-keyed", data)  # one per state blob, in parallel
    ...                                                              # handles travel to the coordinator
    done = await storage.write_metadata(location, metadata)          # last: now chk-7 is complete

and a restore like this, falling back past damaged checkpoints::

    for checkpoint in reversed(await storage.completed_checkpoints()):
        try:
            metadata = await storage.read_metadata(checkpoint.checkpoint_id)
            ...  # the handles in the metadata, then await storage.read_state(handle) for each
        except CorruptCheckpointError:
            continue

A storage never interprets what it stores: state blobs and metadata are bytes to it. It frames each one
with a checksum (see :mod:`lockgate.snapshots._format`) and refuses to hand back damaged bytes.
A checkpoint is complete exactly when its metadata has been written; until then it is invisible to
:meth:`CheckpointStorage.completed_checkpoints`.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from lockgate._errors import CheckpointError, ConfigurationError, CorruptCheckpointError
from lockgate.snapshots._format import byte_view, crc32

#: What :meth:`CheckpointStorage.write_state` takes: the blob's bytes, or an async iterable of chunks.
StateData = bytes | bytearray | memoryview | AsyncIterable[bytes]

#: The file name of a checkpoint's metadata; reserved, so no state blob can be named so.
METADATA_NAME: Final = "_metadata"

_STATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

#: The default :attr:`CheckpointStorage.inline_threshold`: a state blob smaller than this is kept in the
#: checkpoint's metadata instead of a file of its own (Flink's ``state.storage.fs.memory-threshold``).
DEFAULT_INLINE_THRESHOLD: Final = 20 * 1024

#: The largest inline threshold a storage takes: every inline blob is in ``_metadata``, which is read
#: whole, so it must stay small.
MAX_INLINE_THRESHOLD: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CheckpointLocation:
    """Where the files of one checkpoint in progress go.

    Attributes:
        checkpoint_id: The checkpoint's id.
        pointer: Where it is, for people: the file URL of its directory, or a ``memory:`` reference.
    """

    checkpoint_id: int
    pointer: str


@dataclass(frozen=True, slots=True)
class StreamStateHandle:
    """A pointer to one persisted state blob and what is known about it, never the bytes themselves.

    Handles are small and picklable; the coordinator collects them and writes them into the metadata.
    A storage resolves a handle by ``checkpoint_id`` and ``name`` under its own root, so a checkpoint
    directory can be moved or copied as a whole; ``pointer`` records where the blob was written.

    An *inline* handle is the exception: a blob smaller than its storage's ``inline_threshold`` is
    written nowhere, and its handle carries its payload (``inline``) into the checkpoint's metadata,
    which stores it (Flink's ``ByteStreamStateHandle``). It has no file to read or delete; every
    storage's :meth:`CheckpointStorage.read_state` hands its bytes back (:func:`read_inline`).

    Attributes:
        checkpoint_id: The checkpoint the blob belongs to.
        name: The blob's name within its checkpoint (its file name, for file storage).
        pointer: The blob's file path, or its ``memory:`` reference; for an inline blob, where its bytes
            are kept: ``<checkpoint>/_metadata#<name>``.
        size: The payload size in bytes (the stored file is a 20-byte header longer).
        checksum: The CRC-32 of the payload; a read checks the stored blob against it.
        inline: The payload itself, for an inline blob; None for a blob in a file of its own.
    """

    checkpoint_id: int
    name: str
    pointer: str
    size: int
    checksum: int
    inline: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SharedStateHandle:
    """A pointer to one blob in a storage's shared area: state that several checkpoints reference
    (the SST files of incremental RocksDB checkpoints, the links of an incremental heap chain).

    A shared blob belongs to no one checkpoint. The checkpoint coordinator counts the retained
    checkpoints that reference it and deletes it once none does (see ``SharedStateRegistry``).

    Attributes:
        name: The blob's name in the shared area (unique: writers put a random part in it).
        pointer: The blob's file path, or its ``memory:`` reference.
        size: The payload size in bytes.
        checksum: The CRC-32 of the payload; a read checks the stored blob against it.
    """

    name: str
    pointer: str
    size: int
    checksum: int


@dataclass(frozen=True, slots=True)
class CompletedCheckpoint:
    """A checkpoint whose metadata was written: complete, restorable unless damaged.

    Attributes:
        checkpoint_id: The checkpoint's id.
        pointer: The file URL of its directory, or a ``memory:`` reference.
    """

    checkpoint_id: int
    pointer: str


class CheckpointStorage(ABC):
    """Where checkpoints go: one location per checkpoint, named state blobs in it, metadata last.

    Every method is async and safe to call from many tasks at once (different blobs of one checkpoint
    are written in parallel). Implementations must never block the event loop on I/O.
    Errors: :class:`CheckpointError` when a checkpoint cannot be written, found or changed;
    :class:`CorruptCheckpointError` (naming the file) when stored bytes are damaged.
    """

    #: Whether what is stored outlives the process: only then can a process that died leave shared
    #: blobs behind that a later job deletes (see the checkpoint coordinator).
    outlives_process: bool = True
    #: With a key, every file written is signed (HMAC-SHA256), and a file read must carry a signature
    #: the key gives, or it is refused before a byte of it is returned (see ``_format``). Inline blobs
    #: are in ``_metadata``, so its signature covers them.
    signing_key: bytes | None = None
    #: A state blob of fewer bytes than this, given whole to :meth:`write_state`, is not written: its
    #: handle carries it, and the checkpoint's metadata stores it (see :class:`StreamStateHandle`).
    #: This saves a file, and its write and sync, per small state (source positions, small operator
    #: state, few records in flight). 0 turns it off. Shared blobs are never inline. Storages take it
    #: as the ``inline_threshold`` argument (default :data:`DEFAULT_INLINE_THRESHOLD`); this base and
    #: storages made without it keep every blob in a file.
    inline_threshold: int = 0

    def savepoints(self) -> CheckpointStorage | None:
        """The storage of the same place that holds savepoints (``savepoint-<id>``) instead of
        checkpoints: where a savepoint to this place goes, and what a restore from it also reads.
        None (the default) if this kind of storage cannot hold savepoints."""
        return None

    async def snapshot_here(self) -> tuple[CheckpointStorage, CompletedCheckpoint] | None:
        """If this storage's place is itself one checkpoint or savepoint (a URL such as ``.../chk-7``):
        a storage that reads exactly that one, whatever id its files name (a copy may be renamed), and
        the checkpoint. None (the default) if the place is not one checkpoint.

        Raises:
            CorruptCheckpointError: The place is named as a checkpoint and exists, but is not complete.
        """
        return None

    @abstractmethod
    async def create_checkpoint_location(self, checkpoint_id: int) -> CheckpointLocation:
        """Prepare an empty location for checkpoint ``checkpoint_id`` and return it.

        What an earlier, incomplete attempt at the same id left behind is discarded.

        Raises:
            CheckpointError: Checkpoint ``checkpoint_id`` is already complete (it is never overwritten),
                or the location cannot be created.
        """

    def inline_handle(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle | None:
        """The handle that carries ``data`` itself if it is small enough to go inline (whole bytes of
        fewer than :attr:`inline_threshold`); None if it goes to a file. Implementations of
        :meth:`write_state` call this first: an inline blob touches no storage."""
        if not self.inline_threshold or not isinstance(data, bytes | bytearray | memoryview):
            return None
        view = byte_view(data)
        if view.nbytes >= self.inline_threshold:
            return None
        check_state_name(name)
        payload = bytes(view)
        pointer = f"{location.pointer.rstrip('/')}/{METADATA_NAME}#{name}"
        return StreamStateHandle(location.checkpoint_id, name, pointer, len(payload), crc32(payload), payload)

    @abstractmethod
    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        """Persist one named state blob of a checkpoint in progress and return its handle.

        A blob smaller than :attr:`inline_threshold` is not persisted here: its handle holds it
        (:meth:`inline_handle`), and the checkpoint's metadata will.

        Args:
            location: From :meth:`create_checkpoint_location`.
            name: Unique within the checkpoint: 1 to 200 letters, digits, ``.``, ``_`` and ``-``,
                starting with a letter or digit (names starting with ``_`` or ``.`` are reserved).
            data: The blob's bytes, or an async iterable of chunks to stream it without holding it whole.

        Raises:
            CheckpointError: The name is taken or invalid, the checkpoint is already complete or was
                discarded, the blob is too large for the storage, or writing failed.
        """

    @abstractmethod
    async def read_state(self, handle: StreamStateHandle) -> bytes:
        """The payload ``handle`` points to, once its checksum, size and header are verified; an inline
        handle's own bytes, checked against its size and checksum (:func:`read_inline`).

        Raises:
            CorruptCheckpointError: The blob is missing or damaged; the error names it.
        """

    async def open_state(self, handle: StreamStateHandle) -> BinaryIO:
        """The payload ``handle`` points to as a file to read in order (close it after), once its
        checksum, size and header are verified. Storages that can, stream it from where it is stored
        rather than hold it whole (the default reads it whole).

        Raises:
            CorruptCheckpointError: The blob is missing or damaged; the error names it.
        """
        return io.BytesIO(await self.read_state(handle))

    @abstractmethod
    async def write_metadata(self, location: CheckpointLocation, data: bytes) -> CompletedCheckpoint:
        """Write the checkpoint's metadata, last and atomically: this completes the checkpoint.

        Either the whole metadata becomes visible or none of it does; once written, the checkpoint's
        state blobs are durable too, and the location takes no more writes.

        Raises:
            CheckpointError: The checkpoint is already complete, was discarded, or writing failed.
        """

    @abstractmethod
    async def read_metadata(self, checkpoint_id: int) -> bytes:
        """The metadata of a completed checkpoint, once its checksum is verified.

        Raises:
            CheckpointError: No checkpoint ``checkpoint_id`` is complete in this storage.
            CorruptCheckpointError: Its metadata is damaged; the error names the file.
        """

    @abstractmethod
    async def completed_checkpoints(self) -> list[CompletedCheckpoint]:
        """The complete checkpoints, oldest (lowest id) first.

        Cheap: it checks that each metadata exists, not that it is intact; :meth:`read_metadata` does.
        """

    @abstractmethod
    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        """Delete a checkpoint, complete or not, with all its blobs; a missing one is no error.

        The checkpoint stops being complete before any of its blobs is deleted. Shared blobs it
        references are not touched: the coordinator deletes those (:meth:`discard_shared`).
        """

    # ---- claiming: one running job per storage

    async def claim(self, job_name: str) -> str | None:
        """Claim the storage for a running job, so that no second job writes checkpoints beside it
        (their ids would collide, and one's retention would delete the other's checkpoints).

        Returns a note to log when a stale claim, left by a process that no longer runs, was taken
        over; None otherwise. The default claims nothing (storage that does not outlive its process).

        Raises:
            CheckpointError: A running job holds the storage; the error names it and its process.
        """
        return None

    def release_claim(self) -> None:  # noqa: B027 - nothing to release
        """Give the claim up (the job has ended); nothing if this storage object holds none."""

    # ---- the shared area: blobs that several checkpoints reference (incremental checkpoints)

    async def write_shared(self, name: str, data: StateData) -> SharedStateHandle:
        """Persist a blob in the shared area and return its handle.

        Raises:
            CheckpointError: The name is taken or invalid, or writing failed; or the storage has no
                shared area (the default), so it cannot take incremental checkpoints.
        """
        raise CheckpointError(
            f"{self!r} keeps no shared state, so it cannot take incremental checkpoints; use "
            "MemoryCheckpointStorage or FileCheckpointStorage, or turn incremental checkpoints off "
            "(RocksDBStateBackend(incremental=False), HeapStateBackend(incremental=False))"
        )

    async def read_shared(self, handle: SharedStateHandle) -> bytes:
        """The payload of a shared blob, once its checksum and size are verified.

        Raises:
            CorruptCheckpointError: The blob is missing or damaged; the error names it.
        """
        raise CorruptCheckpointError(handle.pointer, f"{self!r} keeps no shared state")

    async def discard_shared(self, names: Iterable[str]) -> None:  # noqa: B027 - nothing to delete
        """Delete shared blobs; missing ones are no error."""

    async def shared_names(self) -> set[str]:
        """The names of every blob in the shared area."""
        return set()


def read_inline(handle: StreamStateHandle) -> bytes:
    """The payload an inline handle carries, once its size and CRC-32 match the handle's.

    Raises:
        CorruptCheckpointError: They do not (the metadata was damaged, or changed by hand).
    """
    payload = handle.inline
    if payload is None:
        raise CorruptCheckpointError(handle.pointer, "it is not an inline blob")
    if len(payload) != handle.size:
        raise CorruptCheckpointError(
            handle.pointer, f"the inline blob holds {len(payload)} bytes, its handle records {handle.size}"
        )
    checksum = crc32(payload)
    if checksum != handle.checksum:
        raise CorruptCheckpointError(
            handle.pointer,
            f"checksum mismatch: the inline blob's CRC-32 is {checksum:#010x}, its handle records "
            f"{handle.checksum:#010x}",
        )
    return payload


def check_inline_threshold(threshold: object) -> int:
    """``threshold`` if it is a usable :attr:`CheckpointStorage.inline_threshold`; a clear error otherwise."""
    if (
        not isinstance(threshold, int)
        or isinstance(threshold, bool)
        or not 0 <= threshold <= MAX_INLINE_THRESHOLD
    ):
        raise ConfigurationError(
            "inline_threshold is the size in bytes below which a state blob is kept in the checkpoint's "
            f"metadata instead of a file, an int from 0 (never) to {MAX_INLINE_THRESHOLD}, got {threshold!r}"
        )
    return threshold


def check_checkpoint_id(checkpoint_id: object) -> int:
    """``checkpoint_id`` if it is a non-negative int; a clear error otherwise."""
    if not isinstance(checkpoint_id, int) or isinstance(checkpoint_id, bool) or checkpoint_id < 0:
        raise CheckpointError(f"a checkpoint id is a non-negative int, got {checkpoint_id!r}")
    return checkpoint_id


def check_state_name(name: object) -> str:
    """``name`` if it can name a state blob (and a file) in every storage; a clear error otherwise."""
    if not isinstance(name, str) or not _STATE_NAME.fullmatch(name):
        raise CheckpointError(
            f"a state blob name is 1 to 200 letters, digits, '.', '_' and '-', starting with a letter or "
            f"a digit, got {name!r}"
        )
    return name


def check_state_data(data: object) -> None:
    """Refuse what :meth:`CheckpointStorage.write_state` cannot store."""
    if not isinstance(data, bytes | bytearray | memoryview | AsyncIterable):
        raise TypeError(f"write_state() takes bytes or an async iterable of bytes, got {type(data).__name__}")


@asynccontextmanager
async def consuming(chunks: AsyncIterable[bytes]) -> AsyncIterator[AsyncIterable[bytes]]:
    """Iterate ``chunks``, then close it (an async generator left half-way would warn when collected)."""
    try:
        yield chunks
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
