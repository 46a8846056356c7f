"""Run a pipeline with and without failures and compare what it committed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import event, target
from hypothesis.control import currently_in_test_context

from lockgate._config import CheckpointingMode, RestartStrategy
from lockgate.actors import JobResult
from lockgate.api import StreamEnvironment
from lockgate.connectors import CollectSink
from lockgate.testing._faults import FailureSchedule, FaultInjector, inject_failures

#: Builds a pipeline on the environment it is given and returns the sink whose results count.
Pipeline = Callable[[StreamEnvironment], CollectSink[Any]]


@dataclass(frozen=True)
class ExactlyOnceReport:
    """What :func:`assert_exactly_once` exercised, besides finding the outputs equal.

    A crash that fires before any checkpoint completed makes the job start again from the beginning,
    which tests little; only restarts from a checkpoint test that state and output survive a restore.

    Attributes:
        expected: The output of the run without failures.
        crashes_scheduled: How many crashes the schedule holds.
        crashes_fired: How many of them happened (a crash at a record its operator never receives
            does not).
        restored_from: For each restart, the id of the checkpoint it restored from (None: from the
            beginning).
    """

    expected: list[Any]
    crashes_scheduled: int
    crashes_fired: int
    restored_from: tuple[int | None, ...]

    @property
    def restarts(self) -> int:
        """How many times the job restarted."""
        return len(self.restored_from)

    @property
    def restarts_from_checkpoint(self) -> int:
        """How many restarts restored a checkpoint (rather than starting again)."""
        return sum(checkpoint is not None for checkpoint in self.restored_from)


async def _run(
    pipeline: Pipeline, schedule: FailureSchedule | None, environment: Callable[[], StreamEnvironment]
) -> tuple[list[Any], JobResult, FaultInjector | None]:
    env = environment()
    injector = None
    if schedule is not None:
        if not env.checkpoint_config.enabled:
            env.enable_checkpointing(3600.0, CheckpointingMode.EXACTLY_ONCE)
        env.set_restart_strategy(RestartStrategy.fixed_delay(attempts=len(schedule.crashes)))
        injector = inject_failures(env, schedule)
    sink = pipeline(env)
    if not isinstance(sink, CollectSink):
        raise TypeError(f"the pipeline must return the CollectSink it writes to, got {sink!r}")
    result = await env.execute("lockgate.testing")
    return list(sink.results), result, injector


async def committed_output(
    pipeline: Pipeline,
    schedule: FailureSchedule | None = None,
    *,
    environment: Callable[[], StreamEnvironment] = StreamEnvironment,
) -> list[Any]:
    """Run ``pipeline`` once, under ``schedule`` if given, and return what its sink committed.

    With a schedule, checkpointing is enabled in ``EXACTLY_ONCE`` mode unless the environment already
    checkpoints (its interval is kept; ``schedule.checkpoint_every`` adds checkpoints at records), and the
    job may restart once per crash.
    """
    output, _, _ = await _run(pipeline, schedule, environment)
    return output


async def assert_exactly_once(
    pipeline: Pipeline,
    schedule: FailureSchedule,
    *,
    environment: Callable[[], StreamEnvironment] = StreamEnvironment,
    ordered: bool = False,
) -> ExactlyOnceReport:
    """Assert that ``pipeline`` commits the same records with the failures of ``schedule`` as without.

    Records are compared as a multiset (each record as often), or as a sequence with ``ordered``
    (meaningful at parallelism 1 only). Returns what was exercised (an :class:`ExactlyOnceReport`).
    Inside a hypothesis test it also records, as ``hypothesis.event``, how many restarts came from a
    checkpoint (see them with ``pytest --hypothesis-show-statistics``), and steers the search towards
    schedules that restore from checkpoints (``hypothesis.target``).

    Raises:
        AssertionError: The outputs differ; the message shows what is missing and what is extra.
    """
    expected, _, _ = await _run(pipeline, None, environment)
    actual, result, injector = await _run(pipeline, schedule, environment)
    assert injector is not None
    report = ExactlyOnceReport(expected, len(schedule.crashes), len(injector.fired), result.restored_from)
    _tell_hypothesis(report)
    if ordered:
        same = actual == expected
    else:
        same = Counter(map(_hashable, actual)) == Counter(map(_hashable, expected))
    if not same:
        missing = Counter(map(_hashable, expected)) - Counter(map(_hashable, actual))
        extra = Counter(map(_hashable, actual)) - Counter(map(_hashable, expected))
        raise AssertionError(
            f"under {schedule!r} the committed output differs from a run without failures: "
            f"missing {dict(missing)!r}, extra {dict(extra)!r}"
            + ("" if missing or extra else " (same records, another order)")
            + f"; the job restarted from {_describe(report.restored_from)}"
        )
    return report


def _describe(restored_from: tuple[int | None, ...]) -> str:
    if not restored_from:
        return "nothing (no crash fired)"
    return ", then ".join("the start" if cid is None else f"checkpoint {cid}" for cid in restored_from)


def _tell_hypothesis(report: ExactlyOnceReport) -> None:
    if not currently_in_test_context():
        return
    event(f"restarts from a checkpoint: {report.restarts_from_checkpoint}")
    event(f"crashes fired: {report.crashes_fired} of {report.crashes_scheduled}")
    target(float(report.restarts_from_checkpoint), label="restarts from a checkpoint")


def _hashable(record: Any) -> Any:
    try:
        hash(record)
    except TypeError:
        return repr(record)
    return record
