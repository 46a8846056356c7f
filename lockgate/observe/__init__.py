"""Seeing a job: its metrics and their exposition (JSON, Prometheus), the plan as a picture, the
dashboard page's files, progress bars and the job's loggers.

What is measured is counted by the runtime (:mod:`lockgate.actors`), per batch; this part holds what
the counts are and how they are shown. It never imports the runtime.
"""

from lockgate.observe._html import job_html
from lockgate.observe._plan import Plan, PlanChain, PlanEdge, PlanOperator

__all__ = ["Plan", "PlanChain", "PlanEdge", "PlanOperator", "job_html"]
