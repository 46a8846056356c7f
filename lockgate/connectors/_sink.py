"""The sink interface and the built-in sinks."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any, Generic, TextIO, TypeVar

from lockgate.functions import RuntimeContext

T = TypeVar("T")


class SinkWriter(ABC):
    """Writes the records of one sink subtask, a batch at a time."""

    @abstractmethod
    async def write(self, records: list[Any]) -> None:
        """Write a batch of records (never empty), in order."""

    async def finish(self) -> None:  # noqa: B027 - optional hook
        """The input has ended: flush what is buffered."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the writer holds; called once, however the subtask ends."""


class Sink(ABC):
    """Creates a writer for each subtask of a sink operator."""

    @abstractmethod
    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        """The writer for subtask ``ctx.subtask_index``."""


class CollectSink(Sink, Generic[T]):
    """Collects every record in :attr:`results`, a list shared by all subtasks of the sink.

    At parallelism 1 the list keeps the order in which records arrived.
    """

    def __init__(self) -> None:
        self.results: list[T] = []

    def __repr__(self) -> str:
        return f"<CollectSink [{len(self.results)} results]>"

    def create_writer(self, ctx: RuntimeContext) -> SinkWriter:
        return _ExtendWriter(self.results)


class _ExtendWriter(SinkWriter):
    def __init__(self, results: list[Any]) -> None:
        self._results = results

    async def write(self, records: list[Any]) -> None:
        self._results.extend(records)


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
