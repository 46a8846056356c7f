"""Crash tests with real processes: a job killed with SIGKILL at moments over its whole run (the very
end included) and restored in a new process commits every record exactly once (every window's result
exactly once, for the windows job).

A few fixed cases of ``tests/stress/kill_and_restore.py``, which runs any number of random trials.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.stress.kill_and_restore import calibrate, trial

RECORDS = 20_000
INTERVAL = 0.02

CASES: list[tuple[dict[str, Any], float]] = [
    ({"backend": "heap", "incremental": False, "unaligned": False, "source": "file"}, 0.6),
    ({"backend": "heap", "incremental": True, "unaligned": True, "source": "collection"}, 0.95),
    ({"backend": "rocksdb", "incremental": True, "unaligned": False, "source": "collection"}, 0.85),
    ({"backend": "rocksdb", "incremental": False, "unaligned": True, "source": "file"}, 0.99),
    # Event-time windows: their contents and timers restored from the checkpoint.
    ({"backend": "heap", "incremental": True, "unaligned": False, "source": "file", "job": "windows"}, 0.5),
    (
        {
            "backend": "rocksdb",
            "incremental": True,
            "unaligned": True,
            "source": "collection",
            "job": "windows",
        },
        0.7,
    ),
]


@pytest.mark.parametrize(("config", "kill_at"), CASES, ids=lambda case: str(case))
def test_a_job_killed_and_restored_in_a_new_process_commits_every_record_once(
    config: dict[str, Any], kill_at: float
) -> None:
    duration = calibrate(config, RECORDS, INTERVAL)
    result = trial(0, config, RECORDS, INTERVAL, duration, kill_at=kill_at)
    assert (result.lost, result.duplicated, result.inconsistent_keys) == (0, 0, 0), result
