"""Control events: they travel through channels between batches of records, in order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final


class ControlEvent:
    """Base of the events that travel between batches: end of input, barriers, watermarks."""

    __slots__ = ()


class EndOfInput(ControlEvent):
    """The producer of a channel will send nothing more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_INPUT"

    def __reduce__(self) -> str:
        return "END_OF_INPUT"  # the one instance, in another process too: it is compared by identity


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


class Watermark(ControlEvent):
    """Event time has reached ``timestamp`` on this channel: no record of that timestamp or earlier
    is still to come from it (those that do are late)."""

    __slots__ = ("timestamp",)

    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"Watermark({self.timestamp})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Watermark) and other.timestamp == self.timestamp

    def __hash__(self) -> int:
        return hash(("watermark", self.timestamp))


class WatermarkStatus(ControlEvent):
    """The producer of a channel goes idle (its watermark holds nothing back until it is active
    again) or active (records follow)."""

    __slots__ = ("idle",)

    def __init__(self, idle: bool) -> None:
        self.idle = idle

    def __repr__(self) -> str:
        return "IDLE" if self.idle else "ACTIVE"

    def __reduce__(self) -> str:
        return "IDLE" if self.idle else "ACTIVE"  # one instance each, compared by identity


IDLE: Final = WatermarkStatus(True)
ACTIVE: Final = WatermarkStatus(False)


class StampedBatch(list[Any]):
    """A batch whose records carry timestamps: ``timestamps[i]`` is record ``i``'s (an int of ms
    since the epoch, or None). Batches of streams without timestamps are plain lists, so a job
    without event time pays nothing for it."""

    __slots__ = ("timestamps",)

    def __init__(self, records: Iterable[Any], timestamps: list[int | None]) -> None:
        super().__init__(records)
        self.timestamps = timestamps

    def __reduce__(self) -> tuple[Any, ...]:
        return StampedBatch, (list(self), self.timestamps)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return StampedBatch(list.__getitem__(self, index), self.timestamps[index])
        return list.__getitem__(self, index)

    def __repr__(self) -> str:
        return f"StampedBatch({list.__repr__(self)}, {self.timestamps!r})"


#: What a channel carries: a batch (a list of records, never empty) or a control event.
Message = list[Any] | ControlEvent
