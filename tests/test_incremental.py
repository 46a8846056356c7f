"""Incremental checkpoints: heap chains of a base and deltas, RocksDB SST files uploaded once and
referenced after, and the shared area of the checkpoint storage that holds both.

What a user relies on: a chain (or a set of SST files) resolves to exactly the state of its checkpoint,
whatever was written, deleted, expired or never confirmed in between; a checkpoint writes only what
changed; the shared area holds exactly what the retained checkpoints reference (nothing leaks when a
checkpoint fails, nothing referenced goes missing); and every retained checkpoint restores, into either
backend, at any parallelism, also after crashes.

Unit tests drive the keyed backends directly over a ``MemoryCheckpointStorage``; end-to-end tests run
jobs with file storage and trigger every checkpoint themselves while a ``QueueSource`` holds the job
open. Nothing waits on a clock to synchronise (a checkpoint timeout is waited for only where it is the
thing under test); ``anyio.fail_after`` only guards against hangs. Every async test runs on asyncio and
on trio.
"""

from __future__ import annotations

import math
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from lockgate.snapshots import (
    SHARED_NAME,
    CheckpointLocation,
    CheckpointMetadata,
    SharedStateHandle,
    StateData,
    StreamStateHandle,
)
from lockgate.state.heap._incremental import HeapChainManifest, KeyedStateDelta
from lockgate.state.rocksdb import RocksDBKeyedStateBackend
from lockgate.state.rocksdb._native import RocksDBManifest
from lockgate.testing import Crash, FailureSchedule, assert_exactly_once

MAX_P = 16
ALL_KEY_GROUPS = lgs.KeyGroupRange(0, MAX_P - 1)

#: The longest any end-to-end story may take before the test calls it a hang.
GUARD = 20

#: Seconds a "t" entry lives (the unit property test's TTL state).
TTL = 3.0

# ---- helpers: driving a keyed backend's incremental snapshots by hand


class SharedWriter:
    """What the runtime's shared blob writer does for one operator: a unique name per blob."""

    def __init__(self, storage: lg.MemoryCheckpointStorage) -> None:
        self.storage = storage
        self.written: list[SharedStateHandle] = []

    async def write(self, kind: str, data: bytes) -> SharedStateHandle:
        handle = await self.storage.write_shared(f"op-0-{kind}-{uuid.uuid4().hex}", data)
        self.written.append(handle)
        return handle


async def write_incremental(
    resources: Any, storage: lg.MemoryCheckpointStorage
) -> tuple[lgs.IncrementalKeyedState, list[SharedStateHandle]]:
    """Persist one captured snapshot incrementally; what it references and what it uploaded."""
    assert isinstance(resources, lgs.IncrementalSnapshotResources)
    writer = SharedWriter(storage)
    written = await resources.write_incremental(writer)
    return written, writer.written


async def resolve(written: lgs.IncrementalKeyedState, storage: lg.MemoryCheckpointStorage) -> Any:
    """The snapshot a restore rebuilds from an incremental checkpoint's manifest and shared blobs."""
    shared = {handle.name: (await storage.read_shared(handle), handle.pointer) for handle in written.shared}
    # The manifest goes through pickle as it does into the checkpoint's own blob.
    manifest = pickle.loads(pickle.dumps(written.manifest, protocol=5))
    return manifest.resolve(shared)


async def load_link(storage: lg.MemoryCheckpointStorage, handle: SharedStateHandle) -> Any:
    return pickle.loads(await storage.read_shared(handle))


def contents(
    snapshot: lgs.KeyedStateSnapshot, descriptors: dict[str, Any], now: float | None = None
) -> dict[tuple[str, Any, Any], Any]:
    """What a snapshot holds, decoded: (state, namespace, key) -> value; under TTL the elements alive
    at ``now`` as (value, timestamp) pairs (a chain may still hold entries that expired untouched)."""
    decoded: dict[tuple[str, Any, Any], Any] = {}
    for name, groups in snapshot.grouped_entries().items():
        descriptor = descriptors[name]
        codec = lgs.StateCodec(descriptor, lambda: 0.0)
        for key_group, entries in groups.items():
            for key, namespace, data in entries:
                assert key_group == lgs.key_group_for(key, MAX_P)  # filed under its own key group
                stored = codec.decode(data)
                if descriptor.ttl is not None:
                    assert now is not None
                    stored = codec.prune(stored, now)
                    if stored is lgs.MISSING:
                        continue
                    stored = [(element.value, element.timestamp) for element in stored]
                assert (name, namespace, key) not in decoded  # held once
                decoded[name, namespace, key] = stored
    return decoded


# ---- 1. heap chains, unit level: for any history, the chain resolves to its checkpoint's state


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


DESCRIPTORS: dict[str, Any] = {
    "v": lgs.ValueStateDescriptor("v"),  # stored whole (tables), reached by HeapValueState
    "l": lgs.ListStateDescriptor("l"),  # whole, changed in place by add()
    "m": lgs.MapStateDescriptor("m"),
    "t": lgs.ListStateDescriptor("t", ttl=lgs.StateTtlConfig(TTL)),  # encoded entries, element TTL
    "late": lgs.ValueStateDescriptor("late"),  # registered only when the history says so
}
STATES = ["v", "l", "m", "t"]
NAMESPACES = [lgs.DEFAULT_NAMESPACE, "window-1"]

_puts = st.tuples(
    st.just("put"),
    st.sampled_from([*STATES, "late"]),
    st.sampled_from(NAMESPACES),
    st.integers(0, 2),
    st.integers(-3, 3),
)
heap_histories = st.lists(
    st.one_of(
        _puts,
        _puts,  # writes are the most common
        st.tuples(
            st.just("put"),
            st.sampled_from([*STATES, "late"]),
            st.sampled_from(NAMESPACES),
            st.integers(0, 2),
            st.integers(-3, 3),
        ),
        st.tuples(
            st.just("delete"),
            st.sampled_from([*STATES, "late"]),
            st.sampled_from(NAMESPACES),
            st.integers(0, 2),
            st.none(),
        ),
        st.tuples(
            st.just("read"),
            st.sampled_from(STATES),
            st.sampled_from(NAMESPACES),
            st.integers(0, 2),
            st.none(),
        ),
        st.tuples(st.just("tick"), st.none(), st.none(), st.none(), st.integers(1, 4)),
        st.tuples(st.just("register"), st.none(), st.none(), st.none(), st.none()),
        # a checkpoint: 0 leaves it pending, 1 writes it now, 2 and 3 also confirm it
        st.tuples(st.just("checkpoint"), st.none(), st.none(), st.none(), st.integers(0, 3)),
        # write the pending snapshot at this index (the asynchronous part may run late)
        st.tuples(st.just("write"), st.none(), st.none(), st.none(), st.integers(0, 3)),
        # confirm the written checkpoint at this index from the newest; some never are
        st.tuples(st.just("confirm"), st.none(), st.none(), st.none(), st.integers(0, 3)),
    ),
    min_size=30,
    max_size=90,
)


