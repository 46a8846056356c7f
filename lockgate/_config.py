"""Checkpointing and restart configuration: what the environment sets and the runtime reads."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

from lockgate._errors import ConfigurationError


class CheckpointingMode(enum.Enum):
    """How barriers are handled at operators with several input channels.

    ``EXACTLY_ONCE`` aligns: a channel that delivered barrier n is held until every channel delivered
    it, so each snapshot reflects exactly the records before the barrier. ``AT_LEAST_ONCE`` keeps
    reading every channel; after a restore some records may then be processed twice, none lost.
    """

    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


def _positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{name} must be {bound} seconds and finite, got {value!r}")
    return float(value)


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return value


@dataclass
class CheckpointConfig:
    """How and when a job takes checkpoints (``env.checkpoint_config``).

    Attributes:
        interval: Seconds between two checkpoint triggers; None while checkpointing is disabled.
        mode: :class:`CheckpointingMode`, exactly-once by default.
        timeout: Seconds after which a checkpoint still in progress is aborted (the job goes on).
        min_pause: Seconds from the end of one checkpoint to the trigger of the next.
        max_concurrent: The most checkpoints in progress at once.
        tolerable_failures: How many checkpoints in a row may fail (the storage or a snapshot fails,
            or it times out) before the job fails, with the last failure's error as the cause (and
            restarts, as its restart strategy allows). 0 by default, as in Flink: a checkpoint that
            cannot be written stops the job rather than let it run unprotected. None tolerates any
            number. A checkpoint that a newer one subsumes is not a failure.
        retained: How many completed checkpoints are kept; older ones are deleted when a new one
            completes.
        asynchronous: Whether snapshots are written in the background while records keep flowing
            (the default), or wholly before the barrier moves on (for debugging).
        unaligned: Whether barriers overtake the records queued in channels (exactly-once only): a
            checkpoint then no longer waits for backpressured queues to drain, and the records a
            barrier overtook are stored with it as in-flight data (see ``docs/checkpointing.md``).
            Savepoints are always aligned.
        aligned_timeout: With ``unaligned``: None takes every checkpoint unaligned from the first
            barrier; a number of seconds starts each subtask aligned and switches it to unaligned
            once its alignment of the checkpoint has taken longer than that. Without ``unaligned``
            it has no effect.
        fall_back_past_damaged: Whether a restore whose newest checkpoint is damaged takes the one
            before it. False by default: the sinks may have committed what the damaged one covers,
            and the older one would replay those records (they would appear twice); the restore
            then fails with a :class:`~lockgate.CorruptCheckpointError` that names the file.
    """

    interval: float | None = None
    mode: CheckpointingMode = CheckpointingMode.EXACTLY_ONCE
    timeout: float = 600.0
    min_pause: float = 0.0
    max_concurrent: int = 1
    tolerable_failures: int | None = 0
    retained: int = 1
    asynchronous: bool = True
    unaligned: bool = False
    aligned_timeout: float | None = None
    fall_back_past_damaged: bool = False

    @property
    def enabled(self) -> bool:
        """Whether checkpointing is enabled."""
        return self.interval is not None

    def validate(self) -> None:
        """Check every field; raise :class:`ConfigurationError` naming the first bad one."""
        if self.interval is not None:
            _positive_number("checkpoint interval", self.interval)
        if not isinstance(self.mode, CheckpointingMode):
            raise ConfigurationError(
                f"mode must be lg.CheckpointingMode.EXACTLY_ONCE or AT_LEAST_ONCE, got {self.mode!r}"
            )
        _positive_number("checkpoint timeout", self.timeout)
        _positive_number("min_pause", self.min_pause, allow_zero=True)
        _count("max_concurrent", self.max_concurrent, 1)
        if self.tolerable_failures is not None:
            _count("tolerable_failures", self.tolerable_failures, 0)
        _count("retained", self.retained, 1)
        for name in ("asynchronous", "unaligned", "fall_back_past_damaged"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.aligned_timeout is not None:
            _positive_number("aligned_timeout", self.aligned_timeout)
        if self.unaligned and self.mode is not CheckpointingMode.EXACTLY_ONCE:
            raise ConfigurationError(
                "unaligned checkpoints need CheckpointingMode.EXACTLY_ONCE, but the mode is "
                f"{self.mode.name}: at-least-once never holds inputs, so there is nothing to unalign; "
                "enable checkpointing with mode=lg.CheckpointingMode.EXACTLY_ONCE, or set "
                "checkpoint_config.unaligned = False"
            )


@dataclass(frozen=True)
class RestartStrategy:
    """Whether and when a failed job restarts from its latest complete checkpoint.

    Build one with :meth:`fixed_delay`, :meth:`failure_rate` or :meth:`no_restart` (the default: a job
    whose function fails deterministically would otherwise restart forever).
    """

    kind: str
    attempts: int = 0
    delay: float = 0.0
    max_failures: int = 0
    interval: float = 0.0

    @classmethod
    def fixed_delay(cls, attempts: int, delay: float = 0.0) -> RestartStrategy:
        """Restart up to ``attempts`` times in all, waiting ``delay`` seconds before each."""
        return cls(
            "fixed_delay",
            attempts=_count("attempts", attempts, 0),
            delay=_positive_number("delay", delay, allow_zero=True),
        )

    @classmethod
    def failure_rate(cls, max_failures: int, interval: float, delay: float = 0.0) -> RestartStrategy:
        """Restart after each failure, waiting ``delay`` seconds, unless more than ``max_failures``
        failures happened within the last ``interval`` seconds."""
        return cls(
            "failure_rate",
            max_failures=_count("max_failures", max_failures, 1),
            interval=_positive_number("interval", interval),
            delay=_positive_number("delay", delay, allow_zero=True),
        )

    @classmethod
    def no_restart(cls) -> RestartStrategy:
        """Never restart: the first failure fails the job."""
        return cls("no_restart")

    def __repr__(self) -> str:
        if self.kind == "fixed_delay":
            return f"RestartStrategy.fixed_delay(attempts={self.attempts}, delay={self.delay})"
        if self.kind == "failure_rate":
            return (
                f"RestartStrategy.failure_rate(max_failures={self.max_failures}, "
                f"interval={self.interval}, delay={self.delay})"
            )
        return "RestartStrategy.no_restart()"

    def tracker(self) -> RestartTracker:
        """A fresh record of one job's failures under this strategy."""
        return RestartTracker(self)


