"""Signed checkpoints and savepoints: with a signing key every file carries an HMAC, and a restore,
``Savepoint.load(url, key=...)`` and ``lockgate savepoint verify --key-file`` refuse a file that is not
signed with it before anything in it is unpickled."""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.cli import main as cli
from tests._sources import GUARD, until_or_failure
from tests.test_recovery import Watch

pytestmark = pytest.mark.anyio

KEY = b"the job's signing key"
HEADER = struct.Struct(">4sHHQI")
RAN: list[str] = []


def mark(what: str) -> str:
    """What a forged pickle calls when it is loaded: the test sees that code ran."""
    RAN.append(what)
    return what


class Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (mark, ("unpickled",))


class Count(lg.KeyedProcessFunction[str, Any]):
    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))

    def process_element(self, key: str, ctx: lg.RuntimeContext) -> Iterator[Any]:
        count = self.count.value_nowait() + 1
        self.count.update_nowait(count)
        yield (key, count)


def environment(key: bytes | None, backend: str = "heap") -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=8)
    if backend == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend(incremental=True))
    env.enable_checkpointing(3600)
    env.set_checkpoint_signing_key(key)
    return env


async def take(
    tmp_path: Path,
    key: bytes | None,
    save: str = "savepoint",
    backend: str = "heap",
    inline_threshold: int = 0,
) -> str:
    """Run the job and take a savepoint or a checkpoint; its URL. Blobs smaller than
    ``inline_threshold`` are kept in ``_metadata`` (0: every state blob is a file of its own)."""
    env = environment(key, backend)
    checkpoints = (tmp_path / "checkpoints").as_uri()
    env.set_checkpoint_storage(lg.FileCheckpointStorage(checkpoints, inline_threshold=inline_threshold))
    source: lg.QueueSource[str] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid="src").key_by(lambda k: k)
    keyed.process(Count(), uid="count").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    keys = ["a", "b", "a", "c"]
    with anyio.fail_after(GUARD):
        job = await env.start("signed")
        for key_ in keys:
            await source.put(key_)
        await until_or_failure(job, lambda: watch.until(len(keys)))
        if save == "savepoint":
            pointer = await job.trigger_savepoint((tmp_path / "savepoints").as_uri())
        else:
            pointer = (await job.trigger_checkpoint()).pointer
        await job.cancel()
    return pointer


async def restore(pointer: str, key: bytes | None = None) -> list[Any]:
    env = environment(key)
    sink = lg.CollectSink[Any]()
    # Other uids for source and sink: only the count's state is taken (the first sink's open
    # transaction would otherwise commit here).
    keyed = env.from_collection(["a", "d"], uid="src2").key_by(lambda k: k)
    keyed.process(Count(), uid="count").sink(sink, uid="out2")
    with anyio.fail_after(GUARD):
        await env.execute("signed-after", restore_from=pointer, allow_non_restored_state=True)
    return sorted(sink.results)


async def run_cli(*arguments: str) -> Any:
    """The command line, as a user runs it (in a thread: it runs an event loop of its own)."""
    return await anyio.to_thread.run_sync(lambda: CliRunner().invoke(cli, list(arguments)))


def files_of(pointer: str) -> list[Path]:
    root = Path(pointer.removeprefix("file://"))
    places = [root, root.parent / "shared"]
    return sorted(path for where in places if where.exists() for path in where.iterdir() if path.is_file())


def flags(path: Path) -> int:
    return int(HEADER.unpack_from(path.read_bytes())[2])


def force_crc(data: bytes, target: int) -> bytes:
    """``data`` with its last 4 bytes changed so that its CRC-32 is ``target``. CRC-32 is affine in
    those bits: solve for them over GF(2). A checksum stops accidents, not someone who means it."""
    head = data[:-4]

    def crc(tail: int) -> int:
        return zlib.crc32(head + tail.to_bytes(4, "little")) & 0xFFFFFFFF

    base = crc(0)
    rows = [(crc(1 << bit) ^ base, 1 << bit) for bit in range(32)]  # (effect, bits that make it)
    want, chosen = target ^ base, 0
    for bit in range(32):
        pivot = next((i for i, (effect, _) in enumerate(rows) if effect >> bit & 1), None)
        if pivot is None:
            continue
        effect, bits = rows.pop(pivot)
        rows = [(e ^ effect, b ^ bits) if e >> bit & 1 else (e, b) for e, b in rows]
        if want >> bit & 1:
            want, chosen = want ^ effect, chosen ^ bits
    assert want == 0 and crc(chosen) == target
    return head + chosen.to_bytes(4, "little")


def forge(path: Path, payload: bytes) -> None:
    """Replace a file's payload with ``payload`` (padded to the old length), keeping its frame whole
    (length and CRC-32 as before, as its handle records them) and its old signature: what someone
    without the key can do."""
    data = path.read_bytes()
    magic, version, flag, length, checksum = HEADER.unpack_from(data)
    signature = data[HEADER.size + length :]
    assert len(payload) + 4 <= length, "the forged payload must fit"
    forged = force_crc(payload + bytes(length - len(payload)), checksum)
    path.write_bytes(HEADER.pack(magic, version, flag, length, checksum) + forged + signature)


