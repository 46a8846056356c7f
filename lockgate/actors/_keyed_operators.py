"""The operators of keyed streams: each sets the current key before each record, so keyed state is
the record's key's; keyed map, keyed process, map with state and reduce (a map with state)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lockgate.actors._context import SubtaskContext
from lockgate.actors._event_time import InternalTimers, TimerOperator
from lockgate.actors._function_operators import MapOperator
from lockgate.actors._registry import operator_for
from lockgate.actors._stream_operator import (
    CallForm,
    StreamOperator,
    _copy_per_subtask,
    _extend_outputs,
    call_form,
    outputs_of,
)
from lockgate.eventtime import TimeDomain
from lockgate.graph import KeyedMapSpec, KeyedMapWithStateSpec, KeyedProcessSpec, ReduceSpec
from lockgate.mailbox import StampedBatch
from lockgate.state import (
    CANONICAL_KEY_TYPES,
    KeyedStateBackend,
    TimerQueue,
    ValueStateDescriptor,
    check_key,
)


def _keys_of(key_selector: Callable[[Any], Any], batch: list[Any], check: bool = True) -> list[Any]:
    """The keys of a batch's records, each checked (unless ``check`` is False: then whoever stores them
    does) to have a canonical form: a key that cannot be stored, checkpointed or moved to another
    subtask fails here, at its first record, whatever the parallelism and backend."""
    try:
        keys = list(map(key_selector, batch))
    except Exception as exc:
        for position, record in enumerate(batch):
            try:
                key_selector(record)
            except Exception:
                exc.add_note(
                    f"the key selector raised on the record {record!r}, number {position + 1} of its batch"
                )
                break
        raise
    if check and not CANONICAL_KEY_TYPES.issuperset(map(type, keys)):
        for key in keys:
            check_key(key)  # raises KeySerializationError naming the type
    return keys


class KeyedMapOperator(MapOperator):
    """A map on a keyed stream: sets the current key before each record, so state is the key's."""

    def __init__(self, ctx: SubtaskContext, fn: Any, key_selector: Callable[[Any], Any]) -> None:
        super().__init__(ctx, fn)
        self._key_selector = key_selector

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        backend = self.ctx.keyed_backend
        assert backend is not None
        keys = _keys_of(self._key_selector, batch)
        await backend.prepare_batch(keys)
        fn = self._fn
        out: list[Any] = []
        append = out.append
        if self._form is CallForm.ASYNC:
            for key, value in zip(keys, batch, strict=True):
                backend.current_key = key
                append(await fn(value))
        else:
            for key, value in zip(keys, batch, strict=True):
                backend.current_key = key
                append(fn(value))
        await backend.finish_batch()
        if type(batch) is StampedBatch:
            return StampedBatch(out, batch.timestamps)
        return out


@operator_for(KeyedMapSpec)
def _keyed_map_operator(spec: KeyedMapSpec, ctx: SubtaskContext) -> KeyedMapOperator:
    return KeyedMapOperator(ctx, spec.function, spec.key_selector)


class KeyedProcessOperator(TimerOperator):
    """Runs a :class:`~lockgate.KeyedProcessFunction`; sets the current key before each record, and
    before each of its timers fires."""

    def __init__(self, ctx: SubtaskContext, function: Any, key_selector: Callable[[Any], Any]) -> None:
        super().__init__(ctx)
        self._function = function
        self._key_selector = key_selector
        self._form = call_form(function.process_element)
        self._timer_form = call_form(function.on_timer)

    async def open(self) -> None:
        ctx = self.ctx
        backend = ctx.keyed_backend
        assert backend is not None
        if backend.holds_timers:  # else timer_service() says the backend holds none
            self.timers = ctx.timers = InternalTimers(backend, ctx.request_wakeup)
        self._function.open(ctx)
        if self.timers is not None:
            self.timers.schedule_processing()

    async def fire(self, queue: TimerQueue, upto: int, domain: TimeDomain) -> list[Any]:
        """Fire the timers of ``queue`` due at ``upto``, earliest first, one key at a time; event-time
        outputs carry their timer's timestamp, processing-time ones none."""
        ctx = self.ctx
        backend = ctx.keyed_backend
        assert backend is not None
        on_timer, form, uid = self._function.on_timer, self._timer_form, self.uid
        event_time = domain is TimeDomain.EVENT_TIME
        out: list[Any] = []
        stamps: list[int | None] = []
        await backend.prepare_batch(())
        ctx.current_domain = domain
        try:
            while (timer := queue.poll(upto)) is not None:
                timestamp, key, _ = timer
                backend.current_key = key
                stamp = timestamp if event_time else None
                ctx.current_timestamp = stamp
                results = await outputs_of(on_timer, form, (timestamp, ctx), uid)
                out += results
                stamps += [stamp] * len(results)
        finally:
            ctx.current_domain = None
            ctx.current_timestamp = None
        await backend.finish_batch()
        return StampedBatch(out, stamps) if event_time else out

    async def close(self) -> None:
        self._function.close()

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        # One loop per form, so the per-record path has no branch and no extra call.
        ctx = self.ctx
        backend = ctx.keyed_backend
        assert backend is not None
        keys = _keys_of(self._key_selector, batch)
        await backend.prepare_batch(keys)
        if type(batch) is StampedBatch:
            return await self._process_stamped(batch, keys, backend)
        process = self._function.process_element
        out: list[Any] = []
        form = self._form
        if form is CallForm.SYNC_GEN:
            extend = out.extend
            for key, value in zip(keys, batch, strict=True):
                backend.current_key = key
                extend(process(value, ctx))
        elif form is CallForm.ASYNC_GEN:
            append = out.append
            for key, value in zip(keys, batch, strict=True):
                backend.current_key = key
                async for result in process(value, ctx):
                    append(result)
        elif form is CallForm.ASYNC:
            for key, value in zip(keys, batch, strict=True):
                backend.current_key = key
                _extend_outputs(out, await process(value, ctx), self.uid)
        else:
            extend = out.extend
            for key, value in zip(keys, batch, strict=True):
                backend.current_key = key
                result = process(value, ctx)
                if type(result) is list or type(result) is tuple:
                    extend(result)
                else:
                    _extend_outputs(out, result, self.uid)
        await backend.finish_batch()
        return out

    async def _process_stamped(
        self, batch: StampedBatch, keys: list[Any], backend: KeyedStateBackend
    ) -> StampedBatch:
        ctx, process, form, uid = self.ctx, self._function.process_element, self._form, self.uid
        out: list[Any] = []
        stamps: list[int | None] = []
        try:
            for key, value, timestamp in zip(keys, batch, batch.timestamps, strict=True):
                backend.current_key = key
                ctx.current_timestamp = timestamp
                results = await outputs_of(process, form, (value, ctx), uid)
                out += results
                stamps += [timestamp] * len(results)
        finally:
            ctx.current_timestamp = None
        await backend.finish_batch()
        return StampedBatch(out, stamps)


