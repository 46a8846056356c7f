"""A savepoint's keyed state file, key group by key group (metadata version 3: each state's tables of
value bytes by namespace and key, timers as entries): written at one parallelism and restored at
another, on either backend, every key comes back in the subtask that owns it, and nowhere else."""

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
from lockgate.state._snapshot import KeyedStateSnapshot, load_keyed_state, read_key_groups
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
)
async def test_every_key_comes_back_in_its_owner_at_any_parallelism(
    keys: list[Any], written_at: int, restored_at: int, backends: tuple[str, str]
) -> None:
    writers = [backend_of(backends[0], written_at, index) for index in range(written_at)]
    try:
        for index, writer in enumerate(writers):
            await fill(writer, keys, index, written_at)
        files = [savepoint_file(writer) for writer in writers]
    finally:
        await disposed(writers)
    snapshots = [load_keyed_state(io.BytesIO(data)) for data in files]

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


async def test_a_key_group_holds_each_state_s_tables_and_the_timers_entries() -> None:
    backend = backend_of("heap", 1, 0)
    await fill(backend, ["a", "b", 7])
    stream = io.BytesIO(savepoint_file(backend))
    header = pickle.load(stream)
    assert header.chunked and header.entries == {} and header.tables == {}
    for key_group, held in iter(lambda: _next_chunk(stream), None):
        for name, form in held.items():
            if name.startswith("_timers/"):
                assert type(form) is list and all(type(entry) is tuple for entry in form)
            else:
                assert type(form) is dict and all(type(table) is dict and table for table in form.values())
                for namespace, table in form.items():
                    assert namespace in (None, WINDOW) and set(map(type, table.values())) == {bytes}
                    assert {lgs.key_group_for(key, MAX_PARALLELISM) for key in table} == {key_group}


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
        pickle.dumps(chunk, protocol=5) for chunk in read_key_groups(stream)
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
