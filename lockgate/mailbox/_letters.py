"""Letters: what the checkpoint coordinator and an actor's own timers post to an actor's mailbox.

Letters are not part of any stream: a mailbox hands them out ahead of its channels' messages, and the
actor handles them between two messages (see :meth:`Mailbox.post`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class TriggerCheckpoint:
    """Letter to a source subtask: inject barrier ``checkpoint_id`` now (a savepoint's, with
    ``savepoint``); with ``stop``, read nothing more until :data:`STOP` (the savepoint completed: end)
    or :data:`RESUME` (it failed: go on)."""

    checkpoint_id: int
    stop: bool = False
    savepoint: bool = False


@dataclass(frozen=True)
class CheckpointComplete:
    """Letter to every subtask: checkpoint ``checkpoint_id`` is complete, and no restart will go back
    further than checkpoint ``oldest_retained`` (sources may forget what precedes it)."""

    checkpoint_id: int
    oldest_retained: int


@dataclass(frozen=True)
class AlignmentTimedOut:
    """Letter from an actor's alignment timer: checkpoint ``checkpoint_id`` has been aligning for longer
    than ``aligned_timeout``; if it still is, the actor switches it to unaligned."""

    checkpoint_id: int


class Signal:
    """A letter that carries nothing but its name; there is one of each, compared by identity (in
    another process too: it unpickles as the module's own)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name


#: Letter to every subtask after a stop-with-savepoint completed: end now, without finishing.
STOP: Final = Signal("STOP")
#: Letter to the sources after a stop-with-savepoint failed: read on.
RESUME: Final = Signal("RESUME")
#: Letter to every subtask once the job's final checkpoint is complete (and they were told so), or,
#: without checkpointing, once every subtask has finished its input: end.
JOB_FINISHED: Final = Signal("JOB_FINISHED")
