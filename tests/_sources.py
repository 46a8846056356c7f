"""A collection source that pauses where a test says: checkpoints and savepoints at exact points."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

import lockgate as lg
from lockgate.connectors import CollectionSource

#: The longest a test waits for a source to reach a pause before it calls it a hang.
GUARD = 10


class PausingSource(lg.Source):
    """``from_collection`` that pauses before the items at the indexes in ``pauses`` until resumed.

    A checkpoint triggered while the source is paused at index n covers exactly items ``[0, n)``.
    Its position is the collection source's (operator state ``positions``), so a job restored from its
    checkpoints may read the same items with a plain ``env.from_collection(items, uid=...)``.
    Runs at parallelism 1, and in a job's first run only.
    """

    fixed_parallelism = 1

    def __init__(self, items: list[Any], pauses: tuple[int, ...]) -> None:
        self._inner = CollectionSource(items)
        self._reached = {index: anyio.Event() for index in pauses}
        self._resumed = {index: anyio.Event() for index in pauses}

    async def reached(self, index: int) -> None:
        """Wait until the source has emitted exactly the items before ``index`` and waits there."""
        with anyio.fail_after(GUARD):
            await self._reached[index].wait()

    def resume(self, index: int) -> None:
        self._resumed[index].set()

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        assert ctx.attempt == 0 and not ctx.is_restored
        return _PausingReader(self._inner.create_reader(ctx), self._reached, self._resumed)


class _PausingReader(lg.SourceReader):
    def __init__(
        self, inner: lg.SourceReader, reached: dict[int, anyio.Event], resumed: dict[int, anyio.Event]
    ) -> None:
        self._inner = inner
        self._reached = reached
        self._resumed = resumed
        self._emitted = 0

    async def read(self, max_records: int) -> list[Any] | None:
        if self._emitted in self._resumed:
            self._reached[self._emitted].set()
            await self._resumed[self._emitted].wait()  # cancel-safe: nothing was read yet
        ahead = [index - self._emitted for index in self._resumed if index > self._emitted]
        batch = await self._inner.read(min([max_records, *ahead]))
        if batch:
            self._emitted += len(batch)
        return batch

    def snapshot_state(self, checkpoint_id: int) -> None:
        self._inner.snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._inner.notify_checkpoint_complete(checkpoint_id)

    async def close(self) -> None:
        await self._inner.close()


async def until_or_failure(job: lg.Job, waiting: Callable[[], Awaitable[None]]) -> None:
    """Wait for ``waiting()``; should the job end first (it failed), raise its failure at once rather
    than wait for a guard to run out."""
    failure: BaseException | None = None
    async with anyio.create_task_group() as group:

        async def job_ends() -> None:
            nonlocal failure
            try:
                await job.wait()
            except Exception as exc:
                failure = exc
            group.cancel_scope.cancel()

        group.start_soon(job_ends)
        await waiting()
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