class HeapModel:
    """What the state is, as a user sees it: (state, namespace, key) -> value; "t" holds
    (value, timestamp) pairs, each expiring TTL seconds after its timestamp."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.entries: dict[tuple[str, Any, Any], Any] = {}

    def put(self, name: str, namespace: Any, key: Any, number: int) -> None:
        slot = (name, namespace, key)
        if name in ("v", "late"):
            self.entries[slot] = number
        elif name == "l":
            self.entries.setdefault(slot, []).append(number)
        elif name == "m":
            self.entries.setdefault(slot, {})[number % 3] = number
        else:
            alive = self.visible().get(slot, [])
            self.entries[slot] = [*alive, (number, self.clock.now)]

    def delete(self, name: str, namespace: Any, key: Any) -> None:
        self.entries.pop((name, namespace, key), None)

    def visible(self) -> dict[tuple[str, Any, Any], Any]:
        now = self.clock.now
        out: dict[tuple[str, Any, Any], Any] = {}
        for slot, value in self.entries.items():
            if slot[0] == "t":
                value = [(number, stamp) for number, stamp in value if stamp + TTL > now]
                if not value:
                    continue
                out[slot] = value
            else:
                out[slot] = (
                    list(value)
                    if isinstance(value, list)
                    else dict(value)
                    if isinstance(value, dict)
                    else value
                )
        return out


class HeapDriver:
    """A heap keyed backend with incremental snapshots and its state objects, one per (state, namespace)."""

    def __init__(self, max_chain_length: int) -> None:
        self.clock = FakeClock()
        self.backend = lg.HeapStateBackend(
            incremental=True, max_chain_length=max_chain_length
        ).create_keyed_backend("op", ALL_KEY_GROUPS, MAX_P)
        assert isinstance(self.backend, lgs.HeapKeyedStateBackend)
        self.backend.clock = self.clock
        self.state_objects: dict[tuple[str, Any], Any] = {}
        for name, kind in (
            ("v", lgs.ValueState),
            ("l", lgs.ListState),
            ("m", lgs.MapState),
            ("t", lgs.ListState),
        ):
            for namespace in NAMESPACES:
                state = self.backend.create_state(DESCRIPTORS[name], kind)
                state.namespace = namespace
                self.state_objects[name, namespace] = state
        self.late_registered = False

    def register_late(self) -> None:
        self.backend.create_state(DESCRIPTORS["late"], lgs.ValueState)
        self.late_registered = True

    def put(self, name: str, namespace: Any, key: Any, number: int) -> None:
        backend = self.backend
        backend.current_key = key
        if name in ("v", "late"):
            # HeapValueState reaches the default namespace's table directly; other namespaces (and
            # the late state) go through the backend's own synchronous methods.
            if name == "v" and namespace is lgs.DEFAULT_NAMESPACE:
                self.state_objects[name, namespace].update_nowait(number)
            else:
                backend.put_nowait(name, key, namespace, number)
        elif name in ("l", "t"):
            self.state_objects[name, namespace].add_nowait(number)
        else:
            self.state_objects[name, namespace].put_nowait(number % 3, number)

    def delete(self, name: str, namespace: Any, key: Any) -> None:
        self.backend.current_key = key
        if name in ("v", "late"):
            self.backend.delete_nowait(name, key, namespace)
        else:
            self.state_objects[name, namespace].clear_nowait()

    def read(self, name: str, namespace: Any, key: Any) -> Any:
        self.backend.current_key = key
        state = self.state_objects[name, namespace]
        if name == "v" and namespace is lgs.DEFAULT_NAMESPACE:
            return state.value_nowait()  # copy-on-write through HeapValueState
        if name == "v":
            stored = self.backend.get_nowait("v", key, namespace)
            return None if stored is lgs.MISSING else stored
        if name == "m":
            return state.to_dict_nowait() or None
        return state.get_nowait() or None


@pytest.mark.anyio
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=heap_histories, max_chain_length=st.integers(1, 4))
async def test_any_heap_chain_resolves_to_the_state_at_its_checkpoint(
    history: list[Any], max_chain_length: int
) -> None:
    driver = HeapDriver(max_chain_length)
    backend, clock = driver.backend, driver.clock
    backend.rebase_fraction = math.inf  # a delta stays a delta however much changed: chains are tested here
    model = HeapModel(clock)
    storage = lg.MemoryCheckpointStorage()
    descriptors = DESCRIPTORS
    next_id = 1
    # Captured, not yet written: (id, resources, the model's state then, the clock then).
    pending: list[tuple[int, Any, dict[Any, Any], float]] = []
    written: list[tuple[int, tuple[SharedStateHandle, ...]]] = []  # the chain of each written checkpoint
    confirmed: tuple[int, tuple[SharedStateHandle, ...]] | None = None

    async def write(index: int) -> None:
        nonlocal confirmed
        checkpoint_id, resources, expected, then = pending.pop(index % len(pending))
        try:
            if confirmed is not None and confirmed[0] > checkpoint_id:
                # A newer checkpoint completed first: it subsumes this one, which is declined.
                with pytest.raises(lg.CheckpointError, match="subsumes"):
                    await write_incremental(resources, storage)
                return
            full = resources.materialize()
            state, uploaded = await write_incremental(resources, storage)
        finally:
            resources.release()
        manifest = state.manifest
        assert isinstance(manifest, HeapChainManifest)
        chain = manifest.links
        assert state.shared == chain and len(uploaded) == 1 and chain[-1] == uploaded[0]
        # What it builds on: the confirmed checkpoint's chain, unless that one is as long as allowed.
        if confirmed is None or len(confirmed[1]) >= max_chain_length:
            assert len(chain) == 1, "a checkpoint with nothing (short enough) confirmed is a new base"
        else:
            assert chain[:-1] == confirmed[1]
        assert len(chain) <= max_chain_length
        assert isinstance(await load_link(storage, chain[0]), lgs.KeyedStateSnapshot)
        for link in chain[1:]:
            assert isinstance(await load_link(storage, link), KeyedStateDelta)
        resolved = await resolve(state, storage)
        assert contents(resolved, descriptors, then) == expected
        assert contents(full, descriptors, then) == expected  # the same as a full snapshot of it
        written.append((checkpoint_id, chain))

    for op, name, namespace, key, number in history:
        if op == "put" and (name != "late" or driver.late_registered):
            driver.put(name, namespace, key, number)
            model.put(name, namespace, key, number)
        elif op == "delete" and (name != "late" or driver.late_registered):
            driver.delete(name, namespace, key)
            model.delete(name, namespace, key)
        elif op == "read":
            assert driver.read(name, namespace, key) == _user_view(
                model.visible().get((name, namespace, key))
            )
            if name == "t" and (name, namespace, key) in model.entries:
                # A read drops what expired (the state object stores the rest back).
                alive = model.visible().get((name, namespace, key))
                if alive is None:
                    model.delete(name, namespace, key)
                else:
                    model.entries[name, namespace, key] = alive
        elif op == "tick":
            clock.now += number
        elif op == "register" and not driver.late_registered:
            driver.register_late()
        elif op == "checkpoint":
            pending.append((next_id, backend.snapshot_sync(next_id), model.visible(), clock.now))
            next_id += 1
            if number >= 1:
                await write(len(pending) - 1)
            if number >= 2 and written and written[-1][0] == next_id - 1:
                backend.notify_checkpoint_complete(next_id - 1)
                confirmed = written[-1]
        elif op == "write" and pending:
            await write(number)
        elif op == "confirm" and written:
            checkpoint_id, chain = written[-1 - number % len(written)]
            if confirmed is None or checkpoint_id > confirmed[0]:  # completion order follows ids
                backend.notify_checkpoint_complete(checkpoint_id)
                confirmed = (checkpoint_id, chain)
    while pending:
        await write(0)
    # Every snapshot released: the tables keep one base layer under their change set.
    assert all(len(table.frozen) <= 1 for spaces in backend._tables.values() for table in spaces.values())


def _user_view(value: Any) -> Any:
    """What a read of a state object returns for a model value (None for absent)."""
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return [number for number, _ in value]
    return value


async def _heap_with_many_keys(count: int, max_chain_length: int = 8) -> tuple[Any, Any, Any]:
    backend = lg.HeapStateBackend(incremental=True, max_chain_length=max_chain_length).create_keyed_backend(
        "op", ALL_KEY_GROUPS, MAX_P
    )
    value = backend.create_state(lgs.ValueStateDescriptor("v"), lgs.ValueState)
    items = backend.create_state(lgs.ListStateDescriptor("l"), lgs.ListState)
    for key in range(count):
        backend.current_key = key
        value.update_nowait(f"value of {key}")
        items.add_nowait(key)
    return backend, value, items


@pytest.mark.anyio
async def test_a_heap_delta_holds_only_the_touched_keys() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend, value, items = await _heap_with_many_keys(2000)
    resources = backend.snapshot_sync(1)
    _, [base_blob] = await write_incremental(resources, storage)
    resources.release()
    backend.notify_checkpoint_complete(1)

    touched = {3: "put", 700: "put", 1999: "delete", 5000: "put"}  # 5000 is a new key
    for key, what in touched.items():
        backend.current_key = key
        if what == "put":
            value.update_nowait("changed")
        else:
            value.clear_nowait()
    backend.current_key = 42
    items.add_nowait(-1)  # a list changed in place

    resources = backend.snapshot_sync(2)
    expected = contents(
        resources.materialize(), {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    )
    state, [delta_blob] = await write_incremental(resources, storage)
    resources.release()
    delta = await load_link(storage, delta_blob)
    assert isinstance(delta, KeyedStateDelta)
    assert delta.change_count() == len(touched) + 1  # the touched keys, the deleted one as a tombstone
    assert delta.removed == {"v": [(lgs.DEFAULT_NAMESPACE, 1999)]}
    assert delta_blob.size * 20 < base_blob.size  # a few entries against thousands
    assert state.shared == (base_blob, delta_blob)
    descriptors = {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    assert contents(await resolve(state, storage), descriptors) == expected


@pytest.mark.anyio
async def test_a_heap_delta_that_would_hold_most_of_the_state_is_a_new_base() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend, value, _ = await _heap_with_many_keys(100)
    resources = backend.snapshot_sync(1)
    await write_incremental(resources, storage)
    resources.release()
    backend.notify_checkpoint_complete(1)
    for key in range(100):  # every value, half of the entries (the lists are untouched)
        backend.current_key = key
        value.update_nowait("changed")
    resources = backend.snapshot_sync(2)
    state, [blob] = await write_incremental(resources, storage)
    resources.release()
    assert state.shared == (blob,)  # a chain of one: a new base, not a delta on the first
    assert isinstance(await load_link(storage, blob), lgs.KeyedStateSnapshot)


@pytest.mark.anyio
async def test_reading_a_heap_state_does_not_count_as_changing_it() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend, value, _ = await _heap_with_many_keys(500)
    resources = backend.snapshot_sync(1)
    await write_incremental(resources, storage)
    resources.release()
    backend.notify_checkpoint_complete(1)

    for key in range(500):  # read every value (immutable: strings), change one
        backend.current_key = key
        assert value.value_nowait() == f"value of {key}"
    backend.current_key = 7
    value.update_nowait("changed")

    resources = backend.snapshot_sync(2)
    state, [delta_blob] = await write_incremental(resources, storage)
    resources.release()
    delta = await load_link(storage, delta_blob)
    assert delta.change_count() == 1
    descriptors = {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    restored = contents(await resolve(state, storage), descriptors)
    assert restored["v", None, 7] == "changed" and restored["v", None, 8] == "value of 8"


@pytest.mark.anyio
async def test_a_heap_chain_at_max_chain_length_starts_a_new_base() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend, value, _ = await _heap_with_many_keys(50, max_chain_length=3)
    lengths = []
    for checkpoint_id in range(1, 9):
        backend.current_key = checkpoint_id
        value.update_nowait(f"round {checkpoint_id}")
        resources = backend.snapshot_sync(checkpoint_id)
        state, _ = await write_incremental(resources, storage)
        resources.release()
        backend.notify_checkpoint_complete(checkpoint_id)
        lengths.append(len(state.shared))
        resolved = contents(
            await resolve(state, storage),
            {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")},
        )
        assert resolved["v", None, checkpoint_id] == f"round {checkpoint_id}"
    assert lengths == [1, 2, 3, 1, 2, 3, 1, 2]


@pytest.mark.anyio
async def test_an_unconfirmed_checkpoint_is_never_built_on() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend, value, _ = await _heap_with_many_keys(10)
    descriptors = {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    chains = {}
    for checkpoint_id in (1, 2, 3):
        backend.current_key = 0
        value.update_nowait(checkpoint_id)
        resources = backend.snapshot_sync(checkpoint_id)
        chains[checkpoint_id], _ = await write_incremental(resources, storage)
        resources.release()
        if checkpoint_id == 1:
            backend.notify_checkpoint_complete(1)  # 2 never completes
    first, third = chains[1].shared, chains[3].shared
    assert third[:-1] == first  # 3 builds on 1, with the changes of 2 and 3 in one delta
    assert contents(await resolve(chains[3], storage), descriptors)["v", None, 0] == 3


@pytest.mark.anyio
async def test_a_late_confirmation_after_many_unconfirmed_snapshots_loses_no_change() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend, value, _ = await _heap_with_many_keys(10, max_chain_length=1000)
    resources = backend.snapshot_sync(1)
    await write_incremental(resources, storage)
    resources.release()
    backend.notify_checkpoint_complete(1)

    resources = backend.snapshot_sync(2)  # checkpoint 2: written, completes only much later
    await write_incremental(resources, storage)
    resources.release()
    backend.current_key = 0
    value.update_nowait("written after checkpoint 2")
    for checkpoint_id in range(3, 67):  # 64 more snapshots, none confirmed (still in progress)
        resources = backend.snapshot_sync(checkpoint_id)
        if checkpoint_id < 66:
            await write_incremental(resources, storage)
            resources.release()
    backend.notify_checkpoint_complete(2)  # checkpoint 2 completes at last
    state, _ = await write_incremental(resources, storage)  # checkpoint 66
    expected = contents(
        resources.materialize(), {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    )
    resources.release()
    resolved = contents(
        await resolve(state, storage), {"v": lgs.ValueStateDescriptor("v"), "l": lgs.ListStateDescriptor("l")}
    )
    assert resolved["v", None, 0] == "written after checkpoint 2"
    assert resolved == expected


# ---- 2. RocksDB, unit level: SST files uploaded once, referenced after


def rocksdb_backend() -> RocksDBKeyedStateBackend:
    return RocksDBKeyedStateBackend("op", ALL_KEY_GROUPS, MAX_P, incremental=True, memory_budget=8 << 20)


ROCKS_DESCRIPTORS = {"v": lgs.ValueStateDescriptor("v"), "m": lgs.MapStateDescriptor("m")}


@pytest.mark.anyio
async def test_rocksdb_uploads_each_sst_file_once_and_resolves_to_a_full_snapshot() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend = rocksdb_backend()
    try:
        value = backend.create_state(ROCKS_DESCRIPTORS["v"], lgs.ValueState)
        table = backend.create_state(ROCKS_DESCRIPTORS["m"], lgs.MapState)
        for key in range(500):
            backend.current_key = key
            value.update_nowait(key * 10)
            table.put_nowait("k", str(key))
        resources = backend.snapshot_sync(1)
        first, uploaded = await write_incremental(resources, storage)
        resources.release()
        assert uploaded and set(first.shared) == set(uploaded)
        assert isinstance(first.manifest, RocksDBManifest)
        backend.notify_checkpoint_complete(1)

        resources = backend.snapshot_sync(2)  # no write since checkpoint 1
        second, uploaded = await write_incremental(resources, storage)
        resources.release()
        assert uploaded == []  # every SST file reused
        assert set(second.shared) == set(first.shared)
        backend.notify_checkpoint_complete(2)

        for key in (1, 2, 3):
            backend.current_key = key
            value.update_nowait(-key)
        backend.current_key = 4
        value.clear_nowait()
        resources = backend.snapshot_sync(3)
        full = backend.snapshot_sync(0)  # the same moment, taken whole for comparison
        third, uploaded = await write_incremental(resources, storage)
        resources.release()
        expected = contents(full.materialize(), ROCKS_DESCRIPTORS)
        full.release()
        assert uploaded, "the new writes are in a new SST file"
        assert set(third.shared) - set(second.shared) == set(uploaded)  # only new files uploaded
        assert sum(h.size for h in uploaded) < sum(h.size for h in third.shared)
        resolved = contents(await resolve(third, storage), ROCKS_DESCRIPTORS)
        assert resolved == expected
        assert resolved["v", None, 1] == -1 and ("v", None, 4) not in resolved
        assert len([slot for slot in resolved if slot[0] == "v"]) == 499
    finally:
        await backend.dispose()


@pytest.mark.anyio
async def test_rocksdb_without_a_confirmation_reuses_nothing_newer() -> None:
    storage = lg.MemoryCheckpointStorage()
    backend = rocksdb_backend()
    try:
        value = backend.create_state(ROCKS_DESCRIPTORS["v"], lgs.ValueState)
        backend.current_key = "a"
        value.update_nowait(1)
        resources = backend.snapshot_sync(1)
        first, _ = await write_incremental(resources, storage)
        resources.release()
        resources = backend.snapshot_sync(2)  # checkpoint 1 was never confirmed
        second, uploaded = await write_incremental(resources, storage)
        resources.release()
        assert set(uploaded) == set(second.shared)  # nothing of 1 is referenced: all uploaded again
        assert not set(first.shared) & set(second.shared)
    finally:
        await backend.dispose()


# ---- helpers: jobs


class Totals(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int]]):
    """The running total of each key (value state) and how often each value came (map state)."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0))
        self.seen = ctx.get_map_state(lg.MapStateDescriptor[int]("seen"))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        total = await self.total.value() + value[1]
        await self.total.update(total)
        await self.seen.put(value[1], (await self.seen.get(value[1]) or 0) + 1)
        yield (ctx.get_current_key(), total)


