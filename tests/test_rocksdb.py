"""The RocksDB state backend: the same results as the heap, its key layout, its working directory, its
limits and settings, and the batch cache in front of RocksDB."""

from __future__ import annotations

import dataclasses
import enum
import gc
import glob
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rocksdict import AccessType, Checkpoint, Options, Rdict

import lockgate as lg
from lockgate import state as lgs
from lockgate.state import (
    MISSING,
    KeyGroupRange,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    RocksDBValueState,
    canonical_key_bytes,
    key_group_for,
)

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
MAX_P = 128


def keyed_backend(tmp_path: Path | None = None, **options: Any) -> RocksDBKeyedStateBackend:
    local_dir = None if tmp_path is None else str(tmp_path)
    backend = RocksDBStateBackend(local_dir=local_dir, **options)
    return backend.create_keyed_backend("op", KeyGroupRange(0, MAX_P - 1), MAX_P)


def value_state(backend: lg.KeyedStateBackend, name: str = "total", default: Any = None) -> Any:
    return backend.create_state(lg.ValueStateDescriptor(name, default=default), lg.ValueState)


def raw_entries(backend: RocksDBKeyedStateBackend, state: str, tmp_path: Path) -> dict[bytes, bytes]:
    """The state's entries as bytes, as an independent reader of a RocksDB checkpoint sees them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = tmp_path / f"copy-{state}"
    Checkpoint(backend._store.db).create_checkpoint(str(copy))  # flushes the memtables first
    names = Rdict.list_cf(str(copy))
    families = {name: Options(raw_mode=True) for name in names}
    reader = Rdict(str(copy), Options(raw_mode=True), families, AccessType.read_only())
    try:
        return dict(reader.get_column_family(f"state:{state}").items())
    finally:
        reader.close()


# ---- the same results as on the heap


class RunningSums(lg.KeyedProcessFunction[tuple[Any, int, Any], Any]):
    """Per key, the running sum of each type of value (a dict state value); a sum back to zero clears
    the key. The awaitable form."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.sums = ctx.get_state(lg.ValueStateDescriptor("sums", default={}))
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

    async def process_element(self, value: tuple[Any, int, Any], ctx: lg.RuntimeContext) -> Any:
        key, index, amount = value
        sums = dict(await self.sums.value())
        kind = type(amount).__name__
        sums[kind] = sums.get(kind, "" if kind == "str" else 0) + amount
        if sums[kind] == 0:
            del sums[kind]
        await self.sums.update(sums or None)
        count = await self.count.value() + 1
        await self.count.update(count)
        yield (index, key, sorted(sums.items()), count)


class FastRunningSums(RunningSums):
    """The same with the non-awaiting calls."""

    def process_element(self, value: tuple[Any, int, Any], ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
        key, index, amount = value
        sums = dict(self.sums.value_nowait())
        kind = type(amount).__name__
        sums[kind] = sums.get(kind, "" if kind == "str" else 0) + amount
        if sums[kind] == 0:
            del sums[kind]
        self.sums.update_nowait(sums or None)
        count = self.count.value_nowait() + 1
        self.count.update_nowait(count)
        yield (index, key, sorted(sums.items()), count)


async def run_sums(
    backend: lg.StateBackend,
    records: list[tuple[Any, int, Any]],
    parallelism: int,
    batch_size: int,
    fast: bool,
) -> list[Any]:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=32, batch_size=batch_size)
    env.set_state_backend(backend)
    function = FastRunningSums() if fast else RunningSums()
    out = (
        env.from_collection(records)
        .key_by(lambda r: r[0])
        .process(function, uid="sums")
        .sink(lg.CollectSink())
    )
    await env.execute("sums")
    return sorted(out.results, key=lambda r: r[0])


