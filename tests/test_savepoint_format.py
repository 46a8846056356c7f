"""The savepoint format, read back with nothing but ``docs/savepoint-format.md``.

A small job takes a real savepoint; the test then reads it as a tool without lockgate would: it parses
every frame by hand with ``struct`` and ``zlib.crc32``, unpickles with an unpickler that knows only the
classes the document lists (stand-ins, never lockgate's own), follows the handles in ``_metadata`` to the
state files, decodes every entry by the document's tables and recomputes every key group by its formulas.
If this test needs something the document does not say, the document is incomplete.
"""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import re
import struct
import time
import zlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import lockgate as lg
from lockgate.snapshots import StreamStateHandle

pytestmark = pytest.mark.anyio

GUARD = 10
MAX_PARALLELISM = 16

# Keys of every canonical kind the document describes, so each encoding is checked against the key
# group lockgate filed the entry under.
KEYS: list[Any] = ["apple", "b", "ünï", 7, -300, True, 2.5, (1, "x"), b"raw", None]
RECORDS: list[tuple[Any, int]] = [(key, (i * 7 + j) % 5 + 1) for j in range(3) for i, key in enumerate(KEYS)]


class Totals(lg.KeyedProcessFunction[Any, tuple[Any, int]]):
    """Per key: the running total (value state), how often each amount came (map state) and the
    amounts themselves (list state with TTL); emits (key, total)."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))
        self.counts = ctx.get_map_state(lg.MapStateDescriptor[int]("counts"))
        self.recent = ctx.get_list_state(lg.ListStateDescriptor[int]("recent", ttl=lg.StateTtlConfig(3600)))

    async def process_element(self, value: tuple[Any, int], ctx: lg.RuntimeContext) -> Any:
        key, amount = value
        total = await self.total.value() + amount
        await self.total.update(total)
        await self.counts.put(amount, (await self.counts.get(amount) or 0) + 1)
        await self.recent.add(amount)
        yield (key, total)


class Seen:
    """A plain map function (shared by the subtasks): sets ``done`` once ``count`` records passed."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = anyio.Event()

    def __call__(self, record: Any) -> Any:
        self.left -= 1
        if self.left == 0:
            self.done.set()
        return record


# ---- the frame, by the table in "The frame"

HEADER = struct.Struct(">4sHHQI")
BLOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class Damaged(Exception):
    """A file the document says a reader must refuse."""


def unframe(data: bytes, size: int | None = None, checksum: int | None = None) -> bytes:
    """The payload of a framed file, after every check the document lists, in its order."""
    if len(data) < HEADER.size:
        raise Damaged("truncated header")
    magic, version, flags, length, stored = HEADER.unpack_from(data)
    if magic != b"LGCK":
        raise Damaged("magic")
    if version != 1:
        raise Damaged("version")
    if flags != 0:
        raise Damaged("flags")
    if len(data) - HEADER.size != length:
        raise Damaged("length")
    if size is not None and length != size:
        raise Damaged("handle size")
    if checksum is not None and stored != checksum:
        raise Damaged("handle checksum")
    payload = data[HEADER.size :]
    if zlib.crc32(payload) != stored:
        raise Damaged("checksum")
    return payload


# ---- the pickles, by the table in "Payloads are pickles"


class StandIn:
    """A stand-in for one class of the document's table: its fields, from a dict or a list of values."""

    fields: tuple[str, ...] = ()

    def __setstate__(self, state: dict[str, Any] | list[Any]) -> None:
        values = state if isinstance(state, dict) else dict(zip(self.fields, state, strict=True))
        assert set(values) == set(self.fields), (type(self).__name__, sorted(values))
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


def read_metadata(payload: bytes) -> Any:
    """``_metadata`` by the section of that name: JSON, read into plain objects."""

    def handle(document: Any) -> Any:
        return None if document is None else SimpleNamespace(**document)

    def subtask(document: dict[str, Any]) -> Any:
        return SimpleNamespace(
            keyed=handle(document["keyed"]),
            operator=handle(document["operator"]),
            channel=handle(document["channel"]),
            shared=tuple(SimpleNamespace(**entry) for entry in document["shared"]),
        )

    document = json.loads(payload.decode("utf-8"))
    operators = {
        uid: SimpleNamespace(
            uid=uid,
            parallelism=state["parallelism"],
            subtasks={int(index): subtask(handles) for index, handles in state["subtasks"].items()},
        )
        for uid, state in document["operators"].items()
    }
    return SimpleNamespace(**{**document, "operators": operators})


