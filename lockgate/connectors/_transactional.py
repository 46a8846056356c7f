"""Transactional sinks: two-phase commit tied to checkpoints, and the collecting sink built on it.

Each sink subtask writes into an open transaction. When a checkpoint barrier arrives the transaction
is pre-committed (made durable, not yet visible) and kept as pending, under the checkpoint's id, in
the subtask's operator state; a new transaction opens. When the checkpoint completes, every pending
transaction up to it is committed (made visible). A failure before that leaves them pending: the
restore commits the pending transactions of the checkpoint it restores (commit must therefore be
idempotent) and aborts the one that was open, whose records will be replayed. At the end of a
bounded job the open transaction stays open until the final checkpoint, which every subtask takes
after its input has ended: its barrier pre-commits the transaction (no new one opens), and its
completion commits it. No commit happens outside a completed checkpoint; without checkpointing, the
last transaction commits once every subtask of the job has finished.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from typing import Any, ClassVar, Generic, Literal, TypeVar

from lockgate._config import CheckpointingMode
from lockgate._driver import driver_link, driver_process, resident_token
from lockgate.connectors._sink import Sink, SinkWriter
from lockgate.functions import RuntimeContext
from lockgate.state import ListStateDescriptor, OperatorListState

T = TypeVar("T")
TXN = TypeVar("TXN")

#: One entry of a writer's operator state: ("pending", checkpoint id, txn) or ("open", None, txn).
_Entry = tuple[Literal["pending", "open"], int | None, Any]


class TwoPhaseCommitSink(Sink, Generic[TXN]):
    """The base of exactly-once sinks: implement the five transaction steps.

    A transaction is any picklable object (it is stored in checkpoints): a file name, a list of
    records, a transaction id of an external system. One sink object serves every subtask, so the
    methods must not keep per-subtask state on ``self``; keep it in the transaction.

    Under ``CheckpointingMode.EXACTLY_ONCE`` the records of a transaction become visible only once the
    checkpoint after them completes (at the end of a bounded job, its final checkpoint). Without
    checkpointing they become visible at the end of the job only, unless :meth:`commits_each_batch`
    says otherwise.
    """

    @abstractmethod
    async def begin_transaction(self) -> TXN:
        """Open a new transaction and return it."""

    @abstractmethod
    async def write(self, transaction: TXN, records: list[Any]) -> None:
        """Add a batch of records (never empty) to ``transaction``."""

    @abstractmethod
    async def pre_commit(self, transaction: TXN) -> None:
        """Make ``transaction`` durable so that :meth:`commit` cannot fail for lack of data; it takes
        no more records. Called when a checkpoint barrier arrives, and at the end of the input."""

    @abstractmethod
    async def commit(self, transaction: TXN) -> None:
        """Make a pre-committed transaction visible. Must be idempotent: after a failure it is called
        again for transactions that may already be committed."""

    @abstractmethod
    async def abort(self, transaction: TXN) -> None:
        """Drop ``transaction`` and what was written to it. Must be idempotent too."""

    def commits_each_batch(self, ctx: RuntimeContext) -> bool:
        """Whether each batch is its own transaction, committed at once (no exactly-once promise).

        The default is False: records wait for the next completed checkpoint.
        """
        return False

    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        state = ctx.get_list_state(ListStateDescriptor[_Entry]("transactions"))
        assert isinstance(state, OperatorListState)
        restored = state.get_nowait() if ctx.is_restored else []
        at_end = ctx.checkpointing_mode is None
        return TransactionalWriter(self, state, restored, self.commits_each_batch(ctx), commit_at_end=at_end)


class TransactionalWriter(SinkWriter, Generic[TXN]):
    """Drives a :class:`TwoPhaseCommitSink` for one subtask and keeps its transactions in state."""

    def __init__(
        self,
        sink: TwoPhaseCommitSink[TXN],
        state: OperatorListState[_Entry],
        restored: list[_Entry],
        each_batch: bool,
        *,
        commit_at_end: bool = False,
    ) -> None:
        self._sink = sink
        self._state = state
        self._restored = restored
        self._each_batch = each_batch
        # Without checkpointing, the last transaction commits when the job has finished; with it, the
        # final checkpoint takes the open transaction, as any checkpoint does.
        self._commit_at_end = commit_at_end
        self._ended = False
        self._open: TXN | None = None
        # Pre-committed transactions by the checkpoint that covers them (None: the final one).
        self._pending: list[tuple[int | None, TXN]] = []

    def __repr__(self) -> str:
        return f"<TransactionalWriter {self._sink!r} [{len(self._pending)} pending]>"

    async def open(self) -> None:
        restored, self._restored = self._restored, []
        for kind, _, transaction in restored:
            if kind == "pending":  # its checkpoint is the one restored: complete
                await self._sink.commit(transaction)
            else:
                await self._sink.abort(transaction)
        self._state.clear_nowait()
        if not self._each_batch:
            self._open = await self._sink.begin_transaction()

    async def write(self, records: list[Any]) -> None:
        sink = self._sink
        if self._each_batch:
            transaction = await sink.begin_transaction()
            await sink.write(transaction, records)
            await sink.pre_commit(transaction)
            await sink.commit(transaction)
            return
        assert self._open is not None
        await sink.write(self._open, records)

    async def prepare_snapshot(self, checkpoint_id: int) -> None:
        if self._open is not None:
            await self._sink.pre_commit(self._open)
            self._pending.append((checkpoint_id, self._open))
            self._open = None  # pending now: should the next begin fail, close() must not abort it
            if not self._ended:  # after the end of input no record comes: nothing to open
                self._open = await self._sink.begin_transaction()
        entries: list[_Entry] = [("pending", cid, txn) for cid, txn in self._pending]
        if self._open is not None:
            entries.append(("open", None, self._open))
        self._state.update_nowait(entries)

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        while self._pending:
            covered_by, transaction = self._pending[0]
            if covered_by is None or covered_by > checkpoint_id:
                return
            await self._sink.commit(transaction)
            self._pending.pop(0)

    async def finish(self) -> None:
        self._ended = True
        if self._commit_at_end and self._open is not None:
            await self._sink.pre_commit(self._open)
            self._pending.append((None, self._open))
            self._open = None

    async def notify_job_finished(self) -> None:
        if not self._commit_at_end:
            return  # the final checkpoint's completion committed everything
        while self._pending:
            await self._sink.commit(self._pending[0][1])
            self._pending.pop(0)

    async def close(self) -> None:
        # Pending transactions stay: a restore commits those its checkpoint covers.
        if self._open is not None:
            transaction, self._open = self._open, None
            await self._sink.abort(transaction)


class CollectSink(TwoPhaseCommitSink[tuple[str, list[Any]]], Generic[T]):
    """Collects records in :attr:`results`, a list shared by all subtasks of the sink.

    Under ``CheckpointingMode.EXACTLY_ONCE`` it is exactly-once: :attr:`results` holds only the
    records of completed checkpoints (a bounded job's last ones with its final checkpoint), so after
    any failures and restarts it holds every record exactly once. Otherwise records are appended as
    they arrive. At parallelism 1 the list keeps the order in which records arrived.

    The results live in this process's memory. A job restored from a snapshot that another process
    wrote (resumed from a savepoint after a stop, say) does not add that snapshot's pending records
    again: they were committed into the other process's sink when the snapshot completed (or were lost
    with that process); the new sink holds what came after the snapshot.

    On the Ray runner the sink's subtasks run in other processes; what they commit (or, without
    exactly-once, append) is sent to this object in the job's driver process, in order, so
    :attr:`results` fills there as it does locally.
    """

    #: Every transaction committed by any CollectSink of this process, by id: a job restored from a
    #: snapshot (even into a new sink, as after a stop-with-savepoint) commits its pending transactions
    #: again, and those already committed must not add their records twice. It grows by one id per
    #: checkpoint and sink subtask (about 100 bytes): fine for tests, notebooks and demos, which is what
    #: an in-memory sink is for.
    _committed: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        self.results: list[T] = []
        self._token = resident_token(self)  # how its copies in other processes reach it

    def __repr__(self) -> str:
        return f"<CollectSink [{len(self.results)} results]>"

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to a worker process adds nothing to its own list: its results come back here.
        return {**self.__dict__, "results": []}

    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        if ctx.checkpointing_mode is CheckpointingMode.EXACTLY_ONCE:
            return super().create_writer(ctx)
        return _ExtendWriter(self)

    async def begin_transaction(self) -> tuple[str, list[Any]]:
        # Named by the driver's process: the one whose results the transaction belongs to.
        return (f"{driver_process()}-{uuid.uuid4().hex}", [])

    async def write(self, transaction: tuple[str, list[Any]], records: list[Any]) -> None:
        transaction[1].extend(records)

    async def pre_commit(self, transaction: tuple[str, list[Any]]) -> None:
        """Nothing to do: the records live in the transaction, which the checkpoint stores."""

    async def commit(self, transaction: tuple[str, list[Any]]) -> None:
        name, records = transaction
        link = driver_link()
        if link is not None:  # a copy in a worker: the driver's sink commits it
            link.send(self._token, "_commit_here", name, records)
        else:
            self._commit_here(name, records)

    def _commit_here(self, name: str, records: list[Any]) -> None:
        process, _, _ = name.rpartition("-")
        if process and process != driver_process():
            return  # another process's: committed into its own sink (see the class docstring)
        if name not in self._committed:
            self._committed.add(name)
            self.results.extend(records)

    def _extend_here(self, records: list[Any]) -> None:
        self.results.extend(records)

    async def abort(self, transaction: tuple[str, list[Any]]) -> None:
        """Nothing to do: an aborted transaction's records are simply never added."""


class _ExtendWriter(SinkWriter):
    def __init__(self, sink: CollectSink[Any]) -> None:
        self._sink = sink
        self._link = driver_link()

    async def write(self, records: list[Any]) -> None:
        if self._link is None:
            self._sink.results.extend(records)
        else:  # a copy in a worker: the driver's sink appends them
            self._link.send(self._sink._token, "_extend_here", records)
