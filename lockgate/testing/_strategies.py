"""Hypothesis strategies for failure schedules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from lockgate._errors import ConfigurationError
from lockgate.testing._faults import Crash, FailureSchedule

T = TypeVar("T")


def failure_schedules(
    uids: Sequence[str],
    *,
    max_record: int = 50,
    max_crashes: int = 3,
    max_checkpoint_every: int = 20,
    kills: bool = False,
) -> st.SearchStrategy[FailureSchedule]:
    """Schedules of up to ``max_crashes`` crashes of the operators ``uids``, each at a record from 1 to
    ``max_record``, with a checkpoint asked for every 1 to ``max_checkpoint_every`` source records.
    With ``kills`` (jobs on ``RayRunner``), each crash raises or kills its subtask's actor.

    Hypothesis shrinks a failing schedule towards fewer crashes, earlier records and the first uid.
    """
    if not uids or not all(isinstance(uid, str) for uid in uids):
        raise ConfigurationError(f"failure_schedules() takes a non-empty list of operator uids, got {uids!r}")
    kill = st.booleans() if kills else st.just(False)
    crashes = st.builds(Crash, st.sampled_from(list(uids)), st.integers(1, max_record), kill)
    return st.builds(
        FailureSchedule,
        st.lists(crashes, max_size=max_crashes).map(tuple),
        st.integers(1, max_checkpoint_every),
    )


def inputs_with_failures(
    inputs: st.SearchStrategy[Sequence[T]], uids: Sequence[str], *, max_crashes: int = 3
) -> st.SearchStrategy[tuple[Sequence[T], FailureSchedule]]:
    """An input drawn from ``inputs``, with a failure schedule sized to it: crashes at records 1 to
    its length (so they can fire), a checkpoint every 1 to half its length source records (so
    restarts come from checkpoints, not from the start).

    Use it for pipelines whose operators each see about as many records as the input holds; for
    others, draw :func:`failure_schedules` with a ``max_record`` of your own.
    """
    if not uids or not all(isinstance(uid, str) for uid in uids):
        raise ConfigurationError(
            f"inputs_with_failures() takes a non-empty list of operator uids, got {uids!r}"
        )

    def sized(items: Sequence[T]) -> st.SearchStrategy[tuple[Sequence[T], FailureSchedule]]:
        schedules = failure_schedules(
            uids,
            max_record=max(1, len(items)),
            max_crashes=max_crashes,
            max_checkpoint_every=max(1, len(items) // 2),
        )
        return st.tuples(st.just(items), schedules)

    return inputs.flatmap(sized)
