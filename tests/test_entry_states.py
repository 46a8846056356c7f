"""Map and list state, kept by RocksDB one entry per map entry or element, behave like a dict and a
list model on both backends for any sequence of operations: inside and outside the runtime's batches,
in several namespaces, under TTL with time passing, and across checkpoints restored into either backend
at another parallelism."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from tests.test_state_contract import Clock, TtlModel, ttl_configs

pytestmark = pytest.mark.anyio

MAX_P = 16
BACKENDS = {"heap": lg.HeapStateBackend, "rocksdb": lgs.RocksDBStateBackend}


@dataclass(frozen=True)
class Point:
    x: int


# Keys that do not decode from their canonical bytes (2.0, True, a dataclass) are stored pickled.
keys = st.sampled_from(["a", "b", 3, (1, "x"), 2.0, Point(1)])
user_keys = st.sampled_from(["x", "y", 7, None, (2, "z"), True, Point(2)])
values = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=2))

operation = st.one_of(
    st.tuples(st.just("put"), keys, user_keys, values),
    st.tuples(st.just("put_all"), keys, user_keys, values),
    st.tuples(st.just("get"), keys, user_keys, st.none()),
    st.tuples(st.just("contains"), keys, user_keys, st.none()),
    st.tuples(st.just("remove"), keys, user_keys, st.none()),
    st.tuples(st.just("clear"), keys, st.none(), st.none()),
    st.tuples(st.just("items"), keys, st.none(), st.none()),
    st.tuples(st.just("is_empty"), keys, st.none(), st.none()),
    st.tuples(st.just("namespace"), st.none(), st.sampled_from([None, "w1"]), st.none()),
    st.tuples(st.just("advance"), st.none(), st.none(), st.sampled_from([3.0, 7.0])),
    st.tuples(st.just("checkpoint"), st.sampled_from(list(BACKENDS)), st.integers(1, 3), st.none()),
)


def in_segments(operations: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Runs of operations, each inside one of the runtime's batches (over the keys it touches) or
    outside any: flattened, with ("batch", keys) and ("end_batch",) around the runs in a batch."""

    def flatten(segments: list[tuple[bool, list[Any]]]) -> list[Any]:
        flat: list[Any] = []
        for batched, run in segments:
            if batched:
                touched = [op[1] for op in run if op[0] not in ("namespace", "advance", "checkpoint")]
                flat.append(("batch", touched, None, None))
            flat += run
            if batched:
                flat.append(("end_batch", None, None, None))
        return flat

    segment = st.tuples(st.booleans(), st.lists(operations, min_size=1, max_size=8))
    return st.lists(segment, max_size=6).map(flatten)


