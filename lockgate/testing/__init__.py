"""Helpers for users' tests of their own pipelines: fault injection, failure schedules for hypothesis,
and a check that a pipeline's committed output survives crashes exactly once.

A property test of a pipeline, in full::

    from hypothesis import given, strategies as st
    import anyio, lockgate as lg
    from lockgate.testing import assert_exactly_once, failure_schedules

    def pipeline(env, items):
        sink = lg.CollectSink()
        env.from_collection(items, uid="src").key_by(lambda r: r[0]).sum(1, uid="sum").sink(sink, uid="out")
        return sink

    records = st.lists(st.tuples(st.sampled_from("abc"), st.integers()))

    @given(records, failure_schedules(["src", "sum", "out"]))
    def test_sums_are_exactly_once(items, schedule):
        anyio.run(assert_exactly_once, lambda env: pipeline(env, items), schedule)
"""

from lockgate.testing._faults import Crash as Crash
from lockgate.testing._faults import FailureSchedule as FailureSchedule
from lockgate.testing._faults import FaultInjector as FaultInjector
from lockgate.testing._faults import InjectedFailure as InjectedFailure
from lockgate.testing._faults import inject_failures as inject_failures
from lockgate.testing._harness import assert_exactly_once as assert_exactly_once
from lockgate.testing._harness import committed_output as committed_output
from lockgate.testing._strategies import failure_schedules as failure_schedules

__all__ = [
    "Crash",
    "FailureSchedule",
    "FaultInjector",
    "InjectedFailure",
    "assert_exactly_once",
    "committed_output",
    "failure_schedules",
    "inject_failures",
]
