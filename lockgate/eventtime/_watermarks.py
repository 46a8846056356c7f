"""Watermark strategies: how a source (or ``assign_timestamps_and_watermarks``) gives records their
timestamps and derives watermarks from them.

A watermark ``w`` says that no record with a timestamp of ``w`` or less is still to come: what does
come is late. A strategy for out-of-order records of at most ``bound`` ms emits ``max seen - bound - 1``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lockgate._errors import ConfigurationError
from lockgate.eventtime._time import MIN_WATERMARK, duration_millis

#: ``assigner(record, previous_timestamp)``: the record's timestamp (int ms, or an aware datetime).
TimestampAssigner = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class WatermarkStrategy:
    """How records get timestamps and how watermarks follow them.

    Build one with :meth:`for_bounded_out_of_orderness`, :meth:`for_monotonous_timestamps` or
    :meth:`no_watermarks`, then :meth:`with_timestamp_assigner` and, optionally, :meth:`with_idleness`.

    Attributes:
        out_of_orderness: How many ms a record may come after a later one without being late; None for
            a strategy that emits no watermarks.
        timestamp_assigner: ``fn(record, previous_timestamp)``; None keeps the timestamps records have.
        idleness: After this many ms without records, a source subtask declares itself idle: its
            watermark no longer holds back the operators downstream until records come again.
    """

    out_of_orderness: int | None
    timestamp_assigner: TimestampAssigner | None = None
    idleness: int | None = None

    @classmethod
    def for_bounded_out_of_orderness(cls, max_out_of_orderness: Any) -> WatermarkStrategy:
        """Records may come up to ``max_out_of_orderness`` (a timedelta or seconds) after later ones."""
        return cls(duration_millis(max_out_of_orderness, "max_out_of_orderness"))

    @classmethod
    def for_monotonous_timestamps(cls) -> WatermarkStrategy:
        """Timestamps never go back: the watermark follows the newest one."""
        return cls(0)

    @classmethod
    def no_watermarks(cls) -> WatermarkStrategy:
        """Timestamps (with an assigner) but no watermarks: event-time timers and windows fire only
        at the end of a bounded input."""
        return cls(None)

    def with_timestamp_assigner(self, assigner: Callable[..., Any]) -> WatermarkStrategy:
        """Take each record's timestamp from ``assigner(record, previous_timestamp)`` (or
        ``assigner(record)``): an int of ms since the epoch, or an aware datetime."""
        if not callable(assigner):
            raise ConfigurationError(
                f"with_timestamp_assigner() takes a function, got {assigner!r}; "
                "for example with_timestamp_assigner(lambda record, previous: record.ts)"
            )
        return replace(self, timestamp_assigner=_two_arguments(assigner))

    def with_idleness(self, timeout: Any) -> WatermarkStrategy:
        """Declare a source subtask idle after ``timeout`` (a timedelta or seconds) without records."""
        millis = duration_millis(timeout, "the idleness timeout")
        if millis == 0:
            raise ConfigurationError("the idleness timeout must be more than zero")
        return replace(self, idleness=millis)

    def create_generator(self) -> WatermarkGenerator:
        """A fresh generator of this strategy's watermarks (one per source subtask)."""
        return WatermarkGenerator(self.out_of_orderness)


def _two_arguments(assigner: Callable[..., Any]) -> TimestampAssigner:
    try:
        parameters = inspect.signature(assigner).parameters.values()
    except (TypeError, ValueError):
        return assigner
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 1 and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return lambda record, _previous: assigner(record)
    return assigner


class WatermarkGenerator:
    """The watermark of one stream of timestamps: ``max seen - out_of_orderness - 1``, never going back."""

    __slots__ = ("max_timestamp", "out_of_orderness")

    def __init__(self, out_of_orderness: int | None) -> None:
        self.out_of_orderness = out_of_orderness
        self.max_timestamp = MIN_WATERMARK

    def on_timestamps(self, timestamps: list[int]) -> None:
        """The timestamps of a batch of records."""
        newest = max(timestamps)
        if newest > self.max_timestamp:
            self.max_timestamp = newest

    def current(self) -> int:
        """The watermark now (MIN_WATERMARK before any record, or without watermarks)."""
        if self.out_of_orderness is None or self.max_timestamp == MIN_WATERMARK:
            return MIN_WATERMARK
        return self.max_timestamp - self.out_of_orderness - 1
