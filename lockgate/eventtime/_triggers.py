"""Triggers decide when a window's contents are emitted (FIRE) and dropped (PURGE); evictors drop
elements from a window before or after its function sees them."""

from __future__ import annotations

import enum
from typing import Any, Protocol

from lockgate._errors import ConfigurationError
from lockgate.eventtime._time import duration_millis
from lockgate.eventtime._windows import Window
from lockgate.state import ReducingState, ReducingStateDescriptor, StateDescriptor


class TriggerResult(enum.Enum):
    """What a trigger decides: go on, emit the contents, drop them, or both."""

    CONTINUE = (False, False)
    FIRE = (True, False)
    PURGE = (False, True)
    FIRE_AND_PURGE = (True, True)

    @property
    def fires(self) -> bool:
        return self.value[0]

    @property
    def purges(self) -> bool:
        return self.value[1]


class TriggerContext(Protocol):
    """What a trigger may do for the window it is called for, under the current key."""

    def current_watermark(self) -> int: ...

    def current_processing_time(self) -> int: ...

    def register_event_time_timer(self, timestamp: int) -> None: ...

    def register_processing_time_timer(self, timestamp: int) -> None: ...

    def delete_event_time_timer(self, timestamp: int) -> None: ...

    def delete_processing_time_timer(self, timestamp: int) -> None: ...

    def get_partitioned_state(self, descriptor: StateDescriptor[Any]) -> Any:
        """State of the trigger scoped to the current key and window."""

    def merge_partitioned_state(self, descriptor: StateDescriptor[Any]) -> None:
        """In ``on_merge``: fold the state of the merged windows into the new window's."""


class Trigger:
    """Decides, per key and window, when the window fires. Subclass it and override the hooks; each
    returns a :class:`TriggerResult` (a ``def`` or an ``async def``). Timers and state reached through
    the context belong to the window, so a trigger keeps nothing in its own attributes."""

    can_merge: bool = False

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> Any:
        """A record was added to ``window``."""
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> Any:
        """An event-time timer this trigger registered for ``window`` fired."""
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> Any:
        """A processing-time timer this trigger registered for ``window`` fired."""
        return TriggerResult.CONTINUE

    def on_merge(self, window: Window, ctx: TriggerContext) -> Any:
        """Windows merged into ``window`` (session windows): re-register timers, merge state."""
        raise ConfigurationError(f"{type(self).__name__} does not support merging (session) windows")

    def clear(self, window: Window, ctx: TriggerContext) -> Any:
        """The window is gone: delete its timers and state."""


class EventTimeTrigger(Trigger):
    """Fires once the watermark passes the window's end (and again for each late record)."""

    can_merge = True

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> Any:
        if window.max_timestamp() <= ctx.current_watermark():
            return TriggerResult.FIRE  # late, but within the allowed lateness: fire again at once
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> Any:
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def on_merge(self, window: Window, ctx: TriggerContext) -> Any:
        if window.max_timestamp() > ctx.current_watermark():
            ctx.register_event_time_timer(window.max_timestamp())

    def clear(self, window: Window, ctx: TriggerContext) -> Any:
        ctx.delete_event_time_timer(window.max_timestamp())

    def __repr__(self) -> str:
        return "EventTimeTrigger()"


class ProcessingTimeTrigger(Trigger):
    """Fires once the clock passes the window's end."""

    can_merge = True

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> Any:
        ctx.register_processing_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> Any:
        return TriggerResult.FIRE

    def on_merge(self, window: Window, ctx: TriggerContext) -> Any:
        if window.max_timestamp() > ctx.current_processing_time():
            ctx.register_processing_time_timer(window.max_timestamp())

    def clear(self, window: Window, ctx: TriggerContext) -> Any:
        ctx.delete_processing_time_timer(window.max_timestamp())

    def __repr__(self) -> str:
        return "ProcessingTimeTrigger()"


class NeverTrigger(Trigger):
    """Never fires (the default of global windows: give them a trigger)."""

    can_merge = True

    def on_merge(self, window: Window, ctx: TriggerContext) -> Any:
        return None

    def __repr__(self) -> str:
        return "NeverTrigger()"


def _add(a: int, b: int) -> int:
    return a + b


