"""Timer queues held in keyed state, on every backend: a queue behaves as a set of timers polled
earliest first, for any sequence of adds, removes, polls, snapshots and restores; snapshots, savepoints,
incremental chains and native restores carry exactly the timers of their moment, into either backend
and at any parallelism, with keys and windows as they were added.

Keyed backends are driven directly: whole snapshots through ``backend.snapshot()``, incremental ones
through ``snapshot_sync`` and ``write_incremental`` into a ``MemoryCheckpointStorage``, as the runtime
does; every saved state goes through pickle, as it does into a checkpoint's blobs.
"""

from __future__ import annotations

import io
import math
import pickle
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from lockgate.savepoint import RestoredState
from lockgate.snapshots import SharedStateHandle
from lockgate.state import TIMER_KIND, timer_state_name
from lockgate.state._snapshot import load_keyed_state
from lockgate.state._timers import decode_timestamp
from lockgate.state.heap._incremental import HeapChainManifest, KeyedStateDelta
from lockgate.state.rocksdb._timers import RocksDBTimerQueue
from tests.test_state_backend import AsyncOnlyStateBackend

pytestmark = pytest.mark.anyio

MAX_P = 8
EVENT = timer_state_name("event")
LATEST = (1 << 63) - 1

Timer = tuple[int, Any, Any]


@dataclass(frozen=True)
class TimeWindow:
    """A window namespace, as window operators key their timers."""

    start: int
    end: int


VARIANTS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap": lambda: lg.HeapStateBackend(),
    "heap-incremental": lambda: lg.HeapStateBackend(incremental=True, max_chain_length=3),
    "rocksdb": lambda: lgs.RocksDBStateBackend(incremental=False, memory_budget=8 << 20),
    "rocksdb-incremental": lambda: lgs.RocksDBStateBackend(incremental=True, memory_budget=8 << 20),
}
INCREMENTAL = {"heap-incremental", "rocksdb-incremental"}

#: Keys of every kind a stream may be keyed by: 3 and 3.0 are one key, as they are one dict key.
KEYS: list[Any] = ["a", "b", 3, 3.0, 2.5, ("t", 1), ("u", ("v", -2))]
NAMESPACES: list[Any] = [lgs.DEFAULT_NAMESPACE, TimeWindow(0, 10), TimeWindow(10, 20)]

timers_st = st.tuples(st.integers(-3, 12), st.sampled_from(KEYS), st.sampled_from(NAMESPACES))


# ---- helpers


def keyed(
    variant: str, key_groups: lgs.KeyGroupRange | None = None, max_parallelism: int = MAX_P
) -> lg.KeyedStateBackend:
    key_groups = key_groups or lgs.KeyGroupRange(0, max_parallelism - 1)
    return VARIANTS[variant]().create_keyed_backend("op", key_groups, max_parallelism)


def queue_of(backend: lg.KeyedStateBackend, cache_limit: int = 2) -> lgs.TimerQueue:
    """The event-time queue of ``backend``; RocksDB's with a small cache of each key group's first
    timers, so that running out of it, refilling it and adds and removes past its end all happen."""
    queue = backend.timer_queue("event")
    if isinstance(queue, RocksDBTimerQueue):
        queue.cache_limit = cache_limit
    return queue


class SharedWriter:
    """What the runtime's shared blob writer does for one operator: a unique name per blob."""

    def __init__(self, storage: lg.MemoryCheckpointStorage) -> None:
        self.storage = storage
        self.written: list[SharedStateHandle] = []

    async def write(self, kind: str, data: bytes) -> SharedStateHandle:
        handle = await self.storage.write_shared(f"op-{kind}-{uuid.uuid4().hex}", data)
        self.written.append(handle)
        return handle


