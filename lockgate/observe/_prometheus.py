"""A job's metrics in Prometheus' text format, written by ``prometheus_client``.

Names keep Flink's: ``lockgate_operator_<name>{job, operator, subtask}`` for each operator's subtask
and ``lockgate_job_<name>{job}`` for the job. Every metric is a gauge: the counts included, since a
restarted attempt counts from zero again (as Flink's do). A metric without a value yet (a watermark
before the first, a checkpoint duration before the first checkpoint) is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lockgate.observe._metrics import DESCRIPTIONS, JOB_METRICS, OPERATOR_METRICS, subtask_of

#: The content type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _JobCollector(Collector):
    def __init__(self, job: str, metrics: dict[str, dict[str, Any]]) -> None:
        self._job = job
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for name in OPERATOR_METRICS:
            family = GaugeMetricFamily(
                f"lockgate_operator_{name}", DESCRIPTIONS[name], labels=["job", "operator", "subtask"]
            )
            for key, figures in self._metrics.items():
                subtask = subtask_of(key)
                if subtask is None or figures.get(name) is None:
                    continue
                family.add_metric([self._job, subtask[0], str(subtask[1])], figures[name])
            yield family
        job = self._metrics.get("job", {})
        for name in JOB_METRICS:
            family = GaugeMetricFamily(f"lockgate_job_{name}", DESCRIPTIONS[name], labels=["job"])
            if job.get(name) is not None:
                family.add_metric([self._job], job[name])
            yield family


def prometheus_text(job: str, metrics: dict[str, dict[str, Any]]) -> bytes:
    """``metrics`` (as ``Job.metrics()`` gives them) of job ``job`` in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JobCollector(job, metrics))
    return generate_latest(registry)
