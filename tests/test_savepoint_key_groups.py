"""A savepoint's keyed state file, key group by key group (metadata version 5: the tables of a state of
the default serializer without TTL pickled together, each other state's tables of value bytes by
namespace and key, timers as entries): written at one parallelism and restored at another, on either
backend, every key comes back in the subtask that owns it, and nowhere else."""

from __future__ import annotations

import io
import pickle
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from lockgate.state._snapshot import (
    KeyedStateSnapshot,
    StateMetaInfo,
    encode_canonical,
    load_keyed_state,
    read_key_groups,
    unpack_tables,
)
from tests._sources import GUARD, PausingSource

pytestmark = pytest.mark.anyio

MAX_PARALLELISM = 16
BACKENDS = {"heap": lg.HeapStateBackend, "rocksdb": lgs.RocksDBStateBackend}
WINDOW = lg.TimeWindow(0, 10)


@dataclass(frozen=True)
class Reading:
    amount: int


def declare(backend: lg.KeyedStateBackend) -> dict[str, Any]:
    """One state of each way a snapshot holds it: values in tables (the default serializer), a typed
    serializer's bytes in tables, entries (TTL), a list, and a window's namespace of a value state."""
    return {
        "plain": backend.create_state(lg.ValueStateDescriptor[int]("plain"), lgs.ValueState),
        "typed": backend.create_state(
            lg.ValueStateDescriptor[Reading]("typed", serializer=lg.DataclassSerializer(Reading)),
            lgs.ValueState,
        ),
        "timed": backend.create_state(
            lg.ValueStateDescriptor[int]("timed", ttl=lg.StateTtlConfig(3600)), lgs.ValueState
        ),
        "items": backend.create_state(lg.ListStateDescriptor[int]("items"), lgs.ListState),
        "windowed": backend.create_state(
            lg.ValueStateDescriptor[int]("windowed"), lgs.ValueState, namespaced=True
        ),
    }


def owner(key: Any, parallelism: int) -> int:
    return lgs.key_group_for(key, MAX_PARALLELISM) * parallelism // MAX_PARALLELISM


def backend_of(kind: str, parallelism: int, index: int) -> lg.KeyedStateBackend:
    key_groups = lgs.KeyGroupRange.for_subtask(MAX_PARALLELISM, parallelism, index)
    return BACKENDS[kind]().create_keyed_backend("op", key_groups, MAX_PARALLELISM)


async def fill(backend: lg.KeyedStateBackend, keys: list[Any], owned: int = 0, parallelism: int = 1) -> None:
    """Give each of ``keys`` that subtask ``owned`` of ``parallelism`` owns its values (see expected)."""
    states = declare(backend)
    timers = backend.timer_queue("event")
    for number, key in enumerate(keys):
        if owner(key, parallelism) != owned:
            continue
        backend.current_key = key
        await states["plain"].update(number)
        await states["typed"].update(Reading(number))
        await states["timed"].update(-number)
        await states["items"].add(number)
        await states["items"].add(number + 1)
        states["windowed"].namespace = WINDOW
        await states["windowed"].update(2 * number)
        timers.add(100 + number, key, None)
        timers.add(200 + number, key, WINDOW)


async def read_back(backend: lg.KeyedStateBackend, keys: list[Any]) -> dict[Any, tuple[Any, ...]]:
    """What each of ``keys`` holds in ``backend``, for the keys that hold anything."""
    states = declare(backend)
    held = {}
    for key in keys:
        backend.current_key = key
        states["windowed"].namespace = WINDOW
        found = (
            await states["plain"].value(),
            await states["typed"].value(),
            await states["timed"].value(),
            await states["items"].get(),
            await states["windowed"].value(),
        )
        if found != (None, None, None, None, None) and found != (None, None, None, [], None):
            held[key] = found
    return held


def expected(keys: list[Any]) -> dict[Any, tuple[Any, ...]]:
    return {
        key: (number, Reading(number), -number, [number, number + 1], 2 * number)
        for number, key in enumerate(keys)
    }


def savepoint_file(backend: lg.KeyedStateBackend) -> bytes:
    """A keyed state file as a savepoint holds it."""
    resources = backend.snapshot_sync(1)
    try:
        return resources.encode(canonical=True)
    finally:
        resources.release()