def _stand_in(name: str, fields: str) -> type[StandIn]:
    return type(name, (StandIn,), {"fields": tuple(fields.split(", "))})


CLASSES: dict[tuple[str, str], Any] = {
    ("lockgate.state._snapshot", "KeyedStateSnapshot"): _stand_in(
        "KeyedStateSnapshot",
        "operator_uid, max_parallelism, key_group_range, states, entries, tables, chunked",
    ),
    ("lockgate.state._snapshot", "StateMetaInfo"): _stand_in("StateMetaInfo", "name, kind, serializer, ttl"),
    ("lockgate.state._keygroups", "KeyGroupRange"): _stand_in("KeyGroupRange", "start, end"),
    ("lockgate.state._serializers", "SerializerSnapshot"): _stand_in(
        "SerializerSnapshot", "name, version, schema"
    ),
    ("lockgate.state._descriptors", "StateTtlConfig"): _stand_in(
        "StateTtlConfig", "ttl_seconds, update_type, visibility"
    ),
    ("lockgate.state._descriptors", "StateTtlConfig.UpdateType"): str,
    ("lockgate.state._descriptors", "StateTtlConfig.StateVisibility"): str,
    ("lockgate.state._operator", "OperatorStateSnapshot"): _stand_in(
        "OperatorStateSnapshot", "operator_uid, subtask_index, parallelism, states"
    ),
    ("lockgate.state._operator", "OperatorStateEntry"): _stand_in(
        "OperatorStateEntry", "mode, serializer, raw"
    ),
}


class DocumentedUnpickler(pickle.Unpickler):
    """Builds the document's classes as stand-ins and refuses every other global: no lockgate code runs,
    and nothing the document does not name can hide in a savepoint of plain keys and values."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return CLASSES[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not in the document") from None


def load(data: bytes) -> Any:
    return DocumentedUnpickler(io.BytesIO(data)).load()


def load_keyed(data: bytes) -> tuple[Any, dict[str, dict[int, list[Any]]]]:
    """A keyed state file by "Keyed state files": the snapshot, then its key groups one pickle each,
    in ascending order, to the end of the payload; the snapshot and every state's entries."""
    stream = io.BytesIO(data)
    snapshot = DocumentedUnpickler(stream).load()
    assert snapshot.chunked is True and snapshot.entries == {} and snapshot.tables == {}
    entries: dict[str, dict[int, list[Any]]] = {name: {} for name in snapshot.states}
    previous = -1
    while stream.tell() < len(data):
        key_group, states = DocumentedUnpickler(stream).load()
        assert key_group > previous and states  # ascending, each once, never empty
        previous = key_group
        for name, held in states.items():
            assert held
            meta = snapshot.states[name]
            if meta.kind == "timers":  # a list of entries
                entries[name][key_group] = held
                continue
            if type(held) is tuple:  # packed: (keys by namespace, their values pickled together)
                assert (meta.serializer.name, meta.serializer.version, meta.ttl) == ("pickle", 5, None)
                keys, pickled = held
                values = load(pickled)  # a list per namespace of keys, in its order
                assert type(pickled) is bytes and type(values) is list and len(values) == len(keys)
                held = {}
                for (namespace, names), stored_values in zip(keys.items(), values, strict=True):
                    assert len(names) == len(stored_values) and names
                    held[namespace] = {
                        key: encode_stored(meta.kind, stored)
                        for key, stored in zip(names, stored_values, strict=True)
                    }
            # Every other state: {namespace: {key: value_bytes}}.
            assert type(held) is dict and all(type(table) is dict and table for table in held.values())
            entries[name][key_group] = [
                (key, namespace, data) for namespace, table in held.items() for key, data in table.items()
            ]
    return snapshot, entries


def encode_stored(kind: str, stored: Any) -> bytes:
    """A packed table's stored value as value bytes, by the "no TTL" column with ``ser = pickle.dumps``."""
    if kind == "list":
        return pickle.dumps([pickle.dumps(element, protocol=5) for element in stored], protocol=5)
    if kind == "map":
        return pickle.dumps({k: pickle.dumps(v, protocol=5) for k, v in stored.items()}, protocol=5)
    return pickle.dumps(stored, protocol=5)