class Subtasks:
    """The keyed backends of one map state at some parallelism; each key goes to its key group's owner."""

    def __init__(
        self, backend_name: str, parallelism: int, ttl: Any, clock: Clock, kind: str = "map"
    ) -> None:
        self.clock = clock
        self.kind = kind
        self.descriptor: Any = (
            lgs.MapStateDescriptor("m", ttl=ttl) if kind == "map" else lgs.ListStateDescriptor("m", ttl=ttl)
        )
        self.parallelism = parallelism
        self.backends = [
            BACKENDS[backend_name]().create_keyed_backend(
                "op", lgs.KeyGroupRange.for_subtask(MAX_P, parallelism, index), MAX_P
            )
            for index in range(parallelism)
        ]
        for backend in self.backends:
            backend.clock = clock
        self.states: list[Any] = []
        self.in_batch = False

    def register(self) -> None:
        state_type = lgs.MapState if self.kind == "map" else lgs.ListState
        self.states = [backend.create_state(self.descriptor, state_type) for backend in self.backends]

    def state_for(self, key: Any, namespace: Any) -> Any:
        index = lgs.subtask_for_key_group(MAX_P, self.parallelism, lgs.key_group_for(key, MAX_P))
        self.backends[index].current_key = key
        state = self.states[index]
        state.namespace = namespace
        return state

    async def open_batch(self, batch_keys: list[Any]) -> None:
        await self.close_batch()
        for backend in self.backends:
            await backend.prepare_batch(batch_keys)
        self.in_batch = True

    async def close_batch(self) -> None:
        if self.in_batch:
            for backend in self.backends:
                await backend.finish_batch()
            self.in_batch = False

    async def snapshots(self) -> list[Any]:
        await self.close_batch()
        return [await backend.snapshot() for backend in self.backends]

    async def dispose(self) -> None:
        for backend in self.backends:
            await backend.dispose()


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ttl=ttl_configs, ops=in_segments(operation))
async def test_map_state_matches_a_dict_across_batches_namespaces_ttl_and_restores(
    backend_name: str, ttl: Any, ops: list[Any]
) -> None:
    clock = Clock()
    rules = TtlModel(ttl, clock)
    subtasks = Subtasks(backend_name, 1, ttl, clock)
    subtasks.register()
    model: dict[tuple[Any, Any], dict[Any, tuple[Any, float]]] = {}
    namespace: Any = None

    def visible(key: Any, user_key_list: list[Any]) -> dict[Any, Any]:
        entries = model.setdefault((key, namespace), {})
        shown = {}
        for user_key in user_key_list:
            if user_key not in entries:
                continue
            seen, keep = rules.read(entries[user_key])
            if seen:
                shown[user_key] = entries[user_key][0]
            if keep is None:
                del entries[user_key]
            else:
                entries[user_key] = keep
        return shown

    try:
        for op, a, b, c in ops:
            if op == "namespace":
                namespace = b
                continue
            if op == "advance":
                clock.now += c
                continue
            if op == "batch":
                await subtasks.open_batch(a)
                continue
            if op == "end_batch":
                await subtasks.close_batch()
                continue
            if op == "checkpoint":
                target, parallelism = a, b
                snapshots = await subtasks.snapshots()
                await subtasks.dispose()
                subtasks = Subtasks(target, parallelism, ttl, clock)
                for backend in subtasks.backends:
                    backend.restore(snapshots)
                subtasks.register()
                # A snapshot leaves expired entries out: they are gone, visible or not before.
                for entries in model.values():
                    for user_key in [uk for uk, entry in entries.items() if not rules.fresh(entry)]:
                        del entries[user_key]
                continue
            key, user_key, value = a, b, c
            state = subtasks.state_for(key, namespace)
            entries = model.setdefault((key, namespace), {})
            if op == "put":
                state.put_nowait(user_key, value)
                entries[user_key] = (value, clock.now)
            elif op == "put_all":
                await state.put_all({user_key: value, "z": value})
                entries[user_key] = entries["z"] = (value, clock.now)
            elif op == "get":
                assert state.get_nowait(user_key) == visible(key, [user_key]).get(user_key)
            elif op == "contains":
                assert await state.contains(user_key) == (user_key in visible(key, [user_key]))
            elif op == "remove":
                state.remove_nowait(user_key)
                entries.pop(user_key, None)
            elif op == "clear":
                await state.clear()
                entries.clear()
            elif op == "items":
                got = [item async for item in state.items()]
                expected = visible(key, list(entries))
                assert len(got) == len(expected) and dict(got) == expected
            else:
                assert state.is_empty_nowait() == (not visible(key, list(entries)))
        await subtasks.close_batch()
    finally:
        await subtasks.dispose()


