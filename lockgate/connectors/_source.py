"""The source interface and the built-in sources: collections, queues and async iterables."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.lowlevel

from lockgate._errors import ConfigurationError, LockgateError
from lockgate.functions import RuntimeContext
from lockgate.state import ListStateDescriptor, OperatorListState

T = TypeVar("T")


class SourceReader(ABC):
    """Reads the records of one source subtask, a batch at a time."""

    @abstractmethod
    async def read(self, max_records: int) -> list[Any] | None:
        """The next records, at least one and at most ``max_records``; waits until some are there.

        Returns None once the input has ended. Must not wait for more records once it has one:
        latency comes before batch size. Must be cancel-safe: the runtime cancels a read that is
        waiting when a checkpoint is triggered, and a cancelled read must not lose a record.
        """

    async def run_background(self) -> None:  # noqa: B027 - optional hook
        """Work that runs beside :meth:`read` while the reader lives (a pump from an iterator, say).

        It is cancelled when the source ends. The default does nothing.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the reader holds; called once, however the subtask ends."""

    def snapshot_state(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """Checkpoint ``checkpoint_id`` is being taken: write the reader's position into its operator
        state.

        A replayable reader declares that state in ``create_reader`` (``ctx.get_union_list_state``)
        and resumes from it when ``ctx.is_restored``.
        """

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """Checkpoint ``checkpoint_id`` is complete (an external system may be told its position)."""

    def release_before(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """No restart will go back further than checkpoint ``checkpoint_id``: what the reader read
        before it need not be kept for replay."""

    def notify_stopping(self, stopping: bool) -> None:  # noqa: B027 - optional hook
        """``stopping``: the job is stopping with a savepoint whose snapshot is taken next; a reader
        that buffers input from outside takes no more and puts what it buffered into the snapshot, so
        the job that resumes from the savepoint gets it. False: that savepoint failed, the job goes on."""


@dataclass(frozen=True)
class SourceProgress:
    """How far a source has read, for progress bars (``env.execute(..., progress=True)``).

    Attributes:
        unit: What ``read`` and ``total`` count: ``"records"`` or ``"bytes"``.
        read: How much of the input the source's current readers have emitted, all subtasks together.
            After a restart it goes back to the restored position.
        total: The size of the whole input, or None where it is not known (an unbounded source).
        records: How many records the current readers have emitted (equal to ``read`` for records).
    """

    unit: Literal["records", "bytes"]
    read: int
    total: int | None
    records: int


class Source(ABC):
    """Creates a reader for each subtask of a source operator.

    Attributes:
        fixed_parallelism: The only parallelism the source supports, or None if any will do.
        reads_in_this_process: Whether its records come from objects of the process that built the
            job (a queue the application feeds, an async iterable): such a source cannot run in another
            process, and the Ray runner refuses it.
    """

    fixed_parallelism: int | None = None
    reads_in_this_process: bool = False

    @abstractmethod
    def create_reader(self, ctx: RuntimeContext) -> SourceReader:
        """The reader for subtask ``ctx.subtask_index`` of ``ctx.parallelism``.

        After a failure the job creates readers again (``ctx.attempt`` counts the restarts): a reader
        restored from a checkpoint resumes at its position, one restarted without a checkpoint
        (``ctx.is_restored`` false) starts at the beginning.
        """

    def job_ended(self) -> None:  # noqa: B027 - optional hook
        """The job reading this source has ended for good (finished, failed or cancelled); restarts
        within the job do not count."""

    def progress(self) -> SourceProgress | None:
        """How far the readers of the job's current attempt have read, or None if the source does not
        tell (the default). A progress bar asks a few times a second, from the job's event loop,
        between two steps of the readers: answer from what the readers already keep (a position
        updated once per batch), never by counting each record or touching the disk.
        """
        return None


#: A collection reader's position: subtask ``s`` of ``p`` has emitted the items ``i`` with
#: ``i % p == s`` and ``i < next``.
Position = tuple[int, int, int]


class CollectionSource(Source, Generic[T]):
    """Emits the items of a sequence. Subtask ``i`` of ``p`` emits the items at indexes ``i, i+p, ...``,
    in order, so at parallelism 1 the order is the sequence's.

    It is replayable: its position is operator state (union list state ``positions``), so a job
    restored from a snapshot, at any parallelism, emits exactly the items not emitted before it.
    """

    def __init__(self, items: Sequence[T]) -> None:
        self.items = items
        self._readers: dict[int, _CollectionReader] = {}  # the current attempt's, by subtask

    def __repr__(self) -> str:
        return f"CollectionSource(<{len(self.items)} items>)"

    def create_reader(self, ctx: RuntimeContext) -> SourceReader:
        positions = ctx.get_union_list_state(ListStateDescriptor[Position]("positions"))
        reader = _CollectionReader(self.items, ctx.subtask_index, ctx.parallelism, positions)
        self._readers[ctx.subtask_index] = reader
        return reader

    def progress(self) -> SourceProgress:
        """Records: the items passed so far (those a restored position covers included) of all."""
        read = sum(reader.passed() for reader in self._readers.values())
        return SourceProgress("records", read, len(self.items), read)


class _CollectionReader(SourceReader):
    def __init__(
        self,
        items: Sequence[Any],
        subtask_index: int,
        parallelism: int,
        positions: OperatorListState[Position],
    ) -> None:
        self._items = items
        self._index = subtask_index
        self._step = parallelism
        self._next = subtask_index  # index of the next item to emit
        self._positions = positions
        # Positions of the run this one was restored from: what they cover was emitted already.
        self._earlier = sorted(set(positions.get_nowait()))
        same_shape = [p for p in self._earlier if (p[0], p[1]) == (subtask_index, parallelism)]
        if same_shape and len(self._earlier) == parallelism:  # restored at the same parallelism
            self._next = max(p[2] for p in same_shape)
            self._earlier = []

    def passed(self) -> int:
        """How many of this subtask's items are behind its position (emitted now or before)."""
        return len(range(self._index, min(self._next, len(self._items)), self._step))

    def _emitted_before(self, index: int) -> bool:
        return any(index % step == subtask and index < end for subtask, step, end in self._earlier)

    async def read(self, max_records: int) -> list[Any] | None:
        items, step = self._items, self._step
        start = self._next
        if start >= len(items):
            return None
        stop = start + max_records * step
        self._next = stop
        if not self._earlier:
            return list(items[start:stop:step])
        batch = [items[i] for i in range(start, min(stop, len(items)), step) if not self._emitted_before(i)]
        return batch if batch or self._next < len(items) else None

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._positions.update_nowait([*self._earlier, (self._index, self._step, self._next)])