async def savepoint_files(backend: str, keys: list[Any], written_at: int) -> list[bytes]:
    """The keyed state files of a savepoint of ``keys`` taken at parallelism ``written_at``."""
    writers = [backend_of(backend, written_at, index) for index in range(written_at)]
    try:
        for index, writer in enumerate(writers):
            await fill(writer, keys, index, written_at)
        return [savepoint_file(writer) for writer in writers]
    finally:
        await disposed(writers)


async def disposed(backends: list[lg.KeyedStateBackend]) -> None:
    for backend in backends:
        await backend.dispose()


keys = st.lists(
    st.text(max_size=4) | st.integers(-(2**40), 2**40) | st.tuples(st.text(max_size=2), st.integers(0, 9)),
    unique=True,
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=keys,
    written_at=st.integers(1, 4),
    restored_at=st.integers(1, 5),
    backends=st.sampled_from([("heap", "heap"), ("heap", "rocksdb"), ("rocksdb", "heap")]),
    packed=st.booleans(),
)
async def test_every_key_comes_back_in_its_owner_at_any_parallelism(
    keys: list[Any], written_at: int, restored_at: int, backends: tuple[str, str], packed: bool
) -> None:
    """``packed``: the files loaded as a restore loads them, packed tables unpickled only by the
    subtask that takes their key group; otherwise entry by entry, as the offline reader has them."""
    files = await savepoint_files(backends[0], keys, written_at)
    snapshots = [load_keyed_state(io.BytesIO(data), packed=packed) for data in files]

    every_key = expected(keys)
    readers = [backend_of(backends[1], restored_at, index) for index in range(restored_at)]
    try:
        for index, reader in enumerate(readers):
            reader.restore(snapshots)  # type: ignore[arg-type]
            own = {key: held for key, held in every_key.items() if owner(key, restored_at) == index}
            assert await read_back(reader, keys) == own
            timers = reader.timer_queue("event")
            fired = set()
            while (timer := timers.poll(10**9)) is not None:
                fired.add(timer)
            assert fired == {
                (offset + number, key, namespace)
                for number, key in enumerate(keys)
                if key in own
                for offset, namespace in ((100, None), (200, WINDOW))
            }
    finally:
        await disposed(readers)


#: The states ``declare`` makes that a heap savepoint packs: the default serializer, no TTL.
PACKED = {"plain", "items", "windowed"}


async def test_a_key_group_holds_each_state_s_tables_and_the_timers_entries() -> None:
    backend = backend_of("heap", 1, 0)
    await fill(backend, ["a", "b", 7])
    stream = io.BytesIO(savepoint_file(backend))
    header = pickle.load(stream)
    assert header.chunked and header.entries == {} and header.tables == {}
    seen = set()
    for key_group, held in iter(lambda: _next_chunk(stream), None):
        for name, form in held.items():
            seen.add(name)
            if name.startswith("_timers/"):
                assert type(form) is list and all(type(entry) is tuple for entry in form)
                continue
            if name in PACKED:  # the keys, and one pickle of the values themselves
                assert type(form) is tuple and type(form[1]) is bytes
                assert {namespace: sorted(keys, key=repr) for namespace, keys in form[0].items()} == {
                    namespace: sorted(table, key=repr) for namespace, table in unpack_tables(form).items()
                }
                form = unpack_tables(form)
                value_types = {list} if name == "items" else {int}
            else:
                value_types = {bytes}
            assert type(form) is dict and all(type(table) is dict and table for table in form.values())
            for namespace, table in form.items():
                assert namespace in (None, WINDOW) and set(map(type, table.values())) == value_types
                assert {lgs.key_group_for(key, MAX_PARALLELISM) for key in table} == {key_group}
    assert seen == {"plain", "typed", "timed", "items", "windowed", "_timers/event"}


def _next_chunk(stream: io.BytesIO) -> Any:
    try:
        return pickle.load(stream)
    except EOFError:
        return None


async def test_a_savepoint_file_written_with_lists_of_entries_reads_as_one_written_with_tables() -> None:
    """Metadata version 2 held every state of a key group as a list of entries: still read."""
    backend = backend_of("heap", 1, 0)
    await fill(backend, ["a", "b", 7, ("t", 1)])
    tables = savepoint_file(backend)
    stream = io.BytesIO(tables)
    header = pickle.load(stream)
    lists = pickle.dumps(header, protocol=5) + b"".join(
        pickle.dumps(chunk, protocol=5) for chunk in read_key_groups(stream, header.states)
    )
    old, new = load_keyed_state(io.BytesIO(lists)), load_keyed_state(io.BytesIO(tables))
    assert isinstance(old, KeyedStateSnapshot) and isinstance(new, KeyedStateSnapshot)
    assert _sorted_entries(old) == _sorted_entries(new) and _sorted_entries(new)["plain"]


