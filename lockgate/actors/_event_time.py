"""Event time in a subtask: the watermark of its inputs, its wake-ups, its timers, and the operator
that gives records timestamps and makes watermarks.

A subtask's watermark is the minimum of its input channels' (idle channels left out, an ended one
counting as :data:`MAX_WATERMARK`), and it never goes back. When it advances, the actor passes it
down its chain: each operator fires its due timers first, their outputs go through the rest of the
chain, then the next operator gets the watermark, and finally it goes out on every output channel.

Wall-clock needs (processing-time timers, periodic watermarks, idleness) are wake-ups: a subtask asks
for one at a time in ms, and a background task posts :data:`WAKE` to its mailbox then; the actor
handles it between two messages, like any letter, so operators never see concurrency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import repeat
from typing import Any, Final

import anyio

from lockgate.actors._context import SubtaskContext
from lockgate.actors._registry import operator_for
from lockgate.actors._stream_operator import StreamOperator
from lockgate.eventtime import MIN_WATERMARK, TimeDomain, WatermarkStrategy, to_millis
from lockgate.functions import TimerService
from lockgate.graph import TimestampsAndWatermarksSpec
from lockgate.mailbox import IDLE, StampedBatch, WatermarkStatus
from lockgate.state import (
    DEFAULT_NAMESPACE,
    KeyedStateBackend,
    ListStateDescriptor,
    OperatorListState,
    TimerQueue,
    timer_state_name,
)

_INTS: Final = {int}


def now_millis() -> int:
    """The wall clock in ms since the epoch: processing time."""
    return int(time.time() * 1000)


class InputWatermarks:
    """The combined watermark of a subtask's input channels (Flink's status watermark valve)."""

    __slots__ = ("_idle", "_marks", "any_idle", "emitted")

    def __init__(self, channels: int) -> None:
        self._marks = [MIN_WATERMARK] * channels
        self._idle = [False] * channels
        self.any_idle = False  # checked per batch: a batch from an idle channel makes it active
        self.emitted = MIN_WATERMARK

    @property
    def all_idle(self) -> bool:
        """Whether every input is idle (the subtask then declares itself idle downstream)."""
        return bool(self._idle) and all(self._idle)

    def on_watermark(self, index: int, timestamp: int) -> int | None:
        """Channel ``index`` reached ``timestamp``; the new combined watermark, or None if it did not
        advance."""
        if timestamp > self._marks[index]:
            self._marks[index] = timestamp
        if self._idle[index]:
            self.on_active(index)
        return self._advance()

    def on_idle(self, index: int) -> int | None:
        """Channel ``index`` went idle: the others may now advance the watermark without it."""
        self._idle[index] = True
        self.any_idle = True
        return self._advance()

    def on_active(self, index: int) -> None:
        """Channel ``index`` sends again (a batch or a watermark came from it)."""
        self._idle[index] = False
        self.any_idle = any(self._idle)

    def _advance(self) -> int | None:
        active = [mark for mark, idle in zip(self._marks, self._idle, strict=True) if not idle]
        # With every input idle, nothing holds event time back: it moves to the furthest any input
        # reached (as Flink's valve does), so the windows that input closed fire.
        combined = min(active) if active else max(self._marks)
        if combined <= self.emitted:
            return None
        self.emitted = combined
        return combined


#: Letter an actor's wake-up task posts when the time it asked for has come.
class _Wake:
    __slots__ = ()

    def __repr__(self) -> str:
        return "WAKE"


WAKE: Final = _Wake()


class Wakeups:
    """Posts :data:`WAKE` to a subtask at the earliest time it asked for (ms since the epoch).

    The task that sleeps starts at the first request, in the attempt's background, so a subtask that
    never asks costs nothing; :meth:`close` ends it with the subtask.
    """

    def __init__(self, post: Callable[[Any], None], spawn: Callable[..., None]) -> None:
        self._post = post
        self._spawn = spawn
        self._due: int | None = None
        self._changed: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._started = False
        self._closed = False

    def request(self, at: int) -> None:
        """Wake the subtask at ``at`` (or earlier, for an earlier request)."""
        if self._closed or (self._due is not None and self._due <= at):
            return
        self._due = at
        if not self._started:
            self._started = True
            self._spawn(self._run)
        elif self._changed is not None:
            self._changed.set()

    async def _run(self) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._closed:
                return
            while True:
                self._changed = changed = anyio.Event()
                due = self._due
                if due is None:
                    await changed.wait()
                    continue
                with anyio.move_on_after(max(0.0, (due - now_millis()) / 1000)):
                    await changed.wait()
                if not changed.is_set():
                    self._due = None
                    self._post(WAKE)

    def close(self) -> None:
        """The subtask has ended: post nothing more."""
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()


class InternalTimers(TimerService):
    """The timers of one keyed operator subtask, held by its keyed state backend: the user's view for
    the current key (the default namespace), and namespaced access for windows."""

    def __init__(self, backend: KeyedStateBackend, request_wakeup: Callable[[int], None]) -> None:
        self._backend = backend
        self.watermark = MIN_WATERMARK
        self._request_wakeup = request_wakeup
        # A queue is made (its state registered) when first used, or now if it was restored, so an
        # operator that never sets a timer has no timer state in its snapshots.
        self._event: TimerQueue | None = None
        self._processing: TimerQueue | None = None
        restored = backend.restored_state_names()
        if timer_state_name("event") in restored:
            self._event = backend.timer_queue("event")
        if timer_state_name("processing") in restored:
            self._processing = backend.timer_queue("processing")

    @property
    def event(self) -> TimerQueue:
        """The event-time timers."""
        if self._event is None:
            self._event = self._backend.timer_queue("event")
        return self._event

    @property
    def processing(self) -> TimerQueue:
        """The processing-time timers."""
        if self._processing is None:
            self._processing = self._backend.timer_queue("processing")
        return self._processing

    def next_event_time(self) -> int | None:
        """The earliest event-time timer, None if none (without making the queue)."""
        return None if self._event is None else self._event.peek()

    def next_processing_time(self) -> int | None:
        """The earliest processing-time timer, None if none (without making the queue)."""
        return None if self._processing is None else self._processing.peek()

    def schedule_processing(self) -> None:
        """Ask for a wake-up at the earliest processing-time timer (after a restore: at once if due)."""
        due = self.next_processing_time()
        if due is not None:
            self._request_wakeup(due)

    def current_watermark(self) -> int:
        return self.watermark

    def current_processing_time(self) -> int:
        return now_millis()

    def register_event_time_timer(self, timestamp: int, namespace: Any = DEFAULT_NAMESPACE) -> None:
        self.event.add(_timestamp(timestamp), self._backend.current_key, namespace)

    def register_processing_time_timer(self, timestamp: int, namespace: Any = DEFAULT_NAMESPACE) -> None:
        timestamp = _timestamp(timestamp)
        if self.processing.add(timestamp, self._backend.current_key, namespace):
            self._request_wakeup(timestamp)

    def delete_event_time_timer(self, timestamp: int, namespace: Any = DEFAULT_NAMESPACE) -> None:
        self.event.remove(_timestamp(timestamp), self._backend.current_key, namespace)

    def delete_processing_time_timer(self, timestamp: int, namespace: Any = DEFAULT_NAMESPACE) -> None:
        self.processing.remove(_timestamp(timestamp), self._backend.current_key, namespace)


class TimerOperator(StreamOperator):
    """An operator with timers (keyed process functions, windows): as the watermark and the clock
    pass them, :meth:`fire` handles the due ones of a queue and returns what they emitted.

    Attributes:
        timers: Its timers, from ``open`` (None on a backend that holds none).
    """

    timers: InternalTimers | None = None

    async def on_watermark(self, watermark: int) -> list[Any]:
        timers = self.timers
        if timers is None:
            return []
        timers.watermark = watermark
        due = timers.next_event_time()
        if due is None or due > watermark:
            return []
        return await self.fire(timers.event, watermark, TimeDomain.EVENT_TIME)

    async def on_processing_time(self, now: int) -> list[Any]:
        timers = self.timers
        if timers is None:
            return []
        due = timers.next_processing_time()
        fired = (
            []
            if due is None or due > now
            else await self.fire(timers.processing, now, TimeDomain.PROCESSING_TIME)
        )
        timers.schedule_processing()
        return fired

    async def fire(self, queue: TimerQueue, upto: int, domain: TimeDomain) -> list[Any]:
        """Fire the timers of ``queue`` due at ``upto`` (ms); their outputs."""
        raise NotImplementedError


def _timestamp(timestamp: Any) -> int:
    return to_millis(timestamp, "a timer's timestamp")


class TimestampsAndWatermarksOperator(StreamOperator):
    """Gives records their timestamps and makes watermarks from them, by a :class:`WatermarkStrategy`:
    at a source (its ``watermark_strategy``) or anywhere in a stream
    (``assign_timestamps_and_watermarks``). Watermarks from upstream stop here (but the end of input's
    :data:`MAX_WATERMARK`): this operator's own take their place.

    Its watermark is emitted at most every ``interval`` ms (``env.config.auto_watermark_interval``;
    0: after every batch), and after ``strategy.idleness`` ms without records the subtask declares
    itself idle. What it last emitted is checkpointed, and emitted again first thing after a restore,
    so a restored job judges lateness as the job before the crash did.
    """

    generates_watermarks = True

    def __init__(self, ctx: SubtaskContext, strategy: WatermarkStrategy) -> None:
        super().__init__(ctx)
        self._assign = strategy.timestamp_assigner
        self._generator = strategy.create_generator()
        self._interval = ctx.auto_watermark_interval
        self._idleness = strategy.idleness
        self.emitted = MIN_WATERMARK
        self._emitted_at = 0
        self._last_record_at = 0
        self.idle = False
        self._state: OperatorListState[tuple[int, int]] = ctx.operator_backend.get_union_list_state(
            ListStateDescriptor("_watermark")
        )

    async def open(self) -> None:
        restored = self._state.get_nowait()
        if restored:
            # Rescaled sources: the least of the old subtasks' values, so nothing counts late too soon.
            self._generator.max_timestamp = min(newest for newest, _ in restored)
            self.emitted = min(emitted for _, emitted in restored)
        self._last_record_at = now_millis()
        if self._idleness is not None:
            self.ctx.request_wakeup(self._last_record_at + self._idleness)

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        assign = self._assign
        stamped = type(batch) is StampedBatch
        if assign is None:
            if not stamped:
                raise TypeError(
                    "the records have no timestamps and the watermark strategy has no timestamp "
                    "assigner; add one: strategy.with_timestamp_assigner(lambda record, previous: record.ts)"
                )
            timestamps: list[Any] = [ts for ts in batch.timestamps if ts is not None]  # type: ignore[attr-defined]
            if timestamps:
                self._generator.on_timestamps(timestamps)
            self._on_records()
            return batch
        if stamped:
            timestamps = list(map(assign, batch, batch.timestamps))  # type: ignore[attr-defined]
        else:
            timestamps = list(map(assign, batch, repeat(None)))  # the loop in C
        if set(map(type, timestamps)) == _INTS:  # the usual case, checked in C
            pass
        else:
            self._convert(batch, timestamps)
        self._generator.on_timestamps(timestamps)
        self._on_records()
        return StampedBatch(batch, timestamps)

    @staticmethod
    def _convert(batch: list[Any], timestamps: list[Any]) -> None:
        """Timestamps that are not ints become ms (aware datetimes), or fail naming their record."""
        for position, ts in enumerate(timestamps):
            if type(ts) is not int:
                try:
                    timestamps[position] = to_millis(ts, "the timestamp assigner's result")
                except TypeError as exc:
                    exc.add_note(f"the timestamp assigner returned it for the record {batch[position]!r}")
                    raise

    def _on_records(self) -> None:
        self._last_record_at = now_millis()
        self.idle = False
        self._keep()

    def _keep(self) -> None:
        # Kept current in operator state at once, not when a snapshot asks: at a source, the
        # source's snapshot (taken before the chain's operators) holds it.
        self._state.update_nowait([(self._generator.max_timestamp, self.emitted)])

    def restored_watermark(self) -> int | None:
        return self.emitted if self.emitted > MIN_WATERMARK else None

    def poll(self, now: int) -> int | WatermarkStatus | None:
        """What to emit now: a new watermark, :data:`IDLE`, or None; asks for a wake-up when something
        may be due later."""
        watermark = self._generator.current()
        if watermark > self.emitted:
            if now - self._emitted_at >= self._interval:
                self.emitted = watermark
                self._emitted_at = now
                self._keep()
                return watermark
            self.ctx.request_wakeup(self._emitted_at + self._interval)
        if self._idleness is not None and not self.idle:
            quiet_until = self._last_record_at + self._idleness
            if now >= quiet_until:
                self.idle = True
                return IDLE
            self.ctx.request_wakeup(quiet_until)
        return None


@operator_for(TimestampsAndWatermarksSpec)
def _timestamps_and_watermarks_operator(
    spec: TimestampsAndWatermarksSpec, ctx: SubtaskContext
) -> TimestampsAndWatermarksOperator:
    return TimestampsAndWatermarksOperator(ctx, spec.strategy)
