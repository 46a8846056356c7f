"""A job's metrics as OpenTelemetry observable gauges (``pip install lockgate[opentelemetry]``).

The same figures as ``Job.metrics()`` and ``/metrics``: ``lockgate.operator.<name>`` with the
attributes ``job``, ``operator`` and ``subtask``, and ``lockgate.job.<name>`` with ``job`` (Flink's
names; OpenTelemetry's instrument names are case-insensitive, and its SDK reports them in lower
case: ``lockgate.operator.numrecordsin``). The
exporter (OTLP, console, Prometheus, ...) is the caller's, configured on the meter provider as
OpenTelemetry has it.

OpenTelemetry's readers collect from a thread of their own, while the job's figures change in its
event loop: :func:`export_to_opentelemetry` reads them in the loop, every ``interval`` seconds, into a
snapshot that the gauges report from whatever thread asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from lockgate._errors import ConfigurationError
from lockgate.observe._metrics import DESCRIPTIONS, JOB_METRICS, OPERATOR_METRICS, subtask_of

Metrics = Callable[[], dict[str, dict[str, Any]]]


async def export_to_opentelemetry(
    job: str,
    metrics: Metrics,
    meter_provider: Any = None,
    interval: float = 1.0,
    *,
    task_status: TaskStatus[None] = TASK_STATUS_IGNORED,
) -> None:
    """Report the metrics of job ``job`` (``metrics``: its ``Job.metrics``) as gauges of
    ``meter_provider`` (the global one when None), read every ``interval`` seconds until cancelled
    (the gauges then keep the last figures). Run it beside the job:

        async with anyio.create_task_group() as group:
            await group.start(export_to_opentelemetry, job.name, job.metrics)  # its gauges exist now

    Raises:
        ConfigurationError: OpenTelemetry is not installed (``pip install 'lockgate[opentelemetry]'``).
    """
    try:
        from opentelemetry import metrics as otel
    except ImportError as exc:
        raise ConfigurationError(
            "exporting metrics to OpenTelemetry needs its API and SDK: pip install 'lockgate[opentelemetry]'"
        ) from exc
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    meter = provider.get_meter("lockgate")
    snapshot = _Snapshot(metrics())

    def operator_gauge(name: str) -> Callable[[Any], Iterable[Any]]:
        def observe(options: Any) -> Iterable[Any]:
            for key, figures in snapshot.figures.items():
                subtask = subtask_of(key)
                value = figures.get(name)
                if subtask is not None and value is not None:
                    attributes: dict[str, str | int] = {
                        "job": job,
                        "operator": subtask[0],
                        "subtask": subtask[1],
                    }
                    yield otel.Observation(value, attributes)

        return observe

    def job_gauge(name: str) -> Callable[[Any], Iterable[Any]]:
        def observe(options: Any) -> Iterable[Any]:
            value = snapshot.figures.get("job", {}).get(name)
            if value is not None:
                yield otel.Observation(value, {"job": job})

        return observe

    for name in OPERATOR_METRICS:
        meter.create_observable_gauge(
            f"lockgate.operator.{name}", callbacks=[operator_gauge(name)], description=DESCRIPTIONS[name]
        )
    for name in JOB_METRICS:
        meter.create_observable_gauge(
            f"lockgate.job.{name}", callbacks=[job_gauge(name)], description=DESCRIPTIONS[name]
        )
    task_status.started()
    while True:
        await anyio.sleep(interval)
        snapshot.figures = metrics()  # one reference replaced: a reader's thread sees old or new


class _Snapshot:
    """The figures the gauges report: replaced whole by the loop, read by the reader's thread."""

    def __init__(self, figures: dict[str, dict[str, Any]]) -> None:
        self.figures = figures
