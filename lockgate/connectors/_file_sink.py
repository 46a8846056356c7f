"""An exactly-once sink that writes the records as lines of text files in a directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate._errors import CheckpointError, ConfigurationError
from lockgate._threads import run_sync
from lockgate.connectors._sink import SinkWriter
from lockgate.connectors._transactional import TwoPhaseCommitSink
from lockgate.functions import RuntimeContext
from lockgate.snapshots import fsync_directory, parse_file_url

_IN_PROGRESS = ".inprogress"
_PENDING = ".pending"


@dataclass
class FileTransaction:
    """One transaction of a :class:`FileSink`: the file it writes, and what its pre-commit made durable.

    It is stored in checkpoints, so a restored job commits its pending transactions into the directory
    where they were written, whatever directory the sink names by then.

    Attributes:
        directory: The absolute directory the file is in.
        name: The file's visible name, ``<prefix>-<32 hex digits>``.
        size: The bytes :meth:`FileSink.pre_commit` made durable; None until then. A transaction
            pre-committed empty (``size == 0``) has no file left, and its commit does nothing.
    """

    directory: str
    name: str
    size: int | None = None

    @property
    def path(self) -> Path:
        """Where the file is once committed (visible)."""
        return Path(self.directory, self.name)

    @property
    def in_progress_path(self) -> Path:
        """The hidden file the records are appended to, until the pre-commit."""
        return Path(self.directory, f".{self.name}{_IN_PROGRESS}")

    @property
    def pending_path(self) -> Path:
        """The hidden, durable file between the pre-commit and the commit."""
        return Path(self.directory, f".{self.name}{_PENDING}")


class FileSink(TwoPhaseCommitSink[FileTransaction]):
    """Writes the records into text files in a directory, one record per line, exactly once.

    Each sink subtask writes each transaction into a file of its own, named ``<prefix>-<uuid>`` (random,
    so the names say nothing about order). The file is hidden while the transaction is open: its name
    starts with ``.`` (``.<prefix>-<uuid>.inprogress``, then ``.<prefix>-<uuid>.pending`` once its
    checkpoint barrier has made it durable), so readers that skip dot files never see partial output.
    It is renamed to its visible name, atomically, when the transaction commits:

    * under ``CheckpointingMode.EXACTLY_ONCE``, when the checkpoint after its records completes, or at
      the end of a bounded job; after failures and restores every record is in exactly one visible file;
    * without checkpointing, at the end of the job only.

    A visible file is complete and is never written again. A transaction without records makes no
    file at all (no empty visible files). Each line is ``str(record)``, or ``encoder(record)`` if an
    encoder is given, followed by ``\\n``, in UTF-8; the text is written as it is, so a record whose
    text holds a newline spans several lines. Files are written, fsynced and renamed in worker
    threads, so the event loop never waits on the disk; the directory is fsynced after each rename.

    Hidden files can be left behind by a failure: the pending files of a checkpoint that never
    completed, and, if the whole process dies, in-progress files too. A restore commits the pending
    files of the checkpoint it restores from and never makes the others visible. So while no job
    writes to the directory, hidden files are safe to delete, but for the pending files of a
    checkpoint a job may still be restored from.

    Args:
        directory: The directory of the output files, a path or a ``file:///absolute/path`` URL. A
            relative path is resolved against the current directory now. It is created, with its
            parents, by the first transaction, if missing.
        encoder: Turns a record into the text of its line (without the newline); ``str`` if None.
        prefix: The start of every file name; it must not start with ``.`` or hold a path separator.

    Attributes:
        directory: The directory, absolute.

    Raises:
        ConfigurationError: A bad argument, or (when the job starts) a ``directory`` that exists and is
            not a directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        encoder: Callable[[Any], str] | None = None,
        *,
        prefix: str = "part",
    ) -> None:
        self.directory = parse_file_url(directory, "FileSink")
        if encoder is not None and not callable(encoder):
            raise ConfigurationError(
                f"FileSink: the encoder must be callable (record -> str), got {encoder!r}"
            )
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(f"FileSink: prefix must be a non-empty str, got {prefix!r}")
        if prefix.startswith(".") or any(char in prefix for char in ("/", os.sep, os.altsep or "/", "\x00")):
            raise ConfigurationError(
                f"FileSink: prefix {prefix!r} must not start with '.' (committed files would be hidden) "
                "nor hold a path separator or NUL"
            )
        self.encoder = encoder
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"FileSink({str(self.directory)!r}, prefix={self.prefix!r})"

    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigurationError(
                f"FileSink writes files into a directory, but {self.directory} is not a directory"
            )
        return super().create_writer(ctx)

    async def begin_transaction(self) -> FileTransaction:
        """Create the hidden file ``.<name>.inprogress``, empty, and the directory if it is missing."""
        transaction = FileTransaction(str(self.directory), f"{self.prefix}-{uuid.uuid4().hex}")
        await run_sync(_create, transaction)
        return transaction

    async def write(self, transaction: FileTransaction, records: list[Any]) -> None:
        """Append a line per record to the transaction's hidden file (not fsynced until the pre-commit)."""
        encoder = self.encoder or str
        lines: list[str] = []
        for record in records:
            text = encoder(record)
            if not isinstance(text, str):
                raise TypeError(
                    f"FileSink: the encoder must return a str, but returned {type(text).__name__} "
                    f"for the record {record!r}"
                )
            lines.append(text)
            lines.append("\n")
        await run_sync(_append, transaction, "".join(lines))

    async def pre_commit(self, transaction: FileTransaction) -> None:
        """Fsync the hidden file and rename it ``.<name>.pending`` (fsyncing the directory).

        A transaction without records has its file deleted instead, and records ``size == 0``.
        """
        await run_sync(_pre_commit, transaction)

    async def commit(self, transaction: FileTransaction) -> None:
        """Rename ``.<name>.pending`` to ``<name>``, atomically, and fsync the directory.

        Idempotent: a transaction already committed (its pending file gone, its visible file there),
        or pre-committed empty, is left as it is.

        Raises:
            CheckpointError: Neither the pending file nor the visible file exists (the data is lost),
                or the pending file does not have the size its pre-commit made durable.
        """
        await run_sync(_commit, transaction)

    async def abort(self, transaction: FileTransaction) -> None:
        """Delete the transaction's hidden files, if there are any; a visible file is never touched."""
        await run_sync(_abort, transaction)


