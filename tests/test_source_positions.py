"""A collection source keeps its position in operator state: restored at any parallelism, it emits
exactly the items it had not emitted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from lockgate.actors._context import SubtaskContext
from lockgate.connectors import CollectionSource


def reader(source: lg.Source, index: int, parallelism: int, restored: Any = None) -> Any:
    """A reader of subtask ``index`` of ``source`` and its operator state backend."""
    backend = lgs.OperatorStateBackend("src", restored)
    ctx = SubtaskContext("src", "src", index, parallelism, 128, operator_backend=backend)
    return source.create_reader(ctx), backend


async def drain(reader: Any, batch: int, limit: int | None = None) -> list[Any]:
    """What ``reader`` emits, in batches of ``batch``, until its end or past ``limit`` records."""
    emitted: list[Any] = []
    while limit is None or len(emitted) < limit:
        records = await reader.read(batch)
        if records is None:
            break
        emitted.extend(records)
    return emitted


@pytest.mark.anyio
@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 120),
    stages=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 30)), min_size=1, max_size=3),
    final=st.integers(1, 5),
    batch=st.integers(1, 9),
)
async def test_restores_at_any_parallelism_emit_every_item_exactly_once(
    size: int, stages: list[tuple[int, int]], final: int, batch: int
) -> None:
    # Run each stage at its parallelism for a few reads per subtask, snapshot, restore at the next
    # stage's parallelism; the last restore drains everything.
    source = CollectionSource(list(range(size)))
    emitted: list[int] = []
    restored: list[Any] | None = None
    parallelisms = [parallelism for parallelism, _ in stages] + [final]
    for stage, (parallelism, reads) in enumerate(stages):
        snapshots = []
        for index in range(parallelism):
            subtask_reader, backend = reader(source, index, parallelism, restored and restored[index])
            emitted += await drain(subtask_reader, batch, limit=reads)
            subtask_reader.snapshot_state(1)
            snapshots.append(backend.snapshot(index, parallelism))
        restored = lgs.redistribute(snapshots, parallelisms[stage + 1])
    for index in range(final):
        subtask_reader, _ = reader(source, index, final, restored[index] if restored else None)
        emitted += await drain(subtask_reader, batch)
    assert sorted(emitted) == list(range(size))


@pytest.mark.anyio
async def test_a_queue_source_keeps_its_read_offset_in_operator_state() -> None:
    from lockgate.connectors import QueueSource

    queue: QueueSource[str] = QueueSource(maxsize=10)
    for item in "abcde":
        queue.put_nowait(item)
    subtask_reader, backend = reader(queue, 0, 1)
    assert await subtask_reader.read(3) == ["a", "b", "c"]
    subtask_reader.snapshot_state(1)
    [restored] = lgs.redistribute([backend.snapshot(0, 1)], 1)
    assert restored["position"].mode == "split"
    assert [lgs.DEFAULT_SERIALIZER.loads(raw) for raw in restored["position"].raw] == [3]


@pytest.mark.anyio
async def test_a_queue_buffer_rewinds_to_a_retained_offset_and_refuses_others() -> None:
    from lockgate.connectors._source import _RecordBuffer

    buffer = _RecordBuffer(maxsize=10)
    buffer.retain = True
    for item in range(6):
        buffer.put_nowait(item)
    assert await buffer.read(4) == [0, 1, 2, 3]
    buffer.acknowledge(2)  # a checkpoint covers records 0 and 1: they need not be kept
    buffer.rewind(2)
    assert buffer.read_offset == 2
    assert await buffer.read(10) == [2, 3, 4, 5]
    with pytest.raises(lg.LockgateError, match="cannot resume at record 1"):
        buffer.rewind(1)
    plain = _RecordBuffer(maxsize=10)  # without retention nothing read can be replayed
    plain.put_nowait("x")
    await plain.read(1)
    plain.rewind(1)  # resuming where it is needs nothing
    with pytest.raises(lg.LockgateError, match="cannot resume at record 0"):
        plain.rewind(0)
