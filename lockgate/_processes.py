"""Whether a process of this machine is still running (for claims and working directories that a
killed process left behind)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process always does). A zombie, killed but
    not yet reaped by its parent (a supervisor about to restart it, say), no longer runs."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return not _zombie(pid)
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a zombie, where /proc tells (Linux); elsewhere it counts as running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (name) state ...": the name may hold spaces and ")", the state follows the last ")".
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
