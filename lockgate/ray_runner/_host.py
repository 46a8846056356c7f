"""A subtask in a Ray actor: the actor builds one subtask (a chain of operators) of one attempt of a job,
runs it on the actor's event loop, and speaks with its peers and the driver by calls.

The driver calls :meth:`SubtaskHost.build` on every host, then :meth:`SubtaskHost.run` (a long call
that returns when the subtask has ended) and keeps one :meth:`SubtaskHost.events` call waiting (a long
poll: a driver is not an actor, so a host cannot call it; what the host has to tell, the poll
returns). Peers call :meth:`SubtaskHost.push` (a frame of a channel) and :meth:`SubtaskHost.grant`
(room on a channel); the coordinator's letters come numbered through :meth:`SubtaskHost.letter`. Ray
may run these calls in any order: frames and letters carry numbers and are put back in order here.
"""

from __future__ import annotations

import contextlib
import itertools
import pickle
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import cloudpickle

from lockgate._config import CheckpointingMode
from lockgate._driver import install_driver_link
from lockgate._errors import LockgateError
from lockgate.actors import RuntimeOptions
from lockgate.actors._actor import SubtaskActor
from lockgate.actors._failure import OperatorFailure
from lockgate.actors._output import EdgeOutput, OutputRouter
from lockgate.actors._runner import build_subtask, edge_output
from lockgate.checkpointing import SnapshotTarget, SubtaskAcknowledgement
from lockgate.functions import OutputTag
from lockgate.graph import JobGraph
from lockgate.mailbox import Channel, ChannelStatistics
from lockgate.observe import log_scope
from lockgate.ray_runner._channels import (
    RemoteInputChannel,
    RemoteOutputChannel,
    barrier_ids,
    decode_frame,
    encode_frame,
)
from lockgate.savepoint import RestoredState

#: Seconds between two reports of a subtask's metric counters to the driver.
METRICS_INTERVAL = 1.0


@dataclass(frozen=True)
class HostPlan:
    """What one host builds: which subtask, its channels, and how frames travel.

    Attributes:
        vertex: The index of the subtask's vertex in the job graph's vertices.
        index: The subtask's index.
        inputs: The channels it reads, in its mailbox's order: (name, operator input, the host of
            the channel's producer).
        outputs: Per outgoing edge (in the vertex's order), the channels' names and the hosts of
            their consumers.
        driver_process: The driver's process id (see :mod:`lockgate._driver`).
        driver_token: The token of the driver's end of this attempt.
        capacity: Frames each channel holds.
        frame_records: Records a frame gathers before it is sent.
        linger: Seconds a frame waits for more records before it is sent anyway.
    """

    vertex: int
    index: int
    inputs: list[tuple[str, int, Any]]
    outputs: list[list[tuple[str, Any]]]
    driver_process: str
    driver_token: str
    capacity: int
    frame_records: int
    linger: float


@dataclass(frozen=True)
class HostOutcome:
    """How a host's subtask ended: ``failure`` None if it finished (or was ``stopped``); else the uid
    of the operator that failed and its error pickled (or, if that cannot be pickled, a description
    of it)."""

    failure: tuple[str, bytes] | None = None
    stopped: bool = False
    background: bool = False  # the failure came from a task beside the subtask (a checkpoint's writing)
    channels: dict[str, ChannelStatistics] = field(default_factory=dict)  # its inputs', at the end


class _Coordinator:
    """The coordinator as the host's subtask sees it: targets the driver sent, acknowledgements and
    declines sent to the driver."""

    def __init__(self, host: HostedSubtask) -> None:
        self._host = host
        self.targets: dict[int, SnapshotTarget | None] = {}

    def target(self, checkpoint_id: int) -> SnapshotTarget | None:
        return self.targets.get(checkpoint_id)

    async def acknowledge(
        self, checkpoint_id: int, key: tuple[str, int], ack: SubtaskAcknowledgement
    ) -> bool:
        counted: bool = await self._host.call_driver("acknowledge", checkpoint_id, key, ack)
        return counted

    async def decline(
        self,
        checkpoint_id: int,
        key: tuple[str, int],
        reason: str,
        *,
        counts: bool = True,
        cause: BaseException | None = None,
    ) -> None:
        self._host.tell_driver("decline", checkpoint_id, key, reason, counts, _portable(cause))

    def source_finished(self, key: tuple[str, int]) -> None:
        self._host.tell_driver("source_finished", key)


