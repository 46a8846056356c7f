"""Checkpoint coordination: the coordinator of a job's checkpoints and savepoints, and their statistics.

The coordinator sees subtasks only as :class:`CheckpointParticipant` (a key and a mailbox to post
letters to); subtasks answer with a :class:`SubtaskAcknowledgement`. It writes through
:mod:`lockgate.snapshots` and never imports the runtime (:mod:`lockgate.actors`).
"""

from lockgate.checkpointing._coordinator import CheckpointCoordinator
from lockgate.checkpointing._participants import (
    CheckpointParticipant,
    SnapshotTarget,
    SubtaskAcknowledgement,
    SubtaskCoordinator,
)
from lockgate.checkpointing._stats import CheckpointStats, CheckpointStatsSnapshot

__all__ = [
    "CheckpointCoordinator",
    "CheckpointParticipant",
    "CheckpointStats",
    "CheckpointStatsSnapshot",
    "SnapshotTarget",
    "SubtaskAcknowledgement",
    "SubtaskCoordinator",
]
