"""A collection source keeps its position in operator state: restored at any parallelism, it emits
exactly the items it had not emitted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate import state as lgs
from lockgate.actors._context import SubtaskContext
from lockgate.connectors import CollectionSource


def reader(source: CollectionSource[int], index: int, parallelism: int, restored: Any = None) -> Any:
    backend = lgs.OperatorStateBackend("src", restored)
    ctx = SubtaskContext("src", "src", index, parallelism, 128, operator_backend=backend)
    return source.create_reader(ctx), backend


async def drain(reader: Any, batch: int, limit: int | None = None) -> list[int]:
    emitted: list[int] = []
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
            subtask_reader.snapshot_state()
            snapshots.append(backend.snapshot(index, parallelism))
        restored = lgs.redistribute(snapshots, parallelisms[stage + 1])
    for index in range(final):
        subtask_reader, _ = reader(source, index, final, restored[index] if restored else None)
        emitted += await drain(subtask_reader, batch)
    assert sorted(emitted) == list(range(size))