# ---- key groups, by "Key groups"


def canonical_key_bytes(key: Any) -> bytes:
    def u32(n: int) -> bytes:
        return struct.pack(">I", n)

    if key is None:
        return b"N"
    if isinstance(key, int) or (isinstance(key, float) and key.is_integer()):
        i = int(key)
        data = i.to_bytes((i.bit_length() + 8) // 8, "big", signed=True)
        return b"I" + u32(len(data)) + data
    if isinstance(key, float):
        return b"F" + struct.pack(">d", math.nan if math.isnan(key) else key)
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
        return b"S" + u32(len(data)) + data
    if isinstance(key, bytes):
        return b"B" + u32(len(key)) + key
    if isinstance(key, tuple):
        return b"T" + u32(len(key)) + b"".join(canonical_key_bytes(item) for item in key)
    raise TypeError(f"not a key type this test encodes: {key!r}")


def stable_hash(key: Any) -> int:
    h = zlib.crc32(canonical_key_bytes(key))
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def key_group_range(max_parallelism: int, parallelism: int, index: int) -> tuple[int, int]:
    start = math.ceil(index * max_parallelism / parallelism)
    return start, math.ceil((index + 1) * max_parallelism / parallelism) - 1


# ---- value bytes, by "Value bytes" (the default pickle serializer)


def decode(meta: Any, data: bytes) -> Any:
    """The stored value of an entry; TTL timestamps are returned with it, as (ts, value) pairs."""
    assert (meta.serializer.name, meta.serializer.version) == ("pickle", 5)
    if meta.kind not in ("list", "map") and meta.ttl is None:
        return load(data)  # a plain value: the serializer's bytes, nothing around them

    def one(item: Any) -> Any:
        if meta.ttl is None:
            return load(item)
        ts, value = item
        return (ts, load(value))

    raw = load(data)
    if meta.kind == "list":
        return [one(element) for element in raw]
    if meta.kind == "map":
        return {k: one(v) for k, v in raw.items()}
    return one(raw)


# ---- the job


def build(env: lg.StreamEnvironment, queue: lg.QueueSource[Any], seen: Seen) -> lg.CollectSink[Any]:
    sink: lg.CollectSink[Any] = lg.CollectSink()
    (
        env.from_source(queue, uid="src")
        .key_by(lambda record: record[0])
        .process(Totals(), uid="totals")
        .map(seen, uid="seen")
        .sink(sink, uid="out")
    )
    return sink


async def take_savepoint(
    root: Path, backend: str, inline_threshold: int = 0
) -> tuple[str, list[Any], float, float]:
    """Run the job over RECORDS, stop it with a savepoint under ``root``; the savepoint's URL, what the
    sink committed, and the times before the first record and after the savepoint. The savepoint keeps
    blobs smaller than ``inline_threshold`` in its ``_metadata`` (as the job's checkpoint storage does)."""
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=MAX_PARALLELISM)
    env.enable_checkpointing(3600)
    env.set_checkpoint_storage(lg.MemoryCheckpointStorage(inline_threshold=inline_threshold))
    if backend == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend())
    queue: lg.QueueSource[Any] = lg.QueueSource()
    seen = Seen(len(RECORDS))
    sink = build(env, queue, seen)
    with anyio.fail_after(GUARD):
        job = await env.start("savepoint-format")
        before = time.time()
        for record in RECORDS:
            await queue.put(record)
        await seen.done.wait()  # every record is in the state: the savepoint holds them all
        url = await job.stop_with_savepoint(root.as_uri())
        after = time.time()
    return url, list(sink.results), before, after


@pytest.mark.parametrize("inline_threshold", [0, 20 * 1024], ids=["files", "inline"])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
async def test_a_savepoint_reads_back_with_only_the_document(
    tmp_path: Path, backend: str, inline_threshold: int
) -> None:
    url, committed, before, after = await take_savepoint(tmp_path, backend, inline_threshold)
    inline = check_savepoint(tmp_path, url, committed, before, after)
    # Every blob of this small savepoint is below 20 KiB: all of them inline, or none.
    assert inline == (["keyed"] * 2 + ["operator"] * 3 if inline_threshold else [])


