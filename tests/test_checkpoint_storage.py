"""Checkpoint storage: one contract for memory and file storage, URLs, the registry, the presets.

Every async test runs on asyncio and on trio. The contract tests run once per storage kind; damage is
done to the stored bytes directly (the file on disk, or the framed bytes the memory storage holds).
"""

from __future__ import annotations

import itertools
import os
import pickle
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.snapshots import (
    METADATA_NAME,
    CheckpointLocation,
    CheckpointStorage,
    CompletedCheckpoint,
    StreamStateHandle,
    _registry,
    register_checkpoint_storage,
    storage_for,
    supported_schemes,
)
from lockgate.state import HeapKeyedStateBackend, KeyGroupRange, StatePreset

pytestmark = pytest.mark.anyio

EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HEADER_SIZE = 20
MiB = 1024 * 1024

MakeStorage = Callable[[], CheckpointStorage]


@pytest.fixture(params=["memory", "file", "fsspec"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStorage:
    """Makes a fresh, empty storage of one kind each call (hypothesis examples need one each); the
    fsspec one is fsspec's in-memory file system, an object store without renames, as S3 is. Every
    blob goes to a file of its own (``inline_threshold=0``): the contract is about those; inline
    blobs have tests of their own (``test_inline_state.py``)."""
    made = iter(range(1_000_000))

    def make() -> CheckpointStorage:
        if request.param == "memory":
            return lg.MemoryCheckpointStorage(max_state_size=64 * MiB, inline_threshold=0)
        if request.param == "fsspec":
            return lg.FsspecCheckpointStorage(f"memory://contract-{uuid.uuid4().hex}", inline_threshold=0)
        return lg.FileCheckpointStorage(tmp_path / f"storage-{next(made)}", inline_threshold=0)

    return make


@pytest.fixture
def storage(make_storage: MakeStorage) -> CheckpointStorage:
    return make_storage()


# ---- reaching the stored bytes, to damage them


def object_path(storage: lg.FsspecCheckpointStorage, checkpoint_id: int, name: str) -> str:
    return f"{storage._checkpoint_path(checkpoint_id)}/{name}"


def stored(storage: CheckpointStorage, checkpoint_id: int, name: str) -> bytes:
    """The bytes a storage holds for a blob (or for the metadata: ``name=METADATA_NAME``)."""
    if isinstance(storage, lg.FsspecCheckpointStorage):
        data: bytes = storage._fs.cat_file(object_path(storage, checkpoint_id, name))
        return data
    if isinstance(storage, lg.FileCheckpointStorage):
        return (storage.checkpoint_directory(checkpoint_id) / name).read_bytes()
    assert isinstance(storage, lg.MemoryCheckpointStorage)
    checkpoint = storage._checkpoints[checkpoint_id]
    data = checkpoint.metadata if name == METADATA_NAME else checkpoint.blobs[name]
    assert data is not None
    return data


def replace_stored(storage: CheckpointStorage, checkpoint_id: int, name: str, data: bytes) -> None:
    if isinstance(storage, lg.FsspecCheckpointStorage):
        storage._fs.pipe_file(object_path(storage, checkpoint_id, name), data)
        return
    if isinstance(storage, lg.FileCheckpointStorage):
        (storage.checkpoint_directory(checkpoint_id) / name).write_bytes(data)
        return
    assert isinstance(storage, lg.MemoryCheckpointStorage)
    checkpoint = storage._checkpoints[checkpoint_id]
    if name == METADATA_NAME:
        checkpoint.metadata = data
    else:
        checkpoint.blobs[name] = data


def remove_stored(storage: CheckpointStorage, checkpoint_id: int, name: str) -> None:
    if isinstance(storage, lg.FsspecCheckpointStorage):
        storage._fs.rm_file(object_path(storage, checkpoint_id, name))
    elif isinstance(storage, lg.FileCheckpointStorage):
        (storage.checkpoint_directory(checkpoint_id) / name).unlink()
    else:
        assert isinstance(storage, lg.MemoryCheckpointStorage)
        del storage._checkpoints[checkpoint_id].blobs[name]


def metadata_pointer(storage: CheckpointStorage, checkpoint_id: int) -> str:
    if isinstance(storage, lg.FsspecCheckpointStorage):
        return storage._pointer(object_path(storage, checkpoint_id, METADATA_NAME))
    if isinstance(storage, lg.FileCheckpointStorage):
        return str(storage.checkpoint_directory(checkpoint_id) / METADATA_NAME)
    return f"{storage._pointer(checkpoint_id)}/{METADATA_NAME}"  # type: ignore[attr-defined]


async def chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def complete(storage: CheckpointStorage, checkpoint_id: int, blobs: dict[str, bytes]) -> None:
    location = await storage.create_checkpoint_location(checkpoint_id)
    for name, data in blobs.items():
        await storage.write_state(location, name, data)
    await storage.write_metadata(location, f"metadata of {checkpoint_id}".encode())


# ---- writing and reading


async def test_blobs_round_trip_and_their_handles_describe_them(storage: CheckpointStorage) -> None:
    location = await storage.create_checkpoint_location(3)
    assert location.checkpoint_id == 3
    payloads: dict[str, Any] = {
        "bytes": b"some state",
        "bytearray": bytearray(b"\x00\x01\x02"),
        "memoryview": memoryview(b"0123456789")[2:8],
        "wide-memoryview": memoryview(bytearray(range(16))).cast("I"),
        "empty": b"",
    }
    handles = {name: await storage.write_state(location, name, data) for name, data in payloads.items()}
    streamed = await storage.write_state(location, "streamed", chunks([b"ab", b"", bytearray(b"cd"), b"e"]))
    for name, data in payloads.items():
        expected = bytes(memoryview(data).cast("B"))
        handle = handles[name]
        assert isinstance(handle, StreamStateHandle)
        assert (handle.checkpoint_id, handle.name, handle.size) == (3, name, len(expected))
        assert handle.checksum == zlib.crc32(expected)
        assert await storage.read_state(handle) == expected
        assert len(stored(storage, 3, name)) == HEADER_SIZE + len(expected)
    assert await storage.read_state(streamed) == b"abcde"
    assert (streamed.size, streamed.checksum) == (5, zlib.crc32(b"abcde"))
    if isinstance(storage, lg.FileCheckpointStorage):
        directory = storage.directory / "chk-3"
        assert location.pointer == directory.as_uri()
        assert handles["bytes"].pointer == str(directory / "bytes")
        assert sorted(os.listdir(directory)) == sorted([*payloads, "streamed"])
    else:
        assert handles["bytes"].pointer.startswith("memory:") and handles["bytes"].pointer.endswith("/bytes")


async def test_the_written_bytes_are_a_copy(storage: CheckpointStorage) -> None:
    location = await storage.create_checkpoint_location(1)
    data = bytearray(b"before")
    handle = await storage.write_state(location, "state", data)
    data[:] = b"AFTER!"
    assert await storage.read_state(handle) == b"before"


@EXAMPLES
@given(payload=st.binary(max_size=4096), split=st.lists(st.integers(0, 4096), max_size=5))
async def test_any_payload_round_trips_whole_or_streamed(
    make_storage: MakeStorage, payload: bytes, split: list[int]
) -> None:
    storage = make_storage()
    location = await storage.create_checkpoint_location(1)
    whole = await storage.write_state(location, "whole", payload)
    cuts = sorted({0, len(payload), *(cut for cut in split if cut <= len(payload))})
    parts = [payload[a:b] for a, b in itertools.pairwise(cuts)]
    streamed = await storage.write_state(location, "streamed", chunks(parts))
    assert whole.size == streamed.size == len(payload)
    assert whole.checksum == streamed.checksum
    assert await storage.read_state(whole) == payload
    assert await storage.read_state(streamed) == payload
    await storage.write_metadata(location, payload)
    assert await storage.read_metadata(1) == payload


async def test_blobs_of_one_checkpoint_are_written_in_parallel(storage: CheckpointStorage) -> None:
    location = await storage.create_checkpoint_location(1)
    handles: dict[int, StreamStateHandle] = {}

    async def write(i: int) -> None:
        handles[i] = await storage.write_state(location, f"subtask-{i}", bytes([i]) * (i * 100))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(write, i)
    for i, handle in handles.items():
        assert await storage.read_state(handle) == bytes([i]) * (i * 100)


async def test_a_failing_stream_leaves_nothing_behind_and_the_name_free(storage: CheckpointStorage) -> None:
    location = await storage.create_checkpoint_location(1)

    async def broken() -> AsyncIterator[bytes]:
        yield b"half of it"
        raise RuntimeError("the snapshot failed")

    with pytest.raises(RuntimeError, match="the snapshot failed"):
        await storage.write_state(location, "state", broken())
    if isinstance(storage, lg.FileCheckpointStorage):
        assert os.listdir(storage.checkpoint_directory(1)) == []
    handle = await storage.write_state(location, "state", b"whole")
    assert await storage.read_state(handle) == b"whole"


async def test_names_ids_and_data_are_checked(storage: CheckpointStorage) -> None:
    location = await storage.create_checkpoint_location(1)
    await storage.write_state(location, "taken", b"x")
    with pytest.raises(lg.CheckpointError, match="already has a state blob named 'taken'"):
        await storage.write_state(location, "taken", b"y")
    for name in ["", METADATA_NAME, ".hidden", "a/b", "../escape", "x" * 201, "sp ace", 7]:
        with pytest.raises(lg.CheckpointError, match="a state blob name is 1 to 200 letters"):
            await storage.write_state(location, name, b"x")  # type: ignore[arg-type]
    await storage.write_state(location, "op-1.subtask_0.keyed-" + "x" * 179, b"ok")  # 200 characters
    for checkpoint_id in [-1, True, "1", 1.0]:
        with pytest.raises(lg.CheckpointError, match="a checkpoint id is a non-negative int"):
            await storage.create_checkpoint_location(checkpoint_id)  # type: ignore[arg-type]
    for data in ["text", [b"a"], None]:
        with pytest.raises(TypeError, match="bytes or an async iterable of bytes"):
            await storage.write_state(location, "data", data)  # type: ignore[arg-type]


async def test_a_location_that_was_never_created_or_was_discarded_takes_no_writes(
    storage: CheckpointStorage,
) -> None:
    pointer = "nowhere"
    with pytest.raises(lg.CheckpointError, match="checkpoint 5 has no"):
        await storage.write_state(CheckpointLocation(5, pointer), "state", b"x")
    location = await storage.create_checkpoint_location(6)
    await storage.discard_checkpoint(6)
    with pytest.raises(lg.CheckpointError, match="discarded"):
        await storage.write_state(location, "state", b"x")
    with pytest.raises(lg.CheckpointError, match="discarded"):
        await storage.write_metadata(location, b"m")


# ---- damage is detected, naming the file


@EXAMPLES
@given(
    payload=st.binary(max_size=512),
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
    damage_metadata=st.booleans(),
)
async def test_any_single_damaged_byte_is_detected(
    make_storage: MakeStorage, payload: bytes, position: int, mask: int, damage_metadata: bool
) -> None:
    storage = make_storage()
    location = await storage.create_checkpoint_location(2)
    handle = await storage.write_state(location, "state", payload)
    await storage.write_metadata(location, payload)
    name, pointer = (
        (METADATA_NAME, metadata_pointer(storage, 2)) if damage_metadata else ("state", handle.pointer)
    )
    data = bytearray(stored(storage, 2, name))
    data[position % len(data)] ^= mask  # header or payload: every byte is covered
    replace_stored(storage, 2, name, bytes(data))
    with pytest.raises(lg.CorruptCheckpointError) as caught:
        if damage_metadata:
            await storage.read_metadata(2)
        else:
            await storage.read_state(handle)
    assert caught.value.path == pointer
    assert pointer in str(caught.value)


@EXAMPLES
@given(
    payload=st.binary(min_size=1, max_size=512), keep=st.integers(min_value=0), extra=st.binary(min_size=1)
)
async def test_a_truncated_or_extended_file_is_detected(
    make_storage: MakeStorage, payload: bytes, keep: int, extra: bytes
) -> None:
    storage = make_storage()
    location = await storage.create_checkpoint_location(1)
    handle = await storage.write_state(location, "state", payload)
    original = stored(storage, 1, "state")
    replace_stored(storage, 1, "state", original[: keep % len(original)])
    with pytest.raises(lg.CorruptCheckpointError, match="truncated") as caught:
        await storage.read_state(handle)
    assert caught.value.path == handle.pointer
    replace_stored(storage, 1, "state", original + extra)
    with pytest.raises(lg.CorruptCheckpointError, match="extended"):
        await storage.read_state(handle)


async def test_damage_messages_say_what_is_wrong(storage: CheckpointStorage) -> None:
    location = await storage.create_checkpoint_location(1)
    handle = await storage.write_state(location, "state", b"payload")
    other = await storage.write_state(location, "other", b"another payload")
    good = stored(storage, 1, "state")
    cases = {
        b"XXXX" + good[4:]: "not a lockgate checkpoint file",
        good[:4] + b"\x00\x02" + good[6:]: "unknown format version 2",
        good[:6] + b"\x00\x02" + good[8:]: "unknown header flags",
        good[:-1] + bytes([good[-1] ^ 1]): "checksum mismatch",
        good[:10]: "shorter than the 20-byte header",
        stored(storage, 1, "other"): "handle records 7: another file",
    }
    for damaged, reason in cases.items():
        replace_stored(storage, 1, "state", damaged)
        with pytest.raises(lg.CorruptCheckpointError, match=reason) as caught:
            await storage.read_state(handle)
        assert caught.value.path == handle.pointer
        assert str(caught.value).startswith(f"checkpoint file {handle.pointer} is damaged: ")
    remove_stored(storage, 1, "other")
    with pytest.raises(lg.CorruptCheckpointError, match="missing") as missing:
        await storage.read_state(other)
    assert missing.value.path == other.pointer


async def test_a_handle_never_reads_outside_its_checkpoint(storage: CheckpointStorage) -> None:
    await complete(storage, 1, {"state": b"x"})
    forged = StreamStateHandle(1, "../../etc/passwd", "x", 1, 0)
    with pytest.raises(lg.CheckpointError, match="a state blob name"):
        await storage.read_state(forged)


# ---- completion, listing, discarding


async def test_a_checkpoint_is_complete_exactly_when_its_metadata_is_written(
    storage: CheckpointStorage,
) -> None:
    location = await storage.create_checkpoint_location(4)
    handle = await storage.write_state(location, "state", b"x")
    assert await storage.completed_checkpoints() == []
    with pytest.raises(lg.CheckpointError, match="checkpoint 4 is not complete") as caught:
        await storage.read_metadata(4)
    assert not isinstance(caught.value, lg.CorruptCheckpointError)  # absent is not damaged
    done = await storage.write_metadata(location, b"the metadata")
    assert isinstance(done, CompletedCheckpoint)
    assert (done.checkpoint_id, done.pointer) == (4, location.pointer)
    assert await storage.completed_checkpoints() == [done]
    assert await storage.read_metadata(4) == b"the metadata"
    assert await storage.read_state(handle) == b"x"
    with pytest.raises(lg.CheckpointError, match="complete"):
        await storage.write_state(location, "late", b"y")
    with pytest.raises(lg.CheckpointError, match="already complete"):
        await storage.write_metadata(location, b"again")
    with pytest.raises(lg.CheckpointError, match=r"already complete.*; it is never overwritten"):
        await storage.create_checkpoint_location(4)
    assert await storage.read_metadata(4) == b"the metadata"


async def test_listing_gives_complete_checkpoints_oldest_first(storage: CheckpointStorage) -> None:
    assert await storage.completed_checkpoints() == []
    for checkpoint_id in [10, 2, 1]:
        await complete(storage, checkpoint_id, {"state": b"s"})
    await storage.create_checkpoint_location(11)  # in progress: not listed
    if isinstance(storage, lg.FileCheckpointStorage):  # what is not a checkpoint directory is ignored
        (storage.directory / "chk-01").mkdir()
        (storage.directory / "chk-01" / METADATA_NAME).write_bytes(b"")
        (storage.directory / "chk-x").mkdir()
        (storage.directory / "chk-12").write_bytes(b"a file")
        (storage.directory / "notes.txt").write_text("hello")
    completed = await storage.completed_checkpoints()
    assert [c.checkpoint_id for c in completed] == [1, 2, 10]


async def test_a_retried_checkpoint_starts_empty(storage: CheckpointStorage) -> None:
    first = await storage.create_checkpoint_location(7)
    stale = await storage.write_state(first, "state", b"first attempt")
    second = await storage.create_checkpoint_location(7)
    with pytest.raises(lg.CorruptCheckpointError, match="missing"):
        await storage.read_state(stale)
    handle = await storage.write_state(second, "state", b"second attempt")
    await storage.write_metadata(second, b"m")
    assert await storage.read_state(handle) == b"second attempt"


async def test_discarding_removes_a_checkpoint_complete_or_not(storage: CheckpointStorage) -> None:
    await complete(storage, 1, {"state": b"one"})
    await complete(storage, 2, {"state": b"two"})
    await storage.create_checkpoint_location(3)
    await storage.discard_checkpoint(1)
    await storage.discard_checkpoint(3)
    await storage.discard_checkpoint(99)  # absent: nothing to do
    assert [c.checkpoint_id for c in await storage.completed_checkpoints()] == [2]
    with pytest.raises(lg.CheckpointError, match="checkpoint 1 is not complete"):
        await storage.read_metadata(1)
    if isinstance(storage, lg.FileCheckpointStorage):
        assert sorted(os.listdir(storage.directory)) == ["chk-2"]
    await complete(storage, 1, {"state": b"one again"})  # the id is free again
    assert [c.checkpoint_id for c in await storage.completed_checkpoints()] == [1, 2]


# ---- file storage: atomic metadata


async def test_metadata_appears_whole_by_rename_after_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = lg.FileCheckpointStorage(tmp_path / "ckpts", inline_threshold=0)
    location = await storage.create_checkpoint_location(1)
    directory = storage.checkpoint_directory(1)
    target = directory / METADATA_NAME
    synced: set[int] = set()  # inode numbers
    renames: list[tuple[str, bool, set[int], bytes]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    def replace(source: Any, destination: Any) -> None:
        # At the rename: the metadata is whole under its temporary name, fsynced, and not yet visible.
        path = Path(source)
        renames.append((path.name, target.exists(), set(synced), path.read_bytes()))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    await storage.write_state(location, "state", b"x" * 100)
    await storage.write_state(location, "other", b"y" * 100)
    await storage.write_metadata(location, b"metadata")
    [(temporary, visible_before, synced_before, content)] = renames
    assert temporary.startswith(f".{METADATA_NAME}.") and temporary.endswith(".tmp")
    assert not visible_before and os.stat(target).st_ino in synced_before
    assert content == target.read_bytes() and content.endswith(b"metadata")
    assert sorted(os.listdir(directory)) == sorted(["state", "other", METADATA_NAME])
    # Before _metadata appears, what it points at is durable: the state files (written unsynced, synced
    # all at once with the metadata), the directory's entries and the checkpoint directory's own entry.
    for durable in (directory / "state", directory / "other", directory, storage.directory):
        assert os.stat(durable).st_ino in synced_before, durable
    synced.clear()
    await storage.write_state(await storage.create_checkpoint_location(2), "state", b"z" * 100)
    assert not synced  # a state file alone is not synced: the metadata's write does it


async def test_a_failed_metadata_write_leaves_the_checkpoint_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = lg.FileCheckpointStorage(tmp_path / "ckpts", inline_threshold=0)
    location = await storage.create_checkpoint_location(1)
    await storage.write_state(location, "state", b"x")

    def replace(source: Any, destination: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(lg.CheckpointError, match=r"cannot write the checkpoint metadata .*No space left"):
        await storage.write_metadata(location, b"metadata")
    monkeypatch.undo()
    assert await storage.completed_checkpoints() == []
    assert os.listdir(storage.checkpoint_directory(1)) == ["state"]  # the temporary file is gone
    await storage.write_metadata(location, b"metadata")  # the checkpoint can still complete
    assert [c.checkpoint_id for c in await storage.completed_checkpoints()] == [1]


async def test_a_leftover_temporary_metadata_file_is_not_taken_as_complete(tmp_path: Path) -> None:
    storage = lg.FileCheckpointStorage(tmp_path / "ckpts")
    await complete(storage, 1, {"state": b"x"})
    location = await storage.create_checkpoint_location(2)
    await storage.write_state(location, "state", b"y")
    directory = storage.checkpoint_directory(2)
    whole = stored(storage, 1, METADATA_NAME)  # a crash after the temporary file was fully written
    (directory / f".{METADATA_NAME}.0123abcd.tmp").write_bytes(whole)
    assert [c.checkpoint_id for c in await storage.completed_checkpoints()] == [1]
    with pytest.raises(lg.CheckpointError, match="checkpoint 2 is not complete"):
        await storage.read_metadata(2)
    await storage.create_checkpoint_location(2)  # retrying the id clears the leftovers
    assert os.listdir(directory) == []


async def test_file_storage_reports_io_errors_as_checkpoint_errors(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    storage = lg.FileCheckpointStorage(tmp_path / "a-file")
    with pytest.raises(lg.CheckpointError, match="cannot create the checkpoint directory"):
        await storage.create_checkpoint_location(1)
    with pytest.raises(lg.CheckpointError, match="cannot list the checkpoints"):
        await storage.completed_checkpoints()


# ---- memory storage: the size limit


async def test_memory_storage_refuses_a_state_larger_than_its_limit() -> None:
    storage = lg.MemoryCheckpointStorage(max_state_size=100)
    location = await storage.create_checkpoint_location(3)
    await storage.write_state(location, "fits", b"x" * 100)
    with pytest.raises(lg.CheckpointError) as caught:
        await storage.write_state(location, "sum-keyed-0", b"x" * 101)
    message = str(caught.value)
    for part in [
        "'sum-keyed-0'",
        "checkpoint 3",
        "is 101 bytes",
        "100 bytes",
        "max_state_size",
        "MemoryCheckpointStorage(max_state_size=...)",
        "FileCheckpointStorage(",
    ]:
        assert part in message
    with pytest.raises(lg.CheckpointError, match=r"'streamed' of checkpoint 3 is at least 120 bytes"):
        await storage.write_state(location, "streamed", chunks([b"x" * 60, b"x" * 60, b"x" * 60]))
    await storage.write_metadata(location, b"m" * 1000)  # metadata is not limited
    assert await storage.read_metadata(3) == b"m" * 1000


def test_memory_storage_defaults_and_validation() -> None:
    assert lg.MemoryCheckpointStorage().max_state_size == 5 * MiB
    assert repr(lg.MemoryCheckpointStorage(10)) == "MemoryCheckpointStorage(max_state_size=10)"
    for bad in [0, -1, True, 1.5, "5", None]:
        with pytest.raises(lg.ConfigurationError, match=f"positive int, got {bad!r}"):
            lg.MemoryCheckpointStorage(max_state_size=bad)  # type: ignore[arg-type]


# ---- file URLs


@pytest.mark.parametrize(
    ("url", "directory"),
    [
        ("file:///data/ckpts", "/data/ckpts"),
        ("file:///data/ckpts/", "/data/ckpts"),
        ("file://localhost/data/ckpts", "/data/ckpts"),
        ("file://LOCALHOST/data/ckpts", "/data/ckpts"),
        ("file:/data/ckpts", "/data/ckpts"),
        ("FILE:///data/ckpts", "/data/ckpts"),
        ("file:///data/my%20ckpts", "/data/my ckpts"),
        ("file:///data/a/../b/./c", "/data/b/c"),
        ("/data/ckpts", "/data/ckpts"),
        ("/data/with:colon", "/data/with:colon"),
        (Path("/data/ckpts"), "/data/ckpts"),
    ],
)
def test_file_urls_and_paths_name_a_local_directory(url: str | Path, directory: str) -> None:
    storage = lg.FileCheckpointStorage(url)
    assert storage.directory == Path(directory)
    assert storage.url == Path(directory).as_uri()
    assert repr(storage) == f"FileCheckpointStorage({storage.url!r})"
    assert lg.FileCheckpointStorage(storage.url).directory == storage.directory  # the URL round-trips


def test_a_relative_path_is_resolved_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for relative, expected in [
        ("ckpts", "ckpts"),
        ("./ckpts", "ckpts"),
        ("sub/../ckpts/", "ckpts"),
        (Path("ckpts"), "ckpts"),
        ("./odd:name", "odd:name"),
        (".", ""),
    ]:
        assert lg.FileCheckpointStorage(relative).directory == tmp_path / expected
    assert lg.FileCheckpointStorage("ckpts").url == (tmp_path / "ckpts").as_uri()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/ckpts", r"the URL scheme 's3' is not supported; supported schemes: file://"),
        ("hdfs://namenode:8020/ckpts", r"the URL scheme 'hdfs' is not supported; supported schemes: file://"),
        ("http://example.com/ckpts", r"the URL scheme 'http' is not supported"),
        ("odd:name", r"the URL scheme 'odd' is not supported.*needs a leading '\./'"),
        ("file://tmp/ckpts", r"names the host 'tmp'.*file:///absolute/path \(three slashes"),
        ("file://server.example.com/ckpts", r"names the host 'server.example.com'"),
        ("file:ckpts", r"holds the relative path 'ckpts'.*absolute path.*without 'file:'"),
        ("file:./ckpts", r"holds the relative path '\./ckpts'"),
        ("file://", r"has no path"),
        ("file:", r"has no path"),
        ("file:///ckpts?x=1", r"query or a fragment"),
        ("file:///ckpts#top", r"query or a fragment"),
        ("", r"got an empty string"),
        ("  ", r"got an empty string"),
        ("/data/nul\x00", r"NUL character"),
        ("file:///data/%00", r"NUL character"),
    ],
)
def test_bad_file_urls_are_refused_saying_why(url: str, message: str) -> None:
    with pytest.raises(lg.ConfigurationError, match=message) as caught:
        lg.FileCheckpointStorage(url)
    if url.strip():
        assert repr(url) in str(caught.value) or "NUL" in str(caught.value)


def test_a_file_storage_takes_only_a_url_or_a_path() -> None:
    for bad in [42, None, b"/data", lg.MemoryCheckpointStorage()]:
        with pytest.raises(
            lg.ConfigurationError, match="takes a file URL such as 'file:///data/checkpoints'"
        ):
            lg.FileCheckpointStorage(bad)  # type: ignore[arg-type]


# ---- storage_for and the registry


def test_storage_for_turns_a_url_into_a_storage_and_keeps_a_storage(tmp_path: Path) -> None:
    memory = lg.MemoryCheckpointStorage()
    assert storage_for(memory) is memory
    by_url = storage_for("file:///tmp/ckpts")
    assert isinstance(by_url, lg.FileCheckpointStorage) and by_url.url == "file:///tmp/ckpts"
    by_path = storage_for(tmp_path)
    assert isinstance(by_path, lg.FileCheckpointStorage) and by_path.directory == tmp_path
    by_string = storage_for(str(tmp_path))
    assert isinstance(by_string, lg.FileCheckpointStorage) and by_string.directory == tmp_path
    assert supported_schemes() == ["file"]


def test_storage_for_refuses_unknown_schemes_and_other_things() -> None:
    with pytest.raises(lg.ConfigurationError) as caught:
        storage_for("nosuch://bucket/ckpts")  # s3:// and the other fsspec schemes: test_object_storage.py
    message = str(caught.value)
    assert "'nosuch://bucket/ckpts'" in message and "'nosuch'" in message
    assert "supported schemes: file://" in message
    for bad in [42, None, lg.HeapStateBackend(), [b"x"]]:
        with pytest.raises(lg.ConfigurationError, match=r"a checkpoint storage is a CheckpointStorage.*got"):
            storage_for(bad)  # type: ignore[arg-type]


def test_a_registered_scheme_gives_its_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_FACTORIES", dict(_registry._FACTORIES))
    made: list[str] = []

    def memory_for(url: str) -> CheckpointStorage:
        made.append(url)
        return lg.MemoryCheckpointStorage()

    register_checkpoint_storage("Mem", memory_for)
    assert supported_schemes() == ["file", "mem"]
    assert isinstance(storage_for("mem://anything"), lg.MemoryCheckpointStorage)
    assert made == ["mem://anything"]
    with pytest.raises(lg.ConfigurationError, match="supported schemes: file://, mem://"):
        storage_for("nosuch://bucket")
    register_checkpoint_storage("bad", lambda url: "not a storage")  # type: ignore[arg-type, return-value]
    with pytest.raises(lg.ConfigurationError, match="returned 'not a storage', not a CheckpointStorage"):
        storage_for("bad://x")
    for scheme in ["", "x", "s3:", "with space", 3]:
        with pytest.raises(lg.ConfigurationError, match="a URL scheme is a letter"):
            register_checkpoint_storage(scheme, memory_for)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="factory"):
        register_checkpoint_storage("ok", "not callable")  # type: ignore[arg-type]


async def test_a_job_restores_from_a_url_of_any_registered_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    # restore_from opens its URL through the same registry as set_checkpoint_storage: a storage of any
    # scheme serves both; one that holds no savepoints refuses a savepoint, saying so.
    monkeypatch.setattr(_registry, "_FACTORIES", dict(_registry._FACTORIES))
    shared = lg.MemoryCheckpointStorage()
    register_checkpoint_storage("shared-memory", lambda url: shared)
    queue = lg.QueueSource[int]()
    env = lg.StreamEnvironment()
    env.set_checkpoint_storage("shared-memory://ckpts")
    env.enable_checkpointing(3600)
    first = lg.CollectSink[int]()
    env.from_source(queue, uid="src").sink(first, uid="out")
    job = await env.start("first")
    for n in range(3):
        await queue.put(n)
    await job.trigger_checkpoint()
    with pytest.raises(lg.ConfigurationError, match="holds no savepoints"):
        await job.trigger_savepoint("shared-memory://savepoints")
    await job.cancel()

    env = lg.StreamEnvironment()
    again = lg.QueueSource[int]()
    second = lg.CollectSink[int]()
    env.from_source(again, uid="src").sink(second, uid="out")
    job = await env.start("second", restore_from="shared-memory://ckpts")
    await again.put(3)
    again.close()
    await job.wait()
    assert sorted(first.results) == [0, 1, 2] and second.results == [3]


# ---- presets and the environment


def test_memory_state_backend_is_heap_plus_memory_storage() -> None:
    preset = lg.MemoryStateBackend()
    assert isinstance(preset, lg.StateBackend) and isinstance(preset, StatePreset)
    assert isinstance(preset, lg.HeapStateBackend)
    assert isinstance(preset.checkpoint_storage, lg.MemoryCheckpointStorage)
    assert preset.checkpoint_storage.max_state_size == 5 * MiB
    assert preset.asynchronous is True
    assert repr(preset) == f"MemoryStateBackend(max_state_size={5 * MiB}, asynchronous=True)"
    keyed = preset.create_keyed_backend("op", KeyGroupRange(0, 127), 128)
    assert isinstance(keyed, HeapKeyedStateBackend)
    custom = lg.MemoryStateBackend(max_state_size=1000, asynchronous=False)
    assert (custom.checkpoint_storage.max_state_size, custom.asynchronous) == (1000, False)
    with pytest.raises(lg.ConfigurationError, match="max_state_size"):
        lg.MemoryStateBackend(max_state_size=0)
    with pytest.raises(lg.ConfigurationError, match="asynchronous must be True or False, got 'yes'"):
        lg.MemoryStateBackend(asynchronous="yes")  # type: ignore[arg-type]


def test_fs_state_backend_is_heap_plus_file_storage(tmp_path: Path) -> None:
    preset = lg.FsStateBackend("file:///data/ckpts")
    assert isinstance(preset, StatePreset) and isinstance(preset, lg.HeapStateBackend)
    assert isinstance(preset.checkpoint_storage, lg.FileCheckpointStorage)
    assert preset.checkpoint_storage.url == "file:///data/ckpts"
    assert preset.asynchronous is True
    assert repr(preset) == "FsStateBackend('file:///data/ckpts', asynchronous=True)"
    assert isinstance(preset.create_keyed_backend("op", KeyGroupRange(0, 0), 1), HeapKeyedStateBackend)
    assert lg.FsStateBackend(tmp_path, asynchronous=False).asynchronous is False
    with pytest.raises(lg.ConfigurationError, match="'nosuch' is not supported"):
        lg.FsStateBackend("nosuch://bucket/ckpts")
    with pytest.raises(lg.ConfigurationError, match="names the host 'data'"):
        lg.FsStateBackend("file://data/ckpts")
    for bad in [lg.FileCheckpointStorage(tmp_path), 42]:
        with pytest.raises(
            lg.ConfigurationError, match="FsStateBackend takes the URL of a checkpoint directory"
        ):
            lg.FsStateBackend(bad)  # type: ignore[arg-type]


def test_a_new_environment_keeps_state_on_the_heap_and_checkpoints_in_memory() -> None:
    env = lg.StreamEnvironment()
    assert isinstance(env.state_backend, lg.MemoryStateBackend)
    assert isinstance(env.state_backend, lg.HeapStateBackend)
    assert isinstance(env.checkpoint_storage, lg.MemoryCheckpointStorage)
    assert env.checkpoint_storage is env.state_backend.checkpoint_storage
    assert env.checkpoint_storage.max_state_size == 5 * MiB
    assert lg.StreamEnvironment().checkpoint_storage is not env.checkpoint_storage  # one per environment


def test_a_preset_sets_the_environments_checkpoint_storage(tmp_path: Path) -> None:
    env = lg.StreamEnvironment()
    preset = lg.FsStateBackend(tmp_path.as_uri())
    assert env.set_state_backend(preset) is env
    assert env.state_backend is preset
    assert env.checkpoint_storage is preset.checkpoint_storage
    env.set_state_backend(lg.HeapStateBackend())  # a plain backend keeps the storage
    assert env.checkpoint_storage is preset.checkpoint_storage
    memory = lg.MemoryStateBackend(max_state_size=10)
    env.set_state_backend(memory)
    assert env.checkpoint_storage is memory.checkpoint_storage


def test_set_checkpoint_storage_takes_a_storage_or_a_url(tmp_path: Path) -> None:
    env = lg.StreamEnvironment()
    assert env.set_checkpoint_storage("file:///tmp/ckpts") is env
    assert isinstance(env.checkpoint_storage, lg.FileCheckpointStorage)
    assert env.checkpoint_storage.url == "file:///tmp/ckpts"
    assert isinstance(env.state_backend, lg.MemoryStateBackend)  # the backend is independent
    storage = lg.MemoryCheckpointStorage(max_state_size=1)
    assert env.set_checkpoint_storage(storage).checkpoint_storage is storage
    env.set_state_backend(lg.FsStateBackend(tmp_path)).set_checkpoint_storage(storage)  # the last one wins
    assert env.checkpoint_storage is storage
    with pytest.raises(lg.ConfigurationError, match="'nosuch' is not supported"):
        env.set_checkpoint_storage("nosuch:///ckpts")
    with pytest.raises(lg.ConfigurationError, match="a checkpoint storage is a CheckpointStorage"):
        env.set_checkpoint_storage(42)  # type: ignore[arg-type]
    assert env.checkpoint_storage is storage  # a refused setting changes nothing


async def test_a_keyed_job_runs_on_each_preset(tmp_path: Path) -> None:
    class Count(lg.KeyedProcessFunction[str, tuple[str, int]]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

        async def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:
            count = await self.count.value() + 1
            await self.count.update(count)
            yield (value, count)

    for preset in [lg.MemoryStateBackend(), lg.FsStateBackend(tmp_path / "ckpts")]:
        env = lg.StreamEnvironment(parallelism=2).set_state_backend(preset)
        out = env.from_collection("abacab").key_by(lambda x: x).process(Count(), uid="count")
        sink = out.sink(lg.CollectSink())
        await env.execute("presets")
        assert sorted(sink.results) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]


# ---- errors


def test_checkpoint_errors_are_lockgate_errors_and_pickle() -> None:
    assert issubclass(lg.CorruptCheckpointError, lg.CheckpointError)
    assert issubclass(lg.CheckpointError, lg.LockgateError)
    error = lg.CorruptCheckpointError("/ckpts/chk-1/state", "checksum mismatch")
    assert (error.path, error.reason) == ("/ckpts/chk-1/state", "checksum mismatch")
    assert str(error) == "checkpoint file /ckpts/chk-1/state is damaged: checksum mismatch"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.path, str(copy)) == (lg.CorruptCheckpointError, error.path, str(error))
