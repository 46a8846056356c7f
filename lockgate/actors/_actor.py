"""The subtask actor: one task that owns a chain of operators and processes one message at a time."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from lockgate.actors._operators import StreamOperator
from lockgate.actors._output import OutputRouter
from lockgate.connectors import SourceReader
from lockgate.mailbox import END_OF_INPUT, ControlEvent, Mailbox
from lockgate.state import KeyedStateBackend


class OperatorFailure(Exception):
    """An operator of a chain raised; carries the operator's uid, the cause is ``__cause__``."""

    def __init__(self, operator_uid: str) -> None:
        super().__init__(operator_uid)
        self.operator_uid = operator_uid


class SubtaskActor:
    """Runs one subtask of a job vertex: a source reader or a mailbox feeds its operator chain.

    Messages are processed one at a time and to the end, so operators never see concurrency. A source
    actor yields to the event loop after each batch, so a fast source cannot starve other tasks.
    """

    def __init__(
        self,
        name: str,
        head_uid: str,
        subtask_index: int,
        parallelism: int,
        operators: list[StreamOperator],
        output: OutputRouter,
        *,
        source: tuple[str, SourceReader] | None = None,
        mailbox: Mailbox | None = None,
        channel_inputs: list[int] | None = None,
        batch_size: int,
        keyed_backends: list[KeyedStateBackend],
    ) -> None:
        if (source is None) == (mailbox is None):
            raise ValueError("an actor reads from a source or from a mailbox, not both or neither")
        self.name = name
        self.head_uid = head_uid
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.operators = operators
        self.output = output
        self.source = source
        self.mailbox = mailbox
        # The operator input (0, or 1 for a two-input operator) that each mailbox channel feeds.
        self.channel_inputs = channel_inputs or []
        self.batch_size = batch_size
        self.keyed_backends = keyed_backends

    def __repr__(self) -> str:
        return f"<SubtaskActor {self.name} [subtask {self.subtask_index}]>"

    async def run(self) -> None:
        """Open the chain, process the input to its end, finish the chain; always close it."""
        try:
            for operator in self.operators:
                try:
                    await operator.open()
                except Exception as exc:
                    raise OperatorFailure(operator.uid) from exc
            if self.source is not None:
                await self._run_source(*self.source)
            else:
                assert self.mailbox is not None
                await self._run_mailbox(self.mailbox)
            await self._finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()  # a failure while closing must not hide the one in flight
            raise
        with anyio.CancelScope(shield=True):
            failure = await self._close()
        if failure is not None:
            raise failure

    async def _run_source(self, uid: str, reader: SourceReader) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as background:
            background.start_soon(reader.run_background)
            try:
                await self._read_source(uid, reader)
            except Exception as exc:  # raised below, outside the group, so it is not wrapped
                failure = exc
            background.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _read_source(self, uid: str, reader: SourceReader) -> None:
        while True:
            try:
                batch = await reader.read(self.batch_size)
            except Exception as exc:
                raise OperatorFailure(uid) from exc
            if batch is None:
                return
            if batch:
                await self._process(batch, 0)
            await anyio.lowlevel.checkpoint()

    async def _run_mailbox(self, mailbox: Mailbox) -> None:
        open_inputs = len(mailbox.channels)
        channel_inputs = self.channel_inputs
        while open_inputs:
            index, message = await mailbox.receive()
            if type(message) is list:
                if channel_inputs[index]:
                    await self._process_second_input(message)
                else:
                    await self._process(message, 0)
            elif message is END_OF_INPUT:
                mailbox.pause(index)  # nothing follows the end of a channel
                open_inputs -= 1
            else:
                await self._on_event(index, message)

    async def _on_event(self, index: int, event: Any) -> None:
        assert isinstance(event, ControlEvent)
        raise NotImplementedError(f"control event {event!r} is not handled yet")

    async def _process(self, batch: list[Any], first: int) -> None:
        """Run ``batch`` through the chain from operator ``first`` and emit what comes out."""
        operators = self.operators
        for position in range(first, len(operators)):
            operator = operators[position]
            try:
                batch = await operator.process_batch(batch)
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc
            if not batch:
                return
        await self.output.emit(batch)

    async def _process_second_input(self, batch: list[Any]) -> None:
        head = self.operators[0]
        try:
            outputs = await head.process_batch2(batch)
        except Exception as exc:
            raise OperatorFailure(head.uid) from exc
        if outputs:
            await self._process(outputs, 1)

    async def _finish(self) -> None:
        # Each operator's last outputs still pass through the rest of the chain.
        for position, operator in enumerate(self.operators):
            try:
                last = await operator.finish()
            except Exception as exc:
                raise OperatorFailure(operator.uid) from exc
            if last:
                await self._process(last, position + 1)
        await self.output.emit_event(END_OF_INPUT)

    async def _close(self) -> OperatorFailure | None:
        """Close everything even if one close raises; return the first error, by its owner."""
        closings: list[tuple[Any, str]] = []
        if self.source is not None:
            uid, reader = self.source
            closings.append((reader.close, uid))
        closings += [(operator.close, operator.uid) for operator in self.operators]
        closings += [(backend.dispose, backend.operator_uid) for backend in self.keyed_backends]
        failures = [await _attempt(close, uid) for close, uid in closings]
        return next((failure for failure in failures if failure is not None), None)


async def _attempt(close: Any, uid: str) -> OperatorFailure | None:
    try:
        await close()
    except Exception as exc:
        failure = OperatorFailure(uid)
        failure.__cause__ = exc
        return failure
    return None
