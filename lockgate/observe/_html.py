"""A job as HTML, for notebooks: what it is, how it is doing, and its plan."""

from __future__ import annotations

import html
from typing import Any

from lockgate.checkpointing import CheckpointStatsSnapshot
from lockgate.observe._plan import Plan


def job_html(
    name: str,
    status: str,
    restarts: int,
    plan: Plan,
    checkpoints: CheckpointStatsSnapshot,
    metrics: dict[str, dict[str, Any]] | None = None,
) -> str:
    """A job's name, status, restarts and checkpoint counts as a small table, its plan's picture, its
    operators' metrics, and its checkpoint history folded away beneath (an HTML fragment; every text
    escaped)."""
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
    shown = "" if metrics is None else metrics_html(metrics)
    return f'<div class="lockgate-job"><table>{table}</table>{plan.to_html()}{shown}{history}</div>'


#: The metrics table's columns: (heading, metric, how to show its value).
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("records in", "numRecordsIn", "{:,}"),
    ("records out", "numRecordsOut", "{:,}"),
    ("in/s", "numRecordsInPerSecond", "{:,.0f}"),
    ("out/s", "numRecordsOutPerSecond", "{:,.0f}"),
    ("busy ms/s", "busyTimeMsPerSecond", "{:.0f}"),
    ("backpressured ms/s", "backPressuredTimeMsPerSecond", "{:.0f}"),
    ("idle ms/s", "idleTimeMsPerSecond", "{:.0f}"),
    ("watermark in", "currentInputWatermark", "{}"),
    ("watermark out", "currentOutputWatermark", "{}"),
)


def metrics_html(metrics: dict[str, dict[str, Any]]) -> str:
    """The metrics of every operator's subtask (as ``Job.metrics()`` gives them) as an HTML table, one
    row per ``uid[subtask]``; the job's own figures are in the job's table."""
    heads = "".join(f"<th>{html.escape(heading)}</th>" for heading, _, _ in _COLUMNS)
    rows = []
    for key, figures in metrics.items():
        if key == "job":
            continue
        cells = "".join(
            '<td style="text-align: right">'
            + html.escape("-" if figures.get(metric) is None else form.format(figures[metric]))
            + "</td>"
            for _, metric, form in _COLUMNS
        )
        rows.append(f'<tr><th style="text-align: left">{html.escape(key)}</th>{cells}</tr>')
    return (
        f'<table class="lockgate-metrics"><thead><tr><th>operator</th>{heads}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