class Watch:
    """A plain map function (shared by the subtasks) that counts what reaches it."""

    def __init__(self) -> None:
        self.count = 0
        self._waiting: list[tuple[int, anyio.Event]] = []

    def __call__(self, record: Any) -> Any:
        self.count += 1
        for entry in [entry for entry in self._waiting if entry[0] <= self.count]:
            entry[1].set()
            self._waiting.remove(entry)
        return record

    async def until(self, count: int) -> None:
        if self.count < count:
            event = anyio.Event()
            self._waiting.append((count, event))
            await event.wait()


BACKENDS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True, max_chain_length=3),
    "rocksdb-incremental": lambda: lg.RocksDBStateBackend(incremental=True, memory_budget=8 << 20),
}
E2E_MAX_P = 32


def totals_job(
    backend: str, storage: Any, queue: lg.QueueSource[Any], watch: Watch, parallelism: int = 2
) -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=E2E_MAX_P)
    env.set_state_backend(BACKENDS[backend]())
    env.enable_checkpointing(3600)  # only the checkpoints the test triggers
    env.set_checkpoint_storage(storage)
    totals = env.from_source(queue, uid="src").key_by(lambda r: r[0]).process(Totals(), uid="totals")
    totals.map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    return env


async def restored_totals(
    url: str, keys: list[str], backend: lg.StateBackend, parallelism: int
) -> dict[str, int]:
    """Each key's total in the checkpoint at ``url``, read by a new job that restores from it."""
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=E2E_MAX_P)
    env.set_state_backend(backend)
    env.enable_checkpointing(3600)
    sink: lg.CollectSink[Any] = lg.CollectSink()
    probe = env.from_collection([(key, 0) for key in keys], uid="probe")
    probe.key_by(lambda r: r[0]).process(Totals(), uid="totals").sink(sink, uid="probe-out")
    await env.execute("probe", restore_from=url, allow_non_restored_state=True)
    return dict(sink.results)


