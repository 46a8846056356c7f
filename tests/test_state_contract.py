"""Every kind of keyed state behaves like a plain-Python model, on every backend, for any sequence
of operations over several keys, with and without TTL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from tests.test_state_backend import AsyncOnlyStateBackend

pytestmark = pytest.mark.anyio

BACKENDS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap": lg.HeapStateBackend,
    "rocksdb": lgs.RocksDBStateBackend,
    "async-only": AsyncOnlyStateBackend,
}
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

keys = st.sampled_from(["a", "b", 3])
values = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=2))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keyed_backend(name: str, clock: Clock) -> lg.KeyedStateBackend:
    backend = BACKENDS[name]().create_keyed_backend("op", lgs.KeyGroupRange(0, 127), 128)
    backend.clock = clock
    return backend


async def call(state: Any, method: str, nowait: bool, *args: Any) -> Any:
    """Call ``method`` of ``state`` in its awaitable or its *_nowait form (where the backend has it)."""
    if nowait and state._backend.supports_nowait:
        return getattr(state, f"{method}_nowait")(*args)
    result = getattr(state, method)(*args)
    if hasattr(result, "__aiter__"):
        return [item async for item in result]
    return await result


class TtlModel:
    """A reference model of per-entry TTL: entries are (value, timestamp)."""

    def __init__(self, ttl: lg.StateTtlConfig | None, clock: Clock) -> None:
        self.ttl = ttl
        self.clock = clock

    def fresh(self, entry: tuple[Any, float]) -> bool:
        return self.ttl is None or self.clock.now < entry[1] + self.ttl.ttl_seconds

    def read(self, entry: tuple[Any, float]) -> tuple[bool, tuple[Any, float] | None]:
        """(visible, entry to keep or None): the backend's rules, spelled out independently."""
        if self.ttl is None:
            return True, entry
        if not self.fresh(entry):
            visible = self.ttl.visibility is lg.StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp
            return visible, None
        if self.ttl.update_type is lg.StateTtlConfig.UpdateType.OnReadAndWrite:
            return True, (entry[0], self.clock.now)
        return True, entry


ttl_configs = st.one_of(
    st.none(),
    st.builds(
        lg.StateTtlConfig,
        st.sampled_from([5.0, 10.0]),
        st.sampled_from(list(lg.StateTtlConfig.UpdateType)),
        st.sampled_from(list(lg.StateTtlConfig.StateVisibility)),
    ),
)
advance = st.sampled_from([0.0, 0.0, 3.0, 7.0])


@pytest.mark.parametrize("backend_name", BACKENDS)
@SETTINGS
@given(
    ttl=ttl_configs,
    ops=st.lists(
        st.tuples(keys, st.sampled_from(["value", "update", "clear"]), values, st.booleans(), advance),
        max_size=40,
    ),
)
async def test_value_state_matches_the_model(backend_name: str, ttl: Any, ops: list[Any]) -> None:
    clock = Clock()
    backend = keyed_backend(backend_name, clock)
    try:
        state = backend.create_state(lgs.ValueStateDescriptor("v", default="dflt", ttl=ttl), lgs.ValueState)
        model: dict[Any, tuple[Any, float]] = {}
        rules = TtlModel(ttl, clock)
        for key, op, value, nowait, step in ops:
            clock.now += step
            backend.current_key = key
            if op == "value":
                expected = "dflt"
                if key in model:
                    visible, kept = rules.read(model[key])
                    expected = model[key][0] if visible else "dflt"
                    if kept is None:
                        del model[key]
                    else:
                        model[key] = kept
                assert await call(state, "value", nowait) == expected
            elif op == "update":
                await call(state, "update", nowait, value)
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = (value, clock.now)
            else:
                await call(state, "clear", nowait)
                model.pop(key, None)
    finally:
        await backend.dispose()  # RocksDB: close and remove its working directory