@dataclass
class Saved:
    """One subtask's keyed state at one checkpoint: a whole snapshot, or an incremental manifest and
    the shared blobs it references."""

    snapshot: lgs.KeyedStateSnapshot | None = None
    manifest: lgs.KeyedStateManifest | None = None
    shared: dict[str, tuple[bytes, str]] | None = None

    def restorable(self, state_backend: lg.StateBackend) -> Any:
        """What a restore into ``state_backend`` takes: the snapshot, the downloaded files of a RocksDB
        checkpoint (a native restore), or the manifest resolved to a snapshot."""
        if self.snapshot is not None:
            return self.snapshot
        assert self.manifest is not None and self.shared is not None
        prepared = state_backend.prepare_restore(self.manifest, self.shared)
        return self.manifest.resolve(self.shared) if prepared is None else prepared

    def resolved(self) -> lgs.KeyedStateSnapshot:
        if self.snapshot is not None:
            return self.snapshot
        assert self.manifest is not None and self.shared is not None
        return self.manifest.resolve(self.shared)


async def checkpoint(
    backend: lg.KeyedStateBackend, variant: str, storage: lg.MemoryCheckpointStorage, checkpoint_id: int
) -> Saved:
    """A checkpoint of ``backend`` as its variant takes one (confirmed at once)."""
    if variant not in INCREMENTAL:
        snapshot = await backend.snapshot()
        return Saved(snapshot=pickle.loads(pickle.dumps(snapshot, protocol=5)))
    resources = backend.snapshot_sync(checkpoint_id)
    assert isinstance(resources, lgs.IncrementalSnapshotResources)
    try:
        written = await resources.write_incremental(SharedWriter(storage))
    finally:
        resources.release()
    backend.notify_checkpoint_complete(checkpoint_id)
    shared = {handle.name: (await storage.read_shared(handle), handle.pointer) for handle in written.shared}
    return Saved(manifest=pickle.loads(pickle.dumps(written.manifest, protocol=5)), shared=shared)


def restored(
    variant: str,
    saved: list[Saved],
    key_groups: lgs.KeyGroupRange | None = None,
    max_parallelism: int = MAX_P,
) -> lg.KeyedStateBackend:
    """A backend of ``variant`` restored from ``saved`` (each a subtask's state)."""
    state_backend = VARIANTS[variant]()
    key_groups = key_groups or lgs.KeyGroupRange(0, max_parallelism - 1)
    backend = state_backend.create_keyed_backend("op", key_groups, max_parallelism)
    backend.restore([one.restorable(state_backend) for one in saved])
    return backend


def timers_in(snapshot: lgs.KeyedStateSnapshot, name: str = EVENT) -> set[Timer]:
    """The timers a snapshot holds, each checked to be filed once, under its key's key group."""
    assert snapshot.states[name].kind == TIMER_KIND
    assert name not in snapshot.tables  # never the whole-tables form
    found: list[Timer] = []
    for key_group, entries in snapshot.grouped_entries().get(name, {}).items():
        for key, namespace, data in entries:
            assert key_group == lgs.key_group_for(key, snapshot.max_parallelism)
            found.append((decode_timestamp(data), key, namespace))
    assert len(found) == len(set(found)), "a timer is held once"
    return set(found)


def drain(queue: lgs.TimerQueue) -> list[Timer]:
    """Every timer, polled: the order is checked to be by timestamp."""
    polled: list[Timer] = []
    while (timer := queue.poll(LATEST)) is not None:
        polled.append(timer)
    assert [timer[0] for timer in polled] == sorted(timer[0] for timer in polled)
    assert len(queue) == 0 and queue.peek() is None
    return polled


def random_timers(count: int, seed: int) -> set[Timer]:
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(40)] + [i * 7 for i in range(20)] + [(f"t{i}", i) for i in range(10)]
    keys += [i + 0.5 for i in range(10)]
    namespaces: list[Any] = [None, None, TimeWindow(0, 100), TimeWindow(100, 200)]
    timers: set[Timer] = set()
    while len(timers) < count:
        timers.add((rng.randrange(-50, 500), rng.choice(keys), rng.choice(namespaces)))
    return timers


# ---- the queue behaves as a set, polled earliest first, whatever is done to it


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("add"), timers_st),
        st.tuples(st.just("add"), timers_st),  # adds are the most common
        st.tuples(st.just("remove"), timers_st),
        st.tuples(st.just("remove held"), st.integers(0, 100)),
        st.tuples(st.just("poll"), st.integers(-4, 14)),
        st.tuples(st.just("peek"), st.none()),
        st.tuples(st.just("checkpoint"), st.none()),
        st.tuples(st.just("restore"), st.integers(0, 10)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_st)
