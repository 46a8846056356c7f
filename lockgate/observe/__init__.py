"""Seeing a job: its metrics and their exposition (JSON, Prometheus), the plan as a picture, the
dashboard page's files, progress bars and the job's loggers.

What is measured is counted by the runtime (:mod:`lockgate.actors`), per batch; this part holds what
the counts are and how they are shown. It never imports the runtime.
"""

from lockgate.observe._logging import (
    LOG_FIELDS,
    JobLoggerAdapter,
    current_log_fields,
    job_logger,
    log_scope,
)
from lockgate.observe._progress import JobProgress, run_with_progress

__all__ = [
    "LOG_FIELDS",
    "JobLoggerAdapter",
    "JobProgress",
    "current_log_fields",
    "job_logger",
    "log_scope",
    "run_with_progress",
]