@pytest.mark.parametrize("backend_name", ["heap", "rocksdb"])  # the backends with synchronous access
@SETTINGS
@given(
    ttl=ttl_configs,
    batches=st.lists(st.tuples(st.lists(st.tuples(keys, values), max_size=8), advance), max_size=6),
)
async def test_a_batch_run_by_the_state_equals_reading_and_updating_record_by_record(
    backend_name: str, ttl: Any, batches: list[Any]
) -> None:
    """``ValueState.map_batch_nowait`` (map_with_state's loop; the heap runs it on its table directly)
    against ``value_nowait`` and ``update_nowait`` per record on a backend of the same kind."""
    clock = Clock()
    batched, stepped = keyed_backend(backend_name, clock), keyed_backend(backend_name, clock)

    def step(record: Any, value: Any) -> tuple[Any, Any]:
        return (value, record), record  # outputs what was stored; stores the record (None clears)

    try:
        descriptor = lgs.ValueStateDescriptor("v", default="dflt", ttl=ttl)
        fast = batched.create_state(descriptor, lgs.ValueState)
        slow = stepped.create_state(descriptor, lgs.ValueState)
        for batch, advance_by in batches:
            clock.now += advance_by
            expected = []
            for key, record in batch:
                stepped.current_key = key
                output, value = step(record, slow.value_nowait())
                slow.update_nowait(value)
                expected.append(output)
            assert fast.map_batch_nowait([key for key, _ in batch], [r for _, r in batch], step) == expected
        for key in ["a", "b", 3]:
            batched.current_key = stepped.current_key = key
            assert fast.value_nowait() == slow.value_nowait()
    finally:
        await batched.dispose()
        await stepped.dispose()


@pytest.mark.parametrize("backend_name", BACKENDS)
@SETTINGS
@given(
    ttl=ttl_configs,
    ops=st.lists(
        st.tuples(
            keys,
            st.sampled_from(["get", "add", "add_all", "update", "clear"]),
            st.lists(values, max_size=3),
            st.booleans(),
            advance,
        ),
        max_size=40,
    ),
)
async def test_list_state_matches_the_model(backend_name: str, ttl: Any, ops: list[Any]) -> None:
    clock = Clock()
    backend = keyed_backend(backend_name, clock)
    try:
        state = backend.create_state(lgs.ListStateDescriptor("l", ttl=ttl), lgs.ListState)
        model: dict[Any, list[tuple[Any, float]]] = {}
        rules = TtlModel(ttl, clock)
        for key, op, elements, nowait, step in ops:
            clock.now += step
            backend.current_key = key
            entries = model.setdefault(key, [])
            if op == "get":
                expected = []
                kept = []
                for entry in entries:
                    visible, keep = rules.read(entry)
                    if visible:
                        expected.append(entry[0])
                    if keep is not None:
                        kept.append(keep)
                model[key] = kept
                assert await call(state, "get", nowait) == expected
            elif op == "add":
                await call(state, "add", nowait, elements[0] if elements else None)
                entries.append((elements[0] if elements else None, clock.now))
            elif op == "add_all":
                await call(state, "add_all", nowait, elements)
                entries.extend((element, clock.now) for element in elements)
            elif op == "update":
                await call(state, "update", nowait, elements)
                model[key] = [(element, clock.now) for element in elements]
            else:
                await call(state, "clear", nowait)
                model[key] = []
        with pytest.raises(TypeError, match="None"):
            await state.add_all(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="None"):
            await state.update(None)  # type: ignore[arg-type]
    finally:
        await backend.dispose()  # RocksDB: close and remove its working directory


@pytest.mark.parametrize("backend_name", BACKENDS)
@SETTINGS
@given(
    ttl=ttl_configs,
    ops=st.lists(
        st.tuples(
            keys,
            st.sampled_from(["get", "put", "put_all", "contains", "remove", "items", "keys", "values"])
            | st.sampled_from(["is_empty", "clear"]),
            st.sampled_from(["x", "y", 7]),
            values,
            st.booleans(),
            advance,
        ),
        max_size=40,
    ),
)
async def test_map_state_matches_the_model(backend_name: str, ttl: Any, ops: list[Any]) -> None:
    clock = Clock()
    backend = keyed_backend(backend_name, clock)
    try:
        state = backend.create_state(lgs.MapStateDescriptor("m", ttl=ttl), lgs.MapState)
        model: dict[Any, dict[Any, tuple[Any, float]]] = {}
        rules = TtlModel(ttl, clock)

        def read(key: Any, user_keys: list[Any]) -> dict[Any, Any]:
            visible_entries = {}
            for user_key in user_keys:
                if user_key not in model[key]:
                    continue
                visible, keep = rules.read(model[key][user_key])
                if visible:
                    visible_entries[user_key] = model[key][user_key][0]
                if keep is None:
                    del model[key][user_key]
                else:
                    model[key][user_key] = keep
            return visible_entries

        for key, op, user_key, value, nowait, step in ops:
            clock.now += step
            backend.current_key = key
            entries = model.setdefault(key, {})
            iterating = op in ("items", "keys", "values")
            if iterating and nowait:
                op, iterating = "to_dict", False
            if op == "get":
                assert await call(state, "get", nowait, user_key) == read(key, [user_key]).get(user_key)
            elif op == "contains":
                assert await call(state, "contains", nowait, user_key) == (user_key in read(key, [user_key]))
            elif op == "put":
                await call(state, "put", nowait, user_key, value)
                entries[user_key] = (value, clock.now)
            elif op == "put_all":
                await call(state, "put_all", nowait, {user_key: value, "z": value})
                entries[user_key] = entries["z"] = (value, clock.now)
            elif op == "remove":
                await call(state, "remove", nowait, user_key)
                entries.pop(user_key, None)
            elif op == "is_empty":
                assert await call(state, "is_empty", nowait) == (not read(key, list(entries)))
            elif op == "clear":
                await call(state, "clear", nowait)
                model[key] = {}
            else:
                expected = read(key, list(entries))
                got = await call(state, op, False)
                if op == "items":
                    assert dict(got) == expected and len(got) == len(expected)
                elif op == "keys":
                    assert sorted(map(repr, got)) == sorted(map(repr, expected))
                elif op == "values":
                    assert sorted(map(repr, got)) == sorted(map(repr, expected.values()))
                else:
                    assert got == expected
    finally:
        await backend.dispose()  # RocksDB: close and remove its working directory