def shared_files(root: Path) -> set[str]:
    shared = root / "shared"
    return {path.name for path in shared.iterdir()} if shared.is_dir() else set()


def complete_checkpoints(root: Path) -> list[int]:
    return sorted(int(path.name[4:]) for path in root.glob("chk-*") if (path / "_metadata").is_file())


def metadata(root: Path, checkpoint_id: int) -> CheckpointMetadata:
    raw = (root / f"chk-{checkpoint_id}" / "_metadata").read_bytes()
    return CheckpointMetadata.from_bytes(raw[20:], "test")  # past the 20-byte frame header


def referenced(root: Path) -> set[str]:
    """The shared blobs every complete checkpoint under ``root`` references (one that retention
    deletes while this reads it counts no more)."""
    names: set[str] = set()
    for checkpoint_id in complete_checkpoints(root):
        try:
            names |= metadata(root, checkpoint_id).shared_names()
        except FileNotFoundError:
            continue
    return names


KEYS = [f"key-{index}" for index in range(150)]


class RetentionStorage(lg.FileCheckpointStorage):
    """File storage that tells when the coordinator has finished deleting a checkpoint: its
    directory, then the shared blobs no other checkpoint references (``cleaned``)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._deleting: int | None = None
        self._cleaned: dict[int, anyio.Event] = {}

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        await super().discard_checkpoint(checkpoint_id)
        self._deleting = checkpoint_id

    async def discard_shared(self, names: Any) -> None:
        await super().discard_shared(names)
        if self._deleting is not None:  # (called right after, even with no name)
            self._cleaned.setdefault(self._deleting, anyio.Event()).set()
            self._deleting = None

    async def cleaned(self, checkpoint_id: int) -> None:
        await self._cleaned.setdefault(checkpoint_id, anyio.Event()).wait()


async def feed(queue: lg.QueueSource[Any], watch: Watch, records: list[tuple[str, int]]) -> None:
    """Hand the job ``records`` and wait until their totals are computed (a checkpoint holds them)."""
    target = watch.count + len(records)
    for record in records:
        await queue.put(record)
    await watch.until(target)


# ---- 3. end to end: a long run with retention, the shared area, stats, restores


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_long_run_keeps_exactly_the_shared_files_its_retained_checkpoints_reference(
    tmp_path: Path, backend: str
) -> None:
    root = tmp_path / "checkpoints"
    storage = RetentionStorage(root.as_uri())
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job(backend, storage, queue, watch)
    env.checkpoint_config.retained = 2
    totals: dict[str, int] = {}
    expected: dict[int, dict[str, int]] = {}
    rounds = 12
    with anyio.fail_after(GUARD):
        job = await env.start("long-run")
        first = [(key, 1) for key in KEYS]
        for round_number in range(rounds):
            records = (
                first
                if round_number == 0
                else [(KEYS[(round_number * 7 + i) % len(KEYS)], round_number) for i in range(3)]
            )
            await feed(queue, watch, records)
            for key, number in records:
                totals[key] = totals.get(key, 0) + number
            checkpoint = await job.trigger_checkpoint()
            expected[checkpoint.checkpoint_id] = dict(totals)
            present = shared_files(root)  # listed first: a checkpoint read after it was complete then
            assert referenced(root) <= present  # nothing a complete checkpoint needs is gone
            if checkpoint.checkpoint_id > 2:
                # Once retention has dropped the oldest: exactly what the retained ones reference.
                await storage.cleaned(checkpoint.checkpoint_id - 2)
                assert shared_files(root) == referenced(root)
        stats = job.checkpoint_stats
        queue.close()
        await job.wait()
    assert complete_checkpoints(root) == [rounds, rounds + 1]  # the last one, and the final checkpoint
    expected[rounds + 1] = dict(totals)
    assert shared_files(root) == referenced(root) != set()
    for checkpoint_id in complete_checkpoints(root):
        assert metadata(root, checkpoint_id).shared_names()  # keyed state lives in the shared area

    history = {entry.id: entry for entry in stats.history}
    assert [history[cid].status for cid in range(1, rounds + 1)] == ["completed"] * rounds
    assert history[1].persisted_bytes == history[1].full_bytes  # the first one writes everything
    later = range(2, rounds + 1)  # few keys changed before each: they write little
    whole = [cid for cid in later if history[cid].persisted_bytes >= history[cid].full_bytes]
    if backend == "heap-incremental":
        # Every third link starts a new chain (max_chain_length=3): those write a full base again.
        assert whole == [4, 7, 10]
        assert all(
            history[cid].persisted_bytes * 2 < history[cid].full_bytes for cid in later if cid % 3 != 1
        )
    else:
        # A compaction rewrites the SST files now and then: that checkpoint uploads them all again.
        assert len(whole) <= 3, whole
        assert sum(history[cid].persisted_bytes for cid in later) < sum(
            history[cid].full_bytes for cid in later
        )

    # Each retained checkpoint restores exactly, into either backend, at another parallelism.
    targets = [(lg.HeapStateBackend(), 3), (lg.RocksDBStateBackend(memory_budget=8 << 20), 1)]
    for checkpoint_id in complete_checkpoints(root):
        url = (root / f"chk-{checkpoint_id}").as_uri()
        for target, parallelism in targets:
            assert await restored_totals(url, KEYS, target, parallelism) == expected[checkpoint_id]


RESTORE_TARGETS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap": lg.HeapStateBackend,
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True),
    "rocksdb": lambda: lg.RocksDBStateBackend(memory_budget=8 << 20),
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("backend", "target", "parallelism"),
    [
        *[(backend, "heap", 1) for backend in BACKENDS],
        *[(backend, "heap-incremental", 4) for backend in BACKENDS],
        ("heap-incremental", "rocksdb", 2),
        ("heap-incremental", "rocksdb", 5),
        ("rocksdb-incremental", "rocksdb", 2),
        ("rocksdb-incremental", "rocksdb", 5),
    ],
)
async def test_an_incremental_checkpoint_restores_into_both_backends_at_any_parallelism(
    tmp_path: Path, backend: str, target: str, parallelism: int
) -> None:
    root = tmp_path / "checkpoints"
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job(backend, root.as_uri(), queue, watch, parallelism=3)
    totals: dict[str, int] = {}
    with anyio.fail_after(GUARD):
        job = await env.start("rescale")
        for round_number in range(3):
            records = [(key, round_number + 1) for key in KEYS[round_number * 40 : round_number * 40 + 60]]
            await feed(queue, watch, records)
            for key, number in records:
                totals[key] = totals.get(key, 0) + number
            await job.trigger_checkpoint()
        queue.close()
        await job.wait()
    # Retention kept the final checkpoint, which shares what the triggered ones wrote.
    [final] = root.glob("chk-*")
    assert len(metadata(root, int(final.name.removeprefix("chk-"))).shared_names()) > 1  # incremental
    expected = {key: totals.get(key, 0) for key in KEYS}
    assert await restored_totals(final.as_uri(), KEYS, RESTORE_TARGETS[target](), parallelism) == expected


# ---- 4. a checkpoint that fails leaves nothing new in the shared area


class StallingStorage(lg.FileCheckpointStorage):
    """File storage that holds the keyed state manifests of one checkpoint (after the shared blobs
    are uploaded) until released, and tells when shared blobs are discarded."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.stall: int | None = None
        self.stalled = anyio.Event()
        self.release = anyio.Event()
        self.discarded = anyio.Event()

    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        if location.checkpoint_id == self.stall and name.endswith("-keyed"):
            self.stalled.set()
            await self.release.wait()
        return await super().write_state(location, name, data)

    async def discard_shared(self, names: Any) -> None:
        names = list(names)
        await super().discard_shared(names)
        if names:  # (an aborted checkpoint that registered nothing discards an empty list)
            self.discarded.set()


