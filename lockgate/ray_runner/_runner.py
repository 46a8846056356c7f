"""The Ray runner: each subtask of a job in a Ray actor, the checkpoint coordinator in the driver.

The driver (the caller's event loop, asyncio or trio) creates one actor per subtask for each attempt
(:class:`~lockgate.ray_runner._host.SubtaskHost`), builds them, runs them, and serves them: it keeps
one long-poll call waiting on each for what it has to tell (acknowledgements, declines, the end of
its input, calls to objects that live in the driver such as a ``CollectSink``). The first subtask
that fails, or whose actor dies, fails the attempt: every actor of it is killed, and the job's
execution restarts from the latest complete checkpoint as its restart strategy allows, with new
actors.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import pickle
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import anyio
import cloudpickle

from lockgate._driver import PROCESS_ID, resident, resident_token
from lockgate._errors import ConfigurationError, LockgateError
from lockgate.actors import JobResult, RuntimeOptions
from lockgate.actors._actor import SubtaskActor
from lockgate.actors._runner import background_failure, detach_coordinator, subtask_failure
from lockgate.checkpointing import CheckpointCoordinator, SnapshotTarget, SubtaskAcknowledgement
from lockgate.graph import ForwardPartitioner, JobGraph, SourceTransformation
from lockgate.mailbox import JOB_FINISHED, ChannelStatistics, TriggerCheckpoint
from lockgate.ray_runner._bridge import await_ref
from lockgate.ray_runner._host import HostOutcome, HostPlan, SubtaskHost
from lockgate.ray_runner._storage import reachable_from_workers
from lockgate.savepoint import RestoredState
from lockgate.snapshots import CheckpointStorage

logger = logging.getLogger("lockgate")


class SubtaskLostError(LockgateError):
    """The Ray actor of a subtask died (its process was killed, its node was lost): the subtask failed."""


class RayRunner:
    """Runs a job's subtasks in Ray actors: in other processes, and on other machines of a Ray cluster.

    The job is the same: its operators chain as they do locally (one actor per chain's subtask), and
    checkpoints, savepoints, restarts and exactly-once sinks behave as with the local runner. Records
    cross between actors in frames of ``frame_records`` records, pickled.

    Args:
        address: The Ray cluster to join (``"auto"``, ``"ray://host:10001"``); None starts a Ray on this
            machine, listening on 127.0.0.1 only, so one machine's cores are used. If this process has
            initialised Ray already, that Ray is used as it is.
        num_cpus: CPUs each subtask's actor reserves (None: Ray's default for actors, which lets more
            actors than cores run).
        frame_records: A frame of a channel is sent once it holds this many records (a call between
            actors costs about half a millisecond, whatever its size).
        linger: Seconds a frame waits for more records before it is sent anyway.
        init_options: More keyword arguments for ``ray.init`` when this runner starts Ray.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float | None = None,
        frame_records: int = 4096,
        linger: float = 0.005,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise ConfigurationError(f"address is a Ray address such as 'auto', or None, got {address!r}")
        if num_cpus is not None and (not isinstance(num_cpus, (int, float)) or num_cpus < 0):
            raise ConfigurationError(f"num_cpus is a non-negative number or None, got {num_cpus!r}")
        if not isinstance(frame_records, int) or isinstance(frame_records, bool) or frame_records < 1:
            raise ConfigurationError(f"frame_records is a positive int, got {frame_records!r}")
        if not isinstance(linger, (int, float)) or not 0 < linger <= 10:
            raise ConfigurationError(f"linger is a number of seconds in (0, 10], got {linger!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.frame_records = frame_records
        self.linger = float(linger)
        self.init_options = dict(init_options or {})

    def __repr__(self) -> str:
        return f"RayRunner(address={self.address!r})"

    def attempt(
        self,
        job_name: str,
        graph: JobGraph,
        options: RuntimeOptions,
        *,
        restored: RestoredState | None,
        attempt: int,
        coordinator: CheckpointCoordinator,
    ) -> RayAttempt:
        return RayAttempt(self, job_name, graph, options, restored, attempt, coordinator)

    def _ask_for_loopback(self) -> None:
        """Without an address, have the Ray this runner starts listen on loopback only, not on the
        machine's network address (Ray reads this when it is first imported; a cluster needs the
        latter, so an address leaves it alone)."""
        if self.address is None and "ray" not in sys.modules:
            os.environ.setdefault(LOOPBACK_ONLY, "0")

    async def start_ray(self) -> None:
        """Connect to Ray (start it here, on 127.0.0.1, without an address) unless this process has
        already."""
        self._ask_for_loopback()
        ray = _ray()
        if ray.is_initialized():
            return
        if self.address is None and os.environ.get(LOOPBACK_ONLY) != "0":
            logger.warning(
                "starting a local Ray that listens on this machine's network address: Ray was imported "
                "before RayRunner could ask it for 127.0.0.1 only (set %s=0 before importing ray)",
                LOOPBACK_ONLY,
            )
        options = {"address": self.address, "include_dashboard": False, **self.init_options}
        await anyio.to_thread.run_sync(lambda: ray.init(**options))


_host_actor: Any = None

#: The variable that makes a Ray started here listen on 127.0.0.1 alone ("0").
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

#: Seconds the hosts of an attempt that ends have to end their subtasks before they are killed.
STOP_TIMEOUT = 10.0
#: The most idle hosts kept for later attempts and jobs, per kind of actor.
MAX_IDLE_HOSTS = 32


class _HostPool:
    """The hosts (Ray actors) of this driver that no attempt uses now, by the options they were made
    with: a new one takes a Ray worker process, which takes seconds to start and import lockgate, so
    restarts and later jobs reuse them."""

    def __init__(self) -> None:
        self._idle: dict[tuple[tuple[str, Any], ...], list[Any]] = {}
        self._ray_job: Any = None

    def take(self, options: dict[str, Any], count: int) -> list[Any]:
        """``count`` hosts made with ``options``: idle ones first, new ones for the rest."""
        ray = _ray()
        ray_job = ray.get_runtime_context().get_job_id()
        if ray_job != self._ray_job:  # Ray was shut down and started again: the old hosts are gone
            self._idle.clear()
            self._ray_job = ray_job
        idle = self._idle.setdefault(tuple(sorted(options.items())), [])
        taken = [idle.pop() for _ in range(min(count, len(idle)))]
        host_class = _host_class()
        return taken + [host_class.options(**options).remote() for _ in range(count - len(taken))]

    def give_back(self, options: dict[str, Any], hosts: list[Any]) -> None:
        idle = self._idle.setdefault(tuple(sorted(options.items())), [])
        idle.extend(hosts)
        while len(idle) > MAX_IDLE_HOSTS:
            _ray().kill(idle.pop(0), no_restart=True)


_POOL = _HostPool()


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ConfigurationError("RayRunner needs Ray: pip install 'lockgate[ray]'") from exc
    return ray


def _host_class() -> Any:
    """:class:`SubtaskHost` as a Ray actor class (made once)."""
    global _host_actor
    if _host_actor is None:
        _host_actor = _ray().remote(SubtaskHost)
    return _host_actor


class _RemoteSubtask:
    """A subtask in a Ray actor as the checkpoint coordinator sees it: letters go to its host, numbered
    (Ray may deliver calls in any order)."""

    def __init__(self, key: tuple[str, int], is_source: bool, host: Any, attempt: RayAttempt) -> None:
        self.key = key
        self.is_source = is_source
        self._host = host
        self._attempt = attempt
        self._numbers = itertools.count()

    def post(self, letter: Any) -> None:
        target = None
        if isinstance(letter, TriggerCheckpoint):
            target = self._attempt.target_for_workers(letter.checkpoint_id)
        self._host.letter.remote(self._attempt.token, next(self._numbers), letter, target)


class RayAttempt:
    """One attempt of a job on Ray: its actors, built and run, and the driver's end of their talk."""

    def __init__(
        self,
        runner: RayRunner,
        job_name: str,
        graph: JobGraph,
        options: RuntimeOptions,
        restored: RestoredState | None,
        attempt: int,
        coordinator: CheckpointCoordinator,
    ) -> None:
        self.runner = runner
        self.job_name = job_name
        self.graph = graph
        self.attempt = attempt
        self.coordinator = coordinator
        # As many records in flight on a channel as in-process (capacity batches), in frames: at least two,
        # so one can travel while the other is taken.
        in_flight = options.channel_capacity * options.batch_size
        self.channel_frames = max(2, -(-in_flight // runner.frame_records))
        self._failure: LockgateError | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished = 0
        self._participants: list[_RemoteSubtask] = []
        self._hosts: dict[tuple[str, int], Any] = {}
        self._counters: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
        self._channels: dict[str, ChannelStatistics] = {}
        self._started_at = time.perf_counter()
        self._storages: dict[int, tuple[CheckpointStorage, CheckpointStorage]] = {}
        #: The attempt's token: the hosts' calls name it, and the driver's objects know it by it.
        self.token = self._token = resident_token(self)
        self._broken: set[Any] = set()  # hosts not to use again: dead, or left half-built
        here = [
            node.uid
            for vertex in graph.vertices
            for node in vertex.operators
            if isinstance(node, SourceTransformation) and node.source.reads_in_this_process
        ]
        if here:
            raise ConfigurationError(
                f"job {job_name!r} cannot run on {runner!r}: source(s) {here} read what this process hands "
                "them (a QueueSource is fed by put(), an async iterable lives here), which a Ray worker "
                "cannot reach; use from_collection, a FileSource, or a Source whose reader gets its "
                "records where the workers run"
            )
        workers = replace(
            options, runner=None, checkpoint_storage=self._for_workers(options.checkpoint_storage)
        )
        try:  # here, so a function that cannot reach the workers fails the call that starts the job
            self._shared = cloudpickle.dumps((graph, workers, restored), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ConfigurationError(
                f"job {job_name!r} cannot run on {runner!r}: it cannot be pickled for the Ray workers "
                f"({type(exc).__name__}: {exc}); its functions, sources and sinks must be picklable by "
                "cloudpickle"
            ) from exc

    def __repr__(self) -> str:
        return f"<RayAttempt {self.job_name!r} [attempt {self.attempt}]>"

    @property
    def actors(self) -> list[SubtaskActor]:
        """None run in this process."""
        return []

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def channel_statistics(self) -> dict[str, ChannelStatistics]:
        """Every channel's statistics as their consumers last reported them (every
        :data:`METRICS_INTERVAL` seconds, and at their end), by name."""
        return dict(self._channels)

    @property
    def started_at(self) -> float:
        return self._started_at

    def metric_counters(self, now: float) -> dict[str, dict[str, Any]]:
        """As the subtasks last reported them (each does every :data:`METRICS_INTERVAL` seconds)."""
        counters: dict[str, dict[str, Any]] = {}
        for reported in self._counters.values():
            counters.update(reported)
        return counters

    def metrics(
        self,
        key: tuple[str, int],
        counters: dict[str, dict[str, Any]],
        channels: dict[str, ChannelStatistics],
    ) -> None:
        """Subtask ``key``'s counters and its input channels' statistics now (it sends them every
        :data:`METRICS_INTERVAL` seconds)."""
        self._counters[key] = counters
        self._channels.update(channels)

    def fail(self, failure: LockgateError) -> None:
        """End the attempt with ``failure`` (the first failure wins)."""
        if self._failure is None:
            self._failure = failure
        if self._scope is not None:
            self._scope.cancel()

    def target_for_workers(self, checkpoint_id: int) -> SnapshotTarget | None:
        """Where checkpoint ``checkpoint_id`` goes, as the workers must reach it."""
        target = self.coordinator.target(checkpoint_id)
        if target is None:
            return None
        return replace(target, storage=self._for_workers(target.storage))

    def _for_workers(self, storage: CheckpointStorage) -> CheckpointStorage:
        found = self._storages.get(id(storage))
        if found is None:  # kept with the storage: its id is not reused while the attempt lasts
            found = self._storages[id(storage)] = (storage, reachable_from_workers(storage))
        return found[1]

    async def run(self) -> JobResult:
        """Build and run a host per subtask; serve them until all have ended or one failed."""
        started = time.perf_counter()
        await self.runner.start_ray()
        actor_options: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0}
        if self.runner.num_cpus is not None:
            actor_options["num_cpus"] = self.runner.num_cpus
        subtasks = [
            (position, vertex, index)
            for position, vertex in enumerate(self.graph.vertices)
            for index in range(vertex.parallelism)
        ]
        taken = _POOL.take(actor_options, len(subtasks))
        hosts = {(position, index): host for (position, _, index), host in zip(subtasks, taken, strict=True)}
        self._hosts = {
            (vertex.operators[0].uid, index): hosts[position, index] for position, vertex, index in subtasks
        }
        try:
            async with anyio.create_task_group() as background:
                self._scope = background.cancel_scope
                await self._build(hosts)
                if self._failure is None:
                    for position, vertex, index in subtasks:
                        is_source = isinstance(vertex.operators[0], SourceTransformation)
                        key = (vertex.operators[0].uid, index)
                        self._participants.append(
                            _RemoteSubtask(key, is_source, hosts[position, index], self)
                        )
                    try:
                        await self.coordinator.attach(self._participants, background, self.fail)
                    except LockgateError as exc:
                        self.fail(exc)
                    async with anyio.create_task_group() as serving:
                        for position, vertex, index in subtasks:
                            host = hosts[position, index]
                            serving.start_soon(
                                self._serve,
                                vertex.operators[0].uid,
                                index,
                                vertex.parallelism,
                                host,
                                background,
                            )
                background.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(actor_options, list(hosts.values()))
            await detach_coordinator(self.coordinator, failed=self._failure is not None)
        if self._failure is not None:
            raise self._failure
        return JobResult(self.job_name, time.perf_counter() - started, self.channel_statistics())

    async def _release(self, actor_options: dict[str, Any], hosts: list[Any]) -> None:
        """End every host's subtask and give the hosts back to the pool; kill those that are broken or
        do not end their subtask within :data:`STOP_TIMEOUT` seconds (a function that blocks, say)."""
        ray = _ray()
        live = [host for host in hosts if host not in self._broken]
        stopped: list[Any] = []
        with anyio.move_on_after(STOP_TIMEOUT):
            for host, call in [(host, host.stop.remote(self.token)) for host in live]:
                try:
                    await await_ref(call)
                except ray.exceptions.RayError:
                    continue  # it died meanwhile
                stopped.append(host)
        for host in hosts:
            if host not in stopped:
                ray.kill(host, no_restart=True)
        _POOL.give_back(actor_options, stopped)

    def _plans(self, hosts: dict[tuple[int, int], Any]) -> dict[tuple[int, int], HostPlan]:
        vertices = self.graph.vertices
        position_of = {id(vertex): position for position, vertex in enumerate(vertices)}
        inputs: dict[tuple[int, int], list[tuple[str, int, Any]]] = {key: [] for key in hosts}
        outputs: dict[tuple[int, int], list[list[tuple[str, Any]]]] = {key: [] for key in hosts}
        for position, vertex in enumerate(vertices):
            for edge in vertex.outputs:
                target = position_of[id(edge.target)]
                for i in range(vertex.parallelism):
                    forward = isinstance(edge.partitioner, ForwardPartitioner)
                    targets = [i] if forward else range(edge.target.parallelism)
                    channels = []
                    for j in targets:
                        name = f"{vertex.operators[-1].uid}[{i}]->{edge.target.operators[0].uid}[{j}]"
                        channels.append((name, hosts[target, j]))
                        inputs[target, j].append((name, edge.input_index, hosts[position, i]))
                    outputs[position, i].append(channels)
        return {
            key: HostPlan(
                key[0],
                key[1],
                inputs[key],
                outputs[key],
                PROCESS_ID,
                self._token,
                self.channel_frames,
                self.runner.frame_records,
                self.runner.linger,
            )
            for key in hosts
        }

    async def _build(self, hosts: dict[tuple[int, int], Any]) -> None:
        ray = _ray()
        plans = self._plans(hosts)
        shared = ray.put(self._shared)
        calls = {
            key: host.build.remote(self.token, shared, self.attempt, plans[key])
            for key, host in hosts.items()
        }
        failed: tuple[str, int, int, Exception] | None = None
        for (position, index), call in calls.items():  # every one, so that no error goes unseen
            vertex = self.graph.vertices[position]
            try:
                await await_ref(call)
            except Exception as exc:
                self._broken.add(hosts[position, index])
                failed = failed or (vertex.operators[0].uid, index, vertex.parallelism, exc)
        if failed is not None:
            self._fail_with(*failed)

    async def _serve(self, uid: str, index: int, parallelism: int, host: Any, background: Any) -> None:
        ray = _ray()
        run = host.run.remote(self.token)
        try:
            ended = False
            while not ended:
                events, ended = await await_ref(host.events.remote(self.token))
                for event in events:
                    await self._handle(host, event, background)
            outcome: HostOutcome = await await_ref(run)
        except ray.exceptions.RayError as exc:
            self._broken.add(host)
            self._fail_with(uid, index, parallelism, exc)
            return
        self._channels.update(outcome.channels)
        if outcome.failure is not None:
            failed_uid, error = outcome.failure
            cause = pickle.loads(error)
            if outcome.background:
                self.fail(background_failure(cause))
            else:
                self.fail(subtask_failure(self.job_name, failed_uid, index, parallelism, cause))

    def _fail_with(self, uid: str, index: int, parallelism: int, error: Exception) -> None:
        ray = _ray()
        if isinstance(error, ray.exceptions.RayActorError):
            cause: BaseException = SubtaskLostError(
                f"the Ray actor of subtask {index} of {uid!r} died: {type(error).__name__}: {error}"
            )
        elif isinstance(error, ray.exceptions.RayTaskError):
            cause = getattr(error, "cause", None) or error
        else:
            cause = error
        self.fail(subtask_failure(self.job_name, uid, index, parallelism, cause))

    async def _handle(self, host: Any, event: tuple[Any, ...], background: Any) -> None:
        if event[0] == "send":  # in order: the next event waits until this one is done
            _, token, method, args = event
            await _invoke(token, method, args)
            return
        _, request, token, method, args = event
        background.start_soon(self._answer, host, request, token, method, args)

    async def _answer(self, host: Any, request: int, token: str, method: str, args: tuple[Any, ...]) -> None:
        try:
            value, ok = await _invoke(token, method, args), True
        except Exception as exc:
            value, ok = exc, False
        host.reply.remote(self.token, request, ok, value)

    # ---- what the hosts call (through the long poll)

    async def acknowledge(
        self, checkpoint_id: int, key: tuple[str, int], ack: SubtaskAcknowledgement
    ) -> bool:
        return await self.coordinator.acknowledge(checkpoint_id, key, ack)

    async def decline(
        self, checkpoint_id: int, key: tuple[str, int], reason: str, counts: bool, cause: BaseException | None
    ) -> None:
        await self.coordinator.decline(checkpoint_id, key, reason, counts=counts, cause=cause)

    def source_finished(self, key: tuple[str, int]) -> None:
        self.coordinator.source_finished(key)

    def actor_finished(self, key: tuple[str, int]) -> None:
        """A subtask has finished its input; once all have, as the local runner does (see
        ``JobRunner.actor_finished``)."""
        self._finished += 1
        if self._finished < len(self._participants):
            return
        if self.coordinator.ends_with_checkpoint:
            self.coordinator.subtasks_finished()
            return
        for participant in self._participants:
            participant.post(JOB_FINISHED)

    async def request_checkpoint(self) -> None:
        await self.coordinator.request_checkpoint().wait()

    def kill(self, key: tuple[str, int]) -> None:
        """Kill the actor of subtask ``key`` (fault injection: ``Crash(kill=True)``)."""
        host = self._hosts[key]
        self._broken.add(host)
        _ray().kill(host, no_restart=True)


async def _invoke(token: str, method: str, args: tuple[Any, ...]) -> Any:
    result = getattr(resident(token), method)(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
