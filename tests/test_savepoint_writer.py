"""Writing savepoints offline (``lg.SavepointWriter``): what is bootstrapped is exactly what a restoring
job sees, on either backend, at any parallelism up to the max parallelism; changes to an existing
savepoint (transform, remove, rename, a new max parallelism) restore as written; untouched operators are
copied file by file."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from tests._sources import GUARD

pytestmark = pytest.mark.anyio

KINDS = {
    "value": (lg.ValueStateDescriptor, "get_state"),
    "list": (lg.ListStateDescriptor, "get_list_state"),
    "map": (lg.MapStateDescriptor, "get_map_state"),
}


class Reads(lg.KeyedProcessFunction[Any, Any]):
    """Emits ``(key, {state: value})`` for each key it is given, reading states of the given kinds."""

    def __init__(
        self, states: dict[str, str], serializers: dict[str, lg.Serializer[Any]] | None = None
    ) -> None:
        self.states = states
        self.serializers = serializers or {}

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.held = {}
        for name, kind in self.states.items():
            descriptor, getter = KINDS[kind]
            self.held[name] = (
                kind,
                getattr(ctx, getter)(descriptor(name, serializer=self.serializers.get(name))),
            )

    def process_element(self, key: Any, ctx: lg.RuntimeContext) -> Iterator[Any]:
        values = {}
        for name, (kind, state) in self.held.items():
            value = (
                state.value_nowait()
                if kind == "value"
                else state.get_nowait()
                if kind == "list"
                else state.to_dict_nowait()
            )
            if value not in (None, [], {}):
                values[name] = value
        yield (key, values)


async def restore(
    pointer: str,
    uid: str,
    states: dict[str, str],
    keys: list[Any],
    parallelism: int,
    max_parallelism: int,
    backend: str = "heap",
    serializers: dict[str, lg.Serializer[Any]] | None = None,
) -> dict[Any, dict[str, Any]]:
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=max_parallelism)
    if backend == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend())
    sink = lg.CollectSink[Any]()
    env.from_collection(keys, uid="keys").key_by(lambda key: key).process(
        Reads(states, serializers), uid=uid
    ).sink(sink, uid="out")
    with anyio.fail_after(GUARD):
        await env.execute("reads", restore_from=pointer, allow_non_restored_state=True)
    return {key: values for key, values in sink.results if values}


keys_strategy = st.one_of(
    st.text(max_size=4), st.integers(-1000, 1000), st.tuples(st.text(max_size=2), st.integers(0, 9))
)
values_strategy = st.one_of(st.integers(), st.text(max_size=5), st.none().map(lambda _: 0.5))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.dictionaries(keys_strategy, values_strategy, max_size=20),
    lists=st.dictionaries(keys_strategy, st.lists(values_strategy, min_size=1, max_size=4), max_size=10),
    maps=st.dictionaries(
        keys_strategy,
        st.dictionaries(st.integers(0, 5), values_strategy, min_size=1, max_size=3),
        max_size=10,
    ),
    max_parallelism=st.sampled_from([1, 8, 128]),
    data=st.data(),
    backend=st.sampled_from(["heap", "rocksdb"]),
)
async def test_bootstrapped_state_is_exactly_what_a_restoring_job_sees(
    tmp_path_factory: pytest.TempPathFactory,
    values: dict[Any, Any],
    lists: dict[Any, list[Any]],
    maps: dict[Any, dict[int, Any]],
    max_parallelism: int,
    data: st.DataObject,
    backend: str,
) -> None:
    parallelism = data.draw(st.integers(1, min(4, max_parallelism)), label="parallelism")
    writer = lg.SavepointWriter.new(max_parallelism=max_parallelism)
    writer.with_keyed_state("reads", "value", values.items())
    writer.with_keyed_state("reads", "list", lists.items(), kind="list")
    writer.with_keyed_state("reads", "map", maps.items(), kind="map")
    pointer = await writer.write(tmp_path_factory.mktemp("boot").as_uri())

    expected: dict[Any, dict[str, Any]] = {}
    for name, source in (("value", values), ("list", lists), ("map", maps)):
        for key, value in source.items():
            expected.setdefault(key, {})[name] = value
    keys = list(expected)
    states = {"value": "value", "list": "list", "map": "map"}
    assert await restore(pointer, "reads", states, keys, parallelism, max_parallelism, backend) == expected
    # And the reader reads it back.
    savepoint = await lg.Savepoint.load(pointer)
    assert {key: states async for key, states in savepoint.read_keyed("reads")} == expected


class Tally(lg.KeyedProcessFunction[Any, Any]):
    """A job's keyed count, to take savepoints of."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))

    def process_element(self, key: Any, ctx: lg.RuntimeContext) -> Iterator[Any]:
        self.count.update_nowait(self.count.value_nowait() + 1)
        yield key


