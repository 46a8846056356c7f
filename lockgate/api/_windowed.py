"""Windowed streams: ``keyed.window(assigner)`` and ``keyed.count_window(size)``, configured, then
ended by ``reduce``, ``aggregate`` or ``process``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lockgate._errors import ConfigurationError
from lockgate.eventtime import Evictor, Trigger, WindowAssigner, duration_millis
from lockgate.functions import OutputTag, ProcessWindowFunction
from lockgate.graph import WindowSpec
from lockgate.state import AggregateFunction

if TYPE_CHECKING:
    from lockgate.api._datastream import DataStream, KeyedStream


class WindowedStream:
    """A keyed stream cut into windows. Each setting returns the stream, so they chain:
    ``keyed.window(a).trigger(t).allowed_lateness(d).aggregate(agg, uid="...")``."""

    def __init__(self, keyed: KeyedStream, assigner: WindowAssigner) -> None:
        self._keyed = keyed
        self._spec = WindowSpec(keyed.key_selector, assigner)

    def __repr__(self) -> str:
        return f"<WindowedStream {self._spec.assigner!r} of {self._keyed!r}>"

    def _with(self, **changes: Any) -> WindowedStream:
        self._spec = dataclasses.replace(self._spec, **changes)
        return self

    def trigger(self, trigger: Trigger) -> WindowedStream:
        """Fire windows by ``trigger`` instead of the assigner's default."""
        if not isinstance(trigger, Trigger):
            raise ConfigurationError(
                f"trigger() takes an lg.Trigger such as lg.CountTrigger.of(10), got {trigger!r}"
            )
        if self._spec.assigner.merging and not trigger.can_merge:
            raise ConfigurationError(
                f"{trigger!r} cannot merge windows, which {self._spec.assigner!r} does; give it can_merge = "
                "True and an on_merge"
            )
        return self._with(trigger=trigger)

    def evictor(self, evictor: Evictor) -> WindowedStream:
        """Drop elements from a window before or after its function sees them."""
        if not isinstance(evictor, Evictor):
            raise ConfigurationError(
                f"evictor() takes an lg.Evictor such as lg.CountEvictor.of(10), got {evictor!r}"
            )
        return self._with(evictor=evictor)

    def allowed_lateness(self, lateness: Any) -> WindowedStream:
        """Keep each window this long (a timedelta or seconds) past its end: a late record then
        updates it and fires it again (event time only)."""
        self._require_event_time("allowed_lateness()")
        return self._with(allowed_lateness=duration_millis(lateness, "the allowed lateness"))

    def side_output_late_data(self, tag: OutputTag) -> WindowedStream:
        """Send records too late for every window of theirs to side output ``tag`` instead of
        dropping them (event time only)."""
        self._require_event_time("side_output_late_data()")
        if not isinstance(tag, OutputTag):
            raise ConfigurationError(f"side_output_late_data() takes an lg.OutputTag, got {tag!r}")
        return self._with(late_tag=tag)

    def _require_event_time(self, method: str) -> None:
        if not self._spec.assigner.is_event_time:
            raise ConfigurationError(
                f"{method} applies to event-time windows; {self._spec.assigner!r} follows the clock, "
                "where nothing is late"
            )

    def reduce(
        self,
        fn: Callable[[Any, Any], Any],
        window_function: ProcessWindowFunction[Any, Any] | None = None,
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Each window's records combined by ``fn(a, b)`` as they come; the result (or what
        ``window_function`` makes of it) is emitted when the window fires."""
        if not callable(fn):
            raise ConfigurationError(f"reduce() needs a function fn(a, b), got {fn!r}")
        return self._end(
            dataclasses.replace(self._spec, reduce_function=fn), window_function, uid, name, parallelism
        )

    def aggregate(
        self,
        function: AggregateFunction[Any, Any, Any],
        window_function: ProcessWindowFunction[Any, Any] | None = None,
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """Each window's records folded into an accumulator by an :class:`AggregateFunction` as they
        come; ``get_result`` (or what ``window_function`` makes of it) is emitted when it fires."""
        if not isinstance(function, AggregateFunction):
            raise ConfigurationError(f"aggregate() takes an lg.AggregateFunction instance, got {function!r}")
        spec = dataclasses.replace(self._spec, aggregate_function=function)
        return self._end(spec, window_function, uid, name, parallelism)

    def process(
        self,
        function: ProcessWindowFunction[Any, Any],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """A :class:`ProcessWindowFunction` over all of a window's records when it fires."""
        return self._end(self._spec, function, uid, name, parallelism, required=True)

    def _end(
        self,
        spec: WindowSpec,
        window_function: ProcessWindowFunction[Any, Any] | None,
        uid: str | None,
        name: str | None,
        parallelism: int | None,
        *,
        required: bool = False,
    ) -> DataStream:
        if window_function is not None or required:
            if isinstance(window_function, type) or not isinstance(window_function, ProcessWindowFunction):
                raise ConfigurationError(
                    "a window function is an instance of an lg.ProcessWindowFunction subclass, "
                    f"got {window_function!r}"
                )
            spec = dataclasses.replace(spec, window_function=window_function)
        return self._keyed._apply(spec, uid, name, parallelism)
