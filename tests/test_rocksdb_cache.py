"""The RocksDB backend's value cache (``_store._Space``) changes nothing observable: for any sequence
of batches of reads and writes, unfinished batches, queries, snapshots and restores, every read, query
and restored state is what a plain dict of the writes says, whatever the cache evicts meanwhile.

An actor's snapshot (``snapshot_capture``) holds the cache's writes back and writes them in steps
after its barrier (``_Store.hold_back``): whatever runs in between (batches, writes outside a batch,
other snapshots, evictions), each such snapshot holds exactly the state as of its barrier."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.state import KeyGroupRange, RocksDBKeyedStateBackend, RocksDBStateBackend
from lockgate.state._keygroups import _key_hashes
from lockgate.state.rocksdb._options import _KEY_CACHE_ENTRY_BYTES
from lockgate.state.rocksdb._snapshots import _RocksDBSnapshotResources
from lockgate.state.rocksdb._store import _HeldBack, _Space, _Store
from lockgate.testing import FailureSchedule, assert_exactly_once, failure_schedules

MAX_P = 128
DEFAULT = -1

KEYS = st.sampled_from([f"k{i}" for i in range(12)] + [3, (1, "t")])
VALUES = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.text(min_size=120, max_size=130),  # too large to keep as an object: kept as bytes
    st.lists(st.integers(), max_size=3),  # mutable: kept as bytes across batches
    st.none(),
)
ACTIONS = st.tuples(KEYS, st.sampled_from(["get", "put", "delete"]), VALUES)
STEPS = st.one_of(
    st.tuples(st.just("batch"), st.lists(ACTIONS, max_size=12), st.booleans()),
    st.tuples(st.just("query"), KEYS),
    st.tuples(st.just("snapshot"), st.booleans()),
    # An actor's snapshot, held back until a "complete" (or "abandon") names it; "steps" writes a few
    # of the held-back entries, as the snapshot does between batches; "outside" writes outside a batch.
    st.tuples(st.just("capture")),
    st.tuples(st.just("steps"), st.integers(1, 3)),
    st.tuples(st.sampled_from(["complete", "abandon"]), st.integers(0, 3)),
    st.tuples(st.just("outside"), KEYS, st.integers()),
)


def make_backend(cache_limit: int, restored: Any = None) -> tuple[RocksDBKeyedStateBackend, Any]:
    backend = RocksDBStateBackend().create_keyed_backend("op", KeyGroupRange(0, MAX_P - 1), MAX_P)
    if restored is not None:
        backend.restore([restored])
    backend._store.value_cache_limit = cache_limit  # a few entries: the cache evicts often
    state = backend.create_state(lg.ValueStateDescriptor("total", default=DEFAULT), lg.ValueState)
    return backend, state


async def check_restores(snapshot: Any, model: dict[Any, Any], cache_limit: int) -> None:
    restored, _ = make_backend(cache_limit, snapshot)
    try:
        found = await restored.get_many("total", list(model), None)
        assert dict(zip(model, found, strict=True)) == model
        assert {key: value async for key, value in restored.items("total", None)} == model
    finally:
        await restored.dispose()


async def run_steps(steps: list[Any], cache_limit: int) -> None:
    backend, state = make_backend(cache_limit)
    model: dict[Any, Any] = {}
    captured: list[tuple[_RocksDBSnapshotResources, dict[Any, Any]]] = []  # with the state at its barrier
    try:
        for step in steps:
            if step[0] == "batch":
                _, actions, finishes = step
                await backend.prepare_batch([key for key, _, _ in actions])
                for key, action, value in actions:
                    backend.current_key = key
                    if action == "get":
                        assert state.value_nowait() == model.get(key, DEFAULT)
                    elif action == "put":
                        state.update_nowait(value)
                        if value is None:  # update(None) clears
                            model.pop(key, None)
                        else:
                            model[key] = value
                    else:
                        state.clear_nowait()
                        model.pop(key, None)
                if finishes:  # else the function raised: the batch stays open
                    await backend.finish_batch()
            elif step[0] == "query":
                space = backend._store.tables["total"].default
                assert isinstance(space, _Space)
                cached_before = dict(space.values)
                assert backend.query_nowait("total", step[1]) == model.get(step[1])
                assert dict(space.values) == cached_before  # a query fills nothing
            elif step[0] == "snapshot":
                whole = backend.snapshot_sync()
                snapshot = whole.materialize()
                whole.release()
                restored, restored_state = make_backend(cache_limit, snapshot)
                found = await restored.get_many("total", list(model), None)
                assert dict(zip(model, found, strict=True)) == model
                if step[1]:  # go on with the restored backend
                    for resources, _ in captured:  # (a restored job never completes them)
                        resources.release()
                    captured.clear()
                    await backend.dispose()
                    backend, state = restored, restored_state
                else:
                    await restored.dispose()
            elif step[0] == "capture":
                resources = await backend.snapshot_capture(len(captured) + 1)
                assert isinstance(resources, _RocksDBSnapshotResources)
                captured.append((resources, dict(model)))
            elif step[0] == "steps":
                for _ in range(step[1]):
                    backend._store.write_step(2)
            elif step[0] in ("complete", "abandon") and captured:
                resources, at_barrier = captured.pop(step[1] % len(captured))
                try:
                    if step[0] == "complete":
                        await resources._take_checkpoint()
                        await check_restores(resources.materialize(), at_barrier, cache_limit)
                finally:
                    resources.release()
            elif step[0] == "outside":
                _, key, value = step
                await backend.put("total", key, None, value)
                model[key] = value
        assert {key: value async for key, value in backend.items("total", None)} == model
        for resources, at_barrier in captured:  # completed last, in any order
            await resources._take_checkpoint()
            await check_restores(resources.materialize(), at_barrier, cache_limit)
            resources.release()
        captured.clear()
    finally:
        for resources, _ in captured:
            resources.release()
        await backend.dispose()


def check_steps(steps: list[Any], cache_limit: int) -> None:
    anyio.run(run_steps, steps, cache_limit)


# The case a held-back snapshot exists for, which random steps seldom make: a key dirty at the barrier
# changes again before the snapshot is written.
CHANGED_AFTER_THE_BARRIER = [
    ("batch", [("k1", "put", 1), ("k2", "put", [1])], True),
    ("capture",),
    ("batch", [("k1", "put", 2), ("k2", "put", [2])], True),
    ("steps", 1),
    ("complete", 0),
]


def SCENARIOS(test: Any) -> Any:
    return example(steps=CHANGED_AFTER_THE_BARRIER, cache_limit=1 << 20)(
        given(steps=st.lists(STEPS, max_size=14), cache_limit=st.sampled_from([0, 600, 2000, 1 << 20]))(test)
    )


test_the_value_cache_changes_nothing_observable = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)(SCENARIOS(check_steps))


def _hold_back_keys_only(self: _Store, path: str) -> _HeldBack:
    """A planted bug: a snapshot sets aside its dirty keys, not their values, and writes the values
    cached when it writes them, which later batches may have changed."""
    parts: list[tuple[_Space, Iterator[tuple[Any, Any]]]] = []
    for space in self.value_spaces():
        if space.dirty:
            keys, values = list(space.dirty), space.values
            parts.append((space, ((key, values[key]) for key in keys)))
            space.dirty = {}
    held_back = _HeldBack(path, parts, 0)
    self.held_back.append(held_back)
    return held_back


_settle = _Store.settle


def _settle_only_for_the_snapshot(self: _Store, upto: _HeldBack | None = None) -> None:
    """A planted bug: what writes to RocksDB directly does not settle the held-back snapshots first."""
    if upto is not None:
        _settle(self, upto)


@pytest.mark.parametrize(
    "planted",
    [
        # a snapshot that does not write the cache first misses the batches' writes
        ("flush", lambda self: None),
        # a held-back snapshot writes values of after its barrier
        ("hold_back", _hold_back_keys_only),
        # writes outside the value cache reach RocksDB before a held-back snapshot's checkpoint:
        # only the snapshot itself takes it
        ("settle", _settle_only_for_the_snapshot),
    ],
    ids=["no-flush", "keys-only", "no-settle"],
)
def test_planted_bugs_are_caught(planted: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The property test above finds each planted bug."""
    monkeypatch.setattr(_Store, *planted)
    planted_run = settings(
        max_examples=100,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # the first failure is enough: no shrinking
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )(SCENARIOS(check_steps))
    with pytest.raises(AssertionError):
        planted_run()


