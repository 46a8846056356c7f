"""A job as HTML, for notebooks: what it is, how it is doing, and its plan."""

from __future__ import annotations

import html

from lockgate.checkpointing import CheckpointStatsSnapshot
from lockgate.observe._plan import Plan


def job_html(name: str, status: str, restarts: int, plan: Plan, checkpoints: CheckpointStatsSnapshot) -> str:
    """A job's name, status, restarts and checkpoint counts as a small table, its plan's picture, and
    its checkpoint history folded away beneath (an HTML fragment; every text escaped)."""
    counts = (
        f"{checkpoints.completed} completed, {checkpoints.failed} failed, "
        f"{checkpoints.in_progress} in progress"
    )
    rows = [("job", name), ("status", status), ("restarts", str(restarts)), ("checkpoints", counts)]
    table = "".join(
        f'<tr><th style="text-align: left; padding-right: 1em">{html.escape(label)}</th>'
        f'<td style="text-align: left">{html.escape(value)}</td></tr>'
        for label, value in rows
    )
    history = ""
    if checkpoints.history:
        history = f"<details><summary>checkpoint history</summary>{checkpoints._repr_html_()}</details>"
    return f'<div class="lockgate-job"><table>{table}</table>{plan.to_html()}{history}</div>'
