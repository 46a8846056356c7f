"""Checkpoint storage in a directory of the local file system, named by a ``file:`` URL or a path.

Layout under the storage's directory (see :mod:`lockgate.snapshots._layout`)::

    <dir>/chk-<id>/                    one directory per checkpoint, <id> in decimal
    <dir>/chk-<id>/<name>              one file per state blob, named as the blob
    <dir>/chk-<id>/_metadata           written last: the checkpoint is complete exactly when it exists
    <dir>/chk-<id>/._metadata.<x>.tmp  the metadata being written; never taken for ``_metadata``
    <dir>/shared/<name>                blobs that several checkpoints reference (incremental checkpoints);
                                       the coordinator deletes each once no retained checkpoint does
    <dir>/_claim                       the running job that checkpoints here: JSON (job, pid, host, since),
                                       removed when it ends; a killed process's is taken over

Every file is framed (see :mod:`lockgate.snapshots._format`): a 20-byte header, then the payload::

    b"LGCK" | version u16 (1) | flags u16 (0) | payload length u64 | CRC-32 of the payload u32 | payload

all integers big endian. A reader checks magic, version, flags, length and CRC, and refuses a damaged,
truncated or extended file with a :class:`~lockgate.CorruptCheckpointError` naming it.

Durability: a checkpoint's state files are not synced one by one as they are written (a subtask's
write is then a few system calls, not a wait for the disk), nor is the storage directory when a
checkpoint's directory is created: nothing counts on them until ``_metadata`` exists. Writing the
metadata makes them durable first, all at once, in parallel (:func:`_all_done`): every file in the
checkpoint's directory and the directory itself are fsynced, as is the storage directory (the
checkpoint directory's entry), while the metadata is written to a temporary name and fsynced; only
then is it renamed to ``_metadata`` (atomic on POSIX file systems), and the directory fsynced again
before the checkpoint counts as complete. A crash at any point leaves either a complete checkpoint or
an incomplete one, never a ``_metadata`` that points at missing data. Shared blobs (``shared/``),
which later checkpoints reference, are fsynced when written.

All file I/O runs in worker threads (:func:`lockgate._threads.run_sync`, which lets them run even while
the event loop is busy): the event loop waits for the disk at most a couple of milliseconds per step,
the time a local file takes to be written and synced, and goes on with its tasks while slower steps
finish; this works on asyncio and on trio alike (aiofiles is asyncio only).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar
from urllib.parse import unquote, urlsplit

import anyio

from lockgate._errors import CheckpointError, ConfigurationError, CorruptCheckpointError
from lockgate._processes import process_alive
from lockgate._threads import run_sync
from lockgate.snapshots._format import (
    HEADER_SIZE,
    SIGNATURE_SIZE,
    Bytes,
    FrameBuilder,
    Signer,
    byte_view,
    check_checksum,
    check_header,
    check_signature,
    crc32,
    frame,
    unframe,
)
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
from lockgate.snapshots._urls import unsupported_scheme, url_scheme

T = TypeVar("T")

_LOCAL_HOSTS: Final = ("", "localhost")


def parse_file_url(url: str | os.PathLike[str], who: str = "FileCheckpointStorage") -> Path:
    """The absolute, normalised directory a ``file:`` URL or a plain path names.

    Accepted: ``file:///abs/path``, ``file://localhost/abs/path``, ``file:/abs/path`` (percent-escapes
    are decoded), a plain absolute path, and a plain relative path, resolved against the current
    directory now (``~`` is not expanded). Refused with a :class:`ConfigurationError` saying why:
    another scheme, a host other than localhost, a relative path inside a ``file:`` URL, a query or
    fragment, an empty path. ``who`` names the caller in the errors.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise ConfigurationError(
            f"{who} takes a file URL such as 'file:///data/checkpoints' or the path of a directory, "
            f"got {url!r}"
        )
    if not url.strip():
        raise ConfigurationError(f"{who} takes a file URL or the path of a directory, got an empty string")
    if "\x00" in url:
        raise ConfigurationError(f"{who}: a path cannot contain a NUL character: {url!r}")
    scheme = url_scheme(url)
    if scheme is None:
        return Path(os.path.abspath(url))
    if scheme != "file":
        raise unsupported_scheme(url, scheme, ["file"], who)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"file URL {url!r} has a query or a fragment ('?' or '#'); a checkpoint URL names a directory "
            "only (percent-escape a '?' or '#' that is part of the path: %3F, %23)"
        )
    if parts.netloc.lower() not in _LOCAL_HOSTS:
        raise ConfigurationError(
            f"file URL {url!r} names the host {parts.netloc!r}, but a file URL can only name this machine's "
            "file system; write file:///absolute/path (three slashes: an empty host) or "
            "file://localhost/absolute/path"
        )
    path = unquote(parts.path)
    if not path:
        raise ConfigurationError(f"file URL {url!r} has no path; write file:///absolute/path")
    if not path.startswith("/"):
        raise ConfigurationError(
            f"file URL {url!r} holds the relative path {path!r}, but a file URL takes an absolute path "
            "(file:///absolute/path); to resolve a relative path against the current directory, give it "
            "as a plain path, without 'file:'"
        )
    if "\x00" in path:
        raise ConfigurationError(f"a checkpoint path cannot contain a NUL character: {url!r}")
    return Path(os.path.normpath(path))


