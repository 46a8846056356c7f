"""Control events: they travel through channels between batches of records, in order."""

from __future__ import annotations

from typing import Any, Final


class ControlEvent:
    """Base of the events that travel between batches (end of input now; barriers and watermarks)."""

    __slots__ = ()


class EndOfInput(ControlEvent):
    """The producer of a channel will send nothing more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_INPUT"


END_OF_INPUT: Final = EndOfInput()

#: What a channel carries: a batch (a list of records, never empty) or a control event.
Message = list[Any] | ControlEvent
