"""Windows and the assigners that put each record into windows.

A window is the namespace of its contents in keyed state, so it is a small frozen value: equal
windows are the same state. :class:`TimeWindow` spans ``[start, end)`` in ms; :class:`GlobalWindow`
holds every record of a key and ends only through a trigger.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate._errors import ConfigurationError
from lockgate.eventtime._time import MAX_WATERMARK, duration_millis
from lockgate.state import register_exact_dataclass

if TYPE_CHECKING:
    from lockgate.eventtime._triggers import Trigger


@register_exact_dataclass  # its key bytes give it back: no pickled copy beside RocksDB entries
@dataclass(frozen=True, slots=True, order=True)
class TimeWindow:
    """The span ``[start, end)`` of event or processing time, in ms since the epoch."""

    start: int
    end: int
    # Windows are the keys of state tables, hashed on every access: the hash is computed once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.start, self.end)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by its fields only: the hash is derived, and a pickle may outlive the process.
        return TimeWindow, (self.start, self.end)

    def __eq__(self, other: object) -> bool:  # plain, rather than the generated one's tuples
        if other.__class__ is not TimeWindow:
            return NotImplemented
        return self.start == other.start and self.end == other.end

    def max_timestamp(self) -> int:
        """The last ms the window holds (``end - 1``): its results carry this timestamp."""
        return self.end - 1

    def intersects(self, other: TimeWindow) -> bool:
        """Whether the windows overlap or touch (session windows then merge)."""
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: TimeWindow) -> TimeWindow:
        """The smallest window that holds both."""
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))


@register_exact_dataclass
@dataclass(frozen=True, slots=True)
class GlobalWindow:
    """The one window of :class:`GlobalWindows`: every record of a key, never ending by time."""

    def max_timestamp(self) -> int:
        return MAX_WATERMARK


Window = TimeWindow | GlobalWindow


class WindowAssigner(ABC):
    """Puts a record into windows.

    Attributes:
        is_event_time: Whether the windows follow event time (else processing time).
        merging: Whether windows may merge (sessions): the operator then keeps each key's windows
            merged as records come.
    """

    is_event_time: bool = True
    merging: bool = False

    @abstractmethod
    def assign_windows(self, element: Any, timestamp: int) -> list[Window]:
        """The windows of a record with ``timestamp`` (its event time, or the clock's for processing
        time)."""

    @abstractmethod
    def default_trigger(self) -> Trigger:
        """The trigger used unless ``.trigger(...)`` names another."""

    def merge_windows(self, windows: Iterable[TimeWindow]) -> list[tuple[TimeWindow, list[TimeWindow]]]:
        """Groups of windows that merge, each with what it merges into (merging assigners only)."""
        raise NotImplementedError(f"{type(self).__name__} does not merge windows")


def _size(value: Any, what: str) -> int:
    millis = duration_millis(value, what)
    if millis <= 0:
        raise ConfigurationError(f"{what} must be more than zero, got {value!r}")
    return millis


def _start_of(timestamp: int, offset: int, size: int) -> int:
    return timestamp - (timestamp - offset) % size


class _Tumbling(WindowAssigner):
    def __init__(self, size: int, offset: int) -> None:
        self.size = size
        self.offset = offset % size

    @classmethod
    def of(cls, size: Any, offset: Any = 0) -> _Tumbling:
        """Windows of ``size`` (a timedelta or seconds), one after the other, aligned to the epoch
        plus ``offset``."""
        return cls(_size(size, "the window size"), duration_millis(offset, "the window offset"))

    def assign_windows(self, element: Any, timestamp: int) -> list[Window]:
        start = _start_of(timestamp, self.offset, self.size)
        return [TimeWindow(start, start + self.size)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of({self.size} ms)"


class _Sliding(WindowAssigner):
    def __init__(self, size: int, slide: int, offset: int) -> None:
        self.size = size
        self.slide = slide
        self.offset = offset % slide

    @classmethod
    def of(cls, size: Any, slide: Any, offset: Any = 0) -> _Sliding:
        """Windows of ``size`` starting every ``slide`` (timedeltas or seconds): a record falls into
        ``size / slide`` of them."""
        return cls(
            _size(size, "the window size"), _size(slide, "the slide"), duration_millis(offset, "the offset")
        )

    def assign_windows(self, element: Any, timestamp: int) -> list[Window]:
        size, slide = self.size, self.slide
        start = _start_of(timestamp, self.offset, slide)
        windows: list[Window] = []
        while start > timestamp - size:
            windows.append(TimeWindow(start, start + size))
            start -= slide
        return windows

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of({self.size} ms, {self.slide} ms)"


class _Sessions(WindowAssigner):
    merging = True

    def __init__(self, gap: int) -> None:
        self.gap = gap

    @classmethod
    def with_gap(cls, gap: Any) -> _Sessions:
        """A key's records less than ``gap`` (a timedelta or seconds) apart are one session."""
        return cls(_size(gap, "the session gap"))

    def assign_windows(self, element: Any, timestamp: int) -> list[Window]:
        return [TimeWindow(timestamp, timestamp + self.gap)]

    def merge_windows(self, windows: Iterable[TimeWindow]) -> list[tuple[TimeWindow, list[TimeWindow]]]:
        groups: list[tuple[TimeWindow, list[TimeWindow]]] = []
        for window in sorted(windows):
            if groups and groups[-1][0].intersects(window):
                cover, members = groups[-1]
                groups[-1] = (cover.cover(window), [*members, window])
            else:
                groups.append((window, [window]))
        return [group for group in groups if len(group[1]) > 1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}.with_gap({self.gap} ms)"


class TumblingEventTimeWindows(_Tumbling):
    """Fixed windows of event time, one after the other."""

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import EventTimeTrigger

        return EventTimeTrigger()


class SlidingEventTimeWindows(_Sliding):
    """Overlapping windows of event time."""

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import EventTimeTrigger

        return EventTimeTrigger()


class EventTimeSessionWindows(_Sessions):
    """Sessions of event time: windows that merge while records come closer than the gap."""

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import EventTimeTrigger

        return EventTimeTrigger()


class TumblingProcessingTimeWindows(_Tumbling):
    """Fixed windows of the wall clock."""

    is_event_time = False

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import ProcessingTimeTrigger

        return ProcessingTimeTrigger()


class SlidingProcessingTimeWindows(_Sliding):
    """Overlapping windows of the wall clock."""

    is_event_time = False

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import ProcessingTimeTrigger

        return ProcessingTimeTrigger()


class ProcessingTimeSessionWindows(_Sessions):
    """Sessions of the wall clock."""

    is_event_time = False

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import ProcessingTimeTrigger

        return ProcessingTimeTrigger()


class GlobalWindows(WindowAssigner):
    """One window per key holding all its records; it fires only through a trigger (such as
    ``CountTrigger``), never by time."""

    is_event_time = False

    @classmethod
    def create(cls) -> GlobalWindows:
        return cls()

    def assign_windows(self, element: Any, timestamp: int) -> list[Window]:
        return [GLOBAL_WINDOW]

    def default_trigger(self) -> Trigger:
        from lockgate.eventtime._triggers import NeverTrigger

        return NeverTrigger()

    def __repr__(self) -> str:
        return "GlobalWindows.create()"


GLOBAL_WINDOW = GlobalWindow()
