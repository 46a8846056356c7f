"""A job's execution: attempts of the job graph, restarts after failures, one checkpoint coordinator."""

from __future__ import annotations

import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import anyio

from lockgate._errors import (
    CheckpointError,
    ConfigurationError,
    IncompatibleStateError,
    JobFailedError,
    StateMigrationError,
    StateNotFoundError,
)
from lockgate.actors._actor import SubtaskActor
from lockgate.actors._runner import Attempt, JobResult, JobRunner, RuntimeOptions
from lockgate.checkpointing import CheckpointCoordinator, CheckpointStatsSnapshot
from lockgate.graph import JobGraph, OperatorTransformation, SourceTransformation, Transformation
from lockgate.mailbox import ChannelStatistics
from lockgate.observe import MetricsWindow, job_figures, job_logger, log_scope
from lockgate.savepoint import RestoredState
from lockgate.snapshots import CompletedCheckpoint
from lockgate.state import KeyedStateBackend, key_group_for

logger = job_logger()  # each record names the job (and subtask) of the scope it is logged in

T = TypeVar("T")

#: What :meth:`JobExecution.query_live` returns while the subtask that would answer is not open.
NOT_OPEN: Final = object()


class GeneratedUidWarning(UserWarning):
    """State is saved for operators whose uid lockgate generated from their place in the graph."""


def warn_about_generated_uids(graph: JobGraph) -> None:
    """Warn once per call if operators that may keep state have generated uids: a changed graph gives
    them other uids, and their state would then not be restored. Plain maps and filters keep none
    (their specs say so: ``OperatorSpec.may_keep_state``)."""
    generated = [
        node.uid
        for vertex in graph.vertices
        for node in vertex.operators
        if not node.uid_is_explicit and not _stateless(node)
    ]
    if generated:
        warnings.warn(
            f"operators {generated} have uids generated from their place in the job; state is matched to "
            "operators by uid, so a changed job may not find it: set uid=... on every operator",
            GeneratedUidWarning,
            stacklevel=3,
        )


def _stateless(node: Transformation) -> bool:
    return isinstance(node, OperatorTransformation) and not node.spec.may_keep_state