def check_savepoint(tmp_path: Path, url: str, committed: list[Any], before: float, after: float) -> list[str]:
    """Read the savepoint under ``tmp_path`` as the document says, and check it holds what the job did;
    the kinds of the blobs kept inline in ``_metadata``, sorted."""
    # What the job computed: the sink saw every running total.
    totals: dict[Any, int] = {}
    for key, amount in RECORDS:
        totals[key] = totals.get(key, 0) + amount
    assert sorted(committed, key=repr) == sorted(
        ((key, sum(a for k, a in RECORDS[: i + 1] if k == key)) for i, (key, _) in enumerate(RECORDS)),
        key=repr,
    )

    # The directory: savepoint-<id>/ with _metadata and one file per handle that is not inline, nothing else.
    [directory] = tmp_path.iterdir()
    match = re.fullmatch(r"savepoint-(0|[1-9][0-9]*)", directory.name)
    assert match is not None
    assert url == directory.as_uri()
    metadata = read_metadata(unframe((directory / "_metadata").read_bytes()))
    assert metadata.format == "lockgate-metadata"
    assert (metadata.version, metadata.kind) == (5, "savepoint")
    assert metadata.checkpoint_id == int(match[1])
    assert (metadata.job_name, metadata.max_parallelism) == ("savepoint-format", MAX_PARALLELISM)
    assert before - 1 <= metadata.timestamp <= after

    assert set(metadata.operators) == {"src", "totals", "seen", "out"}  # every operator, state or not
    parallelism = {"src": 1, "totals": 2, "seen": 2, "out": 2}
    handles: dict[str, Any] = {}
    inline: list[str] = []
    for uid, operator in metadata.operators.items():
        assert operator.uid == uid
        assert operator.parallelism == parallelism[uid]
        assert sorted(operator.subtasks) == list(range(operator.parallelism))
        for subtask in operator.subtasks.values():
            assert subtask.shared == ()  # a savepoint is self-contained
            assert subtask.channel is None  # a savepoint is aligned: nothing was in flight
            for kind in ("keyed", "operator"):
                handle = getattr(subtask, kind)
                if handle is not None:
                    assert BLOB_NAME.fullmatch(handle.name) and handle.name.endswith(f"-{kind}")
                    assert handle.checkpoint_id == metadata.checkpoint_id
                    if hasattr(handle, "inline"):
                        inline.append(kind)
                    else:
                        handles[handle.name] = handle
    assert sorted(path.name for path in directory.iterdir()) == sorted([*handles, "_metadata"])

    def payload(handle: Any) -> bytes:
        if hasattr(handle, "inline"):  # in _metadata, base64: its size and CRC-32 checked as a file's
            data = base64.b64decode(handle.inline, validate=True)
            if len(data) != handle.size or zlib.crc32(data) != handle.checksum:
                raise Damaged("inline")
            return data
        return unframe((directory / handle.name).read_bytes(), handle.size, handle.checksum)

    # Keyed state: every state in entries, filed under the key group of its key, in the writer's range.
    ttl_seconds = 3600
    found: dict[str, dict[Any, Any]] = {"total": {}, "counts": {}, "recent": {}}
    operator = metadata.operators["totals"]
    for index, subtask in operator.subtasks.items():
        assert subtask.operator is None  # Totals has no operator state
        snapshot, entries = load_keyed(payload(subtask.keyed))
        assert type(snapshot).__name__ == "KeyedStateSnapshot"
        assert (snapshot.operator_uid, snapshot.max_parallelism) == ("totals", MAX_PARALLELISM)
        assert snapshot.tables == {}
        start, end = key_group_range(MAX_PARALLELISM, operator.parallelism, index)
        assert (snapshot.key_group_range.start, snapshot.key_group_range.end) == (start, end)
        metas = snapshot.states
        assert {name: (meta.name, meta.kind) for name, meta in metas.items()} == {
            "total": ("total", "value"),
            "counts": ("counts", "map"),
            "recent": ("recent", "list"),
        }
        assert metas["total"].ttl is None and metas["counts"].ttl is None
        ttl = metas["recent"].ttl
        assert (ttl.ttl_seconds, ttl.update_type, ttl.visibility) == (
            ttl_seconds,
            "on_create_and_write",
            "never_return_expired",
        )
        assert set(entries) == set(metas)
        for name, groups in entries.items():
            for key_group, entries in groups.items():
                assert start <= key_group <= end and entries
                for key, namespace, data in entries:
                    assert namespace is None
                    assert key_group == stable_hash(key) % MAX_PARALLELISM
                    assert key_group * operator.parallelism // MAX_PARALLELISM == index  # its owner
                    assert key not in found[name]
                    found[name][key] = decode(metas[name], data)

    assert found["total"] == totals
    assert found["counts"] == {key: dict(Counter(a for k, a in RECORDS if k == key)) for key in KEYS}
    for key in KEYS:
        stamps = [ts for ts, _ in found["recent"][key]]
        assert all(before - 1 <= ts <= after and after < ts + ttl_seconds for ts in stamps)
        assert [value for _, value in found["recent"][key]] == [a for k, a in RECORDS if k == key]

    # Operator state: the source's position (split list state) counts the records read.
    [src] = metadata.operators["src"].subtasks.values()
    assert src.keyed is None
    position = load(payload(src.operator))
    assert (position.operator_uid, position.subtask_index, position.parallelism) == ("src", 0, 1)
    entry = position.states["position"]
    assert (entry.mode, entry.serializer.name, entry.serializer.version) == ("split", "pickle", 5)
    assert [load(element) for element in entry.raw] == [len(RECORDS)]
    for subtask in metadata.operators["seen"].subtasks.values():
        assert (subtask.keyed, subtask.operator) == (None, None)
    for index, subtask in metadata.operators["out"].subtasks.items():
        sink_state = load(payload(subtask.operator))  # the sink's transactions: internal, but well-formed
        assert (sink_state.operator_uid, sink_state.subtask_index) == ("out", index)
        assert sink_state.states and all(
            e.mode in ("split", "union", "broadcast") for e in sink_state.states.values()
        )
    return sorted(inline)


