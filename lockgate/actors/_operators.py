"""Operators: the per-subtask instances of what the job graph names, each working a batch at a time.

Every operator turns one input batch into one output batch in a single call, so the per-record work is
a plain loop (or comprehension) and the per-batch overheads are paid once per batch.
"""

from __future__ import annotations

import copy
import enum
import inspect
from collections.abc import Callable
from typing import Any

from lockgate._errors import ConfigurationError
from lockgate.actors._context import SubtaskContext
from lockgate.connectors import SinkWriter
from lockgate.functions import MapFunction
from lockgate.graph import (
    BroadcastProcessSpec,
    FilterSpec,
    FlatMapSpec,
    KeyedMapSpec,
    KeyedProcessSpec,
    MapSpec,
    OperatorSpec,
    ProcessSpec,
    ReduceSpec,
    SinkSpec,
)
from lockgate.state import OperatorStateSnapshot, ValueStateDescriptor, stable_key_hash


class CallForm(enum.Enum):
    """How a user function hands back its result."""

    SYNC = "def"
    ASYNC = "async def"
    SYNC_GEN = "def with yield"
    ASYNC_GEN = "async def with yield"


def call_form(fn: Callable[..., Any]) -> CallForm:
    """The form of ``fn``: a function, method, partial or callable object."""
    for candidate in (fn, getattr(type(fn), "__call__", None)):  # noqa: B004 - the class, not fn
        if candidate is None:
            continue
        if inspect.isasyncgenfunction(candidate):
            return CallForm.ASYNC_GEN
        if inspect.iscoroutinefunction(candidate):
            return CallForm.ASYNC
        if inspect.isgeneratorfunction(candidate):
            return CallForm.SYNC_GEN
        if inspect.isfunction(candidate) or inspect.ismethod(candidate):
            return CallForm.SYNC
    return CallForm.SYNC


def _extend_outputs(out: list[Any], result: Any, what: str) -> None:
    # The slow path of a function that returns (rather than yields): None, or an iterable of outputs
    # that is not a list or tuple (those are extended inline by the callers).
    if result is None:
        return
    if isinstance(result, str | bytes | bytearray):
        raise TypeError(
            f"{what} returned a {type(result).__name__}, which would be split into characters; "
            "yield each output, or return a list of outputs"
        )
    out.extend(result)


# Keys of these types always serialise canonically; others are checked once per distinct key.
_PLAIN_KEY_TYPES = frozenset({str, int, bytes, float, bool, type(None)})


def _keys_of(key_selector: Callable[[Any], Any], batch: list[Any]) -> list[Any]:
    """The keys of a batch's records, each checked to have a canonical form: a key that cannot be
    stored, checkpointed or moved to another subtask fails here, at its first record, whatever the
    parallelism and backend."""
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
    if not _PLAIN_KEY_TYPES.issuperset(map(type, keys)):
        for key in keys:
            stable_key_hash(key)  # cached; raises KeySerializationError naming the type
    return keys


