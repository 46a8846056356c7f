"""Helpers for users' tests of their own pipelines: fault injection, failure schedules for hypothesis,
and a check that a pipeline's committed output survives crashes exactly once.

A property test of a pipeline, in full::

    from hypothesis import given, strategies as st
    import anyio, lockgate as lg
    from lockgate.testing import assert_exactly_once, inputs_with_failures

    def pipeline(env, items):
        sink = lg.CollectSink()
        env.from_collection(items, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").sink(sink, uid="out")
        return sink

    records = st.lists(st.tuples(st.sampled_from("abc"), st.integers()), min_size=1)

    @given(inputs_with_failures(records, ["src", "sum", "out"]))
    def test_sums_are_exactly_once(case):
        items, schedule = case
        anyio.run(assert_exactly_once, lambda env: pipeline(env, items), schedule)

``assert_exactly_once`` returns what it exercised (an :class:`ExactlyOnceReport`: crashes fired,
restarts from a checkpoint) and, inside hypothesis, records it as events
(``pytest --hypothesis-show-statistics``).
"""

from lockgate.testing._faults import Crash as Crash
from lockgate.testing._faults import FailureSchedule as FailureSchedule
from lockgate.testing._faults import FaultInjector as FaultInjector
from lockgate.testing._faults import InjectedFailure as InjectedFailure
from lockgate.testing._faults import inject_failures as inject_failures
from lockgate.testing._harness import ExactlyOnceReport as ExactlyOnceReport
from lockgate.testing._harness import assert_exactly_once as assert_exactly_once
from lockgate.testing._harness import committed_output as committed_output
from lockgate.testing._strategies import failure_schedules as failure_schedules
from lockgate.testing._strategies import inputs_with_failures as inputs_with_failures

__all__ = [
    "Crash",
    "ExactlyOnceReport",
    "FailureSchedule",
    "FaultInjector",
    "InjectedFailure",
    "assert_exactly_once",
    "committed_output",
    "failure_schedules",
    "inject_failures",
    "inputs_with_failures",
]
