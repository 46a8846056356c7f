"""Restoring incremental RocksDB checkpoints natively: a subtask opens the checkpoint's files as its
database (the one covering most of its key groups, the others' entries added), deletes the key groups
it does not own, and goes on checkpointing; the state is the same as an entry-by-entry restore gives,
at any parallelism and into either backend."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.state.rocksdb import _keyed
from tests._sources import GUARD
from tests.test_recovery import Watch

pytestmark = pytest.mark.anyio

MAX_PARALLELISM = 16
RUNS = itertools.count()


class Count(lg.KeyedProcessFunction[str, tuple[str, int, int]]):
    """Counts each key, and lists the counts in ``seen``, a state declared only when ``track`` is set
    (-1 stands for its length otherwise)."""

    def __init__(self, track: bool = True) -> None:
        self.track = track

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))
        if self.track:
            self.seen = ctx.get_list_state(lg.ListStateDescriptor[int]("seen"))
            # The last count of each parity: RocksDB keeps a map entry per parity.
            self.last = ctx.get_map_state(lg.MapStateDescriptor[int]("last"))

    def process_element(self, value: str, ctx: lg.RuntimeContext) -> Iterator[tuple[str, int, int]]:
        count = self.count.value_nowait() + 1
        self.count.update_nowait(count)
        if not self.track:
            yield (value, count, -1)
            return
        self.seen.add_nowait(count)
        seen = len(self.seen.get_nowait())
        previous = self.last.get_nowait(1 - count % 2)
        if seen == count and previous != (None if count == 1 else count - 1):  # every count tracked
            raise AssertionError(f"key {value!r} at count {count}: the map holds {previous} before it")
        self.last.put_nowait(count % 2, count)
        yield (value, count, seen)


def backend_of(name: str) -> lg.StateBackend:
    return lg.RocksDBStateBackend(incremental=True) if name == "rocksdb" else lg.HeapStateBackend()


async def run(
    keys: list[str],
    parallelism: int,
    backend: str,
    storage: Path,
    *,
    restore_from: str | None = None,
    track: bool = True,
) -> tuple[Counter[tuple[str, int, int]], str]:
    """Count ``keys`` (restored from ``restore_from``), checkpoint once all are counted, and return
    the output and the checkpoint's URL."""
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=MAX_PARALLELISM, batch_size=4)
    env.set_state_backend(backend_of(backend))
    env.set_checkpoint_storage(storage.as_uri())
    env.enable_checkpointing(3600)
    source: lg.QueueSource[str] = lg.QueueSource()
    watch = Watch()
    # A QueueSource feeds one run: each run's source is new, and its predecessor's position is dropped.
    keyed = env.from_source(source, uid=f"keys-{next(RUNS)}").key_by(lambda key: key)
    keyed.process(Count(track), uid="count").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("native", restore_from=restore_from, allow_non_restored_state=True)
        for key in keys:
            await source.put(key)
        await watch.until(len(keys))
        checkpoint = await job.trigger_checkpoint()
        await job.cancel()
    return Counter(watch.seen), checkpoint.pointer


def counts_after(keys: list[str], before: list[str]) -> Counter[tuple[str, int, int]]:
    seen = Counter(before)
    out: Counter[tuple[str, int, int]] = Counter()
    for key in keys:
        seen[key] += 1
        out[(key, seen[key], seen[key])] += 1
    return out


keys_lists = st.lists(st.sampled_from([f"k{i}" for i in range(12)]), min_size=1, max_size=40)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=keys_lists,
    second=keys_lists,
    third=keys_lists,
    parallelism=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    last_backend=st.sampled_from(["rocksdb", "heap"]),
)
async def test_a_rocksdb_checkpoint_restores_natively_at_any_parallelism_and_again_after(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[str],
    second: list[str],
    third: list[str],
    parallelism: list[int],
    last_backend: str,
) -> None:
    storage = tmp_path_factory.mktemp("checkpoints")
    out, pointer = await run(first, parallelism[0], "rocksdb", storage)
    assert out == counts_after(first, [])
    # A second run opens the first one's files, then checkpoints incrementally in its turn.
    out, pointer = await run(second, parallelism[1], "rocksdb", storage, restore_from=pointer)
    assert out == counts_after(second, first)
    out, _ = await run(third, parallelism[2], last_backend, storage, restore_from=pointer)
    assert out == counts_after(third, first + second)


async def test_the_subtask_covering_most_key_groups_opens_the_files_and_keeps_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[int, int]] = []
    original = _keyed.RocksDBKeyedStateBackend._open_native

    def spy(backend: _keyed.RocksDBKeyedStateBackend, state: Any) -> None:
        opened.append((backend.key_group_range.start, state.key_group_range.start))
        original(backend, state)

    monkeypatch.setattr(_keyed.RocksDBKeyedStateBackend, "_open_native", spy)
    keys = [f"k{i}" for i in range(30)]
    _, pointer = await run(keys, 2, "rocksdb", tmp_path)
    out, _ = await run(keys, 3, "rocksdb", tmp_path, restore_from=pointer)
    assert out == counts_after(keys, keys)  # nothing twice, nothing lost across the 2 -> 3 split
    # New ranges 0..5, 6..10, 11..15 over old 0..7, 8..15: each opens the old one it overlaps most.
    assert sorted(opened) == [(0, 0), (6, 8), (11, 8)]


async def test_state_no_function_registers_after_a_native_restore_is_kept_in_later_checkpoints(
    tmp_path: Path,
) -> None:
    keys = [f"k{i % 5}" for i in range(20)]
    _, pointer = await run(keys, 2, "rocksdb", tmp_path)
    # This run declares "count" only: "seen" stays an unregistered column family, in its checkpoint too.
    _, pointer = await run(keys, 2, "rocksdb", tmp_path, restore_from=pointer, track=False)
    out, _ = await run(["k0"], 1, "heap", tmp_path, restore_from=pointer)
    # "seen" was neither lost nor changed by the run that did not declare it: 4 counts, then this one.
    assert out == Counter({("k0", 9, 5): 1})


async def test_a_prepared_restore_sent_to_another_process_carries_its_files(tmp_path: Path) -> None:
    """A restore prepared in the driver travels to Ray workers pickled: the copy writes the files into a
    directory of its own, so it does not depend on the driver's (deleted when the original goes)."""
    import pickle

    from lockgate.savepoint import RestoredState
    from lockgate.snapshots import load_from_pointer
    from lockgate.state.rocksdb._native import NativeRocksDBState

    keys = ["a", "b", "a", "c"]
    _, pointer = await run(keys, 1, "rocksdb", tmp_path)
    restored = await RestoredState.load(await load_from_pointer(pointer), lg.RocksDBStateBackend())
    (original,) = restored.keyed["count"]
    assert isinstance(original, NativeRocksDBState)
    expected = original.resolve()
    data = pickle.dumps(original)
    original.discard()  # as the driver's copy goes once the restored state is dropped
    copy = pickle.loads(data)
    assert copy.directory != original.directory
    assert copy.resolve() == expected
    copy.discard()
    assert not os.path.exists(copy.directory)  # noqa: ASYNC240 - a check, not I/O the loop waits on