class JobExecution:
    """Runs a job to its end: an attempt, and after a failure, as the restart strategy allows, another
    attempt from the latest complete checkpoint (or from the start, without one).

    The first attempt is built here, so a bad graph or function fails the call that starts the job.

    Args:
        job_name: The job's name.
        graph: What to run.
        options: How to run it.
        restored: The state to start from (``restore_from``), or None.
    """

    def __init__(
        self, job_name: str, graph: JobGraph, options: RuntimeOptions, restored: RestoredState | None = None
    ) -> None:
        self.job_name = job_name
        self.graph = graph
        self.options = options
        self.restarts = 0
        self.restored_from: list[int | None] = []  # per restart: the checkpoint id, None from the start
        self._restarting = False
        self._initial = restored
        #: Whether :meth:`run` has returned or raised: the job has ended.
        self.ended = False
        # Set (and replaced) whenever an attempt ends or starts: what waiting queries look again at.
        self._changed = anyio.Event()
        self._routed: Attempt | None = None
        self._metered: Attempt | None = None  # the attempt whose readings _window keeps
        self._window: MetricsWindow | None = None
        self._routes: dict[str, list[tuple[SubtaskActor, KeyedStateBackend]]] = {}
        self._readers: dict[tuple[str, str], list[tuple[SubtaskActor, Callable[[Any], Any]]]] = {}
        # Every job has a coordinator: savepoints work without periodic checkpointing too.
        self.coordinator = CheckpointCoordinator(
            job_name,
            options.checkpointing,
            options.checkpoint_storage,
            graph.max_parallelism,
            graph.parallelism_of(),
        )
        if restored is not None:
            base = CompletedCheckpoint(restored.checkpoint_id, restored.pointer)
            self.coordinator.set_base(base, restored.checkpoint_id)
        self.runner = self._runner(restored)

    def _runner(self, restored: RestoredState | None) -> Attempt:
        runner = self.options.runner
        make: Callable[..., Attempt] = JobRunner if runner is None else runner.attempt
        return make(
            self.job_name,
            self.graph,
            self.options,
            restored=restored,
            attempt=self.restarts,
            coordinator=self.coordinator,
        )

    def channel_statistics(self) -> dict[str, ChannelStatistics]:
        """The statistics of every channel of the current attempt, by channel name."""
        return self.runner.channel_statistics()

    def metrics(self) -> dict[str, dict[str, Any]]:
        """The metrics of every operator's subtask in the current attempt, by ``"<uid>[<subtask>]"``,
        and the job's under ``"job"`` (names and meanings as in ``lockgate.observe``)."""
        runner = self.runner
        if self._metered is not runner:
            self._metered, self._window = runner, MetricsWindow(runner.started_at)
        now = time.perf_counter()
        counters = runner.metric_counters(now)
        assert self._window is not None
        figures: dict[str, dict[str, Any]] = self._window.figures(now, counters)
        coordinator = self.coordinator
        counts = coordinator.statistics(last=0)  # the counts alone: no history built
        figures["job"] = job_figures(
            coordinator.last_completed_statistics, counts.completed, counts.failed, self.restarts
        )
        return figures

    def checkpoint_statistics(self, last: int | None = None) -> CheckpointStatsSnapshot:
        """The counts of every checkpoint (and savepoint) of the job so far, and the statistics of
        the newest (the ``last`` ones; None: all the coordinator keeps)."""
        return self.coordinator.statistics(last)

    async def trigger_checkpoint(self) -> CompletedCheckpoint:
        """Take a checkpoint now and wait until it completes.

        Raises:
            CheckpointError: Checkpointing is not enabled, the job is not running, or the checkpoint
                failed.
        """
        if not self.options.checkpointing.enabled:
            raise CheckpointError(
                f"job {self.job_name!r} does not checkpoint; call env.enable_checkpointing(...) before "
                "starting it (savepoints need no checkpointing: job.trigger_savepoint(url))"
            )
        return await self.coordinator.trigger_checkpoint()

    async def trigger_savepoint(self, url: str, *, stop: bool = False) -> str:
        """Take a savepoint into the directory ``url``; with ``stop``, then end the job. Returns the
        savepoint's URL.

        Savepoints work whether or not periodic checkpointing is enabled.

        Raises:
            CheckpointError: The job is not running, or the savepoint failed (the job goes on).
        """
        warn_about_generated_uids(self.graph)
        completed = await self.coordinator.trigger_savepoint(url, stop=stop)
        return completed.pointer

    @property
    def restarting(self) -> bool:
        """Whether an attempt has failed and the next one has not been built yet (its state is
        about to be thrown away: queries should wait or be refused)."""
        return self._restarting or self.runner.failed

    def queryable_states(self) -> dict[str, tuple[str, str]]:
        """The keyed states of the current attempt marked ``.queryable(name)``, by public name:
        ``(operator uid, state name)``. States are registered as their functions open, so a state
        appears once a subtask of its operator has opened."""
        found: dict[str, tuple[str, str]] = {}
        for actor in self.runner.actors:
            for backend in actor.keyed_backends:
                for name, descriptor in backend.descriptors.items():
                    if descriptor.queryable_as is not None:
                        found.setdefault(descriptor.queryable_as, (backend.operator_uid, name))
        return found

    def public_state(self, public_name: str) -> tuple[str, str] | None:
        """The ``(operator uid, state name)`` marked ``.queryable(public_name)``, None if none is.

        Raises:
            ConfigurationError: Several states claim the name; the message names them.
        """
        claims = {
            (backend.operator_uid, name)
            for actor in self.runner.actors
            for backend in actor.keyed_backends
            for name, descriptor in backend.descriptors.items()
            if descriptor.queryable_as == public_name
        }
        if len(claims) > 1:
            named = " and ".join(f"state {state!r} of {uid!r}" for uid, state in sorted(claims))
            raise ConfigurationError(
                f"{named} are both queryable as {public_name!r}: give each its own public name"
            )
        return next(iter(claims), None)

    async def wait_opened(self) -> None:
        """Wait until every subtask of the current attempt that keeps keyed state has opened, or the
        attempt has ended."""
        changed = self._changed
        for actor in self.runner.actors:
            if actor.keyed_backends and not actor.opened.is_set():
                await _first_of(actor.opened, changed)
                if changed.is_set():
                    return

    def _owners(self, uid: str) -> list[tuple[SubtaskActor, KeyedStateBackend]]:
        """The subtask (actor and backend) of keyed operator ``uid`` that owns each key group, in the
        current attempt: a table built at the first query of each attempt."""
        if self._routed is not self.runner:
            self._routed, self._routes, self._readers = self.runner, {}, {}
        owners = self._routes.get(uid)
        return self._route(uid) if owners is None else owners

    def _route(self, uid: str) -> list[tuple[SubtaskActor, KeyedStateBackend]]:
        if self.options.runner is not None:
            raise ConfigurationError(
                f"job {self.job_name!r} runs its subtasks on {self.options.runner!r}: queryable state is "
                "answered by jobs whose subtasks run in this process (the default runner) only"
            )
        runner = self.runner
        found = [
            (actor, backend)
            for actor in runner.actors
            for backend in actor.keyed_backends
            if backend.operator_uid == uid
        ]
        if not found:
            keyed = sorted({b.operator_uid for a in runner.actors for b in a.keyed_backends})
            raise StateNotFoundError(f"job {self.job_name!r} has no keyed operator {uid!r}; it has {keyed}")
        owners = found  # one subtask: it owns every key group
        if len(found) > 1:
            owners = [found[0]] * self.graph.max_parallelism
            for actor, backend in found:
                for key_group in backend.key_group_range:
                    owners[key_group] = (actor, backend)
        self._routes[uid] = owners
        return owners

    def _owner(self, uid: str, key: Any) -> tuple[SubtaskActor, KeyedStateBackend]:
        return _by_key_group(self._owners(uid), key, self.graph.max_parallelism)

    def _readers_of(self, uid: str, state: str) -> list[tuple[SubtaskActor, Callable[[Any], Any]]] | None:
        """What answers live queries of ``state`` of ``uid`` for each key group (see
        :meth:`KeyedStateBackend.query_reader`), once every subtask of ``uid`` has opened (its
        states are registered only then); None before."""
        owners = self._owners(uid)
        if not all(actor.is_open for actor, _ in owners):
            return None
        made: dict[int, Callable[[Any], Any]] = {}
        for _, backend in owners:
            if id(backend) not in made:
                made[id(backend)] = backend.query_reader(state)
        readers = [(actor, made[id(backend)]) for actor, backend in owners]
        self._readers[uid, state] = readers
        return readers

    def query_live(self, uid: str, state: str, key: Any) -> Any:
        """:meth:`query_state` live, without awaiting: :data:`NOT_OPEN` if the owning subtask is not
        open (then await :meth:`query_state`). The hot path of in-process queries."""
        if self._routed is not self.runner:
            self._owners(uid)  # a new attempt: new tables
        readers = self._readers.get((uid, state)) or self._readers_of(uid, state)
        if readers is None:
            return NOT_OPEN
        actor, read = _by_key_group(readers, key, self.graph.max_parallelism)
        if not actor.is_open:
            return NOT_OPEN
        try:
            return read(key)
        except TypeError:  # an unhashable key, say: a key that cannot be one says so
            key_group_for(key, self.graph.max_parallelism)
            raise

    async def _open_owner(self, uid: str, key: Any) -> KeyedStateBackend:
        """The backend of the subtask of ``uid`` that owns ``key`` once it has opened (its state
        restored and migrated), in this attempt or, after a failure, in the next one.

        Raises:
            ConfigurationError: The job ended first.
        """
        while True:
            actor, backend = self._owner(uid, key)
            if actor.is_open:
                return backend
            if self.ended:
                raise ConfigurationError(f"job {self.job_name!r} has ended: its state is not queryable")
            if not actor.closed:
                await _first_of(actor.opened, self._changed)
            elif self.restarting:  # a failed attempt's subtask: the next attempt's will answer
                await self._changed.wait()
            else:
                raise ConfigurationError(
                    f"subtask {actor.subtask_index} of {uid!r} has finished: job {self.job_name!r} is ending"
                )

    async def query_state(self, uid: str, state: str, key: Any, consistency: str = "live") -> Any:
        """The value of ``state`` for ``key`` in keyed operator ``uid`` (None if it has none), live
        or as of the last completed checkpoint, read from the subtask that owns the key's key group
        once that subtask is open. Once it is, a live query runs to its end without yielding to the
        event loop: it reads the tables as they are between two steps of the subtask.

        Raises:
            StateNotFoundError: No keyed operator ``uid``, or no state ``state`` in it; the message
                lists those there are.
            ConfigurationError: The job ended before the subtask opened.
        """
        key_group_for(key, self.graph.max_parallelism)  # a key that cannot be one is refused first
        actor, backend = self._owner(uid, key)
        if not actor.is_open:
            backend = await self._open_owner(uid, key)
        if consistency != "checkpoint":
            return backend.query_nowait(state, key)
        while True:
            # From now on every subtask of the operator keeps its checkpoints' state.
            for _, each in self._owners(uid):
                each.keep_checkpoint_views()
            at_least = self.coordinator.last_completed_id
            if 0 < at_least <= backend.views_id:  # answered at once
                return await backend.query_checkpoint(state, key, at_least)
            # Until a checkpoint completes; should the attempt end first, the next one answers.
            answer = await _unless_set(self._changed, backend.query_checkpoint, state, key, at_least)
            if answer is not NOT_OPEN:
                return answer
            backend = await self._open_owner(uid, key)

    async def run(self) -> JobResult:
        """Run attempts until one finishes, or a failure may not restart (it is raised).

        Logs the job's start and its end (how it ended) at INFO, and each restart as a warning; every
        record lockgate logs meanwhile names the job (see :func:`lockgate.observe.log_scope`).
        """
        with log_scope(job=self.job_name):
            restored = self._initial
            origin = (
                "" if restored is None else f", from checkpoint {restored.checkpoint_id} ({restored.pointer})"
            )
            subtasks = sum(vertex.parallelism for vertex in self.graph.vertices)
            logger.info("job %r started: %d subtask(s)%s", self.job_name, subtasks, origin)
            started = time.perf_counter()
            outcome, why = "was cancelled", ""
            try:
                result = await self._run_attempts()
                outcome = "finished"
                return result
            except Exception as exc:  # raised to the caller; logged as how the job ended
                outcome, why = "failed", f" ({type(exc).__name__}: {exc})"
                raise
            finally:
                elapsed = time.perf_counter() - started
                logger.info(
                    "job %r %s after %.3f s, %d restart(s)%s",
                    self.job_name,
                    outcome,
                    elapsed,
                    self.restarts,
                    why,
                )

    async def _run_attempts(self) -> JobResult:
        started = time.perf_counter()
        tracker = self.options.restart_strategy.tracker()
        try:
            while True:
                try:
                    result = await self.runner.run()
                except (JobFailedError, CheckpointError) as failure:
                    self._restarting = True
                    self._signal_change()
                    if isinstance(failure.__cause__, (IncompatibleStateError, StateMigrationError)):
                        raise  # restored state this job cannot read: every restart would fail alike
                    if not tracker.may_restart(time.monotonic()):
                        if self.restarts:
                            failure.add_note(
                                f"the job had restarted {self.restarts} time(s); {tracker.describe()}"
                            )
                        raise
                    await self._restart(failure)
                    self._restarting = False
                    self._signal_change()
                    continue
                return JobResult(
                    self.job_name,
                    time.perf_counter() - started,
                    result.channels,
                    restarts=self.restarts,
                    restored_from=tuple(self.restored_from),
                )
        finally:
            self.ended = True
            self._signal_change()
            self.coordinator.close()
            for vertex in self.graph.vertices:
                for node in vertex.operators:
                    if isinstance(node, SourceTransformation):
                        node.source.job_ended()

    def _signal_change(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _restart(self, failure: Exception) -> None:
        delay = self.options.restart_strategy.delay
        if delay:
            await anyio.sleep(delay)
        # The newest checkpoint, else the one the job started from, read afresh (the last attempt's
        # state took the restored objects as they were); else the start.
        loaded = await self.coordinator.load_latest()
        restored = None if loaded is None else await RestoredState.load(loaded, self.options.state_backend)
        self.restarts += 1
        self.restored_from.append(None if restored is None else restored.checkpoint_id)
        where = (
            "the start" if restored is None else f"checkpoint {restored.checkpoint_id} ({restored.pointer})"
        )
        logger.warning("%s; restart %d from %s", failure, self.restarts, where)
        try:
            self.runner = self._runner(restored)
        except Exception as exc:
            failure.add_note(f"the job could not restart: {type(exc).__name__}: {exc}")
            raise failure from failure.__cause__


def _by_key_group(table: list[T], key: Any, max_parallelism: int) -> T:
    """The entry of ``key``'s key group in a table of one entry per key group, or of a single entry
    (one subtask owns every key group: the key need not be hashed)."""
    return table[0] if len(table) == 1 else table[key_group_for(key, max_parallelism)]


async def _first_of(*events: anyio.Event) -> None:
    """Wait until one of ``events`` is set."""
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


async def _unless_set(event: anyio.Event, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``await function(*args)``, unless ``event`` is set first: then :data:`NOT_OPEN`."""
    outcome: list[Any] = [NOT_OPEN]
    failure: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def run() -> None:
            try:
                outcome[0] = await function(*args)
            except Exception as exc:  # raised below as it is, not in an exception group
                failure.append(exc)
            group.cancel_scope.cancel()

        async def watch() -> None:
            await event.wait()
            group.cancel_scope.cancel()

        group.start_soon(run)
        group.start_soon(watch)
    if failure:
        raise failure[0]
    return outcome[0]
