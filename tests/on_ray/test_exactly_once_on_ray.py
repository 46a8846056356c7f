"""Exactly-once on the Ray runner: the main suite's pipelines (keyed state, a union, a broadcast with
operator state, operator list state, a FileSink), each subtask in a Ray actor, at parallelism 1 to 4,
with crashes that raise and crashes that kill the subtask's actor (``ray.kill``); and checkpoints in
the driver's memory, in fsspec's ``memory://`` (reached through the driver) and in S3 (a moto server on
127.0.0.1, written to by the workers themselves).

Each property runs a few examples only: a Ray job costs more than a local one, and the main suite
explores the same pipelines widely on the local runner; here the question is whether the runner keeps
what the local one promises.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exactly_once import (
    STATE_BACKENDS,
    CountPerSubtask,
    Tally,
    broadcast_and_operator_state,
    records,
    running_sums,
    unioned_reduce,
    visible_lines,
)

import lockgate as lg
from lockgate.testing import FailureSchedule, assert_exactly_once, failure_schedules, inject_failures

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.usefixtures("ray_session"),
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),  # botocore's
]

Record = tuple[str, int]
BUCKET = "lockgate-ray-tests"
EXAMPLES = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
parallelisms = st.integers(1, 4)


def on_ray(
    parallelism: int, backend: str = "heap", storage: Callable[[], Any] | None = None
) -> Callable[[], lg.StreamEnvironment]:
    def make() -> lg.StreamEnvironment:
        env = lg.StreamEnvironment(
            parallelism=parallelism,
            max_parallelism=16,
            batch_size=5,
            channel_capacity=2,
            runner=lg.RayRunner(frame_records=7),
        )
        if backend in STATE_BACKENDS:
            env.set_state_backend(STATE_BACKENDS[backend]())
        if storage is not None:
            env.set_checkpoint_storage(storage())
        return env

    return make


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port) with one bucket."""
    fsspec = pytest.importorskip("fsspec")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://127.0.0.1:{port}"
    fsspec.filesystem("s3", skip_instance_cache=True, **s3_options(endpoint)).mkdir(BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    """Options that travel with the storage to the workers (whose environment is not the test's)."""
    return {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-west-2"},  # moto refuses us-east-1 as a bucket's location
    }


@EXAMPLES
@given(
    items=records,
    parallelism=parallelisms,
    source_parallelism=parallelisms,
    backend=st.sampled_from(["heap", "rocksdb"]),
    schedule=failure_schedules(
        ["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8, kills=True
    ),
)
async def test_keyed_running_sums_are_exactly_once_on_ray(
    items: list[Record], parallelism: int, source_parallelism: int, backend: str, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        running_sums(items, source_parallelism), schedule, environment=on_ray(parallelism, backend)
    )


@EXAMPLES
@given(
    left=records,
    right=records,
    parallelism=parallelisms,
    schedule=failure_schedules(
        ["left", "right", "negate", "one", "reduce", "after", "out"],
        max_record=40,
        max_checkpoint_every=8,
        kills=True,
    ),
)
async def test_a_union_of_two_sources_is_exactly_once_on_ray(
    left: list[Record], right: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(unioned_reduce(left, right), schedule, environment=on_ray(parallelism))


@EXAMPLES
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(
        ["items", "factors", "scale", "sign", "sum", "out"], max_record=40, max_checkpoint_every=8, kills=True
    ),
)
async def test_a_broadcast_with_operator_state_is_exactly_once_on_ray(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    await assert_exactly_once(
        broadcast_and_operator_state(items, [3]), schedule, environment=on_ray(parallelism)
    )


@EXAMPLES
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(["items", "count"], max_record=40, max_checkpoint_every=8, kills=True),
)
async def test_operator_list_state_is_exactly_once_on_ray(
    items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    def build(env: lg.StreamEnvironment) -> lg.CollectSink[Any]:
        sink: lg.CollectSink[Any] = lg.CollectSink()
        counts = env.from_collection(items, uid="items", parallelism=parallelism).process(
            CountPerSubtask(), uid="count"
        )
        counts.sink(sink, uid="out")
        return sink

    await assert_exactly_once(build, schedule, environment=on_ray(parallelism))


@EXAMPLES
@given(
    items=records,
    parallelism=parallelisms,
    storage=st.sampled_from(["memory://", "s3://"]),
    backend=st.sampled_from(["heap", "rocksdb"]),  # RocksDB: incremental, uploads shared by reference
    schedule=failure_schedules(
        ["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8, kills=True
    ),
)
async def test_checkpoints_in_object_storage_are_exactly_once_on_ray(
    request: pytest.FixtureRequest,
    items: list[Record],
    parallelism: int,
    storage: str,
    backend: str,
    schedule: FailureSchedule,
) -> None:
    place = f"{BUCKET}/{uuid.uuid4().hex}"
    if storage == "s3://":
        options = s3_options(request.getfixturevalue("s3_endpoint"))
        make: Callable[[], Any] = lambda: lg.FsspecCheckpointStorage(f"s3://{place}", **options)  # noqa: E731
    else:
        make = lambda: lg.FsspecCheckpointStorage(f"memory://{place}")  # noqa: E731
    await assert_exactly_once(
        running_sums(items, 1), schedule, environment=on_ray(parallelism, backend, make)
    )


@EXAMPLES
@given(
    items=records,
    parallelism=parallelisms,
    schedule=failure_schedules(
        ["src", "double", "sum", "out"], max_record=40, max_checkpoint_every=8, kills=True
    ),
)
async def test_file_sink_commits_each_record_exactly_once_on_ray(
    tmp_path: Path, items: list[Record], parallelism: int, schedule: FailureSchedule
) -> None:
    async def run(directory: Path, with_failures: FailureSchedule | None) -> None:
        env = on_ray(parallelism)()
        env.enable_checkpointing(3600.0)
        if with_failures is not None:
            env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=len(with_failures.crashes)))
            inject_failures(env, with_failures)
        stream = env.from_collection(items, uid="src").map(lambda r: r, uid="double")
        stream.key_by(lambda r: r[0]).process(Tally(), uid="sum").sink(lg.FileSink(directory), uid="out")
        await env.execute("files")

    case = tmp_path / uuid.uuid4().hex
    await run(case / "expected", None)
    await run(case / "actual", schedule)
    assert visible_lines(case / "actual") == visible_lines(case / "expected")
    assert sum(visible_lines(case / "expected").values()) == len(items)
