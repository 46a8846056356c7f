"""Every source's read is cancel-safe: the runtime cancels a read whenever a checkpoint is triggered
while the reader waits, and a cancelled read must lose no record, at any point it is cancelled.

The property tests drive each reader with reads cancelled after a drawn number of event-loop steps
(a read in a worker thread is then usually cancelled while the thread works); the job tests run
whole jobs with frequent checkpoints and compare the committed output with the input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from lockgate.actors._context import SubtaskContext
from lockgate.connectors import AsyncIterableSource, CollectionSource

pytestmark = pytest.mark.anyio

#: Event-loop steps before each read is cancelled, in turn; None lets the read finish.
cancel_points = st.lists(st.none() | st.integers(0, 40), min_size=1, max_size=12)


def _reader(source: lg.Source, mode: lg.CheckpointingMode | None = None) -> Any:
    backend = lgs.OperatorStateBackend("src")
    ctx = SubtaskContext("src", "src", 0, 1, 128, operator_backend=backend, checkpointing_mode=mode)
    return source.create_reader(ctx)


async def _cancel_after(scope: anyio.CancelScope, steps: int) -> None:
    for _ in range(steps):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


async def read_all_with_cancellations(reader: Any, batch: int, points: list[int | None]) -> list[Any]:
    """Everything ``reader`` emits, each read cancelled as ``points`` says (in turn, cycling)."""
    emitted: list[Any] = []
    turn = 0
    async with anyio.create_task_group() as background:
        background.start_soon(reader.run_background)
        while True:
            steps = points[turn % len(points)]
            turn += 1
            async with anyio.create_task_group() as canceller:
                with anyio.CancelScope() as scope:
                    if steps is not None:
                        canceller.start_soon(_cancel_after, scope, steps)
                    records = await reader.read(batch)
                canceller.cancel_scope.cancel()
            if scope.cancelled_caught:
                continue
            if records is None:
                break
            emitted.extend(records)
        background.cancel_scope.cancel()
    await reader.close()
    return emitted


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(0, 300),
    chunk=st.integers(1, 64),
    batch=st.integers(1, 50),
    points=cancel_points,
)
async def test_a_file_source_read_cancelled_anywhere_loses_no_line(
    tmp_path: Path, size: int, chunk: int, batch: int, points: list[int | None]
) -> None:
    lines = [f"line-{i}" for i in range(size)]
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    reader = _reader(lg.FileSource(path, chunk_size=chunk))
    assert await read_all_with_cancellations(reader, batch, points) == lines


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 300), batch=st.integers(1, 50), points=cancel_points)
async def test_a_collection_source_read_cancelled_anywhere_loses_no_item(
    size: int, batch: int, points: list[int | None]
) -> None:
    items = list(range(size))
    reader = _reader(CollectionSource(items))
    assert await read_all_with_cancellations(reader, batch, points) == items


async def paced(items: list[int], pauses: list[int]) -> AsyncIterator[int]:
    """``items``, each after a number of event-loop steps from ``pauses`` (cycling)."""
    for index, item in enumerate(items):
        for _ in range(pauses[index % len(pauses)]):
            await anyio.lowlevel.checkpoint()
        yield item


async def _put_slowly(queue: lg.QueueSource[int], items: list[int], pauses: list[int]) -> None:
    async for item in paced(items, pauses):
        await queue.put(item)
    queue.close()


#: Event-loop steps before each record comes, in turn.
pacings = st.lists(st.integers(0, 5), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 200),
    maxsize=st.integers(1, 20),
    batch=st.integers(1, 30),
    points=cancel_points,
    pauses=pacings,
)
async def test_a_queue_source_read_cancelled_anywhere_loses_no_record(
    size: int, maxsize: int, batch: int, points: list[int | None], pauses: list[int]
) -> None:
    items = list(range(size))
    queue: lg.QueueSource[int] = lg.QueueSource(maxsize=maxsize)
    reader = _reader(queue, lg.CheckpointingMode.EXACTLY_ONCE)
    async with anyio.create_task_group() as group:
        group.start_soon(_put_slowly, queue, items, pauses)
        emitted = await read_all_with_cancellations(reader, batch, points)
    assert emitted == items


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 200),
    buffer=st.integers(1, 20),
    batch=st.integers(1, 30),
    points=cancel_points,
    pauses=pacings,
)
async def test_an_async_iterable_source_read_cancelled_anywhere_loses_no_item(
    size: int, buffer: int, batch: int, points: list[int | None], pauses: list[int]
) -> None:
    items = list(range(size))

    reader = _reader(AsyncIterableSource(paced(items, pauses), buffer_size=buffer))
    assert await read_all_with_cancellations(reader, batch, points) == items


async def test_a_job_reading_a_file_under_frequent_checkpoints_commits_every_line_once(
    tmp_path: Path,
) -> None:
    # Every trigger that comes while the reader waits for its worker thread cancels the read: before
    # the reads were cancel-safe, each such cancel lost a chunk and spliced two lines together.
    lines = [f"line-{i}" for i in range(60_000)]
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    env = lg.StreamEnvironment()
    env.set_checkpoint_storage(tmp_path / "checkpoints")
    env.enable_checkpointing(0.002)
    out = tmp_path / "out"
    env.from_source(lg.FileSource(path, chunk_size=4096), uid="src").sink(lg.FileSink(out), uid="out")
    await env.execute("file-to-file")
    committed = [
        line
        for file in out.iterdir()
        if not file.name.startswith(".")
        for line in file.read_text().splitlines()
    ]
    assert len(committed) == len(lines)
    assert sorted(committed) == sorted(lines)