class Average(lg.AggregateFunction[int, tuple[int, int], float]):
    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: int, accumulator: tuple[int, int]) -> tuple[int, int]:
        return (accumulator[0] + value, accumulator[1] + 1)

    def get_result(self, accumulator: tuple[int, int]) -> float:
        return accumulator[0] / accumulator[1]

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("kind", ["reducing", "aggregating"])
@SETTINGS
@given(
    ttl=ttl_configs,
    ops=st.lists(
        st.tuples(keys, st.sampled_from(["get", "add", "clear"]), st.integers(-9, 9), st.booleans(), advance),
        max_size=40,
    ),
)
async def test_reducing_and_aggregating_state_match_the_model(
    backend_name: str, kind: str, ttl: Any, ops: list[Any]
) -> None:
    clock = Clock()
    backend = keyed_backend(backend_name, clock)
    try:
        state: Any
        if kind == "reducing":
            state = backend.create_state(
                lgs.ReducingStateDescriptor("r", lambda a, b: a * 2 + b, ttl=ttl), lgs.ReducingState
            )
        else:
            state = backend.create_state(
                lgs.AggregatingStateDescriptor("g", Average(), ttl=ttl), lgs.AggregatingState
            )
        added: dict[Any, tuple[list[int], float]] = {}
        rules = TtlModel(ttl, clock)

        def result(numbers: list[int]) -> Any:
            if kind == "aggregating":
                return sum(numbers) / len(numbers)
            reduced = numbers[0]
            for number in numbers[1:]:
                reduced = reduced * 2 + number
            return reduced

        for key, op, number, nowait, step in ops:
            clock.now += step
            backend.current_key = key
            if op == "get":
                expected = None
                if key in added:
                    visible, keep = rules.read(added[key])
                    expected = result(added[key][0]) if visible else None
                    if keep is None:
                        del added[key]
                    else:
                        added[key] = keep
                assert await call(state, "get", nowait) == expected
            elif op == "add":
                previous = added.get(key)
                alive = previous is not None and rules.fresh(previous)
                added[key] = ((previous[0] if alive and previous else []) + [number], clock.now)
                await call(state, "add", nowait, number)
            else:
                await call(state, "clear", nowait)
                added.pop(key, None)
    finally:
        await backend.dispose()  # RocksDB: close and remove its working directory


def test_descriptors_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        lgs.ListStateDescriptor("")
    with pytest.raises(TypeError, match="reduce_function"):
        lgs.ReducingStateDescriptor("r", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AggregateFunction"):
        lgs.AggregatingStateDescriptor("a", lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="StateTtlConfig"):
        lgs.MapStateDescriptor("m", ttl=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        lg.StateTtlConfig(0)
    with pytest.raises(TypeError, match="Serializer"):
        lgs.ValueStateDescriptor("v", serializer="json")  # type: ignore[call-overload]


def test_one_name_cannot_be_two_kinds_of_state() -> None:
    backend = keyed_backend("heap", Clock())
    backend.create_state(lgs.ValueStateDescriptor("s"), lgs.ValueState)
    with pytest.raises(lg.ConfigurationError, match="already value state"):
        backend.create_state(lgs.ListStateDescriptor("s"), lgs.ListState)