def test_the_cache_stays_within_its_share_of_the_memory_budget() -> None:
    async def main() -> None:
        backend, state = make_backend(20_000)
        for start in range(0, 2000, 100):
            keys = [f"key{i}" for i in range(start, start + 100)]
            await backend.prepare_batch(keys)
            for key in keys:
                backend.current_key = key
                state.update_nowait(state.value_nowait() + 1)
            await backend.finish_batch()
            assert backend.memory_usage()["value_cache_usage"] <= 20_000
        found = await backend.get_many("total", [f"key{i}" for i in range(2000)], None)
        assert found == [DEFAULT + 1] * 2000
        await backend.dispose()

    anyio.run(main)


def test_keys_stored_in_rocksdb_stay_out_of_the_process_key_hash_cache() -> None:
    """The backend hashes the bytes it makes for a RocksDB key: the process's key-hash cache, which
    partitioning fills, would keep each key a second time, outside the memory budget."""

    async def main() -> None:
        keys = [f"kept-once-{i}" for i in range(300)]
        backend, state = make_backend(1000)  # a few entries: the cache evicts, writing to RocksDB
        try:
            await backend.prepare_batch(keys)
            for key in keys:
                backend.current_key = key
                state.update_nowait(7)
            await backend.finish_batch()
            assert await backend.get_many("total", keys, None) == [7] * 300
            whole = backend.snapshot_sync()
            snapshot = whole.materialize()
            whole.release()
            restored, _ = make_backend(1000, snapshot)
            try:
                assert await restored.get_many("total", keys, None) == [7] * 300
            finally:
                await restored.dispose()
        finally:
            await backend.dispose()
        assert not any(key in _key_hashes.entries for key in keys)

    anyio.run(main)