class FileCheckpointStorage(CheckpointStorage):
    """Keeps checkpoints as files in a local directory, one subdirectory per checkpoint.

    Args:
        url: ``file:///absolute/path`` (or ``file://localhost/...``), or a plain path; a relative path is
            resolved against the current directory when the storage is made. Nothing is created until
            the first checkpoint.
        prefix: The name of each checkpoint's directory before its id: ``chk-``, or ``savepoint-`` for
            the storage that savepoints are written to.
        inline_threshold: A state blob of fewer bytes is kept in the checkpoint's ``_metadata``, not in
            a file of its own (default 20 KiB, at most 1 MiB; 0: every blob is a file). Small state
            then costs no file to write and sync (see :attr:`CheckpointStorage.inline_threshold`).

    Attributes:
        url: The normalised ``file:`` URL of the directory (a plain path given is turned into one).
        directory: The directory, absolute.

    Raises:
        ConfigurationError: The URL is not a usable file URL; the message says why.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        prefix: str = CHECKPOINT_PREFIX,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
    ) -> None:
        self.prefix = check_prefix(prefix)
        self.inline_threshold = check_inline_threshold(inline_threshold)
        self.directory = parse_file_url(url)
        self.url = self.directory.as_uri()
        self._pattern = directory_pattern(prefix)
        self._claimed: Path | None = None

    def __repr__(self) -> str:
        return f"FileCheckpointStorage({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> FileCheckpointStorage:
        """The storage for a ``file:`` URL; what the URL scheme registry calls."""
        return cls(url)

    def checkpoint_directory(self, checkpoint_id: int) -> Path:
        """The directory of checkpoint ``checkpoint_id``, complete or not, existing or not."""
        return self.directory / f"{self.prefix}{check_checkpoint_id(checkpoint_id)}"

    def savepoints(self) -> FileCheckpointStorage:
        savepoints = FileCheckpointStorage(
            self.directory, prefix=SAVEPOINT_PREFIX, inline_threshold=self.inline_threshold
        )
        savepoints.signing_key = self.signing_key
        return savepoints

    async def snapshot_here(self) -> tuple[CheckpointStorage, CompletedCheckpoint] | None:
        return await _in_thread(self._snapshot_here)

    def _snapshot_here(self) -> tuple[CheckpointStorage, CompletedCheckpoint] | None:
        match = SNAPSHOT_DIRECTORY.fullmatch(self.directory.name)
        if match is None:
            return None
        if (self.directory / METADATA_NAME).exists():
            only = _OneDirectory(self.directory)
            only.signing_key = self.signing_key
            return only, CompletedCheckpoint(int(match[2]), self.url)
        if self.directory.is_dir():
            raise CorruptCheckpointError(
                str(self.directory / METADATA_NAME), "it is missing: the checkpoint is not complete"
            )
        return None

    # ---- claiming

    async def claim(self, job_name: str) -> str | None:
        return await _in_thread(self._claim, job_name)

    def _claim(self, job_name: str) -> str | None:
        path = self.directory / CLAIM_NAME
        record = {"job": job_name, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        note = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for _ in range(3):  # a stale claim is removed, then taken anew (another may win the race)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    holder = _read_claim(path)
                    if holder is None:
                        continue  # removed meanwhile
                    who = _describe_claim(holder)
                    if holder.get("host") != record["host"] or process_alive(_as_int(holder.get("pid"))):
                        raise CheckpointError(
                            f"the checkpoint directory {self.directory} is in use by {who}; give each job a "
                            f"directory of its own, or, if that job is gone, delete {path}"
                        ) from None
                    path.unlink(missing_ok=True)
                    note = (
                        f"took over the checkpoint directory {self.directory} from {who}, no longer running"
                    )
                    continue
                with os.fdopen(fd, "w") as file:
                    json.dump(record, file)
                    file.flush()
                    os.fsync(file.fileno())
                self._claimed = path
                return note
        except OSError as error:
            raise CheckpointError(f"cannot claim {self.directory}: {error}") from error
        raise CheckpointError(f"cannot claim {self.directory}: other jobs keep claiming it")

    def release_claim(self) -> None:
        claimed, self._claimed = self._claimed, None
        if claimed is not None:
            claimed.unlink(missing_ok=True)

    # ---- writing

    async def create_checkpoint_location(self, checkpoint_id: int) -> CheckpointLocation:
        directory = self.checkpoint_directory(checkpoint_id)
        await _in_thread(self._create_directory, directory, checkpoint_id)
        return CheckpointLocation(checkpoint_id, directory.as_uri())

    def _create_directory(self, directory: Path, checkpoint_id: int) -> None:
        if (directory / METADATA_NAME).exists():
            raise CheckpointError(
                f"checkpoint {checkpoint_id} is already complete in {directory}; it is never overwritten"
            )
        try:
            if directory.exists():  # an earlier attempt at this id that never completed
                shutil.rmtree(directory)
            self.directory.mkdir(parents=True, exist_ok=True)
            directory.mkdir()  # its entry is made durable with the metadata (_write_metadata)
        except OSError as error:
            raise CheckpointError(f"cannot create the checkpoint directory {directory}: {error}") from error

    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        inline = self.inline_handle(location, name, data)
        if inline is not None:
            return inline
        check_state_name(name)
        check_state_data(data)
        path = self.checkpoint_directory(location.checkpoint_id) / name
        # Not synced here: writing the metadata syncs every file of the checkpoint at once.
        if isinstance(data, AsyncIterable):
            size, checksum = await self._write_stream(path, location.checkpoint_id, data, False)
        else:
            payload = byte_view(data)
            checksum = await _in_thread(self._write_whole, path, location.checkpoint_id, payload, False)
            size = payload.nbytes
        return StreamStateHandle(location.checkpoint_id, name, str(path), size, checksum)

    def _write_whole(self, path: Path, checkpoint_id: int, payload: memoryview, sync: bool) -> int:
        """Write a framed file; ``sync``: fsync it before it is closed."""
        file = self._open_new(path, checkpoint_id)
        try:
            builder = FrameBuilder(self.signing_key)
            builder.update(payload)
            header, signature = builder.finish()
            file.write(header)
            file.write(payload)  # as it is: no framed copy of a large payload
            file.write(signature)
            _close(file, sync)
        except BaseException as error:
            _abandon(file, path)
            if isinstance(error, OSError):
                raise _write_error(path, error) from error
            raise
        return builder.checksum

    async def _write_stream(
        self, path: Path, checkpoint_id: int, chunks: AsyncIterable[bytes], sync: bool
    ) -> tuple[int, int]:
        file = await _in_thread(self._open_new, path, checkpoint_id)
        builder = FrameBuilder(self.signing_key)
        try:
            await run_sync(file.write, bytes(HEADER_SIZE))  # the header, once known
            async with consuming(chunks) as iterable:
                async for chunk in iterable:
                    await run_sync(_write_chunk, file, byte_view(chunk), builder)
            header, signature = builder.finish()
            await run_sync(_finish_stream, file, header, signature, sync)
        except BaseException as error:
            with anyio.CancelScope(shield=True):
                await run_sync(_abandon, file, path)
            if isinstance(error, OSError):
                raise _write_error(path, error) from error
            raise
        return builder.size, builder.checksum

    def _open_new(self, path: Path, checkpoint_id: int) -> BinaryIO:
        """Create ``path`` for writing; it must not exist, and its checkpoint must be in progress."""
        if (path.parent / METADATA_NAME).exists():
            raise CheckpointError(f"checkpoint {checkpoint_id} is already complete; it takes no more writes")
        try:
            return open(path, "xb")
        except FileExistsError as error:
            raise CheckpointError(
                f"checkpoint {checkpoint_id} already has a state blob named {path.name!r} ({path})"
            ) from error
        except FileNotFoundError as error:
            raise CheckpointError(
                f"checkpoint {checkpoint_id} has no directory ({path.parent}): it was discarded, or its "
                "location was not created with create_checkpoint_location()"
            ) from error
        except OSError as error:
            raise _write_error(path, error) from error

    async def write_metadata(self, location: CheckpointLocation, data: bytes) -> CompletedCheckpoint:
        directory = self.checkpoint_directory(location.checkpoint_id)
        framed, _ = frame(data, self.signing_key)
        await _in_thread(self._write_metadata, directory, location.checkpoint_id, framed)
        return CompletedCheckpoint(location.checkpoint_id, directory.as_uri())

    def _write_metadata(self, directory: Path, checkpoint_id: int, framed: bytes) -> None:
        target = directory / METADATA_NAME
        if target.exists():
            raise CheckpointError(f"checkpoint {checkpoint_id} is already complete ({target})")
        if not directory.is_dir():
            raise CheckpointError(
                f"checkpoint {checkpoint_id} has no directory ({directory}): it was discarded, or its "
                "location was not created with create_checkpoint_location()"
            )
        temporary = directory / f".{METADATA_NAME}.{uuid.uuid4().hex}.tmp"

        def write_temporary() -> None:
            with open(temporary, "xb") as file:
                file.write(framed)
                _close(file, True)

        try:
            # What _metadata will point at becomes durable before it exists: the state files (written
            # unsynced), their entries, the checkpoint directory's entry, and the metadata itself,
            # each fsynced in a thread of its own, so the disk's wait is paid about once.
            files = [entry.path for entry in os.scandir(directory) if entry.is_file(follow_symlinks=False)]
            steps: list[Callable[[], None]] = [write_temporary]
            steps += [partial(_fsync_file, path) for path in files]
            steps += [partial(fsync_directory, directory), partial(fsync_directory, self.directory)]
            _all_done(steps)
            os.replace(temporary, target)
            fsync_directory(directory)  # the rename is durable: only now does the checkpoint count
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise CheckpointError(f"cannot write the checkpoint metadata {target}: {error}") from error

    # ---- reading

    async def read_state(self, handle: StreamStateHandle) -> bytes:
        if handle.inline is not None:
            return read_inline(handle)
        check_state_name(handle.name)  # a handle read from a tampered metadata must not leave the directory
        path = self.checkpoint_directory(handle.checkpoint_id) / handle.name
        return await _in_thread(_read_framed, path, handle.size, handle.checksum, self.signing_key)

    async def open_state(self, handle: StreamStateHandle) -> BinaryIO:
        if handle.inline is not None:
            return io.BytesIO(read_inline(handle))
        check_state_name(handle.name)
        path = self.checkpoint_directory(handle.checkpoint_id) / handle.name
        return await _in_thread(_open_framed, path, handle.size, handle.checksum, self.signing_key)

    async def read_metadata(self, checkpoint_id: int) -> bytes:
        path = self.checkpoint_directory(checkpoint_id) / METADATA_NAME
        return await _in_thread(self._read_metadata, path, checkpoint_id)

    def _read_metadata(self, path: Path, checkpoint_id: int) -> bytes:
        if not path.exists():
            raise CheckpointError(f"checkpoint {checkpoint_id} is not complete in {self!r} (no {path})")
        return _read_framed(path, None, None, self.signing_key)

    async def completed_checkpoints(self) -> list[CompletedCheckpoint]:
        return await _in_thread(self._completed)

    def _completed(self) -> list[CompletedCheckpoint]:
        found: list[tuple[int, Path]] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    match = self._pattern.fullmatch(entry.name)
                    if match and entry.is_dir() and os.path.isfile(os.path.join(entry.path, METADATA_NAME)):
                        found.append((int(match[1]), Path(entry.path)))
        except FileNotFoundError:
            return []  # no checkpoint was ever taken here
        except OSError as error:
            raise CheckpointError(f"cannot list the checkpoints in {self.directory}: {error}") from error
        return [CompletedCheckpoint(checkpoint_id, path.as_uri()) for checkpoint_id, path in sorted(found)]

    # ---- deleting

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        await _in_thread(self._discard, self.checkpoint_directory(checkpoint_id))

    def _discard(self, directory: Path) -> None:
        try:
            if not directory.exists():
                return
            (directory / METADATA_NAME).unlink(missing_ok=True)  # no longer complete, before anything else
            fsync_directory(directory)
            shutil.rmtree(directory)
            fsync_directory(self.directory)
        except OSError as error:
            raise CheckpointError(f"cannot discard the checkpoint directory {directory}: {error}") from error

    # ---- the shared area

    @property
    def shared_directory(self) -> Path:
        """Where the blobs that several checkpoints reference are."""
        return self.directory / SHARED_DIRECTORY

    async def write_shared(self, name: str, data: StateData) -> SharedStateHandle:
        check_state_name(name)
        check_state_data(data)
        path = self.shared_directory / name
        await _in_thread(self._create_shared_directory)
        # Synced now: a checkpoint's metadata syncs only the files in its own directory.
        if isinstance(data, AsyncIterable):
            size, checksum = await self._write_stream(path, 0, data, True)
        else:
            payload = byte_view(data)
            checksum = await _in_thread(self._write_whole, path, 0, payload, True)
            size = payload.nbytes
        return SharedStateHandle(name, str(path), size, checksum)

    def _create_shared_directory(self) -> None:
        directory = self.shared_directory
        if directory.is_dir():
            return
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fsync_directory(self.directory)
        except OSError as error:
            raise CheckpointError(f"cannot create the shared state directory {directory}: {error}") from error

    async def read_shared(self, handle: SharedStateHandle) -> bytes:
        check_state_name(handle.name)  # a handle read from a tampered metadata must not leave the directory
        path = self.shared_directory / handle.name
        return await _in_thread(_read_framed, path, handle.size, handle.checksum, self.signing_key)

    async def discard_shared(self, names: Iterable[str]) -> None:
        paths = [self.shared_directory / check_state_name(name) for name in names]
        if paths:
            await _in_thread(self._discard_shared, paths)

    def _discard_shared(self, paths: list[Path]) -> None:
        try:
            for path in paths:
                path.unlink(missing_ok=True)
        except OSError as error:
            raise CheckpointError(f"cannot delete shared state file {path}: {error}") from error

    async def shared_names(self) -> set[str]:
        return await _in_thread(self._shared_names)

    def _shared_names(self) -> set[str]:
        try:
            return {entry.name for entry in os.scandir(self.shared_directory) if entry.is_file()}
        except FileNotFoundError:
            return set()
        except OSError as error:
            raise CheckpointError(f"cannot list {self.shared_directory}: {error}") from error


#: The file that claims a checkpoint directory for the running job.
CLAIM_NAME: Final = "_claim"


# ---- blocking helpers, run in worker threads


class _OneDirectory(FileCheckpointStorage):
    """The files of one checkpoint directory, whatever its name says (a copy may be renamed)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory.parent)
        self._only = directory

    def checkpoint_directory(self, checkpoint_id: int) -> Path:
        return self._only


