"""Snapshots: each equals the state at its moment on every backend; heap snapshots are copy-on-write
(O(1) to take); a snapshot restores into any backend at any parallelism."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs

MAX_P = 16


ALL_KEY_GROUPS = lgs.KeyGroupRange(0, MAX_P - 1)


def backend_for(key_groups: lgs.KeyGroupRange = ALL_KEY_GROUPS) -> Any:
    return lg.HeapStateBackend().create_keyed_backend("op", key_groups, MAX_P)


def contents(snapshot: lgs.KeyedStateSnapshot, descriptors: dict[str, Any]) -> dict[tuple[str, Any], Any]:
    """What a snapshot holds, decoded: (state, key) -> stored value."""
    decoded = {}
    for name, groups in snapshot.grouped_entries().items():
        codec = lgs.StateCodec(descriptors[name], lambda: 0.0)
        for key_group, entries in groups.items():
            for key, namespace, data in entries:
                assert namespace is None
                assert key_group == lgs.key_group_for(key, MAX_P)  # filed under its own key group
                decoded[name, key] = codec.decode(data)
    return decoded


operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(["v", "l"]), st.integers(0, 3), st.integers(-3, 3)),
        st.tuples(st.just("delete"), st.sampled_from(["v", "l"]), st.integers(0, 3), st.none()),
        st.tuples(st.just("read"), st.sampled_from(["v", "l"]), st.integers(0, 3), st.none()),
        st.tuples(st.just("snapshot"), st.none(), st.none(), st.none()),
        st.tuples(st.just("finish"), st.none(), st.integers(0, 5), st.none()),
    ),
    max_size=60,
)


BACKENDS = {"heap": lg.HeapStateBackend, "rocksdb": lgs.RocksDBStateBackend}


@pytest.mark.anyio
@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_every_snapshot_equals_the_state_at_its_moment(backend_name: str, ops: list[Any]) -> None:
    backend = BACKENDS[backend_name]().create_keyed_backend("op", ALL_KEY_GROUPS, MAX_P)
    try:
        await check_snapshots_against_the_model(backend, ops)
    finally:
        await backend.dispose()


async def check_snapshots_against_the_model(backend: Any, ops: list[Any]) -> None:
    descriptors = {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    value = backend.create_state(descriptors["v"], lgs.ValueState)
    items = backend.create_state(descriptors["l"], lgs.ListState)
    model: dict[tuple[str, Any], Any] = {}
    pending: list[tuple[Any, dict[tuple[str, Any], Any]]] = []
    for op, name, key, number in ops:
        if op == "snapshot":
            pending.append(
                (backend.snapshot_sync(), {k: list(v) if k[0] == "l" else v for k, v in model.items()})
            )
            continue
        if op == "finish":
            if pending:
                resources, expected = pending.pop(key % len(pending))
                try:
                    assert contents(resources.materialize(), descriptors) == expected
                finally:
                    resources.release()
            continue
        backend.current_key = key
        if op == "set" and name == "v":
            value.update_nowait(number)
            model["v", key] = number
        elif op == "set":
            items.add_nowait(number)  # changes the stored list in place: copy-on-write must hold
            model.setdefault(("l", key), []).append(number)
        elif op == "delete":
            (value if name == "v" else items).clear_nowait()
            model.pop((name, key), None)
        elif name == "v":
            assert value.value_nowait() == model.get(("v", key))
        else:
            assert items.get_nowait() == model.get(("l", key), [])
    for resources, expected in pending:
        assert contents(resources.materialize(), descriptors) == expected
        resources.release()
    if isinstance(backend, lgs.HeapKeyedStateBackend):
        # Once every snapshot is released the layers are merged back into one dict per table.
        assert all(not table.frozen for spaces in backend._tables.values() for table in spaces.values())


@settings(max_examples=50, deadline=None)
@given(size=st.integers(0, 2000), touched=st.sets(st.integers(0, 3000), max_size=30))
def test_a_snapshot_copies_nothing_and_later_writes_cost_only_what_they_touch(
    size: int, touched: set[int]
) -> None:
    backend = backend_for()
    state = backend.create_state(lgs.ValueStateDescriptor("v"), lgs.ValueState)
    for key in range(size):
        backend.current_key = key
        state.update_nowait([key])  # mutable values: these must be copied before any change
    table = backend._tables["v"][None]
    live = table.top
    resources = backend.snapshot_sync()
    assert table.frozen[-1] is live  # frozen as it was: no copy of the entries
    assert table.top == {}
    for key in touched:
        backend.current_key = key
        current = state.value_nowait()
        state.update_nowait((current or []) + [-1])
    assert len(table.top) == len(touched)  # O(changed): only touched keys reached the new layer
    snapshot = resources.materialize()
    assert snapshot.entry_count() == size
    assert all(
        lgs.StateCodec(lgs.ValueStateDescriptor("v"), lambda: 0.0).decode(data) == [key]
        for groups in snapshot.grouped_entries().values()
        for group in groups.values()
        for key, _, data in group
    )
    resources.release()
    assert not table.frozen and len(table.top) == len(set(range(size)) | touched)


@pytest.mark.parametrize("parallelism", [1, 2, 3, 5, 16])
def test_restore_at_any_parallelism_takes_exactly_the_subtasks_key_groups(parallelism: int) -> None:
    source = backend_for()
    descriptor = lgs.MapStateDescriptor("m")
    state = source.create_state(descriptor, lgs.MapState)
    for key in range(200):
        source.current_key = f"k{key}"
        state.put_nowait("n", key)
    resources = source.snapshot_sync()
    snapshot = resources.materialize()
    resources.release()
    restored: dict[str, Any] = {}
    for index in range(parallelism):
        key_groups = lgs.KeyGroupRange.for_subtask(MAX_P, parallelism, index)
        target = backend_for(key_groups)
        target.restore([snapshot])
        target_state = target.create_state(lgs.MapStateDescriptor("m"), lgs.MapState)
        for key in range(200):
            target.current_key = f"k{key}"
            found = target_state.get_nowait("n")
            owned = lgs.key_group_for(f"k{key}", MAX_P) in key_groups
            assert (found is not None) == owned
            if owned:
                restored[f"k{key}"] = found
    assert restored == {f"k{key}": key for key in range(200)}


def test_expired_entries_are_left_out_of_snapshots() -> None:
    now = [100.0]
    backend = backend_for()
    backend.clock = lambda: now[0]
    ttl = lg.StateTtlConfig(10)
    descriptors = {"v": lgs.ValueStateDescriptor("v", ttl=ttl), "l": lgs.ListStateDescriptor("l", ttl=ttl)}
    value = backend.create_state(descriptors["v"], lgs.ValueState)
    items = backend.create_state(descriptors["l"], lgs.ListState)
    backend.current_key = "old"
    value.update_nowait(1)
    items.add_nowait("old")
    now[0] = 105.0
    backend.current_key = "new"
    value.update_nowait(2)
    backend.current_key = "old"
    items.add_nowait("new")
    now[0] = 112.0  # "old" entries (t=100) expired, "new" ones (t=105) live
    resources = backend.snapshot_sync()
    snapshot = resources.materialize()
    resources.release()
    decoded = contents(snapshot, descriptors)
    assert {key: stored.value for key, stored in decoded.items() if key[0] == "v"} == {("v", "new"): 2}
    assert [element.value for element in decoded["l", "old"]] == ["new"]


def test_restored_state_nobody_registers_is_kept_in_the_next_snapshot() -> None:
    source = backend_for()
    source.current_key = "k"
    source.create_state(lgs.ValueStateDescriptor("kept"), lgs.ValueState).update_nowait(7)
    resources = source.snapshot_sync()
    first = resources.materialize()
    resources.release()
    target = backend_for()
    target.restore([first])
    target.create_state(lgs.ValueStateDescriptor("other"), lgs.ValueState)
    resources = target.snapshot_sync()
    second = resources.materialize()
    resources.release()
    assert second.states["kept"].kind == "value"
    assert second.grouped_entries()["kept"] == first.grouped_entries()["kept"]


def test_restore_refuses_another_max_parallelism_or_kind() -> None:
    source = backend_for()
    source.current_key = "k"
    source.create_state(lgs.ValueStateDescriptor("s"), lgs.ValueState).update_nowait(1)
    resources = source.snapshot_sync()
    snapshot = resources.materialize()
    resources.release()
    other = lg.HeapStateBackend().create_keyed_backend("op", lgs.KeyGroupRange(0, 31), 32)
    with pytest.raises(lg.ConfigurationError, match="max_parallelism 16"):
        other.restore([snapshot])
    target = backend_for()
    target.restore([snapshot])
    with pytest.raises(lg.ConfigurationError, match="was value state when it was saved"):
        target.create_state(lgs.ListStateDescriptor("s"), lgs.ListState)


@pytest.mark.anyio
async def test_snapshot_runs_its_heavy_part_off_the_event_loop() -> None:
    backend = backend_for()
    state = backend.create_state(lgs.ValueStateDescriptor("v"), lgs.ValueState)
    for key in range(100):
        backend.current_key = key
        state.update_nowait(key)
    snapshot = await backend.snapshot()
    assert snapshot.entry_count() == 100
    assert not backend._tables["v"][None].frozen  # released afterwards


@pytest.mark.anyio
@pytest.mark.parametrize(("source_name", "target_name"), [("heap", "rocksdb"), ("rocksdb", "heap")])
async def test_a_snapshot_of_one_backend_restores_into_the_other_at_another_parallelism(
    source_name: str, target_name: str
) -> None:
    clock = lambda: 50.0  # noqa: E731 - a fixed time for the TTL state
    kinds: dict[str, Any] = {"v": lgs.ValueState, "l": lgs.ListState, "m": lgs.MapState, "t": lgs.ValueState}
    descriptors = {
        "v": lgs.ValueStateDescriptor("v"),
        "l": lgs.ListStateDescriptor("l"),
        "m": lgs.MapStateDescriptor("m"),
        "t": lgs.ValueStateDescriptor("t", ttl=lg.StateTtlConfig(100)),
    }
    source = BACKENDS[source_name]().create_keyed_backend("op", ALL_KEY_GROUPS, MAX_P)
    source.clock = clock
    try:
        states = {name: source.create_state(d, kinds[name]) for name, d in descriptors.items()}
        keys: list[Any] = [f"k{i}" for i in range(40)] + [7, (1, "a"), None, b"raw"]
        for key in keys:
            source.current_key = key
            states["v"].update_nowait({"key": key})
            states["l"].add_all_nowait([key, key])
            states["m"].put_nowait("self", key)
            states["t"].update_nowait(1)
        snapshot = await source.snapshot()
    finally:
        await source.dispose()
    for parallelism in (1, 3):
        for index in range(parallelism):
            key_groups = lgs.KeyGroupRange.for_subtask(MAX_P, parallelism, index)
            target = BACKENDS[target_name]().create_keyed_backend("op", key_groups, MAX_P)
            target.clock = clock
            try:
                target.restore([snapshot])
                restored = {name: target.create_state(d, kinds[name]) for name, d in descriptors.items()}
                for key in keys:
                    target.current_key = key
                    if lgs.key_group_for(key, MAX_P) not in key_groups:
                        assert restored["v"].value_nowait() is None
                        continue
                    assert restored["v"].value_nowait() == {"key": key}
                    assert restored["l"].get_nowait() == [key, key]
                    assert restored["m"].get_nowait("self") == key
                    assert restored["t"].value_nowait() == 1
            finally:
                await target.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_writes_while_the_asynchronous_part_runs_do_not_reach_the_snapshot(backend_name: str) -> None:
    import anyio
    import anyio.lowlevel
    import anyio.to_thread

    backend = BACKENDS[backend_name]().create_keyed_backend("op", ALL_KEY_GROUPS, MAX_P)
    descriptor = lgs.ValueStateDescriptor("v")
    try:
        state = backend.create_state(descriptor, lgs.ValueState)
        for key in range(3000):
            backend.current_key = key
            state.update_nowait([key])
        resources = backend.snapshot_sync()
        snapshots: list[lgs.KeyedStateSnapshot] = []

        async def materialize() -> None:
            snapshots.append(await anyio.to_thread.run_sync(resources.materialize))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(materialize)
            for key in range(3000):  # the stream goes on: overwrite, change in place, delete
                backend.current_key = key
                if key % 3 == 0:
                    state.update_nowait([-key])
                elif key % 3 == 1:
                    state.value_nowait().append(-key)
                else:
                    state.clear_nowait()
                if key % 50 == 0:
                    await anyio.lowlevel.checkpoint()
        resources.release()
        assert contents(snapshots[0], {"v": descriptor}) == {("v", key): [key] for key in range(3000)}
    finally:
        await backend.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("incremental", [False, True])
async def test_a_batch_that_changes_values_in_place_after_a_snapshot_does_not_reach_it(
    backend_name: str, incremental: bool
) -> None:
    """``map_batch_nowait`` (map_with_state's loop) reads values a snapshot froze: it must take its own
    copy before the step changes it, as ``value_nowait`` does."""
    make = BACKENDS[backend_name]
    backend = (make(incremental=incremental) if backend_name == "heap" else make()).create_keyed_backend(
        "op", ALL_KEY_GROUPS, MAX_P
    )
    descriptor = lgs.ValueStateDescriptor("v", default=[])

    def append(record: int, seen: list[int]) -> tuple[int, list[int]]:
        seen.append(record)
        return len(seen), seen

    try:
        state = backend.create_state(descriptor, lgs.ValueState)
        keys = list(range(50))
        assert state.map_batch_nowait(keys, keys, append) == [1] * 50
        resources = backend.snapshot_sync()
        assert state.map_batch_nowait(keys, [-key for key in keys], append) == [2] * 50
        snapshot = resources.materialize()
        resources.release()
        assert contents(snapshot, {"v": descriptor}) == {("v", key): [key] for key in keys}
        backend.current_key = 7
        assert state.value_nowait() == [7, -7]
    finally:
        await backend.dispose()


def test_a_heap_snapshot_holds_plain_states_whole_and_encodes_the_others() -> None:
    """States of the default serializer without TTL are kept as their values (pickled in one call);
    the rest entry by entry. Both restore alike, and values only cloudpickle can write survive."""
    backend = backend_for()
    plain = backend.create_state(lg.ValueStateDescriptor("plain"), lg.ValueState)
    timed = backend.create_state(lg.ValueStateDescriptor("timed", ttl=lg.StateTtlConfig(3600)), lg.ValueState)
    for key in range(20):
        backend.current_key = key
        plain.update_nowait(lambda key=key: key * 2)  # a lambda: plain pickle cannot write it
        timed.update_nowait(key)
    resources = backend.snapshot_sync()
    try:
        data = resources.encode()
    finally:
        resources.release()
    snapshot = pickle.loads(data)
    assert set(snapshot.tables) == {"plain"} and set(snapshot.entries) == {"timed"}
    assert snapshot.entry_count() == 40
    restored = backend_for()
    restored.restore([snapshot])
    plain_again = restored.create_state(lg.ValueStateDescriptor("plain"), lg.ValueState)
    timed_again = restored.create_state(
        lg.ValueStateDescriptor("timed", ttl=lg.StateTtlConfig(3600)), lg.ValueState
    )
    restored.current_key = 7
    assert plain_again.value_nowait()() == 14
    assert timed_again.value_nowait() == 7