# ---- blocking helpers, run in worker threads


def _create(transaction: FileTransaction) -> None:
    path = transaction.in_progress_path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            _make_directory(path.parent)
            fd = os.open(path, flags, 0o666)
    except NotADirectoryError:
        blocker = next(parent for parent in path.parents if parent.exists())
        raise ConfigurationError(
            f"FileSink writes files into the directory {path.parent}, but {blocker} is not a directory"
        ) from None
    os.close(fd)


def _make_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing each new entry's parent."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            if new.is_dir():
                continue  # made meanwhile by another subtask
            raise NotADirectoryError(f"{new} exists and is not a directory") from None
        fsync_directory(new.parent)


#: The system calls that write and sync, by name here so a test can make them fail (a full disk).
_write = os.write
_fsync = os.fsync


def _naming(path: Path, doing: str, exc: OSError) -> OSError:
    """``exc`` again, with the file it happened to and what the sink was doing (os.write and
    os.fsync name no file)."""
    named = OSError(exc.errno, f"FileSink cannot {doing} {path}: {exc.strerror or exc}", str(path))
    named.__cause__ = exc
    return named


def _append(transaction: FileTransaction, text: str) -> None:
    data = text.encode("utf-8")
    try:
        fd = os.open(transaction.in_progress_path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        raise CheckpointError(
            f"FileSink cannot write: {transaction.in_progress_path} is gone (deleted, or its "
            "transaction was already pre-committed or aborted)"
        ) from None
    try:
        view = memoryview(data)
        while view:
            view = view[_write(fd, view) :]
    except OSError as exc:
        raise _naming(transaction.in_progress_path, "write to", exc) from exc
    finally:
        os.close(fd)


def _pre_commit(transaction: FileTransaction) -> None:
    source = transaction.in_progress_path
    try:
        fd = os.open(source, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        raise CheckpointError(
            f"FileSink cannot pre-commit: {source} is gone (deleted, or its transaction was already "
            "pre-committed or aborted)"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if size:
            _fsync(fd)
    except OSError as exc:
        raise _naming(source, "make durable", exc) from exc
    finally:
        os.close(fd)
    if size == 0:
        source.unlink()  # nothing to commit; a leftover empty hidden file would be harmless
    else:
        os.replace(source, transaction.pending_path)
        fsync_directory(source.parent)
    transaction.size = size


def _commit(transaction: FileTransaction) -> None:
    if transaction.size == 0:
        return  # pre-committed empty: no file
    pending, target = transaction.pending_path, transaction.path
    try:
        size = pending.stat().st_size
    except FileNotFoundError:
        if target.exists():
            return  # committed already
        raise CheckpointError(
            f"FileSink cannot commit {target}: neither it nor its pending file {pending.name} exists, so "
            "the records of a completed checkpoint are lost (was the file deleted or moved?)"
        ) from None
    if transaction.size is not None and size != transaction.size:
        raise CheckpointError(
            f"FileSink cannot commit {target}: its pending file {pending} holds {size} bytes, but "
            f"{transaction.size} were made durable at the pre-commit; it was changed since"
        )
    os.replace(pending, target)
    fsync_directory(target.parent)


def _abort(transaction: FileTransaction) -> None:
    transaction.in_progress_path.unlink(missing_ok=True)
    transaction.pending_path.unlink(missing_ok=True)
