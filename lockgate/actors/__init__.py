"""The runtime: operators, subtask actors, the local runner and the job handle."""

from lockgate.actors._execution import GeneratedUidWarning as GeneratedUidWarning
from lockgate.actors._execution import JobExecution as JobExecution
from lockgate.actors._execution import warn_about_generated_uids as warn_about_generated_uids
from lockgate.actors._job import Job as Job
from lockgate.actors._job import JobStatus as JobStatus
from lockgate.actors._operators import CallForm as CallForm
from lockgate.actors._operators import call_form as call_form
from lockgate.actors._runner import JobResult as JobResult
from lockgate.actors._runner import JobRunner as JobRunner
from lockgate.actors._runner import RuntimeOptions as RuntimeOptions