def _describe_claim(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = time.ctime(since) if isinstance(since, int | float) else "an unknown time"
    return f"job {holder.get('job')!r} (process {holder.get('pid')} on {holder.get('host')}, since {when})"


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _read_claim(path: Path) -> dict[str, Any] | None:
    """A claim file's record; None if it is gone; ``{}`` if it cannot be read (held, to be safe)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread; the caller waits, even when cancelled, so nothing is torn."""
    return await run_sync(function, *args)


def _read_framed(
    path: Path, expected_size: int | None, expected_checksum: int | None, key: bytes | None
) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptCheckpointError(str(path), "missing: the file does not exist") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint file {path}: {error}") from error
    return unframe(data, str(path), expected_size=expected_size, expected_checksum=expected_checksum, key=key)


def _open_framed(path: Path, expected_size: int, expected_checksum: int, key: bytes | None) -> BinaryIO:
    """The file at ``path`` positioned at its payload, once the whole payload's checksum (and
    signature, with a key) is verified (read in pieces: the file is never held whole)."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise CorruptCheckpointError(str(path), "missing: the file does not exist") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint file {path}: {error}") from error
    try:
        total = os.fstat(file.fileno()).st_size
        header = file.read(HEADER_SIZE)
        stored, signed = check_header(header, total, str(path), expected_size, expected_checksum, key)
        remaining = total - HEADER_SIZE - (SIGNATURE_SIZE if signed else 0)
        signer = None if key is None else Signer(key)
        checksum = 0
        while remaining and (piece := file.read(min(_READ_PIECE, remaining))):
            checksum = crc32(piece, checksum)
            if signer is not None:
                signer.update(piece)
            remaining -= len(piece)
        if signer is not None:
            check_signature(signer.signature(header), file.read(SIGNATURE_SIZE), str(path))
        check_checksum(checksum, stored, str(path))
        file.seek(HEADER_SIZE)
    except BaseException:
        file.close()
        raise
    if not signed:
        return file  # the payload runs to the end of the file
    return io.BufferedReader(_Payload(file, total - HEADER_SIZE - SIGNATURE_SIZE))


class _Payload(io.RawIOBase):
    """A file's payload only: reads end where the signature after it begins."""

    def __init__(self, file: BinaryIO, length: int) -> None:
        super().__init__()
        self._file = file
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._left)
        if wanted <= 0:
            return 0
        read = self._file.readinto(view[:wanted])  # type: ignore[attr-defined]
        self._left -= read
        return int(read)

    def close(self) -> None:
        self._file.close()
        super().close()


