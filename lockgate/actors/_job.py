"""A job running in the background of the caller's event loop, and the handle to it."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import sniffio

from lockgate._errors import ConfigurationError, JobCancelledError, LockgateError
from lockgate.actors._execution import NOT_OPEN, JobExecution
from lockgate.actors._runner import JobResult
from lockgate.actors._server import JobServer
from lockgate.checkpointing import CheckpointStatsSnapshot
from lockgate.mailbox import ChannelStatistics
from lockgate.observe import Plan, job_html
from lockgate.snapshots import CompletedCheckpoint


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


def spawn_detached(body: Callable[[], Awaitable[None]], name: str) -> Any:
    """Start ``body`` as a task of the running event loop that nobody awaits.

    ``body`` must not raise: on trio a system task that raises crashes the run. Returns the task
    object where there is one, so the caller can keep it referenced.
    """
    library = sniffio.current_async_library()
    if library == "asyncio":
        import asyncio

        async def main() -> None:
            await body()

        return asyncio.get_running_loop().create_task(main(), name=name)
    if library == "trio":
        import trio

        trio.lowlevel.spawn_system_task(body, name=name)
        return None
    raise LockgateError(f"lockgate runs on asyncio or trio, not on {library}")


class Job:
    """A handle to a job started with :meth:`StreamEnvironment.start`.

    The job runs as a task of the caller's event loop. :meth:`wait` returns its result (or raises its
    error); :meth:`cancel` stops it and waits until every one of its tasks has ended.
    """

    def __init__(self, execution: JobExecution) -> None:
        self.name = execution.job_name
        self._execution = execution
        self.status = JobStatus.RUNNING
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._result: JobResult | None = None
        self._error: Exception | None = None
        self._task = spawn_detached(self._run, name=f"lockgate job {self.name!r}")

    def __repr__(self) -> str:
        return f"<Job {self.name!r} [{self.status.value}]>"

    async def _run(self) -> None:
        try:
            with self._scope:
                self._result = await self._execution.run()
            if self._result is not None:
                self.status = JobStatus.FINISHED
            else:
                self.status = JobStatus.CANCELLED
        except Exception as exc:  # kept for wait(): nothing may escape a detached task
            self._error = exc
            self.status = JobStatus.FAILED
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        """Whether the job has ended, however it ended."""
        return self._done.is_set()

    @property
    def channel_stats(self) -> dict[str, ChannelStatistics]:
        """The statistics of every channel of the job now, by channel name (a copy: read it again for
        newer figures, as :attr:`checkpoint_stats`)."""
        return self._execution.channel_statistics()

    @property
    def checkpoint_stats(self) -> CheckpointStatsSnapshot:
        """Every checkpoint's id, status, durations and sizes so far, with the counts."""
        return self._execution.checkpoint_statistics()

    def metrics(self) -> dict[str, dict[str, Any]]:
        """The job's metrics now, with Flink's names: for each operator's subtask, by
        ``"<uid>[<subtask>]"``, ``numRecordsIn``, ``numRecordsOut``, ``numRecordsInPerSecond``,
        ``numRecordsOutPerSecond``, ``busyTimeMsPerSecond``, ``backPressuredTimeMsPerSecond``,
        ``idleTimeMsPerSecond``, ``currentInputWatermark``, ``currentOutputWatermark`` (None before
        the first); under ``"job"``: ``lastCheckpointDuration`` (ms), ``lastCheckpointSize``
        (bytes), ``numberOfCompletedCheckpoints``, ``numberOfFailedCheckpoints``, ``numRestarts``.

        Counts are of the current attempt (a restart counts from zero again). Figures per second are
        over the last 10 seconds of calls (since the attempt started, for the first). Busy time is
        what is neither idle (waiting for input) nor backpressured (waiting for room downstream):
        processing, and waiting for a turn in the event loop the job's subtasks share.
        """
        return self._execution.metrics()

    @property
    def restarts(self) -> int:
        """How many times the job has restarted after a failure."""
        return self._execution.restarts

    def plan(self) -> Plan:
        """What the job runs: its operators, their chains and the edges between them (equal to what
        ``env.plan()`` said before the start). In a notebook it draws itself."""
        return Plan.from_job_graph(self._execution.graph)

    def _repr_html_(self) -> str:
        # In a notebook: name, status, restarts, checkpoint counts, the plan's picture, the metrics and
        # the checkpoint history.
        restarting = self._execution.restarting and not self.done
        status = "restarting" if restarting else self.status.value
        return job_html(self.name, status, self.restarts, self.plan(), self.checkpoint_stats, self.metrics())

    async def query_state(self, uid: str, state: str, key: Any, consistency: str = "live") -> Any:
        """The value of keyed state ``state`` of operator ``uid`` for ``key``, read in process while
        the job runs: None if the key has none; a list state's list, a map state's dict, an
        aggregating state's result (copies). It is read from the subtask that owns the key's key
        group, between two of its steps: a query never waits for a batch to finish, nor blocks one.

        ``consistency="live"`` reads the current value (once the subtask is open, without awaiting
        anything); ``"checkpoint"`` the value as of the last completed checkpoint, consistent with
        what exactly-once sinks have shown (the first such query waits for the next checkpoint to
        complete). A query made while the job starts or restarts waits for the subtask to open. A
        window operator's ``"window-contents"`` answers ``{window: contents}`` (live only).

        Raises:
            StateNotFoundError: No keyed operator ``uid`` or no state ``state`` (the message lists
                those there are).
            ConfigurationError: Another consistency, or the job has ended.
        """
        execution = self._execution
        if consistency == "live" and not execution.ended:  # the hot path: no await once open
            value = execution.query_live(uid, state, key)
            if value is not NOT_OPEN:
                return value
        if consistency not in ("live", "checkpoint"):
            raise ConfigurationError(f"consistency is 'live' or 'checkpoint', got {consistency!r}")
        if consistency == "checkpoint" and self._execution.options.checkpointing.interval is None:
            raise ConfigurationError(
                f"job {self.name!r} takes no periodic checkpoints: a 'checkpoint' query would wait for "
                "one in vain; env.enable_checkpointing(interval) first, or query 'live'"
            )
        if self.done:
            raise ConfigurationError(
                f"job {self.name!r} has ended ({self.status.value}): read its state from its last checkpoint "
                "or savepoint with lg.Savepoint.load(url)"
            )
        return await self._execution.query_state(uid, state, key, consistency)

    async def serve(self, host: str = "127.0.0.1", port: int = 8081, token: str | None = None) -> JobServer:
        """Serve the job's queryable state (states marked ``.queryable(name)``, by that name), its graph,
        checkpoints and metrics over HTTP/JSON, and a dashboard page, in a task of the running event
        loop (asyncio or trio), until ``await server.aclose()``. ``port=0`` takes a free port:
        ``server.url`` tells it. While the stream is busy the server paces its answers so that the
        stream keeps most of the loop.

        Routes: ``GET /api/state/{name}?key=<JSON>`` (arrays are tuples; ``key_b64=`` the base64 of a
        pickled key, with a token only) answers ``{"key", "value"}`` or 404 for a key without a value;
        ``GET /api/job`` (with the chains and edges), ``GET /api/checkpoints`` (``?last=N``),
        ``GET /api/metrics``, ``GET /metrics`` (Prometheus' text format) and ``GET /`` (the dashboard).
        With ``token``, every request needs ``Authorization: Bearer <token>`` (else 401); the
        dashboard page alone also opens as ``/?token=<token>``.

        Raises:
            ConfigurationError: ``host`` is not loopback and there is no token, or the address cannot
                be bound.
        """
        return await JobServer.start(self, self._execution, host, port, token)

    async def trigger_checkpoint(self) -> CompletedCheckpoint:
        """Take a checkpoint now and wait until it completes; returns where it is.

        Raises:
            CheckpointError: Checkpointing is not enabled, the job is not running (or its final
                checkpoint is complete), or the checkpoint failed.
        """
        return await self._execution.trigger_checkpoint()

    async def trigger_savepoint(self, url: str) -> str:
        """Take a savepoint into the directory ``url`` while the job runs on; returns its URL
        (``.../savepoint-<id>``). It is aligned, in the backend-independent savepoint format, and never
        deleted by checkpoint retention. It works whether or not periodic checkpointing is enabled.

        Raises:
            CheckpointError: The job is not running, or the savepoint failed (the job goes on).
        """
        return await self._execution.trigger_savepoint(url)

    async def stop_with_savepoint(self, url: str) -> str:
        """Take a savepoint into ``url`` and stop the job: no record is processed after its barrier,
        the sinks commit what precedes it. Returns the savepoint's URL once the job has ended.

        Raises:
            CheckpointError: As :meth:`trigger_savepoint`; the job then goes on.
        """
        pointer = await self._execution.trigger_savepoint(url, stop=True)
        await self._done.wait()
        return pointer

    async def wait(self) -> JobResult:
        """Wait for the job to end and return its result.

        Raises:
            JobFailedError: An operator raised.
            JobCancelledError: The job was cancelled.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise JobCancelledError(f"job {self.name!r} was cancelled before it finished")
        return self._result

    async def cancel(self) -> None:
        """Stop the job and wait until all its tasks have ended. Does nothing if it has ended."""
        self._scope.cancel()
        await self._done.wait()
