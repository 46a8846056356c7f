"""Operator state: list, union list and broadcast state, their redistribution on rescale, and the
broadcast state pattern in a running job."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from lockgate.actors._context import SubtaskContext
from lockgate.actors._operators import create_operator
from lockgate.graph import ProcessSpec

LIST = lgs.ListStateDescriptor("buffer")
UNION = lgs.ListStateDescriptor("offsets")
RULES = lgs.MapStateDescriptor("rules")


def snapshots_of(contents: list[tuple[list[int], list[int], dict[str, int]]]) -> list[Any]:
    snapshots = []
    for index, (elements, offsets, rules) in enumerate(contents):
        backend = lgs.OperatorStateBackend("op")
        backend.get_list_state(LIST).update_nowait(elements)
        backend.get_union_list_state(UNION).update_nowait(offsets)
        broadcast = backend.get_broadcast_state(RULES)
        for key, value in rules.items():
            broadcast.put_nowait(key, value)
        snapshots.append(backend.snapshot(index, len(contents)))
    return snapshots


@given(
    lists=st.lists(
        st.tuples(st.lists(st.integers()), st.lists(st.integers(), max_size=3)), min_size=1, max_size=5
    ),
    rules=st.dictionaries(st.text(max_size=3), st.integers(), max_size=4),
    parallelism=st.integers(1, 8),
)
def test_rescaling_splits_list_state_evenly_and_gives_union_and_broadcast_state_whole(
    lists: list[tuple[list[int], list[int]]], rules: dict[str, int], parallelism: int
) -> None:
    old = snapshots_of([(elements, offsets, rules) for elements, offsets in lists])
    restored = [lgs.OperatorStateBackend("op", part) for part in lgs.redistribute(old, parallelism)]
    parts = [backend.get_list_state(LIST).get_nowait() for backend in restored]
    # Split: every element exactly once, in order, in parts whose sizes differ by at most one.
    assert [element for part in parts for element in part] == [e for elements, _ in lists for e in elements]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    all_offsets = [offset for _, offsets in lists for offset in offsets]
    for backend in restored:
        assert backend.is_restored
        assert backend.get_union_list_state(UNION).get_nowait() == all_offsets
        assert backend.get_broadcast_state(RULES).to_dict_nowait() == rules


def test_a_state_saved_in_one_mode_cannot_be_read_in_another() -> None:
    [restored] = lgs.redistribute(snapshots_of([([1], [2], {})]), 1)
    backend = lgs.OperatorStateBackend("op", restored)
    with pytest.raises(lg.ConfigurationError, match="was split state when it was saved"):
        backend.get_union_list_state(LIST)


class Buffering(lg.ProcessFunction[int, int]):
    """Keeps the records it saw in a plain attribute and moves them to operator state on snapshot."""

    def initialize_state(self, ctx: lg.RuntimeContext) -> None:
        self.state = ctx.get_list_state(lgs.ListStateDescriptor("seen"))
        self.restored = ctx.is_restored
        self.seen = self.state.get_nowait()

    def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
        self.seen.append(value)
        yield len(self.seen)

    def snapshot_state(self, ctx: lg.RuntimeContext) -> None:
        self.state.update_nowait(self.seen)


@pytest.mark.anyio
async def test_a_process_function_snapshots_and_restores_its_operator_state_at_another_parallelism() -> None:
    def operator(index: int, parallelism: int, restored: Any = None) -> Any:
        ctx = SubtaskContext(
            "buffering",
            "buffering",
            index,
            parallelism,
            16,
            operator_backend=lgs.OperatorStateBackend("buffering", restored),
        )
        return create_operator(ProcessSpec(Buffering()), ctx)

    first = [operator(index, 2) for index in range(2)]
    for op in first:
        await op.open()
    assert await first[0].process_batch([1, 2, 3]) == [1, 2, 3]
    assert await first[1].process_batch([4]) == [1]
    snapshots = [op.snapshot_operator_state() for op in first]
    second = [operator(index, 3, part) for index, part in enumerate(lgs.redistribute(snapshots, 3))]
    for op in second:
        await op.open()
    assert all(op._function.restored for op in second)
    assert sorted(value for op in second for value in op._function.seen) == [1, 2, 3, 4]
    assert [len(op._function.seen) for op in second] in ([1, 1, 2], [1, 2, 1], [2, 1, 1])


class Thresholds(lg.BroadcastProcessFunction[int, tuple[str, int], Any]):
    """Broadcast records set named thresholds; records report which thresholds they exceed."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.index = ctx.subtask_index

    async def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
        rules = ctx.get_broadcast_state(RULES)
        exceeded = sorted([name async for name, limit in rules.items() if value > limit])
        yield ("value", value, tuple(exceeded))

    def process_broadcast_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        ctx.get_broadcast_state(RULES).put_nowait(*value)
        yield ("rule", self.index, value)


@pytest.mark.anyio
@pytest.mark.parametrize("parallelism", [1, 3])
async def test_the_broadcast_state_pattern_gives_every_subtask_every_rule(parallelism: int) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism)
    rules = env.from_collection([("low", 10), ("high", 100)], uid="rules")
    values = env.from_collection(range(0, 200, 7), uid="values").rebalance().map(lambda v: v, uid="spread")
    out = values.connect(rules).process(Thresholds(), uid="thresholds").sink(lg.CollectSink())
    await env.execute("broadcast")
    rule_records = [record for record in out.results if record[0] == "rule"]
    assert Counter((index, rule) for _, index, rule in rule_records) == Counter(
        (index, rule) for index in range(parallelism) for rule in [("low", 10), ("high", 100)]
    )
    value_records = [record for record in out.results if record[0] == "value"]
    assert sorted(value for _, value, _ in value_records) == list(range(0, 200, 7))
    for _, value, exceeded in value_records:  # whatever rules had arrived, each was applied right
        assert set(exceeded) <= {name for name, limit in [("low", 10), ("high", 100)] if value > limit}


class WritesOnTheWrongSide(Thresholds):
    def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
        ctx.get_broadcast_state(RULES).put_nowait("sneaky", value)
        yield value


@pytest.mark.anyio
async def test_broadcast_state_is_read_only_for_the_other_input() -> None:
    env = lg.StreamEnvironment()
    out = (
        env.from_collection([1])
        .connect(env.from_collection([("r", 1)]))
        .process(WritesOnTheWrongSide(), uid="wrong")
    )
    out.sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'wrong'") as failure:
        await env.execute("read-only")
    assert isinstance(failure.value.__cause__, lg.ConfigurationError)
    assert "process_broadcast_element" in str(failure.value.__cause__)


def test_connect_needs_a_broadcast_process_function() -> None:
    env = lg.StreamEnvironment()
    connected = env.from_collection([1]).connect(env.from_collection([2]))
    with pytest.raises(lg.ConfigurationError, match="BroadcastProcessFunction"):
        connected.process(Buffering())  # type: ignore[arg-type]