KEY_CACHE_KEYS = (
    st.text(max_size=12)
    | st.integers()
    | st.tuples(st.text(max_size=4), st.integers())
    | st.text(min_size=100, max_size=2000)  # large keys: fewer fit, some not at all
)


@settings(max_examples=200, deadline=None)
@given(st.lists(KEY_CACHE_KEYS, max_size=80), st.integers(0, 3000))
@example(["x" * 3000, "a", "x" * 3000], 600)  # a key over the limit alone leaves the others cached
def test_the_key_cache_stays_within_its_bytes_for_any_keys(keys: list[Any], limit: int) -> None:
    """Whatever keys come, the store's cache of RocksDB keys answers each key's own bytes, and what
    it holds (each entry's slot, key object and bytes object) stays within its limit in bytes."""
    store = _Store("op", MAX_P, 1 << 20, limit, "unused", None)  # type: ignore[arg-type]  # no database
    for key in keys * 2:
        before = dict(store.keys.entries)
        assert store.key_bytes(key) == store.make_key_bytes(key)
        held = sum(
            _KEY_CACHE_ENTRY_BYTES + sys.getsizeof(k) + sys.getsizeof(data)
            for k, data in store.keys.entries.items()
        )
        assert held == store.keys.charged <= limit
        if key not in store.keys.entries:  # not kept: only a key too large for the whole cache
            assert store.keys.entries == before
            assert (
                _KEY_CACHE_ENTRY_BYTES + sys.getsizeof(key) + sys.getsizeof(store.make_key_bytes(key)) > limit
            )


class RunningSum(lg.MapFunction[tuple[str, int], tuple[str, int]]):
    """The fast form on a keyed stream: a value state the cache keeps across batches."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0))

    def map(self, value: tuple[str, int]) -> tuple[str, int]:
        total = self.total.value_nowait() + value[1]
        self.total.update_nowait(total)
        return (value[0], total)


def running_sums(items: list[tuple[str, int]]) -> Any:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        keyed = env.from_collection(items, uid="src").key_by(lambda r: r[0])
        keyed.map(RunningSum(), uid="sum").sink(sink, uid="out")
        return sink

    return build


def rocksdb_environment() -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=4, channel_capacity=2)
    env.set_state_backend(lg.RocksDBStateBackend(incremental=True))
    return env


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(st.sampled_from("abcdefghij"), st.integers(-50, 50)), min_size=5, max_size=80),
    schedule=failure_schedules(["src", "sum", "out"], max_record=60, max_checkpoint_every=8),
)
def test_a_job_restored_from_held_back_snapshots_is_exactly_once(
    items: list[tuple[str, int]], schedule: FailureSchedule
) -> None:
    """Running sums on RocksDB whose checkpoints write the value cache after their barriers (a job's
    snapshots hold its writes back), crashed and restored from them: what the sink commits is what a
    run without failures commits, each record once."""
    anyio.run(lambda: assert_exactly_once(running_sums(items), schedule, environment=rocksdb_environment))