def _sorted_entries(snapshot: KeyedStateSnapshot) -> dict[str, dict[int, list[Any]]]:
    return {
        name: {key_group: sorted(group, key=repr) for key_group, group in groups.items()}
        for name, groups in snapshot.entries.items()
    }


async def test_a_value_only_cloudpickle_writes_is_saved_and_one_nothing_writes_is_named() -> None:
    backend = backend_of("heap", 1, 0)
    plain = backend.create_state(lg.ValueStateDescriptor[Any]("plain"), lgs.ValueState)
    offset = 5
    for key, value in (("a", 1), ("f", lambda x: x + offset), ("b", 2)):  # a closure: cloudpickle only
        backend.current_key = key
        await plain.update(value)
    restored = backend_of("heap", 1, 0)
    restored.restore([load_keyed_state(io.BytesIO(savepoint_file(backend)))])  # type: ignore[list-item]
    state = restored.create_state(lg.ValueStateDescriptor[Any]("plain"), lgs.ValueState)
    restored.current_key = "f"
    assert (await state.value())(1) == 6

    backend.current_key = "lock"
    await plain.update(threading.Lock())  # neither pickle nor cloudpickle writes it
    with pytest.raises(lg.StateSerializationError) as raised:
        savepoint_file(backend)
    assert (raised.value.state, raised.value.key) == ("plain", "lock")


# ---- packed tables (metadata version 5): any tables, any kind


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3), children, max_size=3)
        | st.tuples(children, children)
    ),
    max_leaves=6,
)
#: A stored value of each kind a packed state may have: a value, a list of elements, a map's dict.
stored_of_kind = {
    "value": plain_values,
    "list": st.lists(plain_values, min_size=1, max_size=3),
    "map": st.dictionaries(st.text(max_size=3) | st.integers(), plain_values, min_size=1, max_size=3),
}
key_items = (
    st.text(max_size=4) | st.integers(-(2**40), 2**40) | st.tuples(st.text(max_size=2), st.integers(0, 9))
)
namespaces = st.none() | st.just(WINDOW) | st.integers(0, 3)


@st.composite
def kinds_and_tables(draw: st.DrawFn) -> tuple[str, dict[Any, dict[Any, Any]]]:
    kind = draw(st.sampled_from(sorted(stored_of_kind)))
    tables = draw(
        st.dictionaries(
            namespaces,
            st.dictionaries(key_items, stored_of_kind[kind], min_size=1, max_size=20),
            max_size=3,
        )
    )
    return kind, tables


@settings(max_examples=150, deadline=None)
@given(drawn=kinds_and_tables(), max_parallelism=st.integers(1, 64) | st.sampled_from([128, 256, 4096]))
def test_any_tables_pack_by_key_group_and_read_back_as_the_same_entries(
    drawn: tuple[str, dict[Any, dict[Any, Any]]], max_parallelism: int
) -> None:
    """A savepoint file of any tables of a state of the default serializer: each key group packed,
    each key in its own key group, and the entries read back (packed or not, at any parallelism) are
    those the snapshot held, value bytes and all."""
    kind, tables = drawn
    descriptor = {
        "value": lg.ValueStateDescriptor,
        "list": lg.ListStateDescriptor,
        "map": lg.MapStateDescriptor,
    }[kind]
    meta = StateMetaInfo.of(descriptor("s"))
    every = lgs.KeyGroupRange(0, max_parallelism - 1)
    snapshot = KeyedStateSnapshot("op", max_parallelism, every, {"s": meta}, {}, {"s": tables})
    data = encode_canonical(snapshot)

    stream = io.BytesIO(data)
    pickle.load(stream)
    rebuilt: dict[Any, dict[Any, Any]] = {}
    for key_group, held in iter(lambda: _next_chunk(stream), None):
        assert set(held) == {"s"} and type(held["s"]) is tuple
        for namespace, table in unpack_tables(held["s"]).items():
            assert table and {lgs.key_group_for(key, max_parallelism) for key in table} == {key_group}
            assert not rebuilt.get(namespace, {}).keys() & table.keys()
            rebuilt.setdefault(namespace, {}).update(table)
    assert rebuilt == {namespace: table for namespace, table in tables.items() if table}

    expected_entries = _sorted_groups(snapshot.grouped_entries())
    loaded = load_keyed_state(io.BytesIO(data))
    packed = load_keyed_state(io.BytesIO(data), packed=True)
    assert isinstance(loaded, KeyedStateSnapshot) and isinstance(packed, KeyedStateSnapshot)
    assert _sorted_groups(loaded.grouped_entries()) == expected_entries
    assert _sorted_groups(packed.grouped_entries()) == expected_entries
    assert loaded.entry_count() == packed.entry_count() == snapshot.entry_count()
    assert not loaded.packed and set(packed.packed) == ({"s"} if expected_entries["s"] else set())
    assert pickle.loads(pickle.dumps(packed)) == packed  # a restore's snapshot travels (Ray) as it is


