"""The operator that writes a stream to a sink."""

from __future__ import annotations

from typing import Any

from lockgate.actors._context import SubtaskContext
from lockgate.actors._registry import operator_for
from lockgate.actors._stream_operator import StreamOperator
from lockgate.connectors import SinkWriter
from lockgate.graph import SinkSpec


class SinkOperator(StreamOperator):
    """Hands each batch, and every step of the checkpoint and job life cycle, to a sink's writer."""

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


@operator_for(SinkSpec)
def _sink_operator(spec: SinkSpec, ctx: SubtaskContext) -> SinkOperator:
    return SinkOperator(ctx, spec.sink.create_writer(ctx))