class CountTrigger(Trigger):
    """Fires each time the window has ``count`` more records."""

    can_merge = True

    def __init__(self, count: int) -> None:
        if type(count) is not int or count < 1:
            raise ConfigurationError(f"CountTrigger.of() takes a count of at least 1, got {count!r}")
        self.count = count
        self._descriptor = ReducingStateDescriptor[int]("_count", _add)

    @classmethod
    def of(cls, count: int) -> CountTrigger:
        return cls(count)

    def _counter(self, ctx: TriggerContext) -> ReducingState[int]:
        state: ReducingState[int] = ctx.get_partitioned_state(self._descriptor)
        return state

    async def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> Any:
        counter = self._counter(ctx)
        await counter.add(1)
        if (await counter.get() or 0) >= self.count:
            await counter.clear()
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def on_merge(self, window: Window, ctx: TriggerContext) -> Any:
        ctx.merge_partitioned_state(self._descriptor)

    async def clear(self, window: Window, ctx: TriggerContext) -> Any:
        await self._counter(ctx).clear()

    def __repr__(self) -> str:
        return f"CountTrigger.of({self.count})"


class PurgingTrigger(Trigger):
    """Another trigger whose every FIRE also purges the window."""

    def __init__(self, nested: Trigger) -> None:
        if not isinstance(nested, Trigger):
            raise ConfigurationError(f"PurgingTrigger.of() takes a trigger, got {nested!r}")
        self.nested = nested
        self.can_merge = nested.can_merge

    @classmethod
    def of(cls, nested: Trigger) -> PurgingTrigger:
        return cls(nested)

    @staticmethod
    async def _purging(result: Any) -> Any:
        result = await resolve(result)
        return TriggerResult.FIRE_AND_PURGE if result.fires else result

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> Any:
        return self._purging(self.nested.on_element(element, timestamp, window, ctx))

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> Any:
        return self._purging(self.nested.on_event_time(time, window, ctx))

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> Any:
        return self._purging(self.nested.on_processing_time(time, window, ctx))

    def on_merge(self, window: Window, ctx: TriggerContext) -> Any:
        return self.nested.on_merge(window, ctx)

    def clear(self, window: Window, ctx: TriggerContext) -> Any:
        return self.nested.clear(window, ctx)

    def __repr__(self) -> str:
        return f"PurgingTrigger.of({self.nested!r})"


async def resolve(result: Any) -> Any:
    """A hook's result, awaited if the hook was an ``async def``."""
    if hasattr(result, "__await__"):
        return await result
    return result


# ---- evictors


class Evictor:
    """Drops elements of a window before and/or after its function sees them. Elements are
    ``(value, timestamp)`` pairs, oldest first; return those to keep."""

    def evict_before(
        self, elements: list[tuple[Any, int | None]], window: Window
    ) -> list[tuple[Any, int | None]]:
        return elements

    def evict_after(
        self, elements: list[tuple[Any, int | None]], window: Window
    ) -> list[tuple[Any, int | None]]:
        return elements


class CountEvictor(Evictor):
    """Keeps the last ``count`` elements (before the function, or after it with ``do_evict_after``)."""

    def __init__(self, count: int, do_evict_after: bool = False) -> None:
        if type(count) is not int or count < 0:
            raise ConfigurationError(f"CountEvictor.of() takes a count of zero or more, got {count!r}")
        self.count = count
        self.do_evict_after = do_evict_after

    @classmethod
    def of(cls, count: int, do_evict_after: bool = False) -> CountEvictor:
        return cls(count, do_evict_after)

    def _evict(self, elements: list[tuple[Any, int | None]]) -> list[tuple[Any, int | None]]:
        return elements[len(elements) - self.count :] if len(elements) > self.count else elements

    def evict_before(
        self, elements: list[tuple[Any, int | None]], window: Window
    ) -> list[tuple[Any, int | None]]:
        return elements if self.do_evict_after else self._evict(elements)

    def evict_after(
        self, elements: list[tuple[Any, int | None]], window: Window
    ) -> list[tuple[Any, int | None]]:
        return self._evict(elements) if self.do_evict_after else elements


class TimeEvictor(Evictor):
    """Keeps the elements no older than ``window_size`` before the newest element's timestamp."""

    def __init__(self, window_size: int, do_evict_after: bool = False) -> None:
        self.window_size = window_size
        self.do_evict_after = do_evict_after

    @classmethod
    def of(cls, window_size: Any, do_evict_after: bool = False) -> TimeEvictor:
        return cls(duration_millis(window_size, "the evictor's window size"), do_evict_after)

    def _evict(self, elements: list[tuple[Any, int | None]]) -> list[tuple[Any, int | None]]:
        stamped = [ts for _, ts in elements if ts is not None]
        if not stamped:
            return elements
        cutoff = max(stamped) - self.window_size
        return [(value, ts) for value, ts in elements if ts is None or ts > cutoff]

    def evict_before(
        self, elements: list[tuple[Any, int | None]], window: Window
    ) -> list[tuple[Any, int | None]]:
        return elements if self.do_evict_after else self._evict(elements)

    def evict_after(
        self, elements: list[tuple[Any, int | None]], window: Window
    ) -> list[tuple[Any, int | None]]:
        return self._evict(elements) if self.do_evict_after else elements