async def tally_savepoint(tmp_path: Path, keys: list[str], max_parallelism: int = 8) -> str:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=max_parallelism)
    env.enable_checkpointing(3600)
    source: lg.QueueSource[str] = lg.QueueSource()
    seen: list[str] = []
    done = anyio.Event()

    def watch(key: str) -> str:
        seen.append(key)
        if len(seen) == len(keys):
            done.set()
        return key

    keyed = env.from_source(source, uid="src").key_by(lambda key: key)
    keyed.process(Tally(), uid="tally").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("tally")
        for key in keys:
            await source.put(key)
        await done.wait()
        pointer = await job.stop_with_savepoint((tmp_path / "job").as_uri())
    return pointer


async def test_a_raised_max_parallelism_lets_a_job_run_wider_than_the_old_one(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(40)] * 2
    pointer = await tally_savepoint(tmp_path, keys, max_parallelism=8)
    with pytest.raises(lg.ConfigurationError, match="max_parallelism 8, but the job has 64"):
        await restore(pointer, "tally", {"count": "value"}, ["k0"], 12, 64)
    saved = await lg.Savepoint.load(pointer)
    wider = (
        await lg.SavepointWriter.from_existing(saved)
        .with_max_parallelism(64)
        .write((tmp_path / "w").as_uri())
    )
    assert (await lg.Savepoint.load(wider)).max_parallelism == 64
    restored = await restore(wider, "tally", {"count": "value"}, sorted(set(keys)), 12, 64, "rocksdb")
    assert restored == {key: {"count": 2} for key in set(keys)}


def blobs_of(pointer: str) -> dict[str, bytes]:
    """Every state blob of a savepoint by name, as stored: a file's bytes (its frame too), an inline
    blob's bytes in ``_metadata`` (read as ``docs/savepoint-format.md`` says)."""
    root = Path(pointer.removeprefix("file://"))
    metadata = json.loads((root / "_metadata").read_bytes()[20:])
    blobs = {path.name: path.read_bytes() for path in root.iterdir() if path.name != "_metadata"}
    for operator in metadata["operators"].values():
        for subtask in operator["subtasks"].values():
            for handle in (subtask["keyed"], subtask["operator"]):
                if handle is not None and "inline" in handle:
                    blobs[handle["name"]] = base64.b64decode(handle["inline"])
    return blobs


async def test_changes_to_an_existing_savepoint_restore_as_written_and_untouched_operators_are_copied(
    tmp_path: Path,
) -> None:
    keys = ["a", "b", "b", "c", "c", "c"]
    pointer = await tally_savepoint(tmp_path, keys)
    saved = await lg.Savepoint.load(pointer)
    writer = lg.SavepointWriter.from_existing(saved)
    writer.transform_keyed_state("tally", "count", lambda key, count: None if key == "a" else count * 100)
    writer.with_keyed_state("extra", "note", [("b", "bee")])
    writer.with_union_state("extra", "tags", ["x", "y"])
    writer.rename_operator("tally", "counter")
    writer.remove_operator("out")
    written = await writer.write((tmp_path / "changed").as_uri())

    changed = await lg.Savepoint.load(written)
    uids = {info.uid for info in changed.operators()}
    assert uids == {"counter", "extra", "src", "watch"}
    assert sorted([pair async for pair in changed.read_keyed_state("counter", "count")]) == [
        ("b", 200),
        ("c", 300),
    ]
    assert await changed.read_union_state("extra", "tags") == ["x", "y"]
    restored = await restore(written, "counter", {"count": "value"}, ["a", "b", "c"], 3, 8)
    assert restored == {"b": {"count": 200}, "c": {"count": 300}}
    # The source's blobs (small: inline) are copied as they were, byte for byte: nothing was decoded.
    before, after = blobs_of(pointer), blobs_of(written)
    copied = [name for name in before if name.startswith("src-")]
    assert copied and all(after[name] == before[name] for name in copied)


