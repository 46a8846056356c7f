"""A job's metrics from the outside: ``job.metrics()`` and the job server's ``/api/metrics`` and
``/metrics`` give true counts of real jobs, with Flink's names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import lockgate as lg
import lockgate.checkpointing._coordinator as coordinator_module
from lockgate.observe import JOB_METRICS, OPERATOR_METRICS
from lockgate.snapshots import CheckpointLocation, StateData
from lockgate.snapshots import StreamStateHandle as Handle
from tests._sources import GUARD, until_or_failure
from tests.test_recovery import Watch

pytestmark = pytest.mark.anyio


class Doubles(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int]]):
    """Two records out for each in: numRecordsOut is twice numRecordsIn."""

    def process_element(self, record: tuple[str, int], ctx: lg.RuntimeContext) -> Iterator[tuple[str, int]]:
        yield record
        yield record


def totals(metrics: dict[str, dict[str, Any]], uid: str, name: str) -> int:
    """``name`` summed over the subtasks of ``uid``."""
    return sum(figures[name] for key, figures in metrics.items() if key.startswith(f"{uid}["))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.integers(0, 99), max_size=300),
    parallelism=st.integers(1, 3),
    batch_size=st.sampled_from([1, 7, 64]),
)
async def test_record_counts_are_true_for_any_input_parallelism_and_batch_size(
    values: list[int], parallelism: int, batch_size: int
) -> None:
    env = lg.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    records = [(f"k{value % 5}", value) for value in values]
    kept = [record for record in records if record[1] % 3]
    out = (
        env.from_collection(records, uid="src")
        .filter(lambda record: record[1] % 3 != 0, uid="some")
        .key_by(lambda record: record[0])
        .process(Doubles(), uid="twice")
    )
    out.sink(lg.CollectSink(), uid="out")
    job = await env.start("counted")
    with anyio.fail_after(GUARD):
        await job.wait()
    metrics = job.metrics()
    assert totals(metrics, "src", "numRecordsOut") == len(records)
    assert totals(metrics, "some", "numRecordsIn") == len(records)
    assert totals(metrics, "some", "numRecordsOut") == len(kept)
    assert totals(metrics, "twice", "numRecordsIn") == len(kept)
    assert totals(metrics, "twice", "numRecordsOut") == 2 * len(kept)
    assert totals(metrics, "out", "numRecordsIn") == 2 * len(kept)
    assert {key for key in metrics if key.startswith("twice[")} == {f"twice[{i}]" for i in range(parallelism)}
    for key, figures in metrics.items():
        if key == "job":
            assert set(figures) == set(JOB_METRICS)
            continue
        assert list(figures) == list(OPERATOR_METRICS)
        for name in ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond"):
            assert 0 <= figures[name] <= 1000


class FailingSecond(lg.MemoryCheckpointStorage):
    """Memory storage that cannot write the state of checkpoint 2: it fails, the others complete."""

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        if location.checkpoint_id == 2:
            raise lg.CheckpointError("no space left on the device")
        return await super().write_state(location, name, data)


async def test_checkpoint_and_restart_counts_are_true() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(3600)
    env.set_checkpoint_storage(FailingSecond())
    env.checkpoint_config.tolerable_failures = 5
    source: lg.QueueSource[tuple[str, int]] = lg.QueueSource()
    watch = Watch()
    env.from_source(source, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").map(watch, uid="watch").sink(
        lg.CollectSink(), uid="out"
    )
    job = await env.start("checkpointed")
    try:
        with anyio.fail_after(GUARD):
            before = job.metrics()["job"]
            assert before == {
                "lastCheckpointDuration": None,
                "lastCheckpointSize": None,
                "numberOfCompletedCheckpoints": 0,
                "numberOfFailedCheckpoints": 0,
                "numRestarts": 0,
            }
            await source.put(("a", 1))
            await until_or_failure(job, lambda: watch.until(1))
            await job.trigger_checkpoint()
            with pytest.raises(lg.CheckpointError):
                await job.trigger_checkpoint()
            await job.trigger_checkpoint()
            figures = job.metrics()["job"]
            stats = job.checkpoint_stats
            last = stats.history[-1]
            assert figures["numberOfCompletedCheckpoints"] == stats.completed == 2
            assert figures["numberOfFailedCheckpoints"] == stats.failed == 1
            assert figures["lastCheckpointDuration"] == round(last.duration * 1000, 3)
            assert figures["lastCheckpointSize"] == last.persisted_bytes > 0
    finally:
        await job.cancel()


async def test_a_blocked_downstream_shows_as_backpressure_upstream_and_idle_downstream() -> None:
    release = anyio.Event()
    seen: list[Any] = []

    class Gate(lg.SinkWriter):
        async def write(self, records: list[Any]) -> None:
            seen.extend(records)
            await release.wait()

    class GateSink(lg.Sink):
        def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
            return Gate()

    env = lg.StreamEnvironment(parallelism=1, batch_size=1, channel_capacity=1)
    env.from_collection(list(range(50)), uid="src").map(lambda x: x, uid="m").rebalance().sink(
        GateSink(), uid="gate"
    )
    job = await env.start("blocked")
    try:
        with anyio.fail_after(GUARD):
            while not seen:  # the sink holds its first record: everything behind it fills up
                await anyio.lowlevel.checkpoint()
            for _ in range(50):
                await anyio.lowlevel.checkpoint()
            metrics = job.metrics()
            assert metrics["m[0]"]["backPressuredTimeMsPerSecond"] > 0
            assert metrics["m[0]"]["numRecordsIn"] < 50
            release.set()
            await job.wait()
        assert job.metrics()["gate[0]"]["numRecordsIn"] == 50
    finally:
        await job.cancel()


async def test_watermarks_are_those_each_operator_was_given_and_passed_on() -> None:
    env = lg.StreamEnvironment(parallelism=1)
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r)
    source: lg.QueueSource[int] = lg.QueueSource()
    watch = Watch()
    env.from_source(source, uid="src", watermark_strategy=strategy).map(lambda x: x, uid="m").map(
        watch, uid="watch"
    ).sink(lg.CollectSink(), uid="out")
    job = await env.start("event time")
    try:
        with anyio.fail_after(GUARD):
            assert job.metrics()["m[0]"]["currentInputWatermark"] is None
            for timestamp in (10, 20, 30):
                await source.put(timestamp)
            await until_or_failure(job, lambda: watch.until(3))
            while job.metrics()["m[0]"]["currentInputWatermark"] != 29:
                await anyio.lowlevel.checkpoint()  # the watermark goes out after the batch
            metrics = job.metrics()
            assert metrics["src[0]"]["currentOutputWatermark"] == 29
            assert metrics["m[0]"]["currentOutputWatermark"] == 29
            assert metrics["src[0]"]["numRecordsOut"] == 3
    finally:
        await job.cancel()


async def test_the_job_server_serves_the_metrics_as_json_and_in_prometheus_text() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    env.from_collection([(f"k{i % 4}", i) for i in range(100)], uid="src").key_by(lambda r: r[0]).sum(
        1, uid="sum"
    ).sink(lg.CollectSink(), uid="out")
    job = await env.start('with "quotes"')
    server = await job.serve(port=0)
    try:
        with anyio.fail_after(GUARD):
            await job.wait()
            async with httpx.AsyncClient(base_url=server.url) as http:
                served = (await http.get("/api/metrics")).json()
                text = await http.get("/metrics")
        assert served["sum[0]"]["numRecordsIn"] + served["sum[1]"]["numRecordsIn"] == 100
        assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {family.name: family for family in text_string_to_metric_families(text.text)}
        records_in = {
            (sample.labels["operator"], sample.labels["subtask"]): sample.value
            for sample in families["lockgate_operator_numRecordsIn"].samples
        }
        assert records_in[("sum", "0")] + records_in[("sum", "1")] == 100
        assert {sample.labels["job"] for sample in families["lockgate_operator_numRecordsIn"].samples} == {
            'with "quotes"'
        }
        for name in OPERATOR_METRICS:
            assert f"lockgate_operator_{name}" in families
        for name in JOB_METRICS:
            assert f"lockgate_job_{name}" in families
        assert families["lockgate_job_numRestarts"].samples[0].value == 0
    finally:
        await server.aclose()


async def test_a_job_keeps_the_newest_checkpoints_statistics_and_counts_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(coordinator_module, "STATS_HISTORY", 3)
    env = lg.StreamEnvironment(parallelism=1)
    env.enable_checkpointing(3600)
    source: lg.QueueSource[int] = lg.QueueSource()
    env.from_source(source, uid="src").sink(lg.CollectSink(), uid="out")
    job = await env.start("long-lived")
    server = await job.serve(port=0)
    try:
        with anyio.fail_after(GUARD):
            for _ in range(5):
                await job.trigger_checkpoint()
            stats = job.checkpoint_stats
            assert (stats.completed, stats.failed, stats.in_progress) == (5, 0, 0)
            assert [entry.id for entry in stats.history] == [3, 4, 5]
            assert job.metrics()["job"]["numberOfCompletedCheckpoints"] == 5
            async with httpx.AsyncClient(base_url=server.url) as http:
                newest = (await http.get("/api/checkpoints", params={"last": "2"})).json()
                assert [entry["id"] for entry in newest["history"]] == [4, 5] and newest["completed"] == 5
                refused = await http.get("/api/checkpoints", params={"last": "all"})
                assert refused.status_code == 400 and "last is the number" in refused.json()["error"]
    finally:
        await server.aclose()
        await job.cancel()


async def test_opentelemetry_gauges_report_the_same_figures_as_the_job() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    env = lg.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(3600)
    env.from_collection([(f"k{i % 4}", i) for i in range(100)], uid="src").key_by(lambda r: r[0]).sum(
        1, uid="sum"
    ).sink(lg.CollectSink(), uid="out")
    job = await env.start("observed")
    try:
        with anyio.fail_after(GUARD):
            await job.wait()
            async with anyio.create_task_group() as group:
                await group.start(lg.observe.export_to_opentelemetry, job.name, job.metrics, provider)
                collected = reader.get_metrics_data()
                group.cancel_scope.cancel()
        assert collected is not None
        points = {
            (metric.name, tuple(sorted(point.attributes.items()))): point.value
            for resource in collected.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        }
        records_in = {
            attributes: value
            for (name, attributes), value in points.items()
            if name == "lockgate.operator.numrecordsin" and ("operator", "sum") in attributes
        }
        assert sum(records_in.values()) == 100 and len(records_in) == 2
        assert (("job", "observed"), ("operator", "sum"), ("subtask", 0)) in records_in
        # OpenTelemetry's instrument names are case-insensitive: its SDK reports them in lower case.
        completed = points["lockgate.job.numberofcompletedcheckpoints", (("job", "observed"),)]
        assert completed == job.metrics()["job"]["numberOfCompletedCheckpoints"] == 1  # the final one
    finally:
        provider.shutdown()
