"""Seeing a job: its metrics and their exposition (JSON, Prometheus), the plan as a picture, the
dashboard page's files, progress bars and the job's loggers.

What is measured is counted by the runtime (:mod:`lockgate.actors`), per batch; this part holds what
the counts are and how they are shown. It never imports the runtime.
"""

from lockgate.observe._html import job_html, metrics_html
from lockgate.observe._logging import (
    LOG_FIELDS,
    JobLoggerAdapter,
    current_log_fields,
    job_logger,
    log_scope,
)
from lockgate.observe._metrics import JOB_METRICS, OPERATOR_METRICS, MetricsWindow, job_figures
from lockgate.observe._opentelemetry import export_to_opentelemetry
from lockgate.observe._plan import Plan, PlanChain, PlanEdge, PlanOperator
from lockgate.observe._progress import JobProgress, run_with_progress
from lockgate.observe._prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from lockgate.observe._prometheus import prometheus_text

__all__ = [
    "JOB_METRICS",
    "LOG_FIELDS",
    "OPERATOR_METRICS",
    "PROMETHEUS_CONTENT_TYPE",
    "JobLoggerAdapter",
    "JobProgress",
    "MetricsWindow",
    "Plan",
    "PlanChain",
    "PlanEdge",
    "PlanOperator",
    "current_log_fields",
    "export_to_opentelemetry",
    "job_figures",
    "job_html",
    "job_logger",
    "log_scope",
    "metrics_html",
    "prometheus_text",
    "run_with_progress",
]