def test_key_group_ranges_cover_every_key_group_once_at_every_parallelism() -> None:
    for parallelism in range(1, MAX_PARALLELISM + 1):
        owners = []
        for index in range(parallelism):
            start, end = key_group_range(MAX_PARALLELISM, parallelism, index)
            assert start <= end
            owners += [index] * (end - start + 1)
        assert owners == [kg * parallelism // MAX_PARALLELISM for kg in range(MAX_PARALLELISM)]


async def test_every_damaged_byte_is_refused(tmp_path: Path) -> None:
    await take_savepoint(tmp_path, "heap")
    handle = check_damage_is_detected(tmp_path)
    # Lockgate's own reader agrees: the state file with a flipped payload byte is refused, by name.
    storage = lg.FileCheckpointStorage(tmp_path, prefix="savepoint-")
    real = StreamStateHandle(handle.checkpoint_id, handle.name, handle.pointer, handle.size, handle.checksum)
    with pytest.raises(lg.CorruptCheckpointError, match=re.escape(handle.name)):
        await storage.read_state(real)


def check_damage_is_detected(tmp_path: Path) -> Any:
    """Check that every single flipped byte, truncation and extension of every file is refused; then
    flip one payload byte of a keyed state file and return its handle."""
    [directory] = tmp_path.iterdir()
    metadata = read_metadata(unframe((directory / "_metadata").read_bytes()))
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        unframe(data)
        # Any single byte flipped anywhere is refused; in the payload, by the CRC.
        for offset in range(len(data)):
            damaged = bytearray(data)
            damaged[offset] ^= 0xFF
            with pytest.raises(Damaged) as refused:
                unframe(bytes(damaged))
            if offset >= HEADER.size:
                assert str(refused.value) == "checksum"
        for cut in (data[:-1], data + b"\0", data[: HEADER.size - 1]):
            with pytest.raises(Damaged):
                unframe(cut)
    handle = metadata.operators["totals"].subtasks[0].keyed
    path = directory / handle.name
    flipped = bytearray(path.read_bytes())
    flipped[-1] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(Damaged, match="checksum"):
        unframe(bytes(flipped), handle.size, handle.checksum)
    return handle
