"""A job's metrics, with Flink's names and meanings, from the counters its subtasks keep.

The runtime counts per batch and keeps running totals (records in and out, seconds busy,
backpressured and idle, the watermarks); :class:`MetricsWindow` turns successive readings of them
into figures per second over the last :data:`WINDOW` seconds, and :func:`job_figures` adds the
job's own from its checkpoint statistics.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Final

from lockgate.checkpointing import CheckpointStats

#: Per-second figures are over (at most) this many seconds: those since the oldest reading kept.
WINDOW: Final = 10.0

#: Readings closer together than this are not kept (a page polling fast keeps the window's length).
MIN_SPACING: Final = 0.5

#: The running totals of one subtask's operator that become figures per second: (total, figure, scale).
RATES: Final = (
    ("numRecordsIn", "numRecordsInPerSecond", 1.0),
    ("numRecordsOut", "numRecordsOutPerSecond", 1.0),
    ("busyTime", "busyTimeMsPerSecond", 1000.0),
    ("backPressuredTime", "backPressuredTimeMsPerSecond", 1000.0),
    ("idleTime", "idleTimeMsPerSecond", 1000.0),
)

#: The names of the metrics of an operator's subtask, in the order they are shown.
OPERATOR_METRICS: Final = (
    "numRecordsIn",
    "numRecordsOut",
    "numRecordsInPerSecond",
    "numRecordsOutPerSecond",
    "busyTimeMsPerSecond",
    "backPressuredTimeMsPerSecond",
    "idleTimeMsPerSecond",
    "currentInputWatermark",
    "currentOutputWatermark",
)

#: The names of the job's own metrics.
JOB_METRICS: Final = (
    "lastCheckpointDuration",
    "lastCheckpointSize",
    "numberOfCompletedCheckpoints",
    "numberOfFailedCheckpoints",
    "numRestarts",
)

#: What each metric means, for exporters' descriptions.
DESCRIPTIONS: Final = {
    "numRecordsIn": "Records the operator's subtask has received",
    "numRecordsOut": "Records the operator's subtask has emitted",
    "numRecordsInPerSecond": "Records received per second, over the last seconds",
    "numRecordsOutPerSecond": "Records emitted per second, over the last seconds",
    "busyTimeMsPerSecond": "Milliseconds per second the subtask was busy",
    "backPressuredTimeMsPerSecond": "Milliseconds per second the subtask waited for room downstream",
    "idleTimeMsPerSecond": "Milliseconds per second the subtask waited for input",
    "currentInputWatermark": "The operator's input watermark, in ms since the epoch",
    "currentOutputWatermark": "The operator's output watermark, in ms since the epoch",
    "lastCheckpointDuration": "Milliseconds the last completed checkpoint took",
    "lastCheckpointSize": "Bytes the last completed checkpoint wrote",
    "numberOfCompletedCheckpoints": "Checkpoints (and savepoints) completed",
    "numberOfFailedCheckpoints": "Checkpoints (and savepoints) failed",
    "numRestarts": "Times the job has restarted after a failure",
}

_SUBTASK_KEY: Final = re.compile(r"^(?P<uid>.*)\[(?P<subtask>\d+)\]$")

Counters = dict[str, dict[str, Any]]


def subtask_of(key: str) -> tuple[str, int] | None:
    """The operator uid and subtask index of a metrics key ``"<uid>[<subtask>]"``; None for ``"job"``."""
    matched = _SUBTASK_KEY.match(key)
    return None if matched is None else (matched["uid"], int(matched["subtask"]))


class MetricsWindow:
    """Readings of one job attempt's running totals, to turn them into figures per second.

    Args:
        started: When the attempt's subtasks started (``time.perf_counter()``): its totals were all
            zero then, so the first figures are averages since the start.
    """

    def __init__(self, started: float) -> None:
        self._readings: deque[tuple[float, Counters]] = deque([(started, {})])

    def figures(self, now: float, counters: Counters) -> dict[str, dict[str, Any]]:
        """The metrics of every operator's subtask, by ``"<uid>[<subtask>]"``, from its totals now:
        the counts as they are, and per second since the oldest reading of the window."""
        readings = self._readings
        while len(readings) > 1 and now - readings[1][0] >= WINDOW:
            readings.popleft()
        since, before = readings[0]
        elapsed = now - since
        figures: dict[str, dict[str, Any]] = {}
        for key, totals in counters.items():
            earlier = before.get(key, {})
            shown = {name: totals[name] for name in ("numRecordsIn", "numRecordsOut")}
            for total, figure, scale in RATES:
                change = totals[total] - earlier.get(total, 0)
                shown[figure] = round(change * scale / elapsed, 3) if elapsed > 0 else 0.0
            for name in ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond"):
                shown[name] = min(1000.0, max(0.0, shown[name]))
            shown["currentInputWatermark"] = totals["currentInputWatermark"]
            shown["currentOutputWatermark"] = totals["currentOutputWatermark"]
            figures[key] = shown
        if now - readings[-1][0] >= MIN_SPACING:
            readings.append((now, counters))
        return figures


def job_figures(
    last_completed: CheckpointStats | None, completed: int, failed: int, restarts: int
) -> dict[str, Any]:
    """The job's own metrics: the newest completed checkpoint's duration (ms) and size (bytes, what it
    wrote), how many checkpoints completed and failed, how many times the job restarted."""
    return {
        "lastCheckpointDuration": None
        if last_completed is None
        else round(last_completed.duration * 1000, 3),
        "lastCheckpointSize": None if last_completed is None else last_completed.persisted_bytes,
        "numberOfCompletedCheckpoints": completed,
        "numberOfFailedCheckpoints": failed,
        "numRestarts": restarts,
    }
