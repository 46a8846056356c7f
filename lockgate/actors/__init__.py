"""The runtime: operators, subtask actors, the local runner and the job handle."""

from lockgate.actors._execution import GeneratedUidWarning, JobExecution, warn_about_generated_uids
from lockgate.actors._job import Job, JobStatus
from lockgate.actors._runner import JobResult, RuntimeOptions

__all__ = [
    "GeneratedUidWarning",
    "Job",
    "JobExecution",
    "JobResult",
    "JobStatus",
    "RuntimeOptions",
    "warn_about_generated_uids",
]