async def test_a_signed_savepoint_restores_with_its_key_and_every_file_is_signed(tmp_path: Path) -> None:
    pointer = await take(tmp_path, KEY)
    assert files_of(pointer) and all(flags(path) == 1 for path in files_of(pointer))
    assert await restore(pointer, KEY) == [("a", 3), ("d", 1)]
    # Without a key the checksums are still checked, and the signatures not: it restores too.
    assert await restore(pointer, None) == [("a", 3), ("d", 1)]


async def test_a_signed_incremental_rocksdb_checkpoint_restores_and_verifies_with_its_key(
    tmp_path: Path,
) -> None:
    pointer = await take(tmp_path, KEY, save="checkpoint", backend="rocksdb")
    files = files_of(pointer)
    assert any(path.parent.name == "shared" for path in files)
    assert all(flags(path) == 1 for path in files)
    assert await restore(pointer, KEY) == [("a", 3), ("d", 1)]
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    result = await run_cli("savepoint", "verify", pointer, "--key-file", str(key_file))
    assert result.exit_code == 0, result.output


async def assert_forgery_refused_before_unpickling(pointer: str, key: bytes) -> lg.CorruptCheckpointError:
    """A restore and ``Savepoint.load`` of the forged checkpoint at ``pointer`` with ``key`` refuse it
    before anything of it is unpickled; the restore's error. Without the key the forgery is unpickled:
    the check would catch a reader that does not check."""
    RAN.clear()
    with pytest.raises(lg.CorruptCheckpointError, match="signature does not match") as refused:
        await restore(pointer, key)
    assert RAN == []
    with pytest.raises(lg.CorruptCheckpointError, match="signature does not match"):
        await lg.Savepoint.load(pointer, key=key)
    assert RAN == []
    with pytest.raises(lg.CorruptCheckpointError):
        await lg.Savepoint.load(pointer)
    assert RAN == ["unpickled"]
    return refused.value


async def test_a_forged_file_is_refused_before_it_is_unpickled(tmp_path: Path) -> None:
    pointer = await take(tmp_path, KEY)
    target = next(
        path for path in files_of(pointer) if path.name.startswith("count-") and "keyed" in path.name
    )
    forge(target, pickle.dumps(Evil()))
    refused = await assert_forgery_refused_before_unpickling(pointer, KEY)
    assert refused.path == str(target)


async def test_unsigned_files_are_refused_when_a_key_is_set(tmp_path: Path) -> None:
    pointer = await take(tmp_path, None)
    with pytest.raises(lg.CorruptCheckpointError, match="not signed, but a signing key is set"):
        await restore(pointer, KEY)
    with pytest.raises(lg.CorruptCheckpointError, match="not signed"):
        await lg.Savepoint.load(pointer, key=KEY)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    result = await run_cli("savepoint", "verify", pointer, "--key-file", str(key_file))
    assert result.exit_code == 1 and "not signed" in result.output


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_forged_byte_of_any_file_is_caught_with_the_key(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    tmp_path = tmp_path_factory.mktemp("forged")
    pointer = await take(tmp_path, KEY)
    # Which file and where as numbers: the files' names and sizes differ from run to run.
    files = files_of(pointer)
    target = files[data.draw(st.integers(0, 1000), label="file") % len(files)]
    payload = bytearray(target.read_bytes()[HEADER.size : -32])
    position = data.draw(st.integers(0, 10**6), label="position") % (len(payload) - 4)
    payload[position] ^= data.draw(st.integers(1, 255), label="xor")
    forge(target, bytes(payload[:-4]))  # its CRC-32 forced back to the old one
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    result = await run_cli("savepoint", "verify", pointer, "--key-file", str(key_file))
    assert result.exit_code == 1 and target.name in result.output
    if target.name != "_metadata":  # (whose JSON no longer parses)
        # Without the key, a state file's frame is whole: only the signature could tell.
        assert (await run_cli("savepoint", "verify", pointer)).exit_code == 0


async def test_the_key_comes_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_CHECKPOINT_SIGNING_KEY", KEY.decode())
    assert lg.StreamEnvironment().checkpoint_signing_key == KEY
    with pytest.raises(lg.ConfigurationError, match="non-empty bytes or str"):
        lg.StreamEnvironment().set_checkpoint_signing_key(b"")


async def test_a_savepoint_writer_signs_with_the_key_it_read_with(tmp_path: Path) -> None:
    pointer = await take(tmp_path, KEY)
    saved = await lg.Savepoint.load(pointer, key=KEY)
    writer = lg.SavepointWriter.from_existing(saved).rename_operator("count", "count2")
    written = await writer.write((tmp_path / "written").as_uri())
    assert all(flags(path) == 1 for path in files_of(written))
    assert (await lg.Savepoint.load(written, key=KEY)).operator("count2").states[0].entries == 3