@dataclass
class RestartTracker:
    """Counts one job's failures and answers whether the next one may restart."""

    strategy: RestartStrategy
    restarts: int = 0
    _failures: deque[float] = field(default_factory=deque)

    def may_restart(self, now: float) -> bool:
        """Record a failure at ``now`` (seconds, monotonic); whether the job may restart after it."""
        strategy = self.strategy
        if strategy.kind == "fixed_delay":
            allowed = self.restarts < strategy.attempts
        elif strategy.kind == "failure_rate":
            self._failures.append(now)
            while self._failures and self._failures[0] <= now - strategy.interval:
                self._failures.popleft()
            allowed = len(self._failures) <= strategy.max_failures
        else:
            allowed = False
        if allowed:
            self.restarts += 1
        return allowed

    def describe(self) -> str:
        """Why restarts stopped, for the error that fails the job."""
        strategy = self.strategy
        if strategy.kind == "fixed_delay":
            return f"after {self.restarts} restart(s), {strategy!r} allows no more"
        if strategy.kind == "failure_rate":
            return f"more than {strategy.max_failures} failure(s) within {strategy.interval} s ({strategy!r})"
        return "the restart strategy is no_restart(); set one with env.set_restart_strategy(...)"


@dataclass
class ExecutionConfig:
    """How a job runs besides checkpointing (``env.config``).

    Attributes:
        auto_watermark_interval: The most often, in seconds, a source subtask (or
            ``assign_timestamps_and_watermarks``) emits a new watermark: 0.2, as in Flink. 0 emits one
            after every batch that advanced it (deterministic, for tests; costs more).
    """

    auto_watermark_interval: float = 0.2

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` for a setting out of range."""
        interval = self.auto_watermark_interval
        if isinstance(interval, timedelta):
            interval = self.auto_watermark_interval = interval.total_seconds()
        _positive_number("auto_watermark_interval", interval, allow_zero=True)

    @property
    def auto_watermark_interval_millis(self) -> int:
        """The interval in whole ms."""
        return round(self.auto_watermark_interval * 1000)
