"""Event time: timestamps in milliseconds since the epoch, the watermark bounds and time domains."""

from __future__ import annotations

import enum
import math
from datetime import datetime, timedelta
from typing import Any, Final

from lockgate._errors import ConfigurationError

#: The watermark of an input that will send nothing more: it fires every event-time timer and window.
MAX_WATERMARK: Final = 2**63 - 1
#: The watermark of an input that has sent none yet.
MIN_WATERMARK: Final = -(2**63)


class TimeDomain(enum.Enum):
    """Which clock a timer follows: the watermark (event time) or the wall clock (processing time)."""

    EVENT_TIME = "event"
    PROCESSING_TIME = "processing"


def to_millis(timestamp: Any, what: str = "a timestamp") -> int:
    """``timestamp`` (an int of milliseconds since the epoch, or an aware datetime) as an int.

    Raises:
        TypeError: Neither; the message says what was given and what to give.
    """
    if type(timestamp) is int:
        return timestamp
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise TypeError(
                f"{what} is a naive datetime ({timestamp!r}); give it a time zone "
                "(datetime(..., tzinfo=timezone.utc)) or return milliseconds since the epoch"
            )
        return _exact(timestamp)
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        return int(timestamp)
    raise TypeError(
        f"{what} must be an int of milliseconds since the epoch or an aware datetime, "
        f"got {timestamp!r} ({type(timestamp).__name__})"
    )


def _exact(timestamp: datetime) -> int:
    # Whole milliseconds: integer arithmetic, so no float rounding moves a timestamp across a boundary.
    delta = timestamp - datetime.fromtimestamp(0, timestamp.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def duration_millis(duration: Any, what: str) -> int:
    """A duration (a ``timedelta`` or a number of seconds) in whole milliseconds, zero or more.

    Raises:
        ConfigurationError: Not a duration, negative, or not finite.
    """
    if isinstance(duration, timedelta):
        millis = duration // timedelta(milliseconds=1)
    elif isinstance(duration, int | float) and not isinstance(duration, bool) and math.isfinite(duration):
        millis = round(duration * 1000)
    else:
        raise ConfigurationError(f"{what} must be a timedelta or a number of seconds, got {duration!r}")
    if millis < 0:
        raise ConfigurationError(f"{what} must not be negative, got {duration!r}")
    return int(millis)