async def test_a_timer_queue_is_a_set_polled_earliest_first_across_snapshots_and_restores(
    variant: str, ops: list[tuple[str, Any]]
) -> None:
    storage = lg.MemoryCheckpointStorage()
    # Two key groups: the keys share them, so a key group's first timers change often.
    backend = keyed(variant, max_parallelism=2)
    queue = queue_of(backend)
    model: set[Timer] = set()
    saved: list[tuple[Saved, frozenset[Timer]]] = []
    try:
        for op, argument in ops:
            if op == "add":
                assert queue.add(*argument) == (argument not in model)
                model.add(argument)
            elif op == "remove":
                assert queue.remove(*argument) == (argument in model)
                model.discard(argument)
            elif op == "remove held" and model:
                timer = sorted(model, key=repr)[argument % len(model)]
                assert queue.remove(*timer)
                model.remove(timer)
            elif op == "poll":
                due = [timer for timer in model if timer[0] <= argument]
                polled = queue.poll(argument)
                if not due:
                    assert polled is None
                else:
                    assert polled in model and polled[0] == min(timer[0] for timer in due)
                    model.remove(polled)
            elif op == "peek":
                assert queue.peek() == min((timer[0] for timer in model), default=None)
            elif op == "checkpoint":
                taken = await checkpoint(backend, variant, storage, len(saved) + 1)
                assert timers_in(taken.resolved()) == model
                saved.append((taken, frozenset(model)))
            elif op == "restore" and saved:
                # Back to an earlier checkpoint: its timers exactly, whatever happened since.
                taken, then = saved[argument % len(saved)]
                await backend.dispose()
                backend = restored(variant, [taken], max_parallelism=2)
                queue = queue_of(backend)
                model = set(then)
                assert timers_in(await backend.snapshot()) == model
            assert len(queue) == len(model)
        assert set(drain(queue)) == model
    finally:
        await backend.dispose()


queue_ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("add"), timers_st),
        st.tuples(st.just("add"), timers_st),
        st.tuples(st.just("remove"), timers_st),
        st.tuples(st.just("remove held"), st.integers(0, 100)),
        st.tuples(st.just("poll"), st.integers(-4, 14)),
    ),
    max_size=80,
)


