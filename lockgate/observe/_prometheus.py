"""A job's metrics in Prometheus' text format, written by ``prometheus_client``.

Names keep Flink's: ``lockgate_operator_<name>{job, operator, subtask}`` for each operator's subtask
and ``lockgate_job_<name>{job}`` for the job. Every metric is a gauge: the counts included, since a
restarted attempt counts from zero again (as Flink's do). A metric without a value yet (a watermark
before the first, a checkpoint duration before the first checkpoint) is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lockgate.observe._metrics import JOB_METRICS, OPERATOR_METRICS

#: The content type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_SUBTASK_KEY = re.compile(r"^(?P<uid>.*)\[(?P<subtask>\d+)\]$")

_HELP = {
    "numRecordsIn": "Records the operator's subtask has received",
    "numRecordsOut": "Records the operator's subtask has emitted",
    "numRecordsInPerSecond": "Records received per second, over the last seconds",
    "numRecordsOutPerSecond": "Records emitted per second, over the last seconds",
    "busyTimeMsPerSecond": "Milliseconds per second the subtask was busy",
    "backPressuredTimeMsPerSecond": "Milliseconds per second the subtask waited for room downstream",
    "idleTimeMsPerSecond": "Milliseconds per second the subtask waited for input",
    "currentInputWatermark": "The operator's input watermark, in ms since the epoch",
    "currentOutputWatermark": "The operator's output watermark, in ms since the epoch",
    "lastCheckpointDuration": "Milliseconds the last completed checkpoint took",
    "lastCheckpointSize": "Bytes the last completed checkpoint wrote",
    "numberOfCompletedCheckpoints": "Checkpoints (and savepoints) completed",
    "numberOfFailedCheckpoints": "Checkpoints (and savepoints) failed",
    "numRestarts": "Times the job has restarted after a failure",
}


class _JobCollector(Collector):
    def __init__(self, job: str, metrics: dict[str, dict[str, Any]]) -> None:
        self._job = job
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for name in OPERATOR_METRICS:
            family = GaugeMetricFamily(
                f"lockgate_operator_{name}", _HELP[name], labels=["job", "operator", "subtask"]
            )
            for key, figures in self._metrics.items():
                matched = _SUBTASK_KEY.match(key)
                if matched is None or figures.get(name) is None:
                    continue
                family.add_metric([self._job, matched["uid"], matched["subtask"]], figures[name])
            yield family
        job = self._metrics.get("job", {})
        for name in JOB_METRICS:
            family = GaugeMetricFamily(f"lockgate_job_{name}", _HELP[name], labels=["job"])
            if job.get(name) is not None:
                family.add_metric([self._job], job[name])
            yield family


def prometheus_text(job: str, metrics: dict[str, dict[str, Any]]) -> bytes:
    """``metrics`` (as ``Job.metrics()`` gives them) of job ``job`` in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JobCollector(job, metrics))
    return generate_latest(registry)
