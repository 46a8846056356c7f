"""Small state inline: a state blob smaller than its storage's ``inline_threshold`` is written to no file;
its handle carries the bytes and the checkpoint's ``_metadata`` stores them (base64, metadata version 3).

Jobs restore such checkpoints exactly once after crashes, aligned and unaligned, at any threshold;
savepoints with inline state are read by ``lg.Savepoint`` and the command line; retention deletes what
it should; signatures and checksums cover inline bytes; and the handle encoding is checked on its own.
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.snapshots import (
    DEFAULT_INLINE_THRESHOLD,
    METADATA_NAME,
    CheckpointLocation,
    CheckpointMetadata,
    CheckpointStorage,
    OperatorCheckpointState,
    StreamStateHandle,
    SubtaskStateHandles,
    read_inline,
)
from lockgate.testing import FailureSchedule, assert_exactly_once, inputs_with_failures
from tests._sources import GUARD
from tests.test_recovery import Watch
from tests.test_signing import (
    HEADER,
    Count,
    Evil,
    assert_forgery_refused_before_unpickling,
    restore,
    run_cli,
)

pytestmark = pytest.mark.anyio

KEY = b"inline signing key"
Record = tuple[str, int]


# ---- the handle encoding


def metadata_with(*handles: StreamStateHandle | None) -> CheckpointMetadata:
    subtasks = {0: SubtaskStateHandles(keyed=handles[0], operator=handles[1], channel=handles[2])}
    return CheckpointMetadata(7, "job", 16, 1.5, {"op": OperatorCheckpointState("op", 1, subtasks)})


def inline_handle(payload: bytes, name: str = "op-0-keyed") -> StreamStateHandle:
    return StreamStateHandle(
        7, name, f"file:///x/chk-7/_metadata#{name}", len(payload), zlib.crc32(payload), payload
    )


@given(payload=st.binary(max_size=300))
def test_inline_handles_round_trip_through_the_metadata_as_base64(payload: bytes) -> None:
    file = StreamStateHandle(7, "op-0-operator", "/x/chk-7/op-0-operator", 3, 99)
    written = metadata_with(inline_handle(payload), file, inline_handle(payload, "op-0-channel"))
    document = json.loads(written.to_bytes())
    assert document["version"] == 5
    stored = document["operators"]["op"]["subtasks"]["0"]
    assert base64.b64decode(stored["keyed"]["inline"], validate=True) == payload
    assert "inline" not in stored["operator"]  # a file's handle is as in version 2
    read = CheckpointMetadata.from_bytes(written.to_bytes(), "here")
    assert read == written and read.operators["op"].subtasks[0].keyed.inline == payload  # type: ignore[union-attr]
    assert read_inline(read.operators["op"].subtasks[0].keyed) == payload  # type: ignore[arg-type]


def test_version_2_is_read_without_inline_handles_and_refused_with_one() -> None:
    file = StreamStateHandle(7, "op-0-keyed", "/x/op-0-keyed", 3, 99)
    document = json.loads(metadata_with(file, None, None).to_bytes())
    document["version"] = 2
    old = CheckpointMetadata.from_bytes(json.dumps(document).encode(), "old")
    assert old.version == 2 and old.operators["op"].subtasks[0].keyed == file
    assert json.loads(old.to_bytes())["version"] == 5  # written again, it is version 5
    document["operators"]["op"]["subtasks"]["0"]["keyed"]["inline"] = "AAAA"
    with pytest.raises(lg.CorruptCheckpointError, match="inline handle in metadata version 2"):
        CheckpointMetadata.from_bytes(json.dumps(document).encode(), "old")
    for version in (1, 6):
        document["version"] = version
        with pytest.raises(lg.CorruptCheckpointError, match=f"version {version} is not supported"):
            CheckpointMetadata.from_bytes(json.dumps(document).encode(), "other")


@pytest.mark.parametrize("inline", ["not base64!", 42, None, "QUJ"])
def test_inline_bytes_that_are_not_base64_text_are_refused(inline: Any) -> None:
    document = json.loads(metadata_with(inline_handle(b"abc"), None, None).to_bytes())
    document["operators"]["op"]["subtasks"]["0"]["keyed"]["inline"] = inline
    with pytest.raises(lg.CorruptCheckpointError, match="metadata cannot be read"):
        CheckpointMetadata.from_bytes(json.dumps(document).encode(), "damaged")


def test_inline_bytes_that_do_not_match_their_handle_are_refused_naming_them() -> None:
    good = inline_handle(b"payload")
    assert read_inline(good) == b"payload"
    for bad in (
        StreamStateHandle(7, good.name, good.pointer, good.size, good.checksum, b"payloaX"),
        StreamStateHandle(7, good.name, good.pointer, good.size + 1, good.checksum, b"payload"),
    ):
        with pytest.raises(lg.CorruptCheckpointError) as refused:
            read_inline(bad)
        assert refused.value.path == good.pointer
    assert "payload" not in repr(good)  # the bytes stay out of logs


# ---- storages


MakeStorage = Callable[[int], CheckpointStorage]


@pytest.fixture(params=["memory", "file", "fsspec"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStorage:
    def make(threshold: int) -> CheckpointStorage:
        if request.param == "memory":
            return lg.MemoryCheckpointStorage(inline_threshold=threshold)
        if request.param == "fsspec":
            pytest.importorskip("fsspec")
            return lg.FsspecCheckpointStorage(
                f"memory://inline-{uuid.uuid4().hex}", inline_threshold=threshold
            )
        return lg.FileCheckpointStorage(tmp_path / uuid.uuid4().hex, inline_threshold=threshold)

    return make


async def chunks(data: bytes) -> Any:
    yield data


async def test_a_blob_below_the_threshold_is_inline_and_reads_back_from_any_storage(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage(16)
    assert storage.inline_threshold == 16
    location = await storage.create_checkpoint_location(1)
    small = await storage.write_state(location, "small", bytearray(b"x" * 15))
    at = await storage.write_state(location, "at", b"y" * 16)
    streamed = await storage.write_state(location, "streamed", chunks(b"z"))  # length unknown: a file
    assert small.inline == b"x" * 15 and small.pointer.endswith(f"/{METADATA_NAME}#small")
    assert at.inline is None and streamed.inline is None
    for handle, expected in [(small, b"x" * 15), (at, b"y" * 16), (streamed, b"z")]:
        assert await storage.read_state(handle) == expected
        with await storage.open_state(handle) as file:
            assert file.read() == expected
    metadata = metadata_with(small, at, streamed)
    completed = await storage.write_metadata(location, metadata.to_bytes())
    read = CheckpointMetadata.from_bytes(await storage.read_metadata(1), completed.pointer)
    assert await storage.read_state(read.operators["op"].subtasks[0].keyed) == b"x" * 15  # type: ignore[arg-type]
    # Another storage of the same kind, with inline blobs off, reads them too.
    assert await make_storage(0).read_state(small) == b"x" * 15


async def test_threshold_zero_writes_every_blob_and_bad_thresholds_are_refused(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage(0)
    location = await storage.create_checkpoint_location(1)
    assert (await storage.write_state(location, "tiny", b"")).inline is None
    for bad in (-1, True, 1024 * 1024 + 1, "20k", 1.5):
        with pytest.raises(lg.ConfigurationError, match="inline_threshold"):
            make_storage(bad)  # type: ignore[arg-type]
    assert lg.FileCheckpointStorage("x").inline_threshold == DEFAULT_INLINE_THRESHOLD == 20 * 1024


async def test_the_memory_storage_limit_holds_for_inline_blobs() -> None:
    storage = lg.MemoryCheckpointStorage(max_state_size=10, inline_threshold=100)
    location = await storage.create_checkpoint_location(1)
    assert (await storage.write_state(location, "fits", b"0123456789")).inline is not None
    with pytest.raises(lg.CheckpointError, match="max_state_size"):
        await storage.write_state(location, "big", b"0123456789a")


async def test_the_ray_driver_storage_inlines_in_the_worker_without_a_call() -> None:
    from lockgate.ray_runner._storage import DriverStorage

    driver = lg.MemoryCheckpointStorage(inline_threshold=64)
    worker = pickle.loads(pickle.dumps(DriverStorage(driver)))  # as a Ray worker holds it: no link here
    location = CheckpointLocation(3, "memory:x/chk-3")
    handle = await worker.write_state(location, "small", b"abc")
    assert handle.inline == b"abc" and await worker.read_state(handle) == b"abc"
    with pytest.raises(RuntimeError, match="no link"):  # anything else would go to the driver
        await worker.write_state(location, "big", b"a" * 64)


# ---- jobs: exactly once after crashes, any threshold, aligned and unaligned


def running_sums(items: list[Record]) -> Callable[[lg.StreamEnvironment], lg.CollectSink[Any]]:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        env.from_collection(items, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").sink(sink, uid="out")
        return sink

    return build


THRESHOLDS = st.sampled_from([0, 1, 64, 512, DEFAULT_INLINE_THRESHOLD, 1024 * 1024])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=inputs_with_failures(
        st.lists(st.tuples(st.sampled_from("abcd"), st.integers(-9, 9)), min_size=6, max_size=40),
        ["src", "sum", "out"],
        max_crashes=2,
    ),
    threshold=THRESHOLDS,
    unaligned=st.booleans(),
)
async def test_checkpoints_with_inline_state_restore_exactly_once_after_crashes(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[list[Record], FailureSchedule],
    threshold: int,
    unaligned: bool,
) -> None:
    items, schedule = case

    def environment() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(parallelism=2, max_parallelism=8, batch_size=3, channel_capacity=2)
        place = tmp_path_factory.mktemp("inline")
        env.set_checkpoint_storage(lg.FileCheckpointStorage(place, inline_threshold=threshold))
        env.checkpoint_config.unaligned = unaligned
        return env

    with anyio.fail_after(GUARD * 3):
        await assert_exactly_once(running_sums(items), schedule, environment=environment)


# ---- savepoints, read offline and by the command line


KEYS = ["a", "b", "a", "c", "a"]


async def take(
    root: Path,
    *,
    save: str = "savepoint",
    key: bytes | None = None,
    threshold: int = DEFAULT_INLINE_THRESHOLD,
) -> str:
    """A small job (every blob below the default threshold): its savepoint's or checkpoint's URL."""
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=8)
    env.enable_checkpointing(3600)
    env.set_checkpoint_signing_key(key)
    env.set_checkpoint_storage(lg.FileCheckpointStorage(root / "checkpoints", inline_threshold=threshold))
    source: lg.QueueSource[str] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid="src").key_by(lambda k: k)
    keyed.process(Count(), uid="count").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("inline")
        for key_ in KEYS:
            await source.put(key_)
        await watch.until(len(KEYS))
        if save == "savepoint":
            pointer = await job.trigger_savepoint((root / "savepoints").as_uri())
        else:
            pointer = (await job.trigger_checkpoint()).pointer
        await job.cancel()
    return pointer


def local(pointer: str) -> Path:
    return Path(pointer.removeprefix("file://"))


async def test_a_savepoint_with_inline_state_is_one_file_read_by_savepoint_and_the_cli(
    tmp_path: Path,
) -> None:
    pointer = await take(tmp_path)
    assert [path.name for path in local(pointer).iterdir()] == [METADATA_NAME]  # everything inline
    savepoint = await lg.Savepoint.load(pointer)
    assert sorted([pair async for pair in savepoint.read_keyed_state("count", "count")]) == [
        ("a", 3),
        ("b", 1),
        ("c", 1),
    ]
    assert await savepoint.read_list_state("src", "position") == [len(KEYS)]
    assert await restore(pointer) == [("a", 4), ("d", 1)]

    dumped = await run_cli("savepoint", "dump", pointer, "--uid", "count", "--state", "count")
    assert dumped.exit_code == 0, dumped.output
    assert sorted(json.loads(line)["value"] for line in dumped.stdout.splitlines()) == [1, 1, 3]
    inspected = await run_cli("savepoint", "inspect", pointer)
    assert inspected.exit_code == 0 and "count" in inspected.stdout
    verified = await run_cli("savepoint", "verify", pointer)
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[-1] == "ok: all 1 files intact"  # inline blobs are no files


def rewrite_metadata(
    pointer: str, change: Callable[[dict[str, Any]], None], *, keep_signature: bool = False
) -> None:
    """Change ``_metadata``'s JSON and frame it again, its CRC-32 right (what anyone can do); with
    ``keep_signature``, the old signature stays after it (what someone without the key can do)."""
    path = local(pointer) / METADATA_NAME
    data = path.read_bytes()
    magic, version, flags, length, _ = HEADER.unpack_from(data)
    document = json.loads(data[HEADER.size : HEADER.size + length])
    change(document)
    payload = json.dumps(document).encode()
    signature = data[HEADER.size + length :] if keep_signature else b""
    header = HEADER.pack(magic, version, flags if keep_signature else 0, len(payload), zlib.crc32(payload))
    path.write_bytes(header + payload + signature)


def counts_handle(document: dict[str, Any]) -> dict[str, Any]:
    handle: dict[str, Any] = document["operators"]["count"]["subtasks"]["0"]["keyed"]
    assert "inline" in handle
    return handle


async def test_inline_bytes_that_do_not_match_their_handle_are_refused_by_restore_and_verify(
    tmp_path: Path,
) -> None:
    pointer = await take(tmp_path, save="checkpoint")

    def flip(document: dict[str, Any]) -> None:
        handle = counts_handle(document)
        data = bytearray(base64.b64decode(handle["inline"]))
        data[-1] ^= 0x01
        handle["inline"] = base64.b64encode(bytes(data)).decode()

    rewrite_metadata(pointer, flip)
    with pytest.raises(lg.CorruptCheckpointError, match="checksum mismatch") as refused:
        await restore(pointer)
    assert refused.value.path.endswith(f"/{METADATA_NAME}#{counts_handle_name(pointer)}")
    with pytest.raises(lg.CorruptCheckpointError, match="checksum mismatch"):
        await lg.Savepoint.load(pointer)
    verified = await run_cli("savepoint", "verify", pointer)
    assert verified.exit_code == 1 and f"{METADATA_NAME}#" in verified.stderr


def counts_handle_name(pointer: str) -> str:
    document = json.loads((local(pointer) / METADATA_NAME).read_bytes()[HEADER.size :])
    return str(counts_handle(document)["name"])


async def test_forged_inline_state_in_signed_metadata_is_refused_before_it_is_unpickled(
    tmp_path: Path,
) -> None:
    pointer = await take(tmp_path, save="checkpoint", key=KEY)
    assert await restore(pointer, KEY) == [("a", 4), ("d", 1)]

    def forge(document: dict[str, Any]) -> None:  # size and checksum made to match: only the key can tell
        evil = pickle.dumps(Evil())
        handle = counts_handle(document)
        handle.update(inline=base64.b64encode(evil).decode(), size=len(evil), checksum=zlib.crc32(evil))

    rewrite_metadata(pointer, forge, keep_signature=True)
    await assert_forgery_refused_before_unpickling(pointer, KEY)


# ---- retention


async def test_retention_deletes_checkpoints_whose_state_is_inline_and_keeps_the_newest(
    tmp_path: Path,
) -> None:
    root = tmp_path / "checkpoints"
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=8)
    env.enable_checkpointing(3600)
    env.checkpoint_config.retained = 2
    env.set_checkpoint_storage(lg.FileCheckpointStorage(root))
    source: lg.QueueSource[str] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid="src").key_by(lambda k: k)
    keyed.process(Count(), uid="count").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    taken = []
    with anyio.fail_after(GUARD):
        job = await env.start("retained")
        for round_, key_ in enumerate(KEYS):
            await source.put(key_)
            await watch.until(round_ + 1)
            taken.append((await job.trigger_checkpoint()).checkpoint_id)
        await job.cancel()
    kept = sorted(path.name for path in root.iterdir() if path.name.startswith("chk-"))
    assert kept == [f"chk-{checkpoint_id}" for checkpoint_id in taken[-2:]]
    for name in kept:
        assert [path.name for path in (root / name).iterdir()] == [METADATA_NAME]
    assert await restore(root.as_uri()) == [("a", 4), ("d", 1)]  # the newest, all of it inline
