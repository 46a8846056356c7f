"""Checkpoints and savepoints in object storage: ``s3://`` against a moto S3 server on 127.0.0.1, and
fsspec's in-process ``memory://``.

Real jobs checkpoint there, crash and restore exactly once (heap and incremental RocksDB); a savepoint
goes to S3, a new job restores it and ``lg.Savepoint.load`` reads it; retention keeps the configured
number of checkpoints and deletes exactly the shared blobs none of them references (the bucket is
listed); a checkpoint without ``_metadata`` is skipped; a damaged object is refused by its checksum.
Every async test runs on asyncio and on trio. The server listens on 127.0.0.1 only, and the
credentials are fake, set in the environment as a user's would be (``AWS_ENDPOINT_URL`` among them).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.snapshots import METADATA_NAME, read_checkpoint_metadata, storage_for
from lockgate.testing import FailureSchedule, assert_exactly_once, failure_schedules
from tests.test_inline_state import running_sums

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = [
    pytest.mark.anyio,
    # botocore (used by s3fs and moto) still calls datetime.utcnow(), deprecated since Python 3.12;
    # the warning is theirs, not lockgate's, and the suite turns warnings into errors.
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),
]

BUCKET = "lockgate-tests"
GUARD = 20  # seconds before a story is called a hang

Record = tuple[str, int]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port), one bucket, and fake credentials in the
    environment, as a user's AWS configuration would give them to s3fs."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            patch.setenv(name, value)
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
        try:
            yield endpoint
        finally:
            fsspec.filesystem("s3").clear_instance_cache()
            server.stop()


@pytest.fixture(params=["s3", "memory"])
def place(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes the URL of a fresh, empty place in one kind of object storage, each call."""
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return lambda: f"s3://{BUCKET}/{uuid.uuid4().hex}"
    return lambda: f"memory://lockgate-tests/{uuid.uuid4().hex}"


def objects(url: str) -> list[str]:
    """Every object under ``url``, relative to it, sorted: what a listing of the bucket shows."""
    file_system, root = fsspec.core.url_to_fs(url)
    file_system.invalidate_cache()
    return sorted(path[len(root) + 1 :] for path in file_system.find(root))


def damage(url: str) -> None:
    """Flip the last byte of the object at ``url``."""
    file_system, path = fsspec.core.url_to_fs(url)
    data = bytearray(file_system.cat_file(path))
    data[-1] ^= 0xFF
    file_system.pipe_file(path, bytes(data))


# ---- the storage from a URL


def test_any_fsspec_url_gives_an_object_storage_that_keeps_its_options_out_of_its_repr() -> None:
    storage = storage_for("memory://lockgate-tests/named")
    assert isinstance(storage, lg.FsspecCheckpointStorage)
    assert storage.url == "memory://lockgate-tests/named"
    env = lg.StreamEnvironment().set_checkpoint_storage("memory://lockgate-tests/env/")
    assert isinstance(env.checkpoint_storage, lg.FsspecCheckpointStorage)
    assert env.checkpoint_storage.url == "memory://lockgate-tests/env"
    secret = lg.FsspecCheckpointStorage("s3://bucket/ckpts", key="id", secret="do-not-print")
    assert secret.storage_options == {"key": "id", "secret": "do-not-print"}
    assert repr(secret) == "FsspecCheckpointStorage('s3://bucket/ckpts')"


def test_a_missing_fsspec_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ["fsspec", "fsspec.core", "fsspec.registry"]:
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as if not installed
    with pytest.raises(lg.ConfigurationError, match=r"pip install 'lockgate\[s3\]'"):
        storage_for("s3://bucket/ckpts")


# ---- jobs: exactly once, with a crash, on the heap and on incremental RocksDB


BACKENDS: dict[str, Callable[[], lg.StateBackend]] = {
    "heap": lambda: lg.HeapStateBackend(),
    "rocksdb-incremental": lambda: lg.RocksDBStateBackend(incremental=True),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.tuples(st.sampled_from("abc"), st.integers(-9, 9)), min_size=4, max_size=30),
    schedule=failure_schedules(["src", "sum", "out"], max_record=30, max_crashes=1, max_checkpoint_every=6),
)
async def test_a_keyed_running_sum_restarts_exactly_once_from_object_storage(
    place: Callable[[], str], backend: str, items: list[Record], schedule: FailureSchedule
) -> None:
    used: list[str] = []

    def environment() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(parallelism=2, max_parallelism=8, batch_size=3)
        env.set_state_backend(BACKENDS[backend]())
        url = place()
        used.append(url)
        return env.set_checkpoint_storage(url)

    with anyio.fail_after(GUARD):
        report = await assert_exactly_once(running_sums(items), schedule, environment=environment)
    if report.restarts_from_checkpoint:
        # The restart restored a checkpoint this storage holds (the final checkpoint is there too).
        assert any(name.endswith(METADATA_NAME) for name in objects(used[-1]))