class _RecordBuffer:
    """A bounded FIFO of records between one writer side and one reading source subtask.

    Records have offsets: the n-th record ever accepted has offset n. ``read_offset`` is the offset
    of the next record to read: the reader's position. With ``retain`` on, records already read are
    kept until :meth:`acknowledge` says a checkpoint covers them, so a restore can :meth:`rewind`.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.closed = False
        self.reader_gone = False
        self.stopping = False  # a stop-with-savepoint takes what is buffered: accept nothing more
        self.read_offset = 0
        self.retain = False
        self._retained: deque[Any] = deque()  # read, not yet acknowledged: offsets up to read_offset
        self._items: deque[Any] = deque()
        self._failure: BaseException | None = None
        self._readable: anyio.Event | None = None
        self._writable: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _wake_reader(self) -> None:
        if self._readable is not None:
            self._readable.set()
            self._readable = None

    def put_nowait(self, item: Any) -> None:
        if self.reader_gone:
            raise LockgateError(
                "the job reading this source has ended, so the record was not accepted; "
                "check the job's result (await job.wait()) for why"
            )
        if self.stopping:
            raise LockgateError(
                "the job reading this QueueSource is stopping with a savepoint, which holds what the "
                "queue had buffered; put the record into the QueueSource of the job that resumes from "
                "that savepoint"
            )
        if self.closed:
            raise LockgateError("the source is closed: it accepts no more records")
        if len(self._items) >= self.maxsize:
            raise anyio.WouldBlock
        self._items.append(item)
        self._wake_reader()

    async def put(self, item: Any) -> None:
        await anyio.lowlevel.checkpoint()  # a put is a cancellation point and lets others run
        while not (self.closed or self.stopping) and len(self._items) >= self.maxsize:
            self._writable = anyio.Event()
            await self._writable.wait()
        self.put_nowait(item)

    def close(self, failure: BaseException | None = None) -> None:
        self.closed = True
        self._failure = failure
        self._wake_reader()
        self._wake_writer()

    def set_stopping(self, stopping: bool) -> None:
        """A stop-with-savepoint takes the buffered records (True), or failed (False)."""
        self.stopping = stopping
        self._wake_writer()

    def unread(self) -> list[Any]:
        """The records accepted and not read yet, in order."""
        return list(self._items)

    def resume_at(self, offset: int, unread: list[Any]) -> None:
        """A new buffer continues where a savepoint stopped: the next record read is record
        ``offset``, and ``unread`` (what the stopped job's queue had buffered) comes before anything
        put into this one."""
        self.read_offset = offset
        self._items.extendleft(reversed(unread))
        if unread:
            self._wake_reader()

    def detach_reader(self) -> None:
        """The reading subtask has ended (finished, failed or cancelled): refuse further records."""
        self.reader_gone = True
        self.closed = True
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writable is not None:
            self._writable.set()
            self._writable = None

    async def read(self, max_records: int) -> list[Any] | None:
        items = self._items
        while not items:
            if self._failure is not None:
                raise self._failure
            if self.closed:
                return None
            self._readable = anyio.Event()
            await self._readable.wait()
        count = min(max_records, len(items))
        batch = [items.popleft() for _ in range(count)]
        self.read_offset += count
        if self.retain:
            self._retained.extend(batch)
        self._wake_writer()
        return batch

    def acknowledge(self, offset: int) -> None:
        """Records below ``offset`` are covered by a completed checkpoint: stop retaining them."""
        drop = min(len(self._retained), len(self._retained) - (self.read_offset - offset))
        for _ in range(max(0, drop)):
            self._retained.popleft()

    def rewind(self, offset: int) -> None:
        """Make ``offset`` the next record to read again (a restore from a snapshot taken there)."""
        behind = self.read_offset - offset
        if behind == 0:
            return
        if behind < 0 or behind > len(self._retained):
            raise LockgateError(
                f"the QueueSource cannot resume at record {offset}: it has handed out records up to "
                f"{self.read_offset} and kept {len(self._retained)} of them for replay; only a snapshot "
                "taken by this run, with the source's records retained until checkpointed, can be resumed"
            )
        for _ in range(behind):
            self._items.appendleft(self._retained.pop())
        self.read_offset = offset


class QueueSource(Source, Generic[T]):
    """A source that the application pushes records into: ``await q.put(x)``, then ``q.close()``.

    A record whose ``put()`` returned has been accepted by the job. ``put()`` waits while ``maxsize``
    records are buffered (backpressure reaches the application). After ``close()`` the job reads what
    is buffered and then its input ends. It runs at parallelism 1.

    It is replayable within the job: with checkpointing on, records read are kept until a completed
    checkpoint covers them, so a restart resumes exactly after the restored checkpoint (or, before
    the first one, at the first record). Without checkpointing, records are not kept, and a restart
    fails with an error saying so.

    A service upgrades its job through a savepoint: ``stop_with_savepoint`` stores the records the
    queue had accepted but the job not yet read, and from then on the queue refuses records, saying
    where they go; a new job, given a new ``QueueSource`` and ``restore_from`` the savepoint, reads
    those first, then what is put into the new queue. No record whose ``put()`` returned is lost.
    """

    fixed_parallelism = 1
    reads_in_this_process = True

    def __init__(self, maxsize: int = 1000) -> None:
        self._buffer = _RecordBuffer(maxsize)
        self._attached = False

    def __repr__(self) -> str:
        state = "closed" if self._buffer.closed else "open"
        return f"<QueueSource [{len(self._buffer)}/{self._buffer.maxsize} buffered, {state}]>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._buffer.closed

    @property
    def accepting(self) -> bool:
        """Whether :meth:`put` takes records: not once closed, once its job has ended, nor while its
        job stops with a savepoint (which holds what the queue buffered)."""
        buffer = self._buffer
        return not (buffer.closed or buffer.stopping or buffer.reader_gone)

    async def put(self, item: T) -> None:
        """Hand ``item`` to the job, waiting while the buffer is full."""
        await self._buffer.put(item)

    def put_nowait(self, item: T) -> None:
        """Hand ``item`` to the job; raises ``anyio.WouldBlock`` if the buffer is full."""
        self._buffer.put_nowait(item)

    def close(self) -> None:
        """End the input: the job processes what is buffered, then finishes."""
        self._buffer.close()

    def create_reader(self, ctx: RuntimeContext) -> SourceReader:
        buffer = self._buffer
        if buffer.reader_gone or (self._attached and ctx.attempt == 0):
            raise ConfigurationError(
                "a QueueSource feeds one job run only; create a new QueueSource for each run"
            )
        first_run = not self._attached
        self._attached = True
        buffer.retain = buffer.retain or ctx.checkpointing_mode is not None
        positions = ctx.get_list_state(ListStateDescriptor[int]("position"))
        unread = ctx.get_list_state(ListStateDescriptor[Any]("unread"))
        assert isinstance(positions, OperatorListState) and isinstance(unread, OperatorListState)
        reader = _BufferReader(buffer, positions, unread)
        if ctx.is_restored and first_run:
            # A new job resumes from another job's snapshot: go on at its position, with the records
            # that job's queue had accepted but not read (a stop-with-savepoint stores them).
            restored = positions.get_nowait()
            buffer.resume_at(max(restored, default=0), unread.get_nowait())
        elif ctx.is_restored or ctx.attempt > 0:
            # A restart without a checkpoint starts again at the first record.
            for offset in positions.get_nowait() if ctx.is_restored else [0]:
                buffer.rewind(offset)
        unread.clear_nowait()
        return reader

    def job_ended(self) -> None:
        self._buffer.detach_reader()

    def progress(self) -> SourceProgress:
        """Records read so far; the size of the input is not known."""
        read = self._buffer.read_offset
        return SourceProgress("records", read, None, read)


class _BufferReader(SourceReader):
    """Reads a record buffer; its position (the offset of the next record) is operator state."""

    def __init__(
        self,
        buffer: _RecordBuffer,
        positions: OperatorListState[int] | None = None,
        unread: OperatorListState[Any] | None = None,
    ) -> None:
        self._buffer = buffer
        self._positions = positions
        self._unread = unread
        self._offsets: dict[int, int] = {}  # read offset at each checkpoint in progress

    async def read(self, max_records: int) -> list[Any] | None:
        return await self._buffer.read(max_records)

    def snapshot_state(self, checkpoint_id: int) -> None:
        offset = self._buffer.read_offset
        self._offsets[checkpoint_id] = offset
        if self._positions is not None:
            self._positions.update_nowait([offset])
        if self._unread is not None:
            self._unread.update_nowait(self._buffer.unread() if self._buffer.stopping else [])

    def notify_stopping(self, stopping: bool) -> None:
        self._buffer.set_stopping(stopping)

    def release_before(self, checkpoint_id: int) -> None:
        covered = [cid for cid in self._offsets if cid <= checkpoint_id]
        if covered:
            self._buffer.acknowledge(self._offsets[max(covered)])
            for cid in covered:
                del self._offsets[cid]


class AsyncIterableSource(Source, Generic[T]):
    """Emits what an async iterable yields, at parallelism 1.

    It cannot rewind: its records cannot be replayed, so a job reading it cannot restart after a
    failure (the restart fails, saying so), and checkpoints give it no exactly-once guarantee.
    """

    fixed_parallelism = 1
    reads_in_this_process = True

    def __init__(self, iterable: AsyncIterable[T], buffer_size: int = 1000) -> None:
        self.iterable = iterable
        self.buffer_size = buffer_size
        self._reader: _AsyncIterableReader | None = None

    def create_reader(self, ctx: RuntimeContext) -> SourceReader:
        if ctx.attempt > 0:
            raise LockgateError(
                f"source {ctx.operator_uid!r} reads an async iterable, which cannot replay the records "
                "it already gave, so the job cannot restart after a failure; use a replayable source "
                "(from_collection, FileSource, QueueSource) for a job that must survive failures"
            )
        self._reader = _AsyncIterableReader(self.iterable, self.buffer_size)
        return self._reader

    def progress(self) -> SourceProgress:
        """Records read so far; the size of the input is not known."""
        read = 0 if self._reader is None else self._reader.records_read
        return SourceProgress("records", read, None, read)


class _AsyncIterableReader(_BufferReader):
    """A background pump moves items into a buffer, so a read takes all that is ready at once."""

    def __init__(self, iterable: AsyncIterable[Any], buffer_size: int) -> None:
        super().__init__(_RecordBuffer(buffer_size))
        self._iterable = iterable

    @property
    def records_read(self) -> int:
        return self._buffer.read_offset

    async def close(self) -> None:
        self._buffer.detach_reader()

    def notify_stopping(self, stopping: bool) -> None:
        """Nothing: an async iterable cannot be resumed by another job, its pump just waits."""

    async def run_background(self) -> None:
        try:
            async for item in self._iterable:
                await self._buffer.put(item)
        except Exception as exc:  # handed to read(), which raises it in the source's subtask
            self._buffer.close(exc)
        else:
            self._buffer.close()