class SubtaskHost:
    """A Ray actor (an async one: every method runs on the actor's event loop) that hosts one subtask
    at a time: the subtask of one attempt, built by :meth:`build` and run by :meth:`run`.

    A host outlives its attempts: the runner reuses it for later attempts and jobs (a new Ray worker
    process takes seconds to start and import). Every call names the attempt it belongs to (the
    attempt's token): calls of an attempt that has ended, still on their way, are dropped.
    """

    def __init__(self) -> None:
        self._current: HostedSubtask | None = None

    def _of(self, attempt: str) -> HostedSubtask | None:
        current = self._current
        return current if current is not None and current.token == attempt else None

    async def build(self, attempt: str, shared: bytes, number: int, plan: HostPlan) -> None:
        """Build the subtask ``plan`` names for attempt ``attempt`` (its ``number``-th of the job) from
        the attempt's ``shared`` part, in place of whatever this host held before."""
        current = self._current
        if current is not None:
            await current.stop()
        self._current = HostedSubtask(attempt)
        await self._current.build(shared, number, plan)

    async def run(self, attempt: str) -> HostOutcome:
        """Run the subtask to its end (or until :meth:`stop`); how it ended."""
        current = self._of(attempt)
        if current is None:
            return HostOutcome(stopped=True)
        return await current.run()

    async def stop(self, attempt: str) -> None:
        """End the subtask now, if it still runs, and let it go: the attempt is over."""
        current = self._of(attempt)
        if current is not None:
            await current.stop()
            self._current = None  # what it held (the graph, restored state) goes with it

    async def events(self, attempt: str) -> tuple[list[tuple[Any, ...]], bool]:
        """What the subtask has to tell the driver (see :meth:`HostedSubtask.events`)."""
        current = self._of(attempt)
        if current is None:
            return [], True
        return await current.events()

    async def letter(self, attempt: str, number: int, letter: Any, target: SnapshotTarget | None) -> None:
        current = self._of(attempt)
        if current is not None:
            current.letter(number, letter, target)

    async def reply(self, attempt: str, request: int, ok: bool, value: Any) -> None:
        current = self._of(attempt)
        if current is not None:
            current.reply(request, ok, value)

    async def push(self, attempt: str, channel: str, number: int, data: bytes, priority: bool) -> None:
        current = self._of(attempt)
        if current is not None:
            current.push(channel, number, data, priority)

    async def grant(self, attempt: str, channel: str, up_to: int) -> None:
        current = self._of(attempt)
        if current is not None:
            current.grant(channel, up_to)


