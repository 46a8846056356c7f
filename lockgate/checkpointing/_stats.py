"""Checkpoint statistics: what each checkpoint cost, and a text table of them for notebooks and logs."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointStats:
    """What one checkpoint cost. Durations in seconds, sizes in bytes.

    Attributes:
        id: The checkpoint id.
        status: ``"in_progress"``, ``"completed"`` or ``"failed"``.
        duration: From the trigger to completion (or failure); so far, while in progress.
        sync_duration: The longest synchronous part of any subtask (records wait meanwhile).
        async_duration: The longest asynchronous part of any subtask (records flow meanwhile).
        alignment_duration: The longest time any subtask held inputs to align barriers.
        persisted_bytes: Bytes written for the checkpoint (an incremental one writes only what changed).
        full_bytes: The size of the whole state it consists of, shared blobs written by earlier
            checkpoints included.
        unaligned: Whether any subtask took it unaligned (its barriers overtook queued records).
        in_flight_bytes: Bytes of in-flight records stored with it (channel state; none when aligned).
        failure: Why it failed, when it did.
        savepoint: Whether it was a savepoint.
    """

    id: int
    status: str
    duration: float
    sync_duration: float = 0.0
    async_duration: float = 0.0
    alignment_duration: float = 0.0
    persisted_bytes: int = 0
    full_bytes: int = 0
    unaligned: bool = False
    in_flight_bytes: int = 0
    failure: str | None = None
    savepoint: bool = False


@dataclass(frozen=True)
class CheckpointStatsSnapshot:
    """The checkpoint statistics of a job (``job.checkpoint_stats``).

    Attributes:
        completed: How many checkpoints completed.
        failed: How many failed (declined, timed out, or cut short by a job failure).
        in_progress: How many are in progress now.
        history: Every checkpoint's :class:`CheckpointStats`, oldest first.
    """

    completed: int
    failed: int
    in_progress: int
    history: list[CheckpointStats]

    def _rows(self, last: int | None) -> tuple[str, list[tuple[str, ...]]]:
        """The summary line and the rows (cells as text) of the ``last`` checkpoints (None: all)."""
        rows = self.history if last is None else self.history[-last:]
        summary = f"{self.completed} completed, {self.failed} failed, {self.in_progress} in progress"
        if len(rows) < len(self.history):
            summary += f" (the last {len(rows)} of {len(self.history)} shown)"
        return summary, [
            (
                str(stats.id),
                ("savepoint" if stats.savepoint else "checkpoint")
                + (" (unaligned)" if stats.unaligned else ""),
                stats.status if stats.failure is None else f"{stats.status}: {stats.failure}",
                _milliseconds(stats.duration),
                _milliseconds(stats.sync_duration),
                _milliseconds(stats.async_duration),
                _milliseconds(stats.alignment_duration),
                _size(stats.persisted_bytes),
                _size(stats.full_bytes),
                _size(stats.in_flight_bytes),
            )
            for stats in rows
        ]

    def table(self, last: int | None = 20) -> str:
        """The statistics as a text table, one row per checkpoint (the ``last`` ones; None: all),
        for notebooks and logs. Durations in milliseconds, sizes in bytes with a unit."""
        summary, rows = self._rows(last)
        lines = [_HEADER] + [(*row[:2], row[2][:60], *row[3:]) for row in rows]
        widths = [max(len(line[column]) for line in lines) for column in range(len(_HEADER))]
        text = [
            "  ".join(
                cell.ljust(width) if column in _LEFT else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in lines
        ]
        return "\n".join([summary, *text])

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self, last: int | None = 20) -> str:
        # A notebook shows the statistics as an HTML table: the text table's rows, the last ones.
        summary, rows = self._rows(last)
        cells = "".join(f"<th>{html.escape(name)}</th>" for name in _HEADER)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td style="text-align: {"left" if column in _LEFT else "right"}">{html.escape(value)}</td>'
                for column, value in enumerate(row)
            )
            + "</tr>"
            for row in rows
        )
        return (
            f'<div class="lockgate-checkpoints"><div>checkpoints: {html.escape(summary)}</div>'
            f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table></div>"
        )


#: The columns of the checkpoint table, and those aligned left (the others hold numbers).
_HEADER = ("id", "kind", "status", "duration", "sync", "async", "align", "persisted", "full", "in-flight")
_LEFT = (1, 2)


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
