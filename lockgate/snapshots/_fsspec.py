"""Checkpoint storage in object storage, or any file system fsspec reaches: ``s3://``, ``gs://``, ``memory://``.

Laid out as the file storage lays out a directory (see :mod:`lockgate.snapshots._layout`), each blob one
object, framed and checksummed byte for byte as a file would be (see :mod:`lockgate.snapshots._format`)::

    <url>/chk-<id>/_started   written first, empty: the location exists (object stores have no directories)
    <url>/chk-<id>/<name>     one object per state blob
    <url>/chk-<id>/_metadata  written last, in one request, under its final name
    <url>/shared/<name>       blobs that several checkpoints reference (incremental checkpoints)

Atomic completion without a rename: every state object of a checkpoint is written whole (its upload
finished) before the coordinator writes the metadata, and the metadata is one object written in one
request, which an object store makes visible whole or not at all. A checkpoint without ``_metadata``
is incomplete: listings skip it, a restore never picks it, and a retry of the same id clears it first.
Discarding deletes ``_metadata`` before anything else, so a half-deleted checkpoint is incomplete too.

Every call to the file system is blocking (fsspec's synchronous interface, which for async file systems
such as s3fs runs their coroutines on fsspec's own event-loop thread) and runs in a worker thread
(:func:`lockgate._threads.run_sync`): the job's event loop, asyncio or trio, never waits for the network.
fsspec is imported only when a storage of this kind is made.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, BinaryIO, Final, TypeVar

from lockgate._errors import CheckpointError, ConfigurationError, CorruptCheckpointError, LockgateError
from lockgate._threads import run_sync
from lockgate.snapshots._format import Bytes, FrameBuilder, byte_view, frame, unframe
from lockgate.snapshots._layout import (
    CHECKPOINT_PREFIX,
    SAVEPOINT_PREFIX,
    SHARED_DIRECTORY,
    SNAPSHOT_DIRECTORY,
    check_prefix,
    directory_pattern,
)
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
from lockgate.snapshots._urls import url_scheme

T = TypeVar("T")

#: The object that makes a checkpoint's location exist; reserved, as no blob's name starts with ``_``.
STARTED_NAME: Final = "_started"

#: URL schemes registered for this storage without importing fsspec; others fsspec knows work too.
FSSPEC_SCHEMES: Final = (
    "s3",
    "s3a",
    "gs",
    "gcs",
    "az",
    "abfs",
    "abfss",
    "adl",
    "oci",
    "oss",
    "hdfs",
    "webhdfs",
    "sftp",
    "memory",
)

#: How much of a streamed blob is held in memory before the rest of it waits in a temporary file.
_SPOOL_IN_MEMORY: Final = 16 * 1024 * 1024
_COPY_PIECE: Final = 1024 * 1024

_INSTALL_HINT: Final = (
    "pip install 'lockgate[s3]' installs fsspec and s3fs (for s3:// URLs); other schemes need fsspec's "
    "package for them as well (gcsfs for gs://, adlfs for az://)"
)


def fsspec_knows(scheme: str) -> bool:
    """Whether fsspec is installed and has a file system for URLs of ``scheme``."""
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return False
    return scheme in known_implementations or scheme in registry


def _open_file_system(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec.core
    except ImportError as error:
        raise ConfigurationError(
            f"checkpoints at {url!r} need fsspec, which is not installed; {_INSTALL_HINT}"
        ) from error
    try:
        file_system, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as error:
        raise ConfigurationError(
            f"checkpoints at {url!r} need a package that is missing ({error}); {_INSTALL_HINT}"
        ) from error
    except Exception as error:  # an unknown protocol, bad options, a client that cannot start
        raise ConfigurationError(f"fsspec cannot open {url!r}: {type(error).__name__}: {error}") from error
    return file_system, str(root).rstrip("/")


class FsspecCheckpointStorage(CheckpointStorage):
    """Keeps checkpoints in object storage (S3, GCS, Azure, ...) or any file system fsspec reaches.

    The same layout, framing, checksums, signatures, atomic completion, retention and shared-blob
    reference counting as :class:`~lockgate.FileCheckpointStorage` (``pip install 'lockgate[s3]'``
    for S3). Where a file system allows rename, this storage still does not rely on it: the metadata is
    written last, in one request, under its final name.

    Args:
        url: The root, as an fsspec URL: ``s3://bucket/checkpoints``, ``gs://bucket/path``,
            ``memory://checkpoints`` (this process's memory: for tests).
        prefix: The name of each checkpoint's place before its id: ``chk-``, or ``savepoint-`` for the
            storage savepoints are written to.
        inline_threshold: A state blob of fewer bytes is kept in the checkpoint's ``_metadata``, not in
            an object of its own (default 20 KiB, at most 1 MiB; 0: every blob is an object). Small
            state then costs no request (see :attr:`CheckpointStorage.inline_threshold`).
        **storage_options: Passed to the fsspec file system, e.g. for S3 ``endpoint_url=...``,
            ``key=...``, ``secret=...``. Without them, fsspec's configuration and the environment apply
            (for S3 the usual AWS variables, ``AWS_ENDPOINT_URL`` among them, and ``~/.aws``).

    Attributes:
        url: The root URL, without a trailing ``/``.

    There is no claim: unlike a checkpoint directory, an object-store URL is not guarded against a
    second job checkpointing beside the first; give each job a URL of its own.

    Raises:
        ConfigurationError: The URL is not one fsspec can open, or a package it needs is missing (the
            message says what to install).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = CHECKPOINT_PREFIX,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
        **storage_options: Any,
    ) -> None:
        self.prefix = check_prefix(prefix)
        self.inline_threshold = check_inline_threshold(inline_threshold)
        if not isinstance(url, str) or url_scheme(url) is None:
            raise ConfigurationError(
                f"FsspecCheckpointStorage takes a URL such as 's3://bucket/checkpoints', got {url!r}"
            )
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options)
        self._fs, self._root = _open_file_system(self.url, self.storage_options)
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        if "memory" in protocols:  # fsspec's memory:// lives in this process alone
            self.outlives_process = False
        self._pattern = directory_pattern(prefix)
        self._only: str | None = None  # set: the storage reads this one checkpoint's place only

    def __repr__(self) -> str:
        return f"FsspecCheckpointStorage({self.url!r})"  # never the options: they may hold credentials

    @classmethod
    def from_url(cls, url: str) -> FsspecCheckpointStorage:
        """The storage for an fsspec URL; what the URL scheme registry calls."""
        return cls(url)

    # ---- where things are

    def _checkpoint_path(self, checkpoint_id: int) -> str:
        if self._only is not None:
            return self._only
        return f"{self._root}/{self.prefix}{check_checkpoint_id(checkpoint_id)}"

    def _pointer(self, path: str) -> str:
        """The URL of ``path`` (which is under the root), for people and for handles."""
        return self.url + path[len(self._root) :]

    def savepoints(self) -> FsspecCheckpointStorage:
        savepoints = copy.copy(self)
        savepoints.prefix = SAVEPOINT_PREFIX
        savepoints._pattern = directory_pattern(SAVEPOINT_PREFIX)
        return savepoints

    async def snapshot_here(self) -> tuple[CheckpointStorage, CompletedCheckpoint] | None:
        return await run_sync(self._snapshot_here)

    def _snapshot_here(self) -> tuple[CheckpointStorage, CompletedCheckpoint] | None:
        match = SNAPSHOT_DIRECTORY.fullmatch(self._root.rsplit("/", 1)[-1])
        if match is None:
            return None
        names = self._names(self._root)
        if METADATA_NAME in names:
            only = copy.copy(self)
            only._only = self._root
            return only, CompletedCheckpoint(int(match[2]), self.url)
        if names:
            raise CorruptCheckpointError(
                f"{self.url}/{METADATA_NAME}", "it is missing: the checkpoint is not complete"
            )
        return None

    # ---- writing

    async def create_checkpoint_location(self, checkpoint_id: int) -> CheckpointLocation:
        path = self._checkpoint_path(checkpoint_id)
        await run_sync(self._create_location, path, checkpoint_id)
        return CheckpointLocation(checkpoint_id, self._pointer(path))

    def _create_location(self, path: str, checkpoint_id: int) -> None:
        names = self._names(path)
        if METADATA_NAME in names:
            raise CheckpointError(
                f"checkpoint {checkpoint_id} is already complete in {self._pointer(path)}; "
                "it is never overwritten"
            )
        with self._failing_as(f"cannot create the checkpoint location {self._pointer(path)}"):
            if names:  # an earlier attempt at this id that never completed
                self._remove_tree(path)
            self._fs.pipe_file(f"{path}/{STARTED_NAME}", b"")

    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        inline = self.inline_handle(location, name, data)
        if inline is not None:
            return inline
        check_state_name(name)
        check_state_data(data)
        directory = self._checkpoint_path(location.checkpoint_id)
        path = f"{directory}/{name}"

        def check() -> None:
            self._check_writable(directory, location.checkpoint_id, name)

        size, checksum = await self._write(path, data, check)
        return StreamStateHandle(location.checkpoint_id, name, self._pointer(path), size, checksum)

    def _check_writable(self, directory: str, checkpoint_id: int, name: str) -> None:
        names = self._names(directory)
        if METADATA_NAME in names:
            raise CheckpointError(f"checkpoint {checkpoint_id} is already complete; it takes no more writes")
        if STARTED_NAME not in names:
            raise CheckpointError(
                f"checkpoint {checkpoint_id} has no location ({self._pointer(directory)}): it was discarded, "
                "or its location was not created with create_checkpoint_location()"
            )
        if name in names:
            raise CheckpointError(
                f"checkpoint {checkpoint_id} already has a state blob named {name!r} "
                f"({self._pointer(directory)}/{name})"
            )

    async def _write(self, path: str, data: StateData, check: Callable[[], None]) -> tuple[int, int]:
        """Frame ``data`` and upload it to ``path`` (after ``check``, in the same worker thread); its
        payload size and CRC-32. A stream is spooled first: the header, which goes first, needs its
        length and checksum."""
        builder = FrameBuilder(self.signing_key)
        if not isinstance(data, AsyncIterable):
            payload = byte_view(data)
            builder.update(payload)
            header, signature = builder.finish()
            await run_sync(self._upload, path, check, header, payload, signature)
            return builder.size, builder.checksum
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - closed below
        try:
            async with consuming(data) as chunks:
                async for chunk in chunks:
                    await run_sync(_spool, spool, byte_view(chunk), builder)
            header, signature = builder.finish()
            await run_sync(spool.seek, 0)
            await run_sync(self._upload, path, check, header, spool, signature)
        finally:
            spool.close()
        return builder.size, builder.checksum

    def _upload(
        self, path: str, check: Callable[[], None], header: bytes, body: Bytes | BinaryIO, signature: bytes
    ) -> None:
        check()
        try:
            with self._fs.open(path, "wb") as file:
                file.write(header)
                if isinstance(body, bytes | bytearray | memoryview):
                    file.write(body)  # as it is: no framed copy of a large payload
                else:
                    shutil.copyfileobj(body, file, _COPY_PIECE)
                file.write(signature)
        except BaseException as error:
            self._remove_quietly(path)  # a failed upload may still have left a partial object
            if isinstance(error, Exception) and not isinstance(error, LockgateError):
                raise CheckpointError(
                    f"cannot write {self._pointer(path)}: {type(error).__name__}: {error}"
                ) from error
            raise

    async def write_metadata(self, location: CheckpointLocation, data: bytes) -> CompletedCheckpoint:
        directory = self._checkpoint_path(location.checkpoint_id)
        framed, _ = frame(data, self.signing_key)
        await run_sync(self._write_metadata, directory, location.checkpoint_id, framed)
        return CompletedCheckpoint(location.checkpoint_id, self._pointer(directory))

    def _write_metadata(self, directory: str, checkpoint_id: int, framed: bytes) -> None:
        names = self._names(directory)
        target = f"{directory}/{METADATA_NAME}"
        if METADATA_NAME in names:
            raise CheckpointError(f"checkpoint {checkpoint_id} is already complete ({self._pointer(target)})")
        if STARTED_NAME not in names:
            raise CheckpointError(
                f"checkpoint {checkpoint_id} has no location ({self._pointer(directory)}): it was discarded, "
                "or its location was not created with create_checkpoint_location()"
            )
        # One request, under the final name: the object appears whole, or not at all.
        with self._failing_as(f"cannot write the checkpoint metadata {self._pointer(target)}"):
            self._fs.pipe_file(target, framed)

    # ---- reading

    async def read_state(self, handle: StreamStateHandle) -> bytes:
        if handle.inline is not None:
            return read_inline(handle)
        check_state_name(handle.name)  # a handle read from a tampered metadata must not leave the root
        path = f"{self._checkpoint_path(handle.checkpoint_id)}/{handle.name}"
        return await run_sync(self._read_framed, path, handle.size, handle.checksum)

    async def read_metadata(self, checkpoint_id: int) -> bytes:
        path = f"{self._checkpoint_path(checkpoint_id)}/{METADATA_NAME}"
        return await run_sync(self._read_metadata, path, checkpoint_id)

    def _read_metadata(self, path: str, checkpoint_id: int) -> bytes:
        try:
            return self._read_framed(path, None, None)
        except CorruptCheckpointError as error:
            if error.reason.startswith("missing"):
                raise CheckpointError(
                    f"checkpoint {checkpoint_id} is not complete in {self!r} (no {self._pointer(path)})"
                ) from None
            raise

    def _read_framed(self, path: str, size: int | None, checksum: int | None) -> bytes:
        pointer = self._pointer(path)
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            raise CorruptCheckpointError(pointer, "missing: the object does not exist") from None
        except Exception as error:
            raise CheckpointError(f"cannot read {pointer}: {type(error).__name__}: {error}") from error
        return unframe(data, pointer, expected_size=size, expected_checksum=checksum, key=self.signing_key)

    async def completed_checkpoints(self) -> list[CompletedCheckpoint]:
        return await run_sync(self._completed)

    def _completed(self) -> list[CompletedCheckpoint]:
        found = []
        for name in self._names(self._root):
            match = self._pattern.fullmatch(name)
            if match is not None:
                path = f"{self._root}/{name}"
                if METADATA_NAME in self._names(path):
                    found.append((int(match[1]), path))
        return [
            CompletedCheckpoint(checkpoint_id, self._pointer(path)) for checkpoint_id, path in sorted(found)
        ]

    # ---- deleting

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        await run_sync(self._discard, self._checkpoint_path(checkpoint_id))

    def _discard(self, path: str) -> None:
        names = self._names(path)
        if not names:
            return
        with self._failing_as(f"cannot discard the checkpoint {self._pointer(path)}"):
            if METADATA_NAME in names:  # no longer complete, before anything else goes
                self._remove_quietly(f"{path}/{METADATA_NAME}", strict=True)
            self._remove_tree(path)

    # ---- the shared area

    @property
    def _shared_root(self) -> str:
        return f"{self._root}/{SHARED_DIRECTORY}"

    async def write_shared(self, name: str, data: StateData) -> SharedStateHandle:
        check_state_name(name)
        check_state_data(data)
        path = f"{self._shared_root}/{name}"  # names are unique: their writers put a random part in them
        size, checksum = await self._write(path, data, lambda: None)
        return SharedStateHandle(name, self._pointer(path), size, checksum)

    async def read_shared(self, handle: SharedStateHandle) -> bytes:
        check_state_name(handle.name)  # a handle read from a tampered metadata must not leave the root
        path = f"{self._shared_root}/{handle.name}"
        return await run_sync(self._read_framed, path, handle.size, handle.checksum)

    async def discard_shared(self, names: Iterable[str]) -> None:
        paths = [f"{self._shared_root}/{check_state_name(name)}" for name in names]
        if paths:
            await run_sync(self._discard_shared, paths)

    def _discard_shared(self, paths: list[str]) -> None:
        with self._failing_as(f"cannot delete shared state in {self._pointer(self._shared_root)}"):
            for path in paths:
                self._remove_quietly(path, strict=True)

    async def shared_names(self) -> set[str]:
        return await run_sync(self._names, self._shared_root)

    # ---- blocking helpers, run in worker threads

    def _names(self, path: str) -> set[str]:
        """The names directly under ``path``, read afresh (not from fsspec's listings cache)."""
        self._fs.invalidate_cache(path)
        try:
            listed = self._fs.ls(path, detail=False)
        except FileNotFoundError:
            return set()
        except Exception as error:
            raise CheckpointError(
                f"cannot list {self._pointer(path)}: {type(error).__name__}: {error}"
            ) from error
        return {str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in listed} - {""}

    def _remove_tree(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm(path, recursive=True)
        self._fs.invalidate_cache(path)

    def _remove_quietly(self, path: str, *, strict: bool = False) -> None:
        """Delete the object at ``path``; a missing one is no error, nor (unless ``strict``) any other."""
        try:
            self._fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception:
            if strict:
                raise
        self._fs.invalidate_cache(path)

    def _failing_as(self, what: str) -> _Failing:
        return _Failing(what)


class _Failing:
    """Turns a file system's error inside it into a :class:`CheckpointError` that says ``what`` failed."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if isinstance(error, Exception) and not isinstance(error, LockgateError):
            raise CheckpointError(f"{self.what}: {type(error).__name__}: {error}") from error


def _spool(spool: BinaryIO, piece: Bytes, builder: FrameBuilder) -> None:
    spool.write(piece)
    builder.update(piece)