async def test_a_rocksdb_snapshot_leaves_expired_map_entries_out() -> None:
    clock = Clock()
    ttl = lg.StateTtlConfig(10, visibility=lg.StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
    descriptor = lgs.MapStateDescriptor("m", ttl=ttl)
    backend = lgs.RocksDBStateBackend(incremental=False).create_keyed_backend(
        "op", lgs.KeyGroupRange(0, MAX_P - 1), MAX_P
    )
    backend.clock = clock
    try:
        state = backend.create_state(descriptor, lgs.MapState)
        backend.current_key = "gone"
        state.put_nowait("old", 3)
        backend.current_key = "k"
        state.put_nowait("old", 1)
        clock.now += 6
        state.put_nowait("new", 2)
        clock.now += 6  # the "old" entries have expired, "new" has not
        snapshot = await backend.snapshot()
    finally:
        await backend.dispose()
    codec = lgs.StateCodec(descriptor, clock)
    maps = {
        key: {user_key: entry.value for user_key, entry in codec.decode(data).items()}
        for groups in snapshot.grouped_entries().values()
        for entries in groups.values()
        for key, _, data in entries
    }
    assert maps == {"k": {"new": 2}}


def test_an_incremental_checkpoint_of_the_old_map_layout_is_refused_saying_what_to_do() -> None:
    from lockgate.state.rocksdb._native import RocksDBManifest

    meta = lgs.StateMetaInfo("m", "map", lgs.PickleSerializer().snapshot(), None)
    old = RocksDBManifest("op", MAX_P, lgs.KeyGroupRange(0, MAX_P - 1), {"m": meta}, {}, {})  # no layout
    with pytest.raises(lg.CheckpointError, match=r"older lockgate.*\['m'\].*savepoint"):
        old.download({})


list_keys = st.sampled_from(["a", 3, Point(1)])
list_operation = st.one_of(
    st.tuples(st.just("add"), list_keys, values, st.none()),
    st.tuples(st.just("add_all"), list_keys, st.lists(values, max_size=3), st.none()),
    st.tuples(st.just("update"), list_keys, st.lists(values, max_size=3), st.none()),
    st.tuples(st.just("get"), list_keys, st.none(), st.none()),
    st.tuples(st.just("clear"), list_keys, st.none(), st.none()),
    st.tuples(st.just("namespace"), st.none(), st.sampled_from([None, "w1"]), st.none()),
    st.tuples(st.just("advance"), st.none(), st.none(), st.sampled_from([3.0, 7.0])),
    st.tuples(st.just("checkpoint"), st.sampled_from(list(BACKENDS)), st.integers(1, 3), st.none()),
)


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ttl=ttl_configs, ops=in_segments(list_operation))
async def test_list_state_matches_a_list_across_batches_namespaces_ttl_and_restores(
    backend_name: str, ttl: Any, ops: list[Any]
) -> None:
    clock = Clock()
    rules = TtlModel(ttl, clock)
    subtasks = Subtasks(backend_name, 1, ttl, clock, "list")
    subtasks.register()
    model: dict[tuple[Any, Any], list[tuple[Any, float]]] = {}
    namespace: Any = None
    try:
        for op, a, b, c in ops:
            if op == "namespace":
                namespace = b
            elif op == "advance":
                clock.now += c
            elif op == "batch":
                await subtasks.open_batch(a)
            elif op == "end_batch":
                await subtasks.close_batch()
            elif op == "checkpoint":
                snapshots = await subtasks.snapshots()
                await subtasks.dispose()
                subtasks = Subtasks(a, b, ttl, clock, "list")
                for backend in subtasks.backends:
                    backend.restore(snapshots)
                subtasks.register()
                for elements in model.values():
                    elements[:] = [element for element in elements if rules.fresh(element)]
            else:
                key = a
                state = subtasks.state_for(key, namespace)
                elements = model.setdefault((key, namespace), [])
                if op == "add":
                    state.add_nowait(b)
                    elements.append((b, clock.now))
                elif op == "add_all":
                    await state.add_all(b)
                    elements.extend((value, clock.now) for value in b)
                elif op == "update":
                    state.update_nowait(b)
                    elements[:] = [(value, clock.now) for value in b]
                elif op == "clear":
                    await state.clear()
                    elements.clear()
                else:
                    expected, kept = [], []
                    for element in elements:
                        seen, keep = rules.read(element)
                        if seen:
                            expected.append(element[0])
                        if keep is not None:
                            kept.append(keep)
                    elements[:] = kept
                    assert (state.get_nowait() if c is None else await state.get()) == expected
        await subtasks.close_batch()
    finally:
        await subtasks.dispose()


async def test_maps_and_lists_longer_than_a_scan_chunk_read_whole_and_in_order() -> None:
    backend = lgs.RocksDBStateBackend().create_keyed_backend("op", lgs.KeyGroupRange(0, MAX_P - 1), MAX_P)
    try:
        entries = backend.create_state(lgs.MapStateDescriptor("m"), lgs.MapState)
        elements = backend.create_state(lgs.ListStateDescriptor("l"), lgs.ListState)
        backend.current_key = "k"
        for n in range(1500):  # three chunks of 512 and a part
            entries.put_nowait(n, -n)
            elements.add_nowait(n)
        await backend.prepare_batch(["k"])
        backend.current_key = "k"
        entries.remove_nowait(700)  # buffered in the batch, in the middle of the second chunk
        entries.put_nowait(1500, -1500)
        elements.add_nowait(1500)
        assert entries.to_dict_nowait() == {n: -n for n in range(1501) if n != 700}
        assert elements.get_nowait() == list(range(1501))
        await backend.finish_batch()
        keys = [user_key async for user_key in entries.keys()]  # noqa: SIM118 - an async iterator
        assert sorted(keys) == [n for n in range(1501) if n != 700]
        assert elements.get_nowait() == list(range(1501))
    finally:
        await backend.dispose()