class FailingStorage(lg.FileCheckpointStorage):
    """File storage that fails the keyed state manifest, or the second shared upload, of one checkpoint."""

    def __init__(self, url: str, fail: int, where: str) -> None:
        super().__init__(url)
        self.fail = fail
        self.where = where
        self.uploads: dict[int, int] = {}
        self.current = 0

    async def create_checkpoint_location(self, checkpoint_id: int) -> CheckpointLocation:
        self.current = checkpoint_id
        return await super().create_checkpoint_location(checkpoint_id)

    async def write_state(
        self, location: CheckpointLocation, name: str, data: StateData
    ) -> StreamStateHandle:
        if self.where == "manifest" and location.checkpoint_id == self.fail and name.endswith("-keyed"):
            raise lg.CheckpointError("no space left on the device")
        return await super().write_state(location, name, data)

    async def write_shared(self, name: str, data: StateData) -> SharedStateHandle:
        count = self.uploads[self.current] = self.uploads.get(self.current, 0) + 1
        if self.where == "upload" and self.current == self.fail and count == 2:
            raise lg.CheckpointError("no space left on the device")
        return await super().write_shared(name, data)


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_checkpoint_that_times_out_leaves_no_shared_file(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "checkpoints"
    storage = StallingStorage(root.as_uri())
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job(backend, storage, queue, watch, parallelism=1)
    env.checkpoint_config.timeout = 0.3
    env.checkpoint_config.tolerable_failures = 1
    with anyio.fail_after(GUARD):
        job = await env.start("stalled")
        await feed(queue, watch, [(key, 1) for key in KEYS[:50]])
        await job.trigger_checkpoint()
        before = shared_files(root)
        await feed(queue, watch, [(key, 2) for key in KEYS[:5]])
        storage.stall = 2
        with pytest.raises(lg.CheckpointError, match="timed out"):
            await job.trigger_checkpoint()  # waits for the timeout: the thing under test
        assert storage.stalled.is_set()
        assert len(shared_files(root)) > len(before)  # the stalled subtask had uploaded its part ...
        storage.release.set()
        await storage.discarded.wait()  # ... and deletes it once it finds the checkpoint gone
        assert shared_files(root) == before == referenced(root)
        await job.trigger_checkpoint()
        queue.close()
        await job.wait()
    assert shared_files(root) == referenced(root)
    expected = {key: 3 if index < 5 else 1 for index, key in enumerate(KEYS[:50])}
    [final] = root.glob("chk-*")
    assert await restored_totals(final.as_uri(), KEYS[:50], lg.HeapStateBackend(), 2) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("backend", "where"),
    [
        ("heap-incremental", "manifest"),
        ("rocksdb-incremental", "manifest"),
        ("rocksdb-incremental", "upload"),
    ],
)
async def test_a_checkpoint_whose_write_fails_leaves_no_shared_file(
    tmp_path: Path, backend: str, where: str
) -> None:
    root = tmp_path / "checkpoints"
    storage = FailingStorage(root.as_uri(), fail=2, where=where)
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job(backend, storage, queue, watch, parallelism=1)
    env.checkpoint_config.tolerable_failures = 1
    with anyio.fail_after(GUARD):
        job = await env.start("failing")
        await feed(queue, watch, [(key, 1) for key in KEYS[:50]])
        await job.trigger_checkpoint()
        before = shared_files(root)
        await feed(queue, watch, [(key, 2) for key in KEYS[:5]])
        with pytest.raises(lg.CheckpointError, match="no space left"):
            await job.trigger_checkpoint()
        # RocksDB: both states' column families changed, so the failed checkpoint had two new files.
        assert storage.uploads[2] >= 2 if where == "upload" else storage.uploads[2] >= 1
        assert shared_files(root) == before == referenced(root)
        await job.trigger_checkpoint()  # the job goes on, and so do its checkpoints
        queue.close()
        await job.wait()
    assert shared_files(root) == referenced(root)


