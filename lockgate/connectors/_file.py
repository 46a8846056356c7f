"""A replayable source of the lines of a text file."""

from __future__ import annotations

import codecs
import os
from typing import Any

import anyio

from lockgate._errors import ConfigurationError
from lockgate._threads import run_sync
from lockgate.connectors._source import Source, SourceProgress, SourceReader
from lockgate.functions import RuntimeContext
from lockgate.state import ListStateDescriptor, OperatorListState


class FileSource(Source):
    """Emits the lines of a text file, in order, without their line endings (``\\n`` or ``\\r\\n``).

    It runs at parallelism 1 and is replayable: its position, the byte offset of the next line, is
    operator state, so a job restored from a snapshot resumes at the first line it had not emitted.
    The file is read in chunks in a worker thread, so the event loop never waits on the disk.

    Args:
        path: The file to read. It must exist when the job starts.
        encoding: The text encoding of the file; a line that does not decode fails the job.
        chunk_size: Bytes read at a time.
    """

    fixed_parallelism = 1

    def __init__(
        self, path: str | os.PathLike[str], *, encoding: str = "utf-8", chunk_size: int = 1 << 16
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigurationError(f"FileSource takes the path of a file, got {path!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be a positive int, got {chunk_size!r}")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigurationError(f"FileSource: unknown text encoding {encoding!r}") from None
        self.path = os.path.abspath(os.fspath(path))
        self.encoding = encoding
        self.chunk_size = chunk_size
        self._reader: _FileReader | None = None  # the current attempt's

    def __repr__(self) -> str:
        return f"FileSource({self.path!r})"

    def create_reader(self, ctx: RuntimeContext) -> SourceReader:
        if not os.path.isfile(self.path):
            raise ConfigurationError(
                f"FileSource: there is no file at {self.path}; create it before the job starts"
            )
        positions = ctx.get_list_state(ListStateDescriptor[int]("offset"))
        assert isinstance(positions, OperatorListState)
        offset = max(positions.get_nowait(), default=0) if ctx.is_restored else 0
        self._reader = _FileReader(self, positions, offset, os.path.getsize(self.path))
        return self._reader

    def progress(self) -> SourceProgress | None:
        """Bytes: the offset of the next line to emit, of the file's size when the job started reading
        it (or more, should the file have grown since)."""
        reader = self._reader
        if reader is None:
            return None
        return SourceProgress("bytes", reader.offset, max(reader.size, reader.offset), reader.records)


class _FileReader(SourceReader):
    """Reads ahead a chunk at a time, at explicit offsets (``pread``), so the file has no position
    of its own: the reader's state is all in its attributes.

    Cancel-safe: :meth:`read` is cancelled whenever a checkpoint is triggered while it waits, and a
    read in a worker thread cannot be interrupted. Each thread call is shielded and its result taken
    into the attributes before the next await, so a cancellation delivered afterwards loses no bytes.
    """

    def __init__(self, source: FileSource, positions: OperatorListState[int], offset: int, size: int) -> None:
        self._source = source
        self._positions = positions
        self._offset = offset  # byte offset of the next line to emit
        self.size = size  # of the file when the reader was made
        self.records = 0  # lines emitted by this reader
        self._fd: int | None = None
        self._read_at = offset  # byte offset of the next chunk to read
        self._lines: list[bytes] = []  # complete lines read ahead, without "\n"
        self._next = 0  # index in _lines of the next line to emit
        self._tail = b""  # bytes after the last "\n" read so far
        self._at_end = False

    async def _fill(self) -> None:
        with anyio.CancelScope(shield=True):  # the work of a thread must not be lost to a cancel
            if self._fd is None:
                self._fd = await run_sync(os.open, self._source.path, os.O_RDONLY)
            chunk = await run_sync(os.pread, self._fd, self._source.chunk_size, self._read_at)
        # No await from here on: the chunk and the offset past it change together.
        self._read_at += len(chunk)
        if not chunk:
            self._at_end = True
            self._lines = [self._tail] if self._tail else []
            self._tail = b""
        else:
            *lines, self._tail = (self._tail + chunk).split(b"\n")
            self._lines = lines
        self._next = 0

    async def read(self, max_records: int) -> list[Any] | None:
        while self._next >= len(self._lines):
            if self._at_end:
                return None
            await self._fill()
        start = self._next
        taken = self._lines[start : start + max_records]
        self._next = start + len(taken)
        # Each line had a "\\n" after it, but for a last line without one.
        newlines = len(taken) if not (self._at_end and self._next == len(self._lines)) else len(taken) - 1
        self._offset += sum(map(len, taken)) + newlines
        self.records += len(taken)
        encoding = self._source.encoding
        return [line.removesuffix(b"\r").decode(encoding) for line in taken]

    @property
    def offset(self) -> int:
        """The byte offset of the next line to emit: how much of the file is read."""
        return self._offset

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._positions.update_nowait([self._offset])

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