mixed_keys = st.sampled_from(["a", "b", "", "ü", 0, 7, -3, 2**70, 1.5, None, b"k", (1, "x"), ("a", (2, b""))])
mixed_values = st.one_of(
    st.integers(-3, 3), st.floats(-2, 2, allow_nan=False).map(lambda f: round(f, 1)), st.text(max_size=2)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(st.tuples(mixed_keys, mixed_values), max_size=120),
    parallelism=st.integers(1, 4),
    batch_size=st.integers(1, 40),
    fast=st.booleans(),
)
async def test_a_job_gives_the_same_results_on_rocksdb_as_on_the_heap(
    data: list[tuple[Any, Any]], parallelism: int, batch_size: int, fast: bool, tmp_path: Path
) -> None:
    records = [(key, index, amount) for index, (key, amount) in enumerate(data)]
    heap = await run_sums(lg.HeapStateBackend(), records, parallelism, batch_size, fast)
    rocks = await run_sums(
        RocksDBStateBackend(local_dir=str(tmp_path)), records, parallelism, batch_size, fast
    )
    assert rocks == heap
    assert os.listdir(tmp_path) == []  # every subtask's working directory is gone


async def test_reduce_keeps_its_running_value_in_rocksdb() -> None:
    env = lg.StreamEnvironment(parallelism=2, batch_size=3).set_state_backend(RocksDBStateBackend())
    words = ["the", "cat", "and", "the", "hat", "and", "the", "bat"]
    out = (
        env.from_collection(words)
        .map(lambda w: (w, 1))
        .key_by(lambda p: p[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="count")
        .sink(lg.CollectSink())
    )
    await env.execute("reduce")
    finals: dict[str, int] = {}
    for word, count in out.results:
        finals[word] = max(finals.get(word, 0), count)
    assert finals == {"the": 3, "cat": 1, "and": 2, "hat": 1, "bat": 1}


# ---- layout


async def test_a_key_is_key_group_then_canonical_key_then_namespace_in_its_states_column_family(
    tmp_path: Path,
) -> None:
    backend = keyed_backend(tmp_path / "db")
    total, other = value_state(backend, "total", 0), value_state(backend, "other")
    backend.current_key = "alice"
    total.update_nowait(41)
    await backend.put("total", 12345, "window-1", 2)
    other.update_nowait("x")

    names = Rdict.list_cf(backend.working_dir)
    assert {"state:total", "state:other"} <= set(names)
    entries = raw_entries(backend, "total", tmp_path)
    group = key_group_for("alice", MAX_P)
    alice = group.to_bytes(2, "big") + canonical_key_bytes("alice") + canonical_key_bytes(None)
    window = (
        key_group_for(12345, MAX_P).to_bytes(2, "big")
        + canonical_key_bytes(12345)
        + canonical_key_bytes("window-1")
    )
    assert set(entries) == {alice, window}
    assert alice[:2] == bytes([group >> 8, group & 0xFF])  # big endian
    assert lgs.DEFAULT_SERIALIZER.loads(entries[alice]) == 41  # the serializer's bytes come first
    assert set(raw_entries(backend, "other", tmp_path)) == {alice}  # one column family per state
    await backend.dispose()


async def test_key_groups_sort_first_so_each_is_one_contiguous_range(tmp_path: Path) -> None:
    backend = keyed_backend()
    value_state(backend)
    keys = [f"k{i}" for i in range(300)]
    await backend.put_many("total", [(key, 1) for key in keys], None)
    stored = list(raw_entries(backend, "total", tmp_path))
    groups = [int.from_bytes(raw[:2], "big") for raw in stored]
    assert groups == sorted(groups)
    assert sorted(groups) == sorted(key_group_for(key, MAX_P) for key in keys)
    await backend.dispose()


async def test_values_go_through_the_descriptors_serializer() -> None:
    class Upper(lgs.Serializer[str]):
        def dumps(self, value: str) -> bytes:
            return value.upper().encode()

        def loads(self, data: bytes) -> str:
            return data.decode()

        def snapshot(self) -> lgs.SerializerSnapshot:
            return lgs.SerializerSnapshot("upper", 1)

    backend = keyed_backend()
    state = backend.create_state(lg.ValueStateDescriptor("s", serializer=Upper()), lg.ValueState)
    backend.current_key = "k"
    state.update_nowait("quiet")
    assert state.value_nowait() == "QUIET"
    await backend.prepare_batch(["k"])
    assert state.value_nowait() == "QUIET"
    state.update_nowait("again.")  # a payload ending in "." (pickle's last byte) is no special case
    await backend.finish_batch()
    assert state.value_nowait() == "AGAIN."
    assert [item async for item in backend.items("s", None)] == [("k", "AGAIN.")]
    await backend.dispose()


# ---- the working directory


def working_dirs(tmp_path: Path) -> list[str]:
    return glob.glob(str(tmp_path / "lockgate-rocksdb-*"))


def is_dir(path: str) -> bool:
    return os.path.isdir(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


def wal_sizes(path: str) -> list[int]:
    """The sizes of the database's write-ahead log files."""
    return [os.path.getsize(log) for log in glob.glob(os.path.join(path, "*.log"))]


async def test_the_working_directories_are_removed_when_the_job_ends(tmp_path: Path) -> None:
    seen: list[int] = []

    class Watch(FastRunningSums):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
            seen.append(len(working_dirs(tmp_path)))
            yield from super().process_element(value, ctx)

    env = lg.StreamEnvironment(parallelism=3).set_state_backend(RocksDBStateBackend(local_dir=str(tmp_path)))
    records = [(i % 5, i, 1) for i in range(50)]
    env.from_collection(records).key_by(lambda r: r[0]).process(Watch(), uid="watch").sink(lg.CollectSink())
    await env.execute("ends")
    assert set(seen) == {3}  # one database per subtask while the job ran
    assert os.listdir(tmp_path) == []


async def test_the_working_directories_are_removed_when_the_job_fails(tmp_path: Path) -> None:
    class Fails(FastRunningSums):
        def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
            yield from super().process_element(value, ctx)
            if value[1] == 30:
                raise RuntimeError("no")

    env = lg.StreamEnvironment(parallelism=2).set_state_backend(RocksDBStateBackend(local_dir=str(tmp_path)))
    records = [(i % 5, i, 1) for i in range(50)]
    env.from_collection(records).key_by(lambda r: r[0]).process(Fails(), uid="fails").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'fails'"):
        await env.execute("fails")
    assert os.listdir(tmp_path) == []


async def test_dispose_is_idempotent_and_later_use_says_why_it_fails(tmp_path: Path) -> None:
    backend = keyed_backend(tmp_path)
    state = value_state(backend)
    backend.current_key = "k"
    state.update_nowait(1)
    path = backend.working_dir
    assert is_dir(path)
    await backend.dispose()
    await backend.dispose()
    assert not exists(path)
    assert "disposed" in repr(backend)
    with pytest.raises(RuntimeError, match="'op' is disposed"):
        state.value_nowait()
    with pytest.raises(RuntimeError, match="disposed"):
        await backend.prepare_batch(["k"])


def test_a_backend_never_disposed_still_removes_its_directory_when_collected(tmp_path: Path) -> None:
    backend = keyed_backend(tmp_path)
    value_state(backend)
    path = backend.working_dir
    assert os.path.isdir(path)
    del backend
    gc.collect()
    assert not os.path.exists(path)


# ---- WAL


async def test_no_write_goes_to_the_write_ahead_log(tmp_path: Path) -> None:
    backend = keyed_backend(tmp_path)
    state = value_state(backend)
    backend.current_key = "direct"
    state.update_nowait("x" * 10_000)
    await backend.put_many("total", [(i, i) for i in range(1000)], None)
    await backend.prepare_batch(["a", "b"])
    for key in ("a", "b"):
        backend.current_key = key
        state.update_nowait(key * 10_000)
    await backend.finish_batch()
    await backend.delete("total", 3, None)
    assert wal_sizes(backend.working_dir) == [0]
    assert backend._store.write_options.disable_wal is True
    await backend.dispose()


# ---- limits


async def test_a_value_above_max_value_size_fails_with_what_and_how_to_fix() -> None:
    backend = keyed_backend(max_value_size=100)
    state = value_state(backend, "big")
    backend.current_key = "alice"
    state.update_nowait("x" * 50)
    with pytest.raises(lg.LockgateError) as failure:
        state.update_nowait("y" * 500)
    error = failure.value
    assert type(error).__name__ == "StateValueTooLargeError"
    message = str(error)
    for part in ("'op'", "'big'", "'alice'", str(error.size), "100 bytes", "max_value_size="):  # type: ignore[attr-defined]
        assert part in message
    assert error.size > 500 and error.limit == 100  # type: ignore[attr-defined]
    assert state.value_nowait() == "x" * 50  # nothing was written
    await backend.prepare_batch(["alice"])
    with pytest.raises(lg.LockgateError, match="max_value_size"):
        await backend.put("big", "alice", None, "z" * 500)  # inside a batch too, at the write
    await backend.finish_batch()
    assert state.value_nowait() == "x" * 50
    await backend.dispose()


async def test_a_too_large_value_fails_the_job_naming_the_operator() -> None:
    class Grows(lg.KeyedProcessFunction[int, int]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.seen = ctx.get_state(lg.ValueStateDescriptor("seen", default=[]))

        def process_element(self, value: int, ctx: lg.RuntimeContext) -> Any:
            self.seen.update_nowait([*self.seen.value_nowait(), value])
            yield value

    env = lg.StreamEnvironment().set_state_backend(RocksDBStateBackend(max_value_size=64))
    env.from_collection(range(100)).key_by(lambda v: 0).process(Grows(), uid="grows").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'grows'") as failure:
        await env.execute("grows")
    assert "max_value_size" in str(failure.value.__cause__)


# ---- the batch cache


async def test_inside_a_batch_reads_see_the_batchs_writes_and_deletes(tmp_path: Path) -> None:
    backend = keyed_backend()
    state = value_state(backend, default="none")
    for key, value in (("a", "a0"), ("b", "b0")):
        backend.current_key = key
        state.update_nowait(value)
    await backend.prepare_batch(["a", "b", "a", "c"])
    backend.current_key = "a"
    assert state.value_nowait() == "a0"
    state.update_nowait("a1")
    assert state.value_nowait() == "a1"
    assert await backend.get("total", "a", None) == "a1"
    backend.current_key = "b"
    state.clear_nowait()
    assert state.value_nowait() == "none"
    assert await backend.get_many("total", ["a", "b", "c"], None) == ["a1", MISSING, MISSING]
    backend.current_key = "outside"  # a key the batch did not announce
    state.update_nowait("o1")
    assert state.value_nowait() == "o1"
    await backend.put("total", "c", "ns", "c-ns")  # another namespace
    assert await backend.get("total", "c", "ns") == "c-ns"
    assert sorted([item async for item in backend.items("total", None)]) == [("a", "a1"), ("outside", "o1")]
    assert set(raw_entries(backend, "total", tmp_path)) == {
        key_group_for(k, MAX_P).to_bytes(2, "big") + canonical_key_bytes(k) + canonical_key_bytes(None)
        for k in ("a", "b")
    }  # nothing of the batch is in RocksDB before it finishes
    await backend.finish_batch()
    assert await backend.get_many("total", ["a", "b", "outside"], None) == ["a1", MISSING, "o1"]
    assert await backend.get("total", "c", "ns") == "c-ns"
    await backend.dispose()


async def test_a_batch_that_never_finished_is_kept_whole_by_the_next(tmp_path: Path) -> None:
    """A function that raised leaves its batch open: what it wrote stays visible, as on the heap, and is
    written all at once when the next batch starts; RocksDB never holds part of a batch."""
    backend = keyed_backend()
    state = value_state(backend, default=0)
    await backend.prepare_batch(["a", "b"])
    backend.current_key = "a"
    state.update_nowait(1)
    backend.current_key = "b"
    state.update_nowait(2)
    # ...the function raised here: no finish_batch
    assert raw_entries(backend, "total", tmp_path / "before") == {}
    assert await backend.get("total", "a", None) == 1
    await backend.prepare_batch(["b"])
    backend.current_key = "b"
    assert state.value_nowait() == 2
    await backend.finish_batch()
    backend._store.flush()  # the value cache writes when it evicts or a snapshot starts: as one does
    assert len(raw_entries(backend, "total", tmp_path / "after")) == 2
    await backend.dispose()


async def test_outside_a_batch_every_call_goes_to_rocksdb() -> None:
    backend = keyed_backend()
    state = value_state(backend, default=0)
    assert isinstance(state, RocksDBValueState)
    backend.current_key = "k"
    state.update_nowait(5)
    assert state.value_nowait() == 5
    assert await backend.get_many("total", ["k", "missing"], None) == [5, MISSING]
    await backend.put_many("total", [("x", 1), ("y", 2)], None)
    assert backend.get_nowait("total", "y", None) == 2
    backend.delete_nowait("total", "y", None)
    assert backend.get_nowait("total", "y", None) is MISSING
    state.clear_nowait()
    assert state.value_nowait() == 0
    await backend.dispose()


# ---- items


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: str


class Color(enum.IntEnum):
    BLUE = 9


# Pairwise unequal: equal keys (1 == 1.0 == True) are one key, on every backend.
EVERY_KIND_OF_KEY: list[Any] = [
    None,
    True,
    False,
    -5,
    2**70,
    1.5,
    -0.25,
    2.0,
    float("inf"),
    "",
    "plain",
    "ünï\udcff",
    b"",
    b"\x00bytes",
    (),
    (1, "a", (None, b"x")),
    (True, 2.0),
    Point(1, "p"),
    (Point(2, "q"), "t"),
    Color.BLUE,
]


@pytest.mark.parametrize("in_batch", [False, True])
async def test_items_gives_back_every_kind_of_key_as_it_was(in_batch: bool) -> None:
    backend = keyed_backend()
    value_state(backend)
    keys = EVERY_KIND_OF_KEY
    if in_batch:
        await backend.prepare_batch(keys)
    for index, key in enumerate(keys):
        await backend.put("total", key, None, index)
    await backend.put("total", "plain", "window", "elsewhere")
    if in_batch:
        await backend.finish_batch()
    found = [item async for item in backend.items("total", None)]
    assert len(found) == len(keys)
    by_index = {value: key for key, value in found}
    for index, key in enumerate(keys):
        assert by_index[index] == key
        assert type(by_index[index]) is type(key)
    assert [item async for item in backend.items("total", "window")] == [("plain", "elsewhere")]
    assert [item async for item in backend.items("total", "nothing")] == []
    await backend.dispose()


async def test_items_inside_a_batch_include_its_writes() -> None:
    backend = keyed_backend()
    value_state(backend)
    await backend.put_many("total", [("a", 1), ("b", 2)], None)
    await backend.prepare_batch(["a", "b", "c"])
    await backend.put("total", "a", None, 10)
    await backend.delete("total", "b", None)
    await backend.put("total", "c", None, 30)
    assert sorted([item async for item in backend.items("total", None)]) == [("a", 10), ("c", 30)]
    await backend.finish_batch()
    assert sorted([item async for item in backend.items("total", None)]) == [("a", 10), ("c", 30)]
    await backend.dispose()


# ---- settings


async def test_one_memory_budget_bounds_the_block_cache_and_the_memtables_of_every_state() -> None:
    budget = 32 * MIB
    backend = keyed_backend(memory_budget=budget)
    a, b = value_state(backend, "a"), value_state(backend, "b")
    usage = backend.memory_usage()
    assert usage["budget"] == budget
    assert 0 < usage["write_buffer_capacity"] < usage["block_cache_capacity"] <= budget
    # RocksDB itself reports the one cache for each state's column family.
    assert backend.rocksdb_property("block-cache-capacity", "a") == usage["block_cache_capacity"]
    assert backend.rocksdb_property("block-cache-capacity", "b") == usage["block_cache_capacity"]
    for i in range(2000):
        backend.current_key = i
        a.update_nowait("a" * 200)
        b.update_nowait("b" * 200)
    usage = backend.memory_usage()
    # Memtables are charged to the block cache: their memory shows in the cache's usage.
    assert usage["write_buffer_usage"] > 800_000
    assert usage["block_cache_usage"] >= usage["write_buffer_usage"]
    assert usage["key_cache_limit"] == budget // 4  # bytes, on top of the budget
    assert 0 < usage["key_cache_usage"] <= usage["key_cache_limit"]
    await backend.dispose()


async def test_native_metrics_are_off_unless_asked_for() -> None:
    quiet = keyed_backend()
    value_state(quiet)
    assert quiet.native_metrics() is None
    await quiet.dispose()
    loud = keyed_backend(native_metrics=True)
    state = value_state(loud)
    loud.current_key = "k"
    state.update_nowait(1)
    metrics = loud.native_metrics()
    assert metrics is not None
    assert "rocksdb.block.cache" in metrics["statistics"]
    assert metrics["states"]["total"]["estimate-num-keys"] == 1
    await loud.dispose()


def test_the_backend_describes_itself() -> None:
    backend = RocksDBStateBackend("file:///ckpts", incremental=False, memory_budget=8 * MIB)
    assert repr(backend) == (
        "RocksDBStateBackend('file:///ckpts', incremental=False, local_dir=None, memory_budget=8388608, "
        "max_value_size=67108864, native_metrics=False)"
    )
    assert backend.checkpoint_url == "file:///ckpts" and backend.incremental is False
    keyed = backend.create_keyed_backend("my op", KeyGroupRange(3, 9), 16)
    assert repr(keyed).startswith("<RocksDBKeyedStateBackend 'my op' key groups 3..9 [no state] open at ")
    assert "kg3-9" in keyed.working_dir


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"memory_budget": 0}, "memory_budget"),
        ({"memory_budget": MIB}, "at least"),
        ({"memory_budget": 64.0 * MIB}, "memory_budget"),
        ({"memory_budget": True}, "memory_budget"),
        ({"memory_budget": "64MB"}, "memory_budget"),
        ({"max_value_size": 0}, "max_value_size"),
        ({"max_value_size": 2**32}, "4 GiB"),
        ({"max_value_size": None}, "max_value_size"),
        ({"incremental": "yes"}, "incremental"),
        ({"native_metrics": 1}, "native_metrics"),
        ({"local_dir": 42}, "local_dir"),
        ({"local_dir": ""}, "local_dir"),
        ({"checkpoint_url": ""}, "checkpoint_url"),
        ({"checkpoint_url": 5}, "checkpoint_url"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(arguments: dict[str, Any], complaint: str) -> None:
    with pytest.raises(lg.ConfigurationError, match=complaint):
        RocksDBStateBackend(**arguments)


def test_a_local_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(lg.ConfigurationError, match="not a directory"):
        RocksDBStateBackend(local_dir=str(file))


def test_a_missing_local_dir_is_created(tmp_path: Path) -> None:
    keyed = RocksDBStateBackend(local_dir=tmp_path / "new" / "dir").create_keyed_backend(
        "op", KeyGroupRange(0, 0), 1
    )
    assert Path(keyed.working_dir).parent == tmp_path / "new" / "dir"
    keyed._store.release()
    assert os.listdir(tmp_path / "new" / "dir") == []


def test_a_state_declared_again_with_another_serializer_is_refused() -> None:
    class Other(lgs.PickleSerializer):
        def snapshot(self) -> lgs.SerializerSnapshot:
            return lgs.SerializerSnapshot("other", 1)

    backend = keyed_backend()
    value_state(backend, "s")
    value_state(backend, "s")  # the same way again is fine
    with pytest.raises(lg.ConfigurationError, match="'s' again"):
        backend.create_state(lg.ValueStateDescriptor("s", serializer=Other()), lg.ValueState)
    backend._store.release()


_HOLDING_JOB = """
import sys
import anyio
import lockgate as lg

async def main():
    env = lg.StreamEnvironment(parallelism=2)
    env.set_state_backend(lg.RocksDBStateBackend(local_dir=sys.argv[1]))
    queue = lg.QueueSource()
    env.from_source(queue, uid="src").key_by(lambda r: r).sum(0, uid="sum").sink(lg.CollectSink(), uid="out")
    job = await env.start("held")
    for n in range(100):
        await queue.put(n)
    print("running", flush=True)
    await job.wait()  # never: the queue stays open until the process is killed

anyio.run(main)
"""


def test_working_directories_of_killed_processes_are_reclaimed_by_the_next_job(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    local = tmp_path / "rocksdb"
    script = tmp_path / "holding.py"
    script.write_text(_HOLDING_JOB)
    child = subprocess.Popen([sys.executable, str(script), str(local)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "running"
    child.send_signal(signal.SIGKILL)
    child.communicate()
    left = sorted(path.name for path in local.iterdir())
    assert len(left) == 2 and all(name.startswith(f"lockgate-rocksdb-p{child.pid}-") for name in left)
    (local / "mine").mkdir()  # not lockgate's: never touched

    env = lg.StreamEnvironment(parallelism=1)
    env.set_state_backend(lg.RocksDBStateBackend(local_dir=local))
    env.from_collection([1, 2], uid="src").key_by(lambda r: r).sum(0, uid="sum").sink(lg.CollectSink())
    env.execute_blocking("next")
    assert sorted(path.name for path in local.iterdir()) == ["mine"]  # its own is gone at its end too
