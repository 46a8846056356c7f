"""Hypothesis strategies for failure schedules."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from lockgate._errors import ConfigurationError
from lockgate.testing._faults import Crash, FailureSchedule


def failure_schedules(
    uids: Sequence[str],
    *,
    max_record: int = 50,
    max_crashes: int = 3,
    max_checkpoint_every: int = 20,
) -> st.SearchStrategy[FailureSchedule]:
    """Schedules of up to ``max_crashes`` crashes of the operators ``uids``, each at a record from 1 to
    ``max_record``, with a checkpoint asked for every 1 to ``max_checkpoint_every`` source records.

    Hypothesis shrinks a failing schedule towards fewer crashes, earlier records and the first uid.
    """
    if not uids or not all(isinstance(uid, str) for uid in uids):
        raise ConfigurationError(f"failure_schedules() takes a non-empty list of operator uids, got {uids!r}")
    crashes = st.builds(Crash, st.sampled_from(list(uids)), st.integers(1, max_record))
    return st.builds(
        FailureSchedule,
        st.lists(crashes, max_size=max_crashes).map(tuple),
        st.integers(1, max_checkpoint_every),
    )