@pytest.mark.parametrize("variant", ["heap", "rocksdb"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=queue_ops_st, cache_limit=st.integers(1, 3))
async def test_a_queue_of_one_key_group_polls_as_the_model_whatever_its_cache_holds(
    variant: str, ops: list[tuple[str, Any]], cache_limit: int
) -> None:
    # Every timer in one key group, and RocksDB keeping 1 to 3 of its first timers in memory: adds
    # below and past the cached ones, removes of cached and uncached ones and polls that empty the cache
    # all interleave.
    backend = keyed(variant, max_parallelism=1)
    try:
        queue = queue_of(backend, cache_limit)
        model: set[Timer] = set()
        for op, argument in ops:
            if op == "add":
                assert queue.add(*argument) == (argument not in model)
                model.add(argument)
            elif op == "remove":
                assert queue.remove(*argument) == (argument in model)
                model.discard(argument)
            elif op == "remove held" and model:
                timer = sorted(model, key=repr)[argument % len(model)]
                assert queue.remove(*timer)
                model.remove(timer)
            elif op == "poll":
                due = [timer for timer in model if timer[0] <= argument]
                polled = queue.poll(argument)
                assert (polled is None) == (not due)
                if due:
                    assert polled in model and polled[0] == min(timer[0] for timer in due)
                    model.remove(polled)
            assert queue.peek() == min((timer[0] for timer in model), default=None)
            assert len(queue) == len(model)
            if isinstance(queue, RocksDBTimerQueue):
                assert all(len(head.timers) <= cache_limit for head in queue._heads_cache.values())
        assert set(drain(queue)) == model
    finally:
        await backend.dispose()


@pytest.mark.parametrize("variant", VARIANTS)
async def test_timers_of_one_key_and_namespace_at_several_timestamps_stay_apart(variant: str) -> None:
    storage = lg.MemoryCheckpointStorage()
    backend = keyed(variant)
    try:
        queue = queue_of(backend)
        window = TimeWindow(0, 10)
        for timestamp in (9, 4, 7, 4):
            queue.add(timestamp, "k", window)
            queue.add(timestamp, "k", None)
        first = await checkpoint(backend, variant, storage, 1)
        assert len(queue) == 6
        assert queue.remove(7, "k", window) and not queue.remove(7, "k", window)
        polled = queue.poll(4)
        assert polled in {(4, "k", window), (4, "k", None)}  # ties in any order
        second = await checkpoint(backend, variant, storage, 2)
        every = {(timestamp, "k", ns) for timestamp in (9, 4, 7) for ns in (window, None)}
        assert timers_in(first.resolved()) == every
        expected = every - {(7, "k", window), polled}
        assert timers_in(second.resolved()) == expected
        for target in ("heap", "rocksdb"):
            again = restored(target, [second])
            try:
                assert set(drain(queue_of(again))) == expected
            finally:
                await again.dispose()
    finally:
        await backend.dispose()


# ---- keys and windows come back as they were added


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("target", ["heap", "rocksdb"])
async def test_keys_and_windows_come_back_as_they_were_added(variant: str, target: str) -> None:
    keys: list[Any] = ["k", 7, -2.5, 3.0, ("t", 1, "x"), (), "", b"raw"]
    added = {(index, key, ns) for index, key in enumerate(keys) for ns in (None, TimeWindow(index, 10))}
    storage = lg.MemoryCheckpointStorage()
    backend = keyed(variant)
    try:
        queue = queue_of(backend)
        for timer in added:
            assert queue.add(*timer)
        saved = await checkpoint(backend, variant, storage, 1)
    finally:
        await backend.dispose()
    again = restored(target, [saved])
    try:
        polled = drain(queue_of(again))
    finally:
        await again.dispose()
    assert set(polled) == added
    # The same objects: 3.0 stays a float, a window a TimeWindow, a tuple a tuple.
    assert {(type(key), type(ns)) for _, key, ns in polled} == {(type(key), type(ns)) for _, key, ns in added}


# ---- rescaling: each subtask gets exactly its key groups' timers


@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_restore_at_any_parallelism_takes_exactly_the_timers_of_its_key_groups(variant: str) -> None:
    timers = random_timers(300, seed=7)
    storage = lg.MemoryCheckpointStorage()
    for old in range(1, 5):
        saved: list[Saved] = []
        for index in range(old):
            key_groups = lgs.KeyGroupRange.for_subtask(MAX_P, old, index)
            backend = keyed(variant, key_groups)
            try:
                queue = queue_of(backend)
                mine = {timer for timer in timers if lgs.key_group_for(timer[1], MAX_P) in key_groups}
                for timer in mine:
                    queue.add(*timer)
                # Some changes after a first checkpoint: incremental ones write them as a delta.
                await checkpoint(backend, variant, storage, 1)
                extra = (999, f"extra-{index}-{old}", None)
                queue.add(*extra)
                assert queue.remove(*extra)
                saved.append(await checkpoint(backend, variant, storage, 2))
            finally:
                await backend.dispose()
        for new in range(1, 5):
            for target in ("heap", "rocksdb-incremental"):
                union: list[Timer] = []
                for index in range(new):
                    key_groups = lgs.KeyGroupRange.for_subtask(MAX_P, new, index)
                    backend = restored(target, saved, key_groups)
                    try:
                        got = drain(queue_of(backend, cache_limit=8))
                    finally:
                        await backend.dispose()
                    assert all(lgs.key_group_for(timer[1], MAX_P) in key_groups for timer in got), (old, new)
                    union.extend(got)
                assert len(union) == len(timers) and set(union) == timers, (old, new, target)


# ---- savepoints: the canonical form is the same on both backends, and goes both ways


def savepoint_of(resources: lgs.SnapshotResources) -> lgs.KeyedStateSnapshot:
    """The snapshot a savepoint's keyed state file holds, read back whole."""
    snapshot = load_keyed_state(io.BytesIO(resources.encode(canonical=True)))
    assert isinstance(snapshot, lgs.KeyedStateSnapshot)
    return snapshot


async def test_a_heap_savepoint_restores_into_rocksdb_and_back() -> None:
    timers = random_timers(200, seed=3)
    heap = keyed("heap")
    try:
        queue = queue_of(heap)
        for timer in timers:
            queue.add(*timer)
        heap_resources = heap.snapshot_sync()
        try:
            savepoint = savepoint_of(heap_resources)
        finally:
            heap_resources.release()
    finally:
        await heap.dispose()
    assert not savepoint.tables
    rocks = restored("rocksdb", [Saved(snapshot=savepoint)])
    try:
        queue = queue_of(rocks)
        assert len(queue) == len(timers)
        resources = rocks.snapshot_sync()
        try:
            rocks_savepoint = savepoint_of(resources)
        finally:
            resources.release()
        # Entry for entry the same form, whichever backend wrote it.
        assert _entries(rocks_savepoint) == _entries(savepoint)
        for timer in sorted(timers, key=repr)[:50]:
            assert queue.remove(*timer)
        assert queue.add(1000, "late", TimeWindow(1000, 2000))
        resources = rocks.snapshot_sync()
        try:
            changed = savepoint_of(resources)
        finally:
            resources.release()
    finally:
        await rocks.dispose()
    expected = (timers - set(sorted(timers, key=repr)[:50])) | {(1000, "late", TimeWindow(1000, 2000))}
    back = restored("heap", [Saved(snapshot=changed)])
    assert set(drain(queue_of(back))) == expected


def _entries(snapshot: lgs.KeyedStateSnapshot) -> dict[int, Counter[tuple[bytes, bytes, bytes]]]:
    """A timer state's entries, by key group, compared by their canonical bytes."""
    return {
        key_group: Counter(
            (lgs.canonical_key_bytes(key), lgs.canonical_key_bytes(ns), data) for key, ns, data in entries
        )
        for key_group, entries in snapshot.entries[EVENT].items()
    }


# ---- incremental chains carry timers added and removed between checkpoints


@pytest.mark.parametrize("variant", sorted(INCREMENTAL))
async def test_an_incremental_chain_of_adds_and_removes_restores_the_last_checkpoints_timers(
    variant: str,
) -> None:
    rng = random.Random(11)
    storage = lg.MemoryCheckpointStorage()
    backend = keyed(variant)
    model: set[Timer] = set()
    checkpoints: list[tuple[Saved, frozenset[Timer]]] = []
    if isinstance(backend, lgs.HeapKeyedStateBackend):
        backend.rebase_fraction = math.inf  # deltas stay deltas, however much changed
    try:
        queue = queue_of(backend)
        # Chains of at most 3 links: 1 base, 2 and 3 deltas on it, 4 a new base, 5 and 6 deltas.
        for checkpoint_id in range(1, 7):
            for timer in random_timers(60, seed=checkpoint_id):
                if queue.add(*timer):
                    model.add(timer)
            for timer in rng.sample(sorted(model, key=repr), len(model) // 4):
                assert queue.remove(*timer)
                model.remove(timer)
            for _ in range(10):
                polled = queue.poll(rng.randrange(0, 100))
                if polled is not None:
                    model.remove(polled)
            checkpoints.append((await checkpoint(backend, variant, storage, checkpoint_id), frozenset(model)))
    finally:
        await backend.dispose()
    last, expected = checkpoints[-1]
    if variant == "heap-incremental":
        assert isinstance(last.manifest, HeapChainManifest) and len(last.manifest.links) == 3
        for link in last.manifest.links[1:]:
            delta = pickle.loads(await storage.read_shared(link))
            assert isinstance(delta, KeyedStateDelta)
            assert delta.entries[EVENT] and delta.removed[EVENT]
            # A removed timer is (namespace, key, timestamp bytes): its key and namespace hold others.
            assert all(len(item) == 3 for item in delta.removed[EVENT])
    for saved, then in checkpoints:
        assert timers_in(saved.resolved()) == then
    for target in ("heap", "rocksdb"):
        again = restored(target, [last])
        try:
            assert set(drain(queue_of(again))) == expected
        finally:
            await again.dispose()


@pytest.mark.parametrize("variant", sorted(INCREMENTAL))
async def test_a_queue_first_requested_after_a_confirmed_checkpoint_replaces_its_restored_timers(
    variant: str,
) -> None:
    storage = lg.MemoryCheckpointStorage()
    timers = random_timers(40, seed=5)
    backend = keyed(variant)
    try:
        queue = queue_of(backend)
        for timer in timers:
            queue.add(*timer)
        first = await checkpoint(backend, variant, storage, 1)
    finally:
        await backend.dispose()
    backend = restored(variant, [first])
    try:
        # Not requested yet: the restored timers are kept as they are.
        assert timers_in((await checkpoint(backend, variant, storage, 2)).resolved()) == timers
        queue = queue_of(backend)
        gone = sorted(timers, key=repr)[:10]
        for timer in gone:
            assert queue.remove(*timer)
        queue.add(7, "new", None)
        third = await checkpoint(backend, variant, storage, 3)
    finally:
        await backend.dispose()
    expected = (timers - set(gone)) | {(7, "new", None)}
    assert timers_in(third.resolved()) == expected
    again = restored("heap", [third])
    assert set(drain(queue_of(again))) == expected


# ---- restored timers no queue was requested for are kept


@pytest.mark.parametrize("variant", VARIANTS)
async def test_restored_timers_of_a_queue_never_requested_are_kept_in_later_snapshots(variant: str) -> None:
    storage = lg.MemoryCheckpointStorage()
    timers = random_timers(100, seed=9)
    halves = lgs.KeyGroupRange(0, MAX_P // 2 - 1), lgs.KeyGroupRange(MAX_P // 2, MAX_P - 1)
    saved: list[Saved] = []
    for key_groups in halves:
        backend = keyed(variant, key_groups)
        try:
            queue = queue_of(backend)
            for timer in timers:
                if lgs.key_group_for(timer[1], MAX_P) in key_groups:
                    queue.add(*timer)
            if lgs.key_group_for("p", MAX_P) in key_groups:
                backend.timer_queue("processing").add(5, "p", None)
            saved.append(await checkpoint(backend, variant, storage, 1))
        finally:
            await backend.dispose()
    # One subtask takes both halves (RocksDB: one natively, the other entry by entry), requests the
    # processing-time queue only, and registers an ordinary state; its checkpoint keeps the rest.
    backend = restored(variant, saved)
    try:
        assert backend.timer_queue("processing").poll(LATEST) == (5, "p", None)
        backend.create_state(lgs.ValueStateDescriptor("v"), lgs.ValueState)
        kept = await checkpoint(backend, variant, storage, 2)
    finally:
        await backend.dispose()
    assert timers_in(kept.resolved()) == timers
    for target in ("heap", "rocksdb"):
        again = restored(target, [kept])
        try:
            assert set(drain(queue_of(again))) == timers
            assert again.timer_queue("processing").peek() is None
        finally:
            await again.dispose()


# ---- costs: a heap snapshot copies no timer; a RocksDB poll does not read the column family


async def test_the_synchronous_part_of_a_heap_snapshot_freezes_the_timers_without_copying_them() -> None:
    backend = keyed("heap")
    queue = queue_of(backend)
    for timestamp in range(10_000):
        queue.add(timestamp, f"k{timestamp % 100}", None)
    table = backend._tables[EVENT][lgs.DEFAULT_NAMESPACE]  # type: ignore[attr-defined]
    held = table.top
    resources = backend.snapshot_sync()
    try:
        assert table.frozen[-1] is held and table.top == {}  # frozen as it is, not copied
        assert queue.poll(0) == (0, "k0", None)  # later changes go above the frozen layer
        queue.add(-1, "later", None)
        assert len(held) == 10_000
        assert timers_in(resources.materialize()) == {(t, f"k{t % 100}", None) for t in range(10_000)}
    finally:
        resources.release()
    assert len(queue) == 10_000


async def test_rocksdb_polls_read_a_key_group_once_per_cache_of_its_first_timers() -> None:
    backend = keyed("rocksdb")
    try:
        queue = queue_of(backend, cache_limit=32)
        assert isinstance(queue, RocksDBTimerQueue)
        timers = random_timers(2000, seed=1)
        for timer in timers:
            queue.add(*timer)
        loads = 0
        original = queue._load

        def counting(key_group: int, start: int) -> Any:
            nonlocal loads
            loads += 1
            return original(key_group, start)

        queue._load = counting  # type: ignore[method-assign]
        for _ in range(100):
            assert queue.peek() is not None  # reads nothing
        assert loads == 0
        polled: list[Timer] = []
        while (timer := queue.poll(LATEST)) is not None:
            polled.append(timer)
            if len(polled) % 7 == 0:  # adds and removes in between, before and after the polls
                queue.add(timer[0] + 3, ("again", len(polled)), None)
                queue.remove(timer[0] + 3, ("again", len(polled) - 7), None)
        assert loads <= len(polled) // 32 + 3 * MAX_P
        assert [timer[0] for timer in polled] == sorted(timer[0] for timer in polled)
        assert timers <= set(polled)
    finally:
        await backend.dispose()


@pytest.mark.parametrize("variant", ["heap", "rocksdb"])
async def test_the_in_memory_index_stays_bounded_however_often_timers_come_and_go(variant: str) -> None:
    backend = keyed(variant)
    try:
        queue = queue_of(backend)
        for timestamp in range(100):
            queue.add(timestamp, f"k{timestamp}", None)
        for turn in range(5000):  # an earliest timer added and removed again and again
            assert queue.add(-1, f"churn{turn % 3}", None) and queue.remove(-1, f"churn{turn % 3}", None)
        if isinstance(queue, RocksDBTimerQueue):
            assert len(queue._order) <= 2 * len(queue._heads) + 64
        else:
            assert len(queue._heap) <= 2 * len(queue) + 64  # type: ignore[attr-defined]
        assert [timer[0] for timer in drain(queue)] == list(range(100))
    finally:
        await backend.dispose()


# ---- the interface around the queues


@pytest.mark.parametrize("variant", ["heap", "rocksdb"])
async def test_one_queue_per_domain_and_timestamps_are_ints(variant: str) -> None:
    backend = keyed(variant)
    try:
        event, processing = backend.timer_queue("event"), backend.timer_queue("processing")
        assert backend.timer_queue("event") is event and event is not processing
        event.add(1, "k", None)
        assert processing.peek() is None and len(processing) == 0
        with pytest.raises(ValueError, match="domain"):
            backend.timer_queue("ingestion")
        with pytest.raises(TypeError, match="int"):
            event.add(1.5, "k", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="8 signed bytes"):
            event.add(1 << 63, "k", None)
        assert event.add(-(1 << 63), "min", None) and event.add(LATEST, "max", None)
        assert drain(event) == [(-(1 << 63), "min", None), (1, "k", None), (LATEST, "max", None)]
        snapshot = await backend.snapshot()
        meta = snapshot.states[timer_state_name("processing")]
        assert (meta.kind, meta.serializer, meta.ttl) == (TIMER_KIND, lgs.DEFAULT_SERIALIZER.snapshot(), None)
    finally:
        await backend.dispose()


async def test_a_backend_without_timers_says_so() -> None:
    backend = AsyncOnlyStateBackend().create_keyed_backend("op", lgs.KeyGroupRange(0, 0), 1)
    with pytest.raises(lg.ConfigurationError, match="holds no timers"):
        backend.timer_queue("event")


@pytest.mark.parametrize("variant", ["heap", "rocksdb"])
async def test_a_restored_state_of_the_timers_name_but_another_kind_is_refused(variant: str) -> None:
    backend = keyed("heap")
    backend.create_state(lgs.ValueStateDescriptor(EVENT), lgs.ValueState)
    backend.current_key = "k"
    backend.put_nowait(EVENT, "k", None, 1)
    snapshot = await backend.snapshot()
    again = restored(variant, [Saved(snapshot=snapshot)])
    try:
        with pytest.raises(lg.IncompatibleStateError, match="timers"):
            again.timer_queue("event")
    finally:
        await again.dispose()


async def test_a_checkpoint_holding_timers_passes_the_restore_checks() -> None:
    backend = keyed("heap")
    backend.timer_queue("event").add(3, "k", TimeWindow(0, 5))
    snapshot = await backend.snapshot()
    state = RestoredState(1, "memory://x", MAX_P, {"op": [snapshot]}, {}, {"op"})
    state.check_against(MAX_P, {"op": 3}, allow_non_restored_state=False)