# ---- 5. a new job on a directory that holds checkpoints already


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_new_job_retains_the_directorys_newest_checkpoints_and_sweeps_orphans(
    tmp_path: Path, backend: str
) -> None:
    root = tmp_path / "checkpoints"
    storage = RetentionStorage(root.as_uri())
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job(backend, storage, queue, watch)
    env.checkpoint_config.retained = 2
    totals: dict[str, int] = {}
    expected: dict[int, dict[str, int]] = {}
    with anyio.fail_after(GUARD):
        job = await env.start("first")
        for round_number in range(4):
            records = [(key, round_number + 1) for key in KEYS[round_number : round_number + 40]]
            await feed(queue, watch, records)
            for key, number in records:
                totals[key] = totals.get(key, 0) + number
            checkpoint = await job.trigger_checkpoint()
            expected[checkpoint.checkpoint_id] = dict(totals)
        await storage.cleaned(2)
        queue.close()
        await job.wait()
    old = complete_checkpoints(root)
    assert old == [4, 5]  # 5: the final checkpoint
    expected[5] = dict(totals)
    kept = referenced(root)
    assert shared_files(root) == kept
    assert all(SHARED_NAME.fullmatch(name) for name in kept)  # what a sweep may delete, if orphaned
    orphan = root / "shared" / f"totals-00000000-0-base-{'0123456789abcdef' * 2}"
    orphan.write_bytes(b"LGCK left behind by a process that died mid-checkpoint")
    users = root / "shared" / "notes.txt"  # not lockgate's: a sweep never deletes it
    users.write_text("mine")

    for checkpoint_id in old:  # each restores exactly
        url = (root / f"chk-{checkpoint_id}").as_uri()
        assert await restored_totals(url, KEYS[:44], lg.HeapStateBackend(), 2) == {
            key: expected[checkpoint_id].get(key, 0) for key in KEYS[:44]
        }

    queue = lg.QueueSource()
    watch = Watch()
    storage = RetentionStorage(root.as_uri())
    env = totals_job(backend, storage, queue, watch)
    env.checkpoint_config.retained = 2
    with anyio.fail_after(GUARD):
        job = await env.start("second")
        await feed(queue, watch, [(KEYS[0], 100)])
        await job.trigger_checkpoint()  # the job has started: it swept the shared area first
        assert not orphan.exists() and users.read_text() == "mine"
        # Retention covers the directory, not only this run: the oldest of the first run's went.
        assert complete_checkpoints(root) == [5, 6]
        assert shared_files(root) - {"notes.txt"} == referenced(root)
        await feed(queue, watch, [(KEYS[1], 100)])
        for _ in range(2):  # enough to rotate its own first checkpoint out
            await job.trigger_checkpoint()
        await storage.cleaned(6)
        queue.close()
        await job.wait()
    assert users.read_text() == "mine"
    users.unlink()
    assert complete_checkpoints(root) == [8, 9]  # 9: its final checkpoint
    assert shared_files(root) == referenced(root)