#: How much of a state file is read at a time when it is streamed.
_READ_PIECE = 1 << 20


def _write_chunk(file: BinaryIO, chunk: Bytes, builder: FrameBuilder) -> None:
    file.write(chunk)
    builder.update(chunk)


def _finish_stream(file: BinaryIO, header: bytes, signature: bytes, sync: bool) -> None:
    file.write(signature)  # after the payload: the file is positioned there
    file.seek(0)
    file.write(header)
    _close(file, sync)


def _close(file: BinaryIO, sync: bool) -> None:
    """Close ``file``, fsynced first if ``sync``."""
    file.flush()
    if sync:
        os.fsync(file.fileno())
    file.close()


def _fsync_file(path: str) -> None:
    """Make the content of the file at ``path``, written and closed earlier, durable."""
    fd = os.open(path, os.O_RDWR)  # writable: some systems (Windows) sync only what may be written
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Threads that wait for the disk beside a metadata write's own (:func:`_all_done`); a pool apart from
#: run_sync's, whose thread submits to it and waits.
_syncers = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="lockgate-fsync")


def _all_done(steps: list[Callable[[], None]]) -> None:
    """Run ``steps`` at once (the first in this thread, the others in :data:`_syncers`) and return when
    every one has; the first error of any, raised. Each fsync waits for the disk, and concurrent ones
    share its flushes, so this takes about as long as the slowest, not the sum."""
    futures = [_syncers.submit(step) for step in steps[1:]]
    try:
        steps[0]()
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        future.result()


def _abandon(file: BinaryIO, path: Path) -> None:
    """Close and delete a state file whose writing failed or was cancelled."""
    try:
        file.close()
    finally:
        path.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(path: Path, error: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write state file {path}: {error}")