class HostedSubtask:
    """One subtask of one attempt, in a host: its actor, its channels, and its talk with the driver."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.actor: SubtaskActor | None = None
        self._events: list[tuple[Any, ...]] = []
        self._event_ready: anyio.Event | None = None
        self._ended = False
        self._requests = itertools.count()
        self._waiting: dict[int, tuple[anyio.Event, list[Any]]] = {}
        self._letters: dict[int, tuple[Any, SnapshotTarget | None]] = {}
        self._next_letter = 0
        self._inputs: dict[str, RemoteInputChannel] = {}
        self._outputs: dict[str, RemoteOutputChannel] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._failure: BaseException | None = None
        self._stopping = False
        self._background_failed = False
        self._coordinator = _Coordinator(self)

    # ---- what the subtask's runtime is (see lockgate.actors._runner.SubtaskRuntime)

    graph: JobGraph
    options: RuntimeOptions
    restored: RestoredState | None
    attempt: int
    mode: CheckpointingMode | None
    asynchronous: bool
    unaligned: bool
    aligned_timeout: float | None

    @property
    def coordinator(self) -> _Coordinator:
        return self._coordinator

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._group is not None
        self._group.start_soon(self._guard, function, args)

    async def _guard(self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await function(*args)
        except Exception as exc:
            self._background_failed = True  # the driver fails the attempt with it as the local runner does
            self._fail(exc)

    def actor_finished(self, actor: SubtaskActor) -> None:
        self.tell_driver("actor_finished", actor.key)

    # ---- the driver's calls

    async def build(self, shared: bytes, attempt: int, plan: HostPlan) -> None:
        """Build the subtask ``plan`` names from the attempt's ``shared`` part (the job graph, the
        runtime options and the restored state, pickled once for every host)."""
        self._stopped = anyio.Event()
        self._plan = plan
        install_driver_link(_Link(self, plan))
        graph, options, restored = pickle.loads(shared)
        self.graph, self.options, self.restored, self.attempt = graph, options, restored, attempt
        self.mode = options.mode
        self.asynchronous = options.asynchronous
        self.unaligned = options.checkpointing.unaligned and self.mode is CheckpointingMode.EXACTLY_ONCE
        self.aligned_timeout = options.checkpointing.aligned_timeout
        vertex = graph.vertices[plan.vertex]
        channels: list[tuple[Channel, int]] = []
        for name, input_index, producer in plan.inputs:
            channel = RemoteInputChannel(plan.capacity, name, _granter(self.token, name, producer))
            self._inputs[name] = channel
            channels.append((channel, input_index))
        main: list[EdgeOutput] = []
        side: dict[tuple[str, OutputTag], list[EdgeOutput]] = {}
        for edge, targets in zip(vertex.outputs, plan.outputs, strict=True):
            outs = []
            for name, peer in targets:
                out = RemoteOutputChannel(name, plan.capacity, plan.frame_records, self._pusher(name, peer))
                self._outputs[name] = out
                outs.append(out)
            output = edge_output(graph, options, edge, outs, plan.index)  # type: ignore[arg-type]
            if edge.side_output is None:
                main.append(output)
            else:
                side.setdefault(edge.side_output, []).append(output)
        self.actor = build_subtask(
            self, vertex, plan.index, OutputRouter(main, side), channels, self._request_checkpoint
        )

    async def run(self) -> HostOutcome:
        """Run the subtask to its end, or until :meth:`stop`; how it ended."""
        actor = self.actor
        assert actor is not None
        failure: BaseException | None = None
        try:
            with log_scope(operator_uid=actor.head_uid, subtask=actor.subtask_index):
                async with anyio.create_task_group() as group:
                    self._group = group
                    if self._stopping:
                        group.cancel_scope.cancel()
                    group.start_soon(self._send_lingering_frames)
                    group.start_soon(self._report_metrics, actor)
                    try:
                        await actor.run()
                    except Exception as exc:
                        failure = exc
                    group.cancel_scope.cancel()
        finally:
            self._ended = True
            self._wake_poll()
            self._stopped.set()
        if self._stopping:
            return HostOutcome(stopped=True)
        failure = failure or self._failure
        if failure is None:
            return HostOutcome(channels=self.channel_statistics())
        if isinstance(failure, OperatorFailure) and failure.__cause__ is not None:
            uid, cause = failure.operator_uid, failure.__cause__
        else:
            uid, cause = actor.head_uid, failure
        background = self._background_failed and failure is self._failure
        return HostOutcome((uid, _pickled_error(cause)), background=background)

    async def stop(self) -> None:
        """End the subtask now if it runs (its operators close), and wait until it has."""
        self._stopping = True
        # The driver answers this attempt no more: a call waiting for it (a shielded one too) fails.
        waiting, self._waiting = self._waiting, {}
        for done, slot in waiting.values():
            slot.append((False, LockgateError("the attempt ended before the driver answered")))
            done.set()
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._stopped.wait()
        elif self.actor is not None:  # built, never run: its state goes all the same
            for backend in self.actor.keyed_backends:
                with contextlib.suppress(Exception):  # nothing may stop the host from serving again
                    await backend.dispose()

    async def events(self) -> tuple[list[tuple[Any, ...]], bool]:
        """What the host has to tell the driver, once there is something (or the subtask has ended),
        and whether the subtask has ended (nothing more will come)."""
        while not self._events and not self._ended:
            self._event_ready = anyio.Event()
            await self._event_ready.wait()
        events, self._events = self._events, []
        return events, self._ended and not self._events

    def letter(self, number: int, letter: Any, target: SnapshotTarget | None) -> None:
        """The coordinator's letter number ``number`` (with, for a trigger, where the checkpoint goes)."""
        self._letters[number] = (letter, target)
        actor = self.actor
        assert actor is not None
        while self._next_letter in self._letters:
            letter, target = self._letters.pop(self._next_letter)
            self._next_letter += 1
            if target is not None:
                self._coordinator.targets[target.location.checkpoint_id] = target
            actor.post(letter)

    def reply(self, request: int, ok: bool, value: Any) -> None:
        """The driver's answer to request ``request``: its value, or (not ``ok``) the error it raised."""
        waiting = self._waiting.pop(request, None)
        if waiting is not None:
            done, slot = waiting
            slot.append((ok, value))
            done.set()

    # ---- the peers' calls

    def push(self, channel: str, number: int, data: bytes, priority: bool) -> None:
        """Frame ``number`` of input channel ``channel``."""
        into = self._inputs[channel]
        try:
            for ready in into.receiver.accept(number, data, beyond_room=priority):
                messages, targets = decode_frame(ready, channel)
                if targets:
                    for checkpoint_id, target in targets.items():
                        self._coordinator.targets.setdefault(checkpoint_id, target)
                into.deliver(messages)
        except Exception as exc:
            self._fail(exc)

    def grant(self, channel: str, up_to: int) -> None:
        """Room on output channel ``channel`` up to, not including, frame ``up_to``."""
        self._outputs[channel].grant(up_to)

    # ---- to the driver

    def tell_driver(self, method: str, *args: Any) -> None:
        """Have the driver's end of the attempt call ``method(*args)``, in order, without waiting."""
        self.send(self._plan.driver_token, method, *args)

    async def call_driver(self, method: str, *args: Any) -> Any:
        """Have the driver's end of the attempt call ``method(*args)``; its result."""
        return await self.call(self._plan.driver_token, method, *args)

    def send(self, token: str, method: str, *args: Any) -> None:
        self._events.append(("send", token, method, args))
        self._wake_poll()

    async def call(self, token: str, method: str, *args: Any) -> Any:
        if self._stopping:
            raise LockgateError("the attempt has ended: the driver answers it no more")
        request = next(self._requests)
        done, slot = anyio.Event(), list[tuple[bool, Any]]()
        self._waiting[request] = (done, slot)
        self._events.append(("call", request, token, method, args))
        self._wake_poll()
        await done.wait()
        ok, value = slot[0]
        if not ok:
            raise value
        return value

    def _wake_poll(self) -> None:
        ready = self._event_ready
        if ready is not None:
            self._event_ready = None
            ready.set()

    # ---- inside

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        if self._group is not None:
            self._group.cancel_scope.cancel()

    def _pusher(self, name: str, peer: Any) -> Callable[[int, list[Any], bool], int]:
        coordinator = self._coordinator

        def push(number: int, messages: list[Any], priority: bool) -> int:
            targets = {cid: coordinator.targets.get(cid) for cid in barrier_ids(messages)}
            data = encode_frame((messages, targets), name)
            peer.push.remote(self.token, name, number, data, priority)
            return len(data)

        return push

    async def _send_lingering_frames(self) -> None:
        linger = self._plan.linger
        outputs = list(self._outputs.values())
        if not outputs:
            return
        while True:
            await anyio.sleep(linger)
            since = time.monotonic() - linger
            for output in outputs:
                output.flush_if_waited(since)

    async def _report_metrics(self, actor: SubtaskActor) -> None:
        while True:
            await anyio.sleep(METRICS_INTERVAL)
            # Its clock is this process's; the driver takes rates over its own.
            counters = actor.metric_counters(time.perf_counter())
            self.tell_driver("metrics", actor.key, counters, self.channel_statistics())

    def channel_statistics(self) -> dict[str, ChannelStatistics]:
        """The statistics of the subtask's input channels (what came through them), by name."""
        return {name: channel.statistics() for name, channel in self._inputs.items()}

    def _request_checkpoint(self) -> anyio.Event:
        finished = anyio.Event()

        async def ask() -> None:
            await self.call_driver("request_checkpoint")
            finished.set()

        self.spawn(ask)
        return finished


