"""What the coordinator and the subtasks tell each other: the subtask as the coordinator sees it, where
a subtask writes its part of a checkpoint, and what it acknowledges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lockgate.snapshots import CheckpointLocation, CheckpointStorage, SubtaskStateHandles


class CheckpointParticipant(Protocol):
    """A subtask as the coordinator sees it."""

    key: tuple[str, int]  # (head operator uid, subtask index)
    is_source: bool

    def post(self, letter: Any) -> None:
        """Hand the subtask a letter (see :mod:`lockgate.mailbox`)."""


class SubtaskCoordinator(Protocol):
    """The coordinator as a subtask sees it: the coordinator itself in its process, or its stand-in
    in a process that runs subtasks for a driver elsewhere (the Ray runner)."""

    def target(self, checkpoint_id: int) -> SnapshotTarget | None:
        """Where checkpoint ``checkpoint_id`` goes, or None if it is not in progress."""

    async def acknowledge(
        self, checkpoint_id: int, key: tuple[str, int], ack: SubtaskAcknowledgement
    ) -> bool:
        """Subtask ``key`` has persisted its part; whether the acknowledgement counts."""

    async def decline(
        self,
        checkpoint_id: int,
        key: tuple[str, int],
        reason: str,
        *,
        counts: bool = True,
        cause: BaseException | None = None,
    ) -> None:
        """Subtask ``key`` cannot take part in the checkpoint."""

    def source_finished(self, key: tuple[str, int]) -> None:
        """Source subtask ``key`` has read all its input."""


@dataclass
class SnapshotTarget:
    """Where a subtask writes its part of a checkpoint; ``canonical``: in the savepoint format, with
    every state encoded entry by entry (see ``docs/savepoint-format.md``). The coordinator sets
    ``aborted`` once the checkpoint has failed: a subtask still writing stops and acknowledges nothing."""

    storage: CheckpointStorage
    location: CheckpointLocation
    canonical: bool
    aborted: bool = False


@dataclass(frozen=True)
class SubtaskAcknowledgement:
    """What a subtask reports for a checkpoint: its state handles by operator uid, its costs, and the
    shared blobs it wrote for this checkpoint (the others its handles name, it reuses).

    ``unaligned``: the subtask took it unaligned; ``in_flight_bytes``: the size of the channel state
    it stored (in its chain's first operator's handles); ``finished``: the subtask took it after its
    input had ended and its operators had finished (a checkpoint every subtask takes so is final).
    """

    states: dict[str, SubtaskStateHandles]
    sync_duration: float
    async_duration: float
    alignment_duration: float
    uploaded: frozenset[str] = frozenset()
    unaligned: bool = False
    in_flight_bytes: int = 0
    finished: bool = False

    @property
    def persisted_bytes(self) -> int:
        """The bytes written for this checkpoint: own blobs, and the shared blobs uploaded for it."""
        total = 0
        for handles in self.states.values():
            total += sum(h.size for h in (handles.keyed, handles.operator, handles.channel) if h is not None)
            total += sum(h.size for h in handles.shared if h.name in self.uploaded)
        return total

    def shared_names(self) -> set[str]:
        """Every shared blob this acknowledgement references."""
        return {h.name for handles in self.states.values() for h in handles.shared}

    def reused(self) -> set[str]:
        """The shared blobs of earlier checkpoints that this acknowledgement references."""
        return self.shared_names() - self.uploaded