# ---- savepoints


def tally(
    env: lg.StreamEnvironment, source: lg.Source[Record] | list[Record], sink: lg.CollectSink[Any]
) -> None:
    stream = (
        env.from_collection(source, uid="src")
        if isinstance(source, list)
        else env.from_source(source, uid="src")
    )
    stream.key_by(lambda r: r[0]).sum(1, uid="sum").sink(sink, uid="out")


async def test_a_savepoint_in_s3_restores_into_a_new_job_and_loads_offline(s3_endpoint: str) -> None:
    where = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    env = lg.StreamEnvironment().set_checkpoint_storage(f"{where}/ckpts")
    env.set_state_backend(lg.RocksDBStateBackend(incremental=True))
    env.enable_checkpointing(3600)
    queue = lg.QueueSource[Record]()
    first = lg.CollectSink[Any]()
    tally(env, queue, first)
    with anyio.fail_after(GUARD):
        job = await env.start("first")
        for record in [("a", 1), ("b", 2), ("a", 3)]:
            await queue.put(record)
        savepoint = await job.trigger_savepoint(f"{where}/savepoints")
        await job.cancel()
    assert savepoint.startswith(f"{where}/savepoints/savepoint-")
    assert f"{savepoint.removeprefix(where + '/')}/{METADATA_NAME}" in objects(where)

    loaded = await lg.Savepoint.load(savepoint)
    assert [operator.uid for operator in loaded.operators()] == ["out", "src", "sum"]
    state_name = loaded.operator("sum").states[0].name
    read = {key: value async for key, value in loaded.read_keyed_state("sum", state_name)}
    assert read == {"a": ("a", 4), "b": ("b", 2)}

    env = lg.StreamEnvironment()
    again = lg.QueueSource[Record]()
    second = lg.CollectSink[Any]()
    tally(env, again, second)
    with anyio.fail_after(GUARD):
        job = await env.start("second", restore_from=savepoint)
        await again.put(("a", 10))
        again.close()
        await job.wait()
    assert second.results == [("a", 14)]


# ---- retention and shared blobs


async def test_retention_keeps_the_newest_checkpoints_and_the_shared_blobs_they_reference(
    place: Callable[[], str],
) -> None:
    url = place()
    env = lg.StreamEnvironment().set_checkpoint_storage(url)
    env.set_state_backend(lg.RocksDBStateBackend(incremental=True))
    env.enable_checkpointing(3600)
    env.checkpoint_config.retained = 2
    queue = lg.QueueSource[Record]()
    tally(env, queue, lg.CollectSink())
    storage = storage_for(url)
    ever_shared: set[str] = set()
    with anyio.fail_after(GUARD):
        job = await env.start("retention")
        for round_ in range(5):
            for key in "abcdefgh":
                await queue.put((f"{key}{round_}", round_))
            await job.trigger_checkpoint()
            ever_shared |= await storage.shared_names()
        queue.close()
        await job.wait()  # the final checkpoint is the newest of those kept
    completed = await storage.completed_checkpoints()
    assert len(completed) == 2
    listed = objects(url)
    kept_places = {name.split("/")[0] for name in listed if not name.startswith("shared/")}
    assert kept_places == {f"chk-{checkpoint.checkpoint_id}" for checkpoint in completed}
    referenced: set[str] = set()
    for checkpoint in completed:
        referenced |= (await read_checkpoint_metadata(storage, checkpoint)).shared_names()
    shared_listed = {name.removeprefix("shared/") for name in listed if name.startswith("shared/")}
    assert referenced and shared_listed == referenced  # nothing a kept checkpoint needs is gone, nor more
    assert ever_shared - referenced, "some shared blob only dropped checkpoints referenced was deleted"


# ---- incomplete and damaged checkpoints


async def run_to_a_checkpoint(url: str, records: list[Record]) -> lg.CollectSink[Any]:
    """A job that takes one checkpoint into ``url``, every state blob in an object of its own."""
    env = lg.StreamEnvironment().set_checkpoint_storage(lg.FsspecCheckpointStorage(url, inline_threshold=0))
    env.enable_checkpointing(3600)
    queue = lg.QueueSource[Record]()
    sink = lg.CollectSink[Any]()
    tally(env, queue, sink)
    with anyio.fail_after(GUARD):
        job = await env.start("before")
        for record in records:
            await queue.put(record)
        await job.trigger_checkpoint()
        await job.cancel()
    return sink