def _sorted_groups(grouped: dict[str, dict[int, list[Any]]]) -> dict[str, dict[int, list[Any]]]:
    return {
        name: {key_group: sorted(group, key=repr) for key_group, group in groups.items() if group}
        for name, groups in grouped.items()
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=keys, written_at=st.integers(1, 3), restored_at=st.integers(1, 4))
async def test_a_version_4_file_restores_as_the_version_5_file_of_the_same_state(
    keys: list[Any], written_at: int, restored_at: int
) -> None:
    """Version 4 held every state's tables as value bytes; a file of each, of the same state, restores
    the same at any parallelism (on the heap, and into RocksDB)."""
    files = await savepoint_files("heap", keys, written_at)
    old_files = [_as_version_4(data) for data in files]
    every_key = expected(keys)
    for kind in BACKENDS:
        for written in (files, old_files):
            snapshots = [load_keyed_state(io.BytesIO(data), packed=True) for data in written]
            readers = [backend_of(kind, restored_at, index) for index in range(restored_at)]
            try:
                for index, reader in enumerate(readers):
                    reader.restore(snapshots)  # type: ignore[arg-type]
                    own = {key: held for key, held in every_key.items() if owner(key, restored_at) == index}
                    assert await read_back(reader, keys) == own
            finally:
                await disposed(readers)


def _as_version_4(data: bytes) -> bytes:
    """A version 5 keyed state file as version 4 wrote it: packed tables as tables of value bytes."""
    stream = io.BytesIO(data)
    header = pickle.load(stream)
    chunks = []
    for key_group, states in read_key_groups(stream, header.states):
        held: dict[str, Any] = {}
        for name, entries in states.items():
            if name.startswith("_timers/"):
                held[name] = entries
                continue
            tables: dict[Any, dict[Any, bytes]] = {}
            for key, namespace, value in entries:
                tables.setdefault(namespace, {})[key] = value
            held[name] = tables
        chunks.append(pickle.dumps((key_group, held), protocol=5))
    return pickle.dumps(header, protocol=5) + b"".join(chunks)


@pytest.mark.parametrize("kind", ["value", "list", "map"])
async def test_a_packed_value_nothing_writes_is_named_with_its_state_and_key(kind: str) -> None:
    """One pickle per key group: a value that neither pickle nor cloudpickle writes still fails the
    savepoint with the error that names the operator, the state and the key."""
    backend = backend_of("heap", 1, 0)
    descriptor = {
        "value": lg.ValueStateDescriptor,
        "list": lg.ListStateDescriptor,
        "map": lg.MapStateDescriptor,
    }[kind]
    state = backend.create_state(
        descriptor[Any]("held"), {"value": lgs.ValueState, "list": lgs.ListState, "map": lgs.MapState}[kind]
    )
    lock = threading.Lock()
    for key in ["a", "b", "c", "d"]:
        backend.current_key = key
        value = lock if key == "c" else 1
        if kind == "value":
            await state.update(value)
        elif kind == "list":
            await state.add(value)
        else:
            await state.put("x", value)
    with pytest.raises(lg.StateSerializationError) as raised:
        savepoint_file(backend)
    assert (raised.value.operator_uid, raised.value.state, raised.value.key) == ("op", "held", "c")
    assert "lock" in raised.value.reason


class Loop:
    """A namespace that holds itself: the fast pickler (no memo) of a key group refuses it."""

    def __init__(self) -> None:
        self.me = self