class StreamOperator:
    """One subtask's instance of an operator."""

    def __init__(self, ctx: SubtaskContext) -> None:
        self.ctx = ctx
        self.uid = ctx.operator_uid

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid!r} [{self.ctx.subtask_index + 1}/{self.ctx.parallelism}]>"

    async def open(self) -> None:
        """Called once before the first batch."""

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        """The outputs of a batch of input records (the batch is not empty)."""
        raise NotImplementedError

    async def process_batch2(self, batch: list[Any]) -> list[Any]:
        """The outputs of a batch of the second input (two-input operators only)."""
        raise TypeError(f"{self!r} has one input")

    async def finish(self) -> list[Any]:
        """The input has ended; return the last outputs."""
        return []

    async def prepare_snapshot(self, checkpoint_id: int) -> None:
        """A barrier has arrived; the snapshot follows at once (transactional sinks pre-commit)."""

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete."""

    async def notify_job_finished(self) -> None:
        """Every subtask of the job has finished its input."""

    def snapshot_operator_state(self) -> OperatorStateSnapshot:
        """The operator state of this subtask now (the function's ``snapshot_state`` runs first)."""
        ctx = self.ctx
        return ctx.operator_backend.snapshot(ctx.subtask_index, ctx.parallelism)

    async def close(self) -> None:
        """Called once when the subtask ends, however it ends."""


class MapOperator(StreamOperator):
    """Runs a function, or a :class:`~lockgate.MapFunction` (with ``open``/``close``), per record."""

    def __init__(self, ctx: SubtaskContext, fn: Any) -> None:
        super().__init__(ctx)
        self._function = _copy_per_subtask(fn, ctx.operator_uid) if isinstance(fn, MapFunction) else None
        self._fn: Callable[[Any], Any] = fn if self._function is None else self._function.map
        self._form = call_form(self._fn)

    async def open(self) -> None:
        if self._function is not None:
            self._function.open(self.ctx)

    async def close(self) -> None:
        if self._function is not None:
            self._function.close()

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        fn = self._fn
        if self._form is CallForm.ASYNC:
            return [await fn(value) for value in batch]
        return [fn(value) for value in batch]


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
        return out


class FilterOperator(MapOperator):
    """Keeps the records for which the function is true."""

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        fn = self._fn
        if self._form is CallForm.ASYNC:
            return [value for value in batch if await fn(value)]
        return [value for value in batch if fn(value)]


class FlatMapOperator(StreamOperator):
    """Each input yields (or returns) any number of outputs; also runs non-keyed process functions."""

    def __init__(self, ctx: SubtaskContext, fn: Callable[[Any], Any], form: CallForm) -> None:
        super().__init__(ctx)
        self._fn = fn
        self._form = form

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        fn = self._fn
        out: list[Any] = []
        form = self._form
        if form is CallForm.SYNC_GEN:
            extend = out.extend
            for value in batch:
                extend(fn(value))
        elif form is CallForm.ASYNC_GEN:
            append = out.append
            for value in batch:
                async for result in fn(value):
                    append(result)
        elif form is CallForm.ASYNC:
            for value in batch:
                _extend_outputs(out, await fn(value), self.uid)
        else:
            extend = out.extend
            for value in batch:
                result = fn(value)
                if type(result) is list or type(result) is tuple:
                    extend(result)
                else:
                    _extend_outputs(out, result, self.uid)
        return out


class ProcessOperator(FlatMapOperator):
    """Runs a :class:`~lockgate.ProcessFunction` on a non-keyed stream."""

    def __init__(self, ctx: SubtaskContext, function: Any) -> None:
        self._function = function
        process_element = function.process_element
        super().__init__(ctx, lambda value: process_element(value, ctx), call_form(process_element))

    async def open(self) -> None:
        self._function.initialize_state(self.ctx)
        self._function.open(self.ctx)

    def snapshot_operator_state(self) -> OperatorStateSnapshot:
        self._function.snapshot_state(self.ctx)
        return super().snapshot_operator_state()

    async def close(self) -> None:
        self._function.close()


class BroadcastProcessOperator(ProcessOperator):
    """Runs a :class:`~lockgate.BroadcastProcessFunction`: input 0 reads broadcast state, input 1
    (the broadcast records) may change it."""

    def __init__(self, ctx: SubtaskContext, function: Any) -> None:
        super().__init__(ctx, function)
        side_ctx = ctx.broadcast_side()
        process_broadcast = function.process_broadcast_element
        self._broadcast = FlatMapOperator(
            side_ctx, lambda value: process_broadcast(value, side_ctx), call_form(process_broadcast)
        )

    async def process_batch2(self, batch: list[Any]) -> list[Any]:
        return await self._broadcast.process_batch(batch)


class KeyedProcessOperator(StreamOperator):
    """Runs a :class:`~lockgate.KeyedProcessFunction`; sets the current key before each record."""

    def __init__(self, ctx: SubtaskContext, function: Any, key_selector: Callable[[Any], Any]) -> None:
        super().__init__(ctx)
        self._function = function
        self._key_selector = key_selector
        self._form = call_form(function.process_element)

    async def open(self) -> None:
        self._function.open(self.ctx)

    async def close(self) -> None:
        self._function.close()

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        # One loop per form, so the per-record path has no branch and no extra call.
        ctx = self.ctx
        backend = ctx.keyed_backend
        assert backend is not None
        keys = _keys_of(self._key_selector, batch)
        await backend.prepare_batch(keys)
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


class ReduceOperator(StreamOperator):
    """Keeps ``reduce(previous, value)`` per key and emits it after every record, as Flink does."""

    def __init__(self, ctx: SubtaskContext, fn: Callable[[Any, Any], Any], key_selector: Any) -> None:
        super().__init__(ctx)
        self._fn = fn
        self._async = call_form(fn) is CallForm.ASYNC
        self._key_selector = key_selector
        self._state = ctx.get_state(ValueStateDescriptor[Any]("reduce"))

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        backend = self.ctx.keyed_backend
        assert backend is not None
        state, fn = self._state, self._fn
        keys = _keys_of(self._key_selector, batch)
        await backend.prepare_batch(keys)
        out: list[Any] = []
        for key, value in zip(keys, batch, strict=True):
            backend.current_key = key
            previous = await state.value()
            if previous is not None:
                value = await fn(previous, value) if self._async else fn(previous, value)
            await state.update(value)
            out.append(value)
        await backend.finish_batch()
        return out


class SinkOperator(StreamOperator):
    def __init__(self, ctx: SubtaskContext, writer: SinkWriter) -> None:
        super().__init__(ctx)
        self._writer = writer

    async def open(self) -> None:
        await self._writer.open()

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        await self._writer.write(batch)
        return []

    async def prepare_snapshot(self, checkpoint_id: int) -> None:
        await self._writer.prepare_snapshot(checkpoint_id)

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        await self._writer.notify_checkpoint_complete(checkpoint_id)

    async def finish(self) -> list[Any]:
        await self._writer.finish()
        return []

    async def notify_job_finished(self) -> None:
        await self._writer.notify_job_finished()

    async def close(self) -> None:
        await self._writer.close()


def _copy_per_subtask(function: Any, uid: str) -> Any:
    # Each subtask gets its own copy, as each Flink subtask deserialises its own: attributes set in
    # open() (state handles) then belong to one subtask.
    try:
        return copy.deepcopy(function)
    except Exception as exc:
        raise ConfigurationError(
            f"operator {uid!r}: the function {function!r} cannot be copied for each subtask "
            f"({type(exc).__name__}: {exc}); create resources such as clients in open(), not __init__"
        ) from exc


def create_operator(spec: OperatorSpec, ctx: SubtaskContext) -> StreamOperator:
    """The operator instance that runs ``spec`` in the subtask of ``ctx``."""
    if isinstance(spec, MapSpec):
        return MapOperator(ctx, spec.function)
    if isinstance(spec, FilterSpec):
        return FilterOperator(ctx, spec.function)
    if isinstance(spec, FlatMapSpec):
        return FlatMapOperator(ctx, spec.function, call_form(spec.function))
    if isinstance(spec, BroadcastProcessSpec):
        return BroadcastProcessOperator(ctx, _copy_per_subtask(spec.function, ctx.operator_uid))
    if isinstance(spec, ProcessSpec):
        return ProcessOperator(ctx, _copy_per_subtask(spec.function, ctx.operator_uid))
    if isinstance(spec, KeyedProcessSpec):
        function = _copy_per_subtask(spec.function, ctx.operator_uid)
        return KeyedProcessOperator(ctx, function, spec.key_selector)
    if isinstance(spec, KeyedMapSpec):
        return KeyedMapOperator(ctx, spec.function, spec.key_selector)
    if isinstance(spec, ReduceSpec):
        return ReduceOperator(ctx, spec.function, spec.key_selector)
    if isinstance(spec, SinkSpec):
        return SinkOperator(ctx, spec.sink.create_writer(ctx))
    raise TypeError(f"unknown operator spec {spec!r}")