@pytest.mark.anyio
async def test_a_job_on_a_memory_storage_leaves_other_jobs_blobs_alone() -> None:
    # Nothing outlives the process in memory: an unreferenced blob there is another job's upload in
    # progress (two jobs of one environment share its storage), never a leftover to sweep.
    storage = lg.MemoryCheckpointStorage()
    in_progress = await storage.write_shared("totals-00000000-0-base-0123456789abcdef", b"another job's")
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job("heap-incremental", storage, queue, watch)
    with anyio.fail_after(GUARD):
        job = await env.start("beside")
        await feed(queue, watch, [(KEYS[0], 1)])
        await job.trigger_checkpoint()
        queue.close()
        await job.wait()
    assert await storage.read_shared(in_progress) == b"another job's"


class SlowDeleteStorage(lg.FileCheckpointStorage):
    """File storage that, once ``slow``, deletes a checkpoint's directory and then takes its time
    to return (a slow network file system), until the test resumes it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.slow = False
        self.deleting = anyio.Event()
        self.resume = anyio.Event()

    async def discard_checkpoint(self, checkpoint_id: int) -> None:
        await super().discard_checkpoint(checkpoint_id)
        if self.slow:
            self.deleting.set()
            await self.resume.wait()


@pytest.mark.anyio
async def test_when_a_checkpoint_completes_retention_has_deleted_what_it_dropped(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    storage = SlowDeleteStorage(root.as_uri())
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = totals_job("heap-incremental", storage, queue, watch, parallelism=1)
    env.set_state_backend(lg.HeapStateBackend(incremental=True, max_chain_length=1))  # all bases
    returned = anyio.Event()

    async def second_checkpoint() -> None:
        await job.trigger_checkpoint()
        returned.set()

    with anyio.fail_after(GUARD):
        job = await env.start("ends-early")
        await feed(queue, watch, [(key, 1) for key in KEYS[:20]])
        await job.trigger_checkpoint()
        await feed(queue, watch, [(key, 1) for key in KEYS[:20]])
        storage.slow = True
        async with anyio.create_task_group() as group:
            group.start_soon(second_checkpoint)  # completes; retention drops checkpoint 1, slowly
            await storage.deleting.wait()
            await anyio.wait_all_tasks_blocked()
            woken_early = returned.is_set()
            storage.resume.set()
        queue.close()  # a job that ends right after its checkpoint ...
        await job.wait()
    assert complete_checkpoints(root) == [3]  # the final checkpoint
    assert shared_files(root) == referenced(root)  # ... must not leave checkpoint 1's blobs behind
    # As an aborted checkpoint's files are gone before anyone hears of the failure, a completed one
    # has had retention done before its caller hears of it: nothing left for the job's end to cut.
    assert not woken_early


# ---- 6. crashes


def crash_environment(backend: str) -> Callable[[], lg.StreamEnvironment]:
    def make() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=2, channel_capacity=2)
        env.set_state_backend(BACKENDS[backend]())
        return env

    return make


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_crash_after_many_incremental_checkpoints_restores_exactly(backend: str) -> None:
    items = [(key, index) for index, key in enumerate("abcdefghij" * 8)]

    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        env.from_collection(items, uid="src").key_by(lambda r: r[0]).process(Totals(), uid="totals").sink(
            sink, uid="out"
        )
        return sink

    # Checkpoints every 3 records: 24 before the late crash, chains of every length behind it; then a
    # second crash soon after the restart (8 records are left), whose chain starts from a new base.
    schedule = FailureSchedule((Crash("totals", 75), Crash("totals", 5)), checkpoint_every=3)
    report = await assert_exactly_once(build, schedule, environment=crash_environment(backend))
    assert len(report.expected) == len(items)
    assert report.restarts_from_checkpoint == 2


class CrashOnce:
    """A flat map that raises on the first "crash!" record and drops later ones."""

    def __init__(self) -> None:
        self.crashed = False

    def __call__(self, record: Any) -> list[Any]:
        if record[0] != "crash!":
            return [record]
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("crash")
        return []


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_crash_while_a_subtask_uploads_leaves_no_orphan_in_the_shared_area(
    tmp_path: Path, backend: str
) -> None:
    root = tmp_path / "checkpoints"
    storage = StallingStorage(root.as_uri())
    queue: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env = lg.StreamEnvironment(max_parallelism=E2E_MAX_P)
    env.set_state_backend(BACKENDS[backend]())
    env.enable_checkpointing(3600)
    env.set_checkpoint_storage(storage)
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1, delay=0.0))
    stream = env.from_source(queue, uid="src").flat_map(CrashOnce(), uid="crash")
    stream.key_by(lambda r: r[0]).process(Totals(), uid="totals").map(watch, uid="watch").sink(
        lg.CollectSink(), uid="out"
    )

    async def checkpoint_is_cut_short() -> None:
        with pytest.raises(lg.CheckpointError):
            await job.trigger_checkpoint()

    with anyio.fail_after(GUARD):
        job = await env.start("crash-mid-upload")
        await feed(queue, watch, [(key, 1) for key in KEYS[:30]])
        await job.trigger_checkpoint()
        await feed(queue, watch, [(key, 2) for key in KEYS[:5]])  # so checkpoint 2 uploads something
        storage.stall = 2
        async with anyio.create_task_group() as group:
            group.start_soon(checkpoint_is_cut_short)
            await storage.stalled.wait()  # checkpoint 2 uploaded its shared blobs, then stalls
            await queue.put(("crash!", 0))  # the job fails meanwhile, and restarts
        storage.stall = None
        storage.release.set()
        await job.trigger_checkpoint()
        queue.close()
        await job.wait()
    assert job.restarts == 1
    assert shared_files(root) == referenced(root)


@pytest.mark.anyio
@pytest.mark.parametrize("incremental", [False, True])
async def test_window_namespaces_that_empty_are_dropped_and_chains_forget_them(incremental: bool) -> None:
    """Windows come and go: each window's namespace gets a table while it holds something and loses
    it when it empties, whether a snapshot held it or not, so snapshots freeze as many tables as
    there are open windows; an incremental chain then says the namespace is gone."""
    storage = lg.MemoryCheckpointStorage()
    backend = lg.HeapStateBackend(incremental=incremental).create_keyed_backend("op", ALL_KEY_GROUPS, MAX_P)
    contents_state = backend.create_state(lgs.ListStateDescriptor("w"), lgs.ListState, namespaced=True)
    descriptors = {"w": lgs.ListStateDescriptor("w")}
    open_windows: dict[int, list[int]] = {}
    written: Any = None
    for step in range(40):
        window = step // 3  # three records per window; windows 2 behind the newest close
        contents_state.namespace = window
        backend.current_key = step % 4
        contents_state.add_nowait(step)
        open_windows.setdefault(window, []).append(step)
        for closing in [w for w in open_windows if w < window - 1]:
            contents_state.namespace = closing
            for key in range(4):
                backend.current_key = key
                contents_state.clear_nowait()
            del open_windows[closing]
        if step % 5 == 4:
            resources = backend.snapshot_sync(step)
            expected = contents(resources.materialize(), descriptors)
            if incremental:
                written, _ = await write_incremental(resources, storage)
                resources.release()
                backend.notify_checkpoint_complete(step)
                assert contents(await resolve(written, storage), descriptors) == expected
            else:
                resources.release()
            assert {namespace for _, namespace, _ in expected} <= set(open_windows)
    # At most the open windows' tables, the default namespace's and those still to drop.
    assert len(backend._tables["w"]) <= len(open_windows) + 3  # type: ignore[attr-defined]