async def resume(restore_from: str, records: list[Record]) -> list[Any]:
    env = lg.StreamEnvironment()
    sink = lg.CollectSink[Any]()
    tally(env, records, sink)
    with anyio.fail_after(GUARD):
        await env.execute("after", restore_from=restore_from)
    return list(sink.results)


async def test_a_checkpoint_without_metadata_is_skipped_on_restore(place: Callable[[], str]) -> None:
    url = place()
    await run_to_a_checkpoint(url, [("a", 1), ("a", 2)])
    storage = lg.FsspecCheckpointStorage(url, inline_threshold=0)
    [complete] = await storage.completed_checkpoints()
    # A newer checkpoint whose objects were written, but not its metadata (the job died first).
    newer = await storage.create_checkpoint_location(complete.checkpoint_id + 1)
    await storage.write_state(newer, "sum-0-keyed", b"state of a checkpoint that never completed")
    assert f"chk-{newer.checkpoint_id}/sum-0-keyed" in objects(url)
    assert await storage.completed_checkpoints() == [complete]

    assert await resume(url, [("a", 10)]) == [("a", 13)]
    with pytest.raises(lg.CorruptCheckpointError, match="not complete"):
        await resume(newer.pointer, [("a", 10)])


async def test_a_damaged_object_is_refused_naming_it(place: Callable[[], str]) -> None:
    url = place()
    await run_to_a_checkpoint(url, [("a", 1)])
    [complete] = await storage_for(url).completed_checkpoints()
    state = next(
        name
        for name in objects(url)
        if name.startswith(f"chk-{complete.checkpoint_id}/sum-") and name.endswith("keyed")
    )
    damage(f"{url}/{state}")
    with pytest.raises(lg.CorruptCheckpointError) as refused:
        await resume(url, [("a", 10)])
    assert refused.value.path == f"{url}/{state}"
    assert "checksum mismatch" in str(refused.value) or "signature" in str(refused.value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=200), data=st.data())
async def test_any_single_damaged_byte_of_an_object_is_detected(payload: bytes, data: st.DataObject) -> None:
    url = f"memory://lockgate-tests/{uuid.uuid4().hex}"
    storage = lg.FsspecCheckpointStorage(url, inline_threshold=0)
    location = await storage.create_checkpoint_location(1)
    handle = await storage.write_state(location, "blob", payload)
    await storage.write_metadata(location, b"{}")
    file_system, root = fsspec.core.url_to_fs(f"{url}/chk-1/blob")
    stored = bytearray(file_system.cat_file(root))
    position = data.draw(st.integers(0, len(stored) - 1))
    stored[position] ^= data.draw(st.integers(1, 255))
    file_system.pipe_file(root, bytes(stored))
    with pytest.raises(lg.CorruptCheckpointError) as refused:
        await storage.read_state(handle)
    assert refused.value.path == f"{url}/chk-1/blob"


async def test_object_storage_counts_stream_writes_and_discards_as_the_file_storage(
    place: Callable[[], str],
) -> None:
    url = place()
    storage = lg.FsspecCheckpointStorage(url, inline_threshold=0)

    async def chunks() -> Any:
        for piece in [b"ab", b"", b"cde"]:
            yield piece

    location = await storage.create_checkpoint_location(3)
    streamed = await storage.write_state(location, "streamed", chunks())
    assert (streamed.size, await storage.read_state(streamed)) == (5, b"abcde")
    with pytest.raises(lg.CheckpointError, match="already has a state blob named 'streamed'"):
        await storage.write_state(location, "streamed", b"again")
    shared = await storage.write_shared("blob-1", chunks())
    assert await storage.read_shared(shared) == b"abcde"
    await storage.write_metadata(location, b"meta")
    with pytest.raises(lg.CheckpointError, match="already complete"):
        await storage.write_state(location, "late", b"x")
    with pytest.raises(lg.CheckpointError, match="already complete"):
        await storage.create_checkpoint_location(3)
    await storage.discard_checkpoint(3)
    assert objects(url) == ["shared/blob-1"]  # shared blobs are the coordinator's to delete
    with pytest.raises(lg.CheckpointError, match="no location"):
        await storage.write_state(location, "after", b"x")
    await storage.discard_shared(["blob-1", "never-written"])
    assert objects(url) == [] and await storage.shared_names() == set()
