"""The sink interface and the built-in sinks."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any, TextIO

from lockgate.functions import RuntimeContext


class SinkWriter(ABC):
    """Writes the records of one sink subtask, a batch at a time.

    Besides :meth:`write`, the runtime calls the hooks below, always from the subtask's own task,
    between two batches: a writer never sees concurrent calls.
    """

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first batch (after a restore: commit what was pending)."""

    @abstractmethod
    async def write(self, records: list[Any]) -> None:
        """Write a batch of records (never empty), in order."""

    async def prepare_snapshot(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """A checkpoint barrier has arrived: make what was written durable (pre-commit) and bring
        operator state up to date; the snapshot is taken right after."""

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """Checkpoint ``checkpoint_id`` (and every earlier one) is complete: commit what it covers."""

    async def finish(self) -> None:  # noqa: B027 - optional hook
        """The input has ended: flush what is buffered."""

    async def notify_job_finished(self) -> None:  # noqa: B027 - optional hook
        """Every subtask of the job has finished its input: commit what is left (the final flush)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the writer holds; called once, however the subtask ends."""


class Sink(ABC):
    """Creates a writer for each subtask of a sink operator."""

    @abstractmethod
    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        """The writer for subtask ``ctx.subtask_index``."""


class PrintSink(Sink):
    """Prints each record on a line of its own, to standard output unless ``file`` is given.

    At parallelism above 1 each line starts with the subtask's number, as ``2> record``.
    """

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file

    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        prefix = f"{ctx.subtask_index + 1}> " if ctx.parallelism > 1 else ""
        return _PrintWriter(self.file, prefix)


class _PrintWriter(SinkWriter):
    def __init__(self, file: TextIO | None, prefix: str) -> None:
        self._file = file
        self._prefix = prefix

    async def write(self, records: list[Any]) -> None:
        file = self._file or sys.stdout  # looked up late, so redirected output is honoured
        prefix = self._prefix
        file.write("".join(f"{prefix}{record}\n" for record in records))
