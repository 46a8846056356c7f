"""Control events: they travel through channels between batches of records, in order."""

from __future__ import annotations

from typing import Any, Final


class ControlEvent:
    """Base of the events that travel between batches: end of input, barriers (watermarks later)."""

    __slots__ = ()


class EndOfInput(ControlEvent):
    """The producer of a channel will send nothing more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_INPUT"


END_OF_INPUT: Final = EndOfInput()


class Barrier(ControlEvent):
    """Checkpoint barrier ``checkpoint_id``: what a subtask received before it belongs to the
    checkpoint, what comes after it does not.

    An unaligned barrier was put ahead of the messages queued in its channel: ``overtaken`` counts
    them. They still precede the barrier logically, so the next ``overtaken`` messages of the channel
    belong to the checkpoint (as in-flight data, or in the snapshot's effect if the receiver aligns).
    ``savepoint``: the barrier is a savepoint's, which every subtask aligns whatever the checkpointing
    mode (a restored job must not see a record twice), and which never overtakes.
    """

    __slots__ = ("checkpoint_id", "overtaken", "savepoint")

    def __init__(self, checkpoint_id: int, overtaken: int = 0, *, savepoint: bool = False) -> None:
        self.checkpoint_id = checkpoint_id
        self.overtaken = overtaken
        self.savepoint = savepoint

    def __repr__(self) -> str:
        extra = f", overtaken={self.overtaken}" if self.overtaken else ""
        extra += ", savepoint=True" if self.savepoint else ""
        return f"Barrier({self.checkpoint_id}{extra})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Barrier)
            and other.checkpoint_id == self.checkpoint_id
            and other.overtaken == self.overtaken
            and other.savepoint == self.savepoint
        )

    def __hash__(self) -> int:
        return hash(("barrier", self.checkpoint_id, self.overtaken, self.savepoint))


#: What a channel carries: a batch (a list of records, never empty) or a control event.
Message = list[Any] | ControlEvent