def test_a_key_group_the_fast_pickler_refuses_is_pickled_with_the_memo() -> None:
    class Local:  # a namespace only cloudpickle writes
        pass

    loop, local = Loop(), Local()
    meta = StateMetaInfo.of(lg.ValueStateDescriptor[int]("s"))
    every = lgs.KeyGroupRange(0, MAX_PARALLELISM - 1)
    tables = {loop: {"a": 1, "b": 2}, local: {"c": 3}, None: {"d": 4}}
    data = encode_canonical(KeyedStateSnapshot("op", MAX_PARALLELISM, every, {"s": meta}, {}, {"s": tables}))
    loaded = load_keyed_state(io.BytesIO(data), packed=True)
    assert isinstance(loaded, KeyedStateSnapshot)
    found: dict[Any, dict[Any, Any]] = {}
    for held in loaded.packed["s"].values():
        for namespace, table in unpack_tables(held).items():
            found.setdefault(type(namespace).__name__, {}).update(table)
            if isinstance(namespace, Loop):
                assert namespace.me is namespace
    assert found == {"Loop": {"a": 1, "b": 2}, "Local": {"c": 3}, "NoneType": {"d": 4}}


# ---- a whole job, through the public API


class Keep(lg.KeyedProcessFunction[tuple[str, int], Any]):
    """Keeps a total, the amounts and a typed reading per key, and an event-time timer per amount;
    a negative amount (after the restore) reports what the key holds instead."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0))
        self.amounts = ctx.get_list_state(lg.ListStateDescriptor[int]("amounts"))
        self.last = ctx.get_state(
            lg.ValueStateDescriptor[Reading]("last", serializer=lg.DataclassSerializer(Reading))
        )

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> AsyncIterator[Any]:
        key, amount = value
        if amount < 0:
            yield ("holds", key, await self.total.value(), await self.amounts.get(), await self.last.value())
            return
        await self.total.update(await self.total.value() + amount)
        await self.amounts.add(amount)
        await self.last.update(Reading(amount))
        ctx.timer_service().register_event_time_timer(amount)

    async def on_timer(self, timestamp: int, ctx: lg.RuntimeContext) -> AsyncIterator[Any]:
        yield ("timer", ctx.get_current_key(), timestamp)


def keep(env: lg.StreamEnvironment, stream: lg.DataStream, sink: lg.CollectSink[Any]) -> None:
    stream.key_by(lambda record: record[0]).process(Keep(), uid="keep").sink(sink, uid="out")


@pytest.mark.parametrize("backends", [("heap", "heap"), ("heap", "rocksdb"), ("rocksdb", "heap")])
async def test_a_job_saved_at_parallelism_two_resumes_at_three_with_every_key(
    tmp_path: Any, backends: tuple[str, str]
) -> None:
    names = [f"key-{i}" for i in range(300)]
    items = [(name, 1 + i % 7) for _ in range(2) for i, name in enumerate(names)]

    env = lg.StreamEnvironment(parallelism=2, max_parallelism=MAX_PARALLELISM)
    env.set_state_backend(BACKENDS[backends[0]]())
    env.enable_checkpointing(3600)
    source = PausingSource(items, (len(items),))
    keep(env, env.from_source(source, uid="src"), lg.CollectSink[Any]())
    with anyio.fail_after(GUARD):
        job = await env.start("before")
        await source.reached(len(items))  # every item read: the savepoint holds all of them
        savepoint = await job.stop_with_savepoint(tmp_path.as_uri())

    env = lg.StreamEnvironment(parallelism=3, max_parallelism=MAX_PARALLELISM)
    env.set_state_backend(BACKENDS[backends[1]]())
    env.enable_checkpointing(3600)  # the sink commits at the final checkpoint
    probes = lg.CollectSink[Any]()
    # A source of its own: "src" would resume at the position saved, past every item.
    keep(env, env.from_collection([(name, -1) for name in names], uid="probes"), probes)
    with anyio.fail_after(GUARD):
        await env.execute("after", restore_from=savepoint, allow_non_restored_state=True)

    holds = {result[1]: result[2:] for result in probes.results if result[0] == "holds"}
    assert holds == {
        name: (2 * (1 + i % 7), [1 + i % 7, 1 + i % 7], Reading(1 + i % 7)) for i, name in enumerate(names)
    }
    timers = sorted(result[1:] for result in probes.results if result[0] == "timer")
    assert timers == sorted((name, 1 + i % 7) for i, name in enumerate(names))  # one per key and time


class KeepTotalOnly(lg.KeyedProcessFunction[tuple[str, int], Any]):
    """Declares only Keep's total: the other states of a restore stay unclaimed, and carried."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> AsyncIterator[Any]:
        await self.total.update(await self.total.value() + value[1])
        yield value


NAMES = [f"key-{i}" for i in range(200)]


