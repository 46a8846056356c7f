"""Run a pipeline with and without failures and compare what it committed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from lockgate._config import CheckpointingMode, RestartStrategy
from lockgate.api import StreamEnvironment
from lockgate.connectors import CollectSink
from lockgate.testing._faults import FailureSchedule, inject_failures

#: Builds a pipeline on the environment it is given and returns the sink whose results count.
Pipeline = Callable[[StreamEnvironment], CollectSink[Any]]


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
    env = environment()
    if schedule is not None:
        if not env.checkpoint_config.enabled:
            env.enable_checkpointing(3600.0, CheckpointingMode.EXACTLY_ONCE)
        env.set_restart_strategy(RestartStrategy.fixed_delay(attempts=len(schedule.crashes)))
        inject_failures(env, schedule)
    sink = pipeline(env)
    if not isinstance(sink, CollectSink):
        raise TypeError(f"the pipeline must return the CollectSink it writes to, got {sink!r}")
    await env.execute("lockgate.testing")
    return list(sink.results)


async def assert_exactly_once(
    pipeline: Pipeline,
    schedule: FailureSchedule,
    *,
    environment: Callable[[], StreamEnvironment] = StreamEnvironment,
    ordered: bool = False,
) -> list[Any]:
    """Assert that ``pipeline`` commits the same records with the failures of ``schedule`` as without.

    Records are compared as a multiset (each record as often), or as a sequence with ``ordered``
    (meaningful at parallelism 1 only). Returns the failure-free output.

    Raises:
        AssertionError: The outputs differ; the message shows what is missing and what is extra.
    """
    expected = await committed_output(pipeline, environment=environment)
    actual = await committed_output(pipeline, schedule, environment=environment)
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
        )
    return expected


def _hashable(record: Any) -> Any:
    try:
        hash(record)
    except TypeError:
        return repr(record)
    return record