@operator_for(KeyedProcessSpec)
def _keyed_process_operator(spec: KeyedProcessSpec, ctx: SubtaskContext) -> KeyedProcessOperator:
    return KeyedProcessOperator(ctx, _copy_per_subtask(spec.function, ctx.operator_uid), spec.key_selector)


class KeyedMapWithStateOperator(StreamOperator):
    """Runs ``output, new_value = fn(record, value)`` with each record's key's value state. With a
    plain ``def`` on a backend with synchronous access, the state object runs the whole batch
    (:meth:`ValueState.map_batch_nowait`: on the heap, the table's dict without a call per access);
    otherwise each record awaits its state and, for an ``async def``, the function."""

    def __init__(
        self,
        ctx: SubtaskContext,
        fn: Callable[[Any, Any], Any],
        key_selector: Callable[[Any], Any],
        descriptor: ValueStateDescriptor[Any],
    ) -> None:
        super().__init__(ctx)
        backend = ctx.keyed_backend
        assert backend is not None
        self._fn = fn
        self._async = call_form(fn) is CallForm.ASYNC
        self._nowait = backend.supports_nowait and not self._async
        self._key_selector = key_selector
        self._state = ctx.get_state(descriptor)
        # A backend that fetches a batch's state at once needs its keys checked first; otherwise the
        # state checks each key as it first stores it (ValueState.map_batch_nowait), not every record.
        self._prepares = type(backend).prepare_batch is not KeyedStateBackend.prepare_batch

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        backend = self.ctx.keyed_backend
        assert backend is not None
        keys = _keys_of(self._key_selector, batch, check=self._prepares or not self._nowait)
        await backend.prepare_batch(keys)
        try:
            if self._nowait:
                out = self._state.map_batch_nowait(keys, batch, self._fn)
            else:
                out = await self._map_awaiting(keys, batch, backend)
        except (TypeError, ValueError) as exc:
            if _failed_unpacking(exc):
                exc.add_note(
                    f"the function of map_with_state operator {self.uid!r} returns a pair "
                    "(output, new_value) for each record; a new value of None clears the key's state"
                )
            raise
        await backend.finish_batch()
        if type(batch) is StampedBatch:
            return StampedBatch(out, batch.timestamps)
        return out

    async def _map_awaiting(self, keys: list[Any], batch: list[Any], backend: KeyedStateBackend) -> list[Any]:
        state, fn = self._state, self._fn
        out: list[Any] = []
        for key, record in zip(keys, batch, strict=True):
            backend.current_key = key
            result = fn(record, await state.value())
            output, value = await result if self._async else result
            await state.update(value)
            out.append(output)
        return out


# What CPython says when a value is not a pair: the start of its messages for unpacking.
_UNPACKING_MESSAGES = (
    "cannot unpack non-iterable",
    "too many values to unpack",
    "not enough values to unpack",
)


def _failed_unpacking(exc: Exception) -> bool:
    """Whether ``exc`` was raised by unpacking a result in the runtime's loop (each backend's is named
    ``map_batch_nowait``), not inside the function."""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return (
        traceback is not None
        and traceback.tb_frame.f_code.co_name in ("map_batch_nowait", "_map_awaiting")
        and str(exc).startswith(_UNPACKING_MESSAGES)
    )


@operator_for(KeyedMapWithStateSpec)
def _keyed_map_with_state_operator(
    spec: KeyedMapWithStateSpec, ctx: SubtaskContext
) -> KeyedMapWithStateOperator:
    return KeyedMapWithStateOperator(ctx, spec.function, spec.key_selector, spec.state)


def _reduce_step(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``reduce(fn)`` as a map with state: Flink's reduce keeps ``fn(previous, record)`` per key
    (the first record as it is) and emits it after every record."""
    if call_form(fn) is CallForm.ASYNC:

        async def reduce_awaiting(record: Any, previous: Any) -> tuple[Any, Any]:
            value = record if previous is None else await fn(previous, record)
            return value, value

        return reduce_awaiting

    def reduce(record: Any, previous: Any) -> tuple[Any, Any]:
        value = record if previous is None else fn(previous, record)
        return value, value

    return reduce


@operator_for(ReduceSpec)
def _reduce_operator(spec: ReduceSpec, ctx: SubtaskContext) -> KeyedMapWithStateOperator:
    descriptor = ValueStateDescriptor[Any]("reduce")  # its name in savepoints
    return KeyedMapWithStateOperator(ctx, _reduce_step(spec.function), spec.key_selector, descriptor)