class _Link:
    """The driver link of a process that hosts a subtask (see :mod:`lockgate._driver`)."""

    def __init__(self, host: HostedSubtask, plan: HostPlan) -> None:
        self._host = host
        self.driver_process = plan.driver_process

    def send(self, token: str, method: str, *args: Any) -> None:
        self._host.send(token, method, *args)

    async def call(self, token: str, method: str, *args: Any) -> Any:
        return await self._host.call(token, method, *args)

    async def kill_self(self) -> None:
        actor = self._host.actor
        assert actor is not None
        await self._host.call_driver("kill", actor.key)
        await anyio.sleep_forever()  # the driver has killed this actor: nothing is left to run


def _granter(attempt: str, name: str, producer: Any) -> Callable[[int], None]:
    def grant(up_to: int) -> None:
        producer.grant.remote(attempt, name, up_to)

    return grant


def _pickled_error(error: BaseException) -> bytes:
    """``error`` pickled for the driver, its traceback as a note; if it cannot be pickled, a
    :class:`LockgateError` that describes it."""
    if error.__traceback__ is not None:  # a pickled error loses its traceback: keep it as text
        where = "".join(traceback.format_tb(error.__traceback__))
        error.add_note(f"raised in a Ray worker, at:\n{where.rstrip()}")
    try:
        return bytes(cloudpickle.dumps(error))
    except Exception:
        described = LockgateError(f"{type(error).__name__}: {error} (the error itself could not be pickled)")
        return bytes(cloudpickle.dumps(described))


def _portable(error: BaseException | None) -> BaseException | None:
    """``error`` if it can be pickled, else a :class:`LockgateError` that describes it."""
    if error is None:
        return None
    return pickle.loads(_pickled_error(error))  # type: ignore[no-any-return]