async def test_ttl_typed_values_async_data_and_operator_state_bootstrap(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class Meter:
        reading: int

    async def pairs() -> AsyncIterator[tuple[str, Meter]]:
        for key in ("m1", "m2"):
            yield key, Meter(int(key[1:]))

    serializer = lg.DataclassSerializer(Meter)
    writer = lg.SavepointWriter.new(max_parallelism=16)
    writer.with_keyed_state("reads", "meter", pairs(), serializer=serializer, ttl=lg.StateTtlConfig(3600))
    writer.with_list_state("src", "offsets", [3, 4])
    writer.with_broadcast_state("rules", "limits", {"max": 9})
    pointer = await writer.write(tmp_path.as_uri())
    savepoint = await lg.Savepoint.load(pointer)
    assert sorted([pair async for pair in savepoint.read_keyed_state("reads", "meter")], key=repr) == [
        ("m1", {"reading": 1}),
        ("m2", {"reading": 2}),
    ]
    assert await savepoint.read_list_state("src", "offsets") == [3, 4]
    assert await savepoint.read_broadcast_state("rules", "limits") == {"max": 9}
    (meter,) = savepoint.operator("reads").states
    assert (meter.kind, meter.ttl, meter.serializer) == (
        "value",
        lg.StateTtlConfig(3600),
        serializer.snapshot(),
    )


async def test_steps_that_name_what_is_not_there_say_what_is(tmp_path: Path) -> None:
    pointer = await tally_savepoint(tmp_path, ["a"])
    saved = await lg.Savepoint.load(pointer)
    with pytest.raises(
        lg.ConfigurationError, match=r"no operator 'nope'; it has \['out', 'src', 'tally', 'watch'\]"
    ):
        await lg.SavepointWriter.from_existing(saved).remove_operator("nope").write((tmp_path / "x").as_uri())
    with pytest.raises(
        lg.ConfigurationError, match=r"operator 'tally' has no keyed state 'nope'; it has \['count'\]"
    ):
        await (
            lg.SavepointWriter.from_existing(saved)
            .transform_keyed_state("tally", "nope", max)
            .write((tmp_path / "x").as_uri())
        )
    with pytest.raises(lg.ConfigurationError, match="operator 'src' has state already"):
        await (
            lg.SavepointWriter.from_existing(saved)
            .rename_operator("tally", "src")
            .write((tmp_path / "x").as_uri())
        )
    with pytest.raises(lg.ConfigurationError, match="kind is 'value', 'list' or 'map'"):
        lg.SavepointWriter.new().with_keyed_state("u", "s", [], kind="reducing")  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="max_parallelism must be an int from 1 to 32768"):
        lg.SavepointWriter.new(max_parallelism=0)
    # Nothing half-written is left where the failed writes went.
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("_metadata"))


async def test_keyed_state_bootstrapped_from_a_data_stream_run_in_batch(tmp_path: Path) -> None:
    env = lg.StreamEnvironment(parallelism=2)
    lines = env.from_collection(["ana 3", "bo 1", "ana 4"], uid="lines")
    totals = (
        lines.map(lambda line: (line.split()[0], int(line.split()[1])), uid="parse")
        .key_by(lambda pair: pair[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="sum")
    )
    writer = lg.SavepointWriter.new(max_parallelism=16).with_keyed_state("reads", "value", totals)
    pointer = await writer.write(tmp_path.as_uri())
    # The running sums, each key's last one kept: what the stream computed, in batch.
    assert await restore(pointer, "reads", {"value": "value"}, ["ana", "bo"], 2, 16) == {
        "ana": {"value": 7},
        "bo": {"value": 1},
    }


async def test_a_lowered_max_parallelism_keeps_the_operator_state_of_every_subtask(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(12)]
    pointer = await tally_savepoint(tmp_path, keys, max_parallelism=8)  # the sink runs at parallelism 2
    saved = await lg.Savepoint.load(pointer)
    transactions = await saved.read_list_state("out", "transactions")
    narrower = (
        await lg.SavepointWriter.from_existing(saved).with_max_parallelism(1).write((tmp_path / "n").as_uri())
    )
    changed = await lg.Savepoint.load(narrower)
    assert changed.operator("out").parallelism == 1
    assert await changed.read_list_state("out", "transactions") == transactions  # none lost
    counts = sorted([pair async for pair in changed.read_keyed_state("tally", "count")])
    assert counts == sorted((key, 1) for key in keys)
