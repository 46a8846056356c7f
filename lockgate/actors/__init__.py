"""The runtime: operators, subtask actors, the local runner, the job handle and its server."""

from lockgate.actors._client import QueryableStateClient
from lockgate.actors._execution import GeneratedUidWarning, JobExecution, warn_about_generated_uids
from lockgate.actors._job import Job, JobStatus
from lockgate.actors._runner import Attempt, JobResult, Runner, RuntimeOptions
from lockgate.actors._server import JobServer

__all__ = [
    "Attempt",
    "GeneratedUidWarning",
    "Job",
    "JobExecution",
    "JobResult",
    "JobServer",
    "JobStatus",
    "QueryableStateClient",
    "Runner",
    "RuntimeOptions",
    "warn_about_generated_uids",
]
