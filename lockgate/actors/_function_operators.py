"""The operators that run a user function on a stream without keyed state: map, filter, flat map,
process and broadcast process."""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress, repeat
from typing import Any

from lockgate.actors._context import SubtaskContext
from lockgate.actors._registry import operator_for
from lockgate.actors._stream_operator import (
    CallForm,
    StreamOperator,
    _copy_per_subtask,
    _extend_outputs,
    call_form,
    outputs_of,
)
from lockgate.functions import MapFunction
from lockgate.graph import BroadcastProcessSpec, FilterSpec, FlatMapSpec, MapSpec, ProcessSpec
from lockgate.mailbox import StampedBatch
from lockgate.state import OperatorStateSnapshot


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
        # The plain form's loop runs in C.
        out = [await fn(value) for value in batch] if self._form is CallForm.ASYNC else list(map(fn, batch))
        if type(batch) is StampedBatch:  # one output per record: the timestamps stay as they are
            return StampedBatch(out, batch.timestamps)
        return out


@operator_for(MapSpec)
def _map_operator(spec: MapSpec, ctx: SubtaskContext) -> MapOperator:
    return MapOperator(ctx, spec.function)


class FilterOperator(MapOperator):
    """Keeps the records for which the function is true."""

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        fn = self._fn
        if type(batch) is StampedBatch:
            return await self._filter_stamped(batch)
        if self._form is CallForm.ASYNC:
            return [value for value in batch if await fn(value)]
        return list(compress(batch, map(fn, batch)))  # the loop in C

    async def _filter_stamped(self, batch: StampedBatch) -> StampedBatch:
        fn = self._fn
        kept = [await fn(value) for value in batch] if self._form is CallForm.ASYNC else list(map(fn, batch))
        return StampedBatch(compress(batch, kept), list(compress(batch.timestamps, kept)))


@operator_for(FilterSpec)
def _filter_operator(spec: FilterSpec, ctx: SubtaskContext) -> FilterOperator:
    return FilterOperator(ctx, spec.function)


class FlatMapOperator(StreamOperator):
    """Each input yields (or returns) any number of outputs; also runs non-keyed process functions."""

    def __init__(self, ctx: SubtaskContext, fn: Callable[[Any], Any], form: CallForm) -> None:
        super().__init__(ctx)
        self._fn = fn
        self._form = form

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        if type(batch) is StampedBatch:
            return await self._process_stamped(batch)
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

    async def _process_stamped(self, batch: StampedBatch) -> StampedBatch:
        """Record by record: each output carries its input's timestamp, which ``ctx.timestamp()``
        gives while the record is processed."""
        ctx, fn, form, uid = self.ctx, self._fn, self._form, self.uid
        out: list[Any] = []
        stamps: list[int | None] = []
        extend = out.extend
        try:
            if form is CallForm.SYNC_GEN:  # the common fast form, inline
                for value, timestamp in zip(batch, batch.timestamps, strict=True):
                    ctx.current_timestamp = timestamp
                    before = len(out)
                    extend(fn(value))
                    if len(out) > before:
                        stamps += repeat(timestamp, len(out) - before)
            else:
                for value, timestamp in zip(batch, batch.timestamps, strict=True):
                    ctx.current_timestamp = timestamp
                    results = await outputs_of(fn, form, (value,), uid)
                    out += results
                    stamps += [timestamp] * len(results)
        finally:
            ctx.current_timestamp = None
        return StampedBatch(out, stamps)


@operator_for(FlatMapSpec)
def _flat_map_operator(spec: FlatMapSpec, ctx: SubtaskContext) -> FlatMapOperator:
    return FlatMapOperator(ctx, spec.function, call_form(spec.function))


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


@operator_for(ProcessSpec)
def _process_operator(spec: ProcessSpec, ctx: SubtaskContext) -> ProcessOperator:
    return ProcessOperator(ctx, _copy_per_subtask(spec.function, ctx.operator_uid))


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


@operator_for(BroadcastProcessSpec)
def _broadcast_process_operator(spec: BroadcastProcessSpec, ctx: SubtaskContext) -> BroadcastProcessOperator:
    return BroadcastProcessOperator(ctx, _copy_per_subtask(spec.function, ctx.operator_uid))