async def first_job_on_heap(tmp_path: Any, taken: str) -> str:
    """Keep's states for each of NAMES at parallelism 2 on the heap, then a savepoint of them or a
    checkpoint (``taken``); its URL."""
    items = [(name, 1 + i % 5) for i, name in enumerate(NAMES)]
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=MAX_PARALLELISM)
    env.set_state_backend(lg.HeapStateBackend())
    env.set_checkpoint_storage((tmp_path / "first").as_uri())
    env.enable_checkpointing(3600)
    source = PausingSource(items, (len(items),))
    keep(env, env.from_source(source, uid="src"), lg.CollectSink[Any]())
    with anyio.fail_after(GUARD):
        job = await env.start("first")
        await source.reached(len(items))
        if taken == "savepoint":
            return await job.stop_with_savepoint((tmp_path / "first-savepoint").as_uri())
        pointer = (await job.trigger_checkpoint()).pointer
        await job.cancel()
        return pointer


async def middle_job_declaring_one_state(
    tmp_path: Any, backend: lg.StateBackend, restore_from: str, taken: str
) -> str:
    """Restored at parallelism 3 by a job that declares one state of Keep's three (the others stay
    unclaimed), which takes a savepoint or a checkpoint (``taken``) at once; its URL."""
    env = lg.StreamEnvironment(parallelism=3, max_parallelism=MAX_PARALLELISM)
    env.set_state_backend(backend)
    env.set_checkpoint_storage((tmp_path / "middle").as_uri())
    env.enable_checkpointing(3600)
    idle = PausingSource([], (0,))
    env.from_source(idle, uid="idle").key_by(lambda record: record[0]).process(
        KeepTotalOnly(), uid="keep"
    ).sink(lg.CollectSink[Any](), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("middle", restore_from=restore_from, allow_non_restored_state=True)
        await idle.reached(0)
        if taken == "savepoint":
            return await job.stop_with_savepoint((tmp_path / "middle-savepoint").as_uri())
        pointer = (await job.trigger_checkpoint()).pointer
        await job.cancel()
        return pointer


async def assert_as_the_first_job_left_them(restore_from: str) -> None:
    """A heap job at parallelism 1 restored from ``restore_from`` finds every key's total, amounts,
    typed reading and timers as :func:`first_job_on_heap` left them."""
    env = lg.StreamEnvironment(parallelism=1, max_parallelism=MAX_PARALLELISM)
    env.set_state_backend(lg.HeapStateBackend())
    env.enable_checkpointing(3600)
    probes = lg.CollectSink[Any]()
    keep(env, env.from_collection([(name, -1) for name in NAMES], uid="probes"), probes)
    with anyio.fail_after(GUARD):
        await env.execute("last", restore_from=restore_from, allow_non_restored_state=True)

    holds = {result[1]: result[2:] for result in probes.results if result[0] == "holds"}
    assert holds == {name: (1 + i % 5, [1 + i % 5], Reading(1 + i % 5)) for i, name in enumerate(NAMES)}
    timers = sorted(result[1:] for result in probes.results if result[0] == "timer")
    assert timers == sorted((name, 1 + i % 5) for i, name in enumerate(NAMES))


@pytest.mark.parametrize("middle", ["heap", "rocksdb"])
async def test_state_no_function_declares_is_carried_through_a_rescaled_savepoint(
    tmp_path: Any, middle: str
) -> None:
    """Saved on the heap at parallelism 2; restored at 3 by a job that declares one state of three
    (the packed key groups of the others stay unclaimed) and saved again; restored at 1 with every
    state as the first job left it."""
    first = await first_job_on_heap(tmp_path, "savepoint")
    second = await middle_job_declaring_one_state(tmp_path, BACKENDS[middle](), first, "savepoint")
    await assert_as_the_first_job_left_them(second)


@pytest.mark.parametrize("first_kind", ["savepoint", "checkpoint"])
async def test_state_no_function_declares_survives_a_rocksdb_checkpoint_between_heap_jobs(
    tmp_path: Any, first_kind: str
) -> None:
    """Heap state restored into RocksDB by a job that declares one state of three, which then takes
    an incremental checkpoint (RocksDB's own files); a heap job restored from that checkpoint finds
    every state as the first job left it."""
    first = await first_job_on_heap(tmp_path, first_kind)
    backend = lgs.RocksDBStateBackend(incremental=True)
    middle = await middle_job_declaring_one_state(tmp_path, backend, first, "checkpoint")
    await assert_as_the_first_job_left_them(middle)
