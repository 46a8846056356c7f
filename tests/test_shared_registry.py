"""The shared state registry: for any sequence of checkpoints referencing shared blobs, being released
(aborted or dropped by retention) and pinned (owned by no one), a blob is reported for deletion exactly
once, exactly when the last checkpoint holding it goes, and never while one holds it or it is pinned."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lockgate.snapshots import SharedStateRegistry

names = st.sampled_from([f"blob-{i}" for i in range(6)])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.integers(1, 5), st.lists(names, max_size=4)),
        st.tuples(st.just("release"), st.integers(1, 5), st.just([])),
        st.tuples(st.just("pin"), st.just(0), st.lists(names, max_size=2)),
    ),
    max_size=40,
)


@given(operations)
def test_a_blob_is_deleted_once_when_no_checkpoint_holds_it_any_more(ops: list[tuple[str, int, Any]]) -> None:
    registry = SharedStateRegistry()
    held: dict[int, set[str]] = {}  # the model: what each live checkpoint references
    pinned: set[str] = set()
    deleted: set[str] = set()
    for op, checkpoint_id, blobs in ops:
        if op == "register":
            registry.register(checkpoint_id, blobs)
            held.setdefault(checkpoint_id, set()).update(blobs)
            deleted -= set(blobs)  # a name may be written again (a new upload under the same name)
        elif op == "release":
            gone = registry.release(checkpoint_id)
            released = held.pop(checkpoint_id, set())
            still = set().union(*held.values()) | pinned
            assert set(gone) == released - still  # exactly those nobody else holds
            assert len(gone) == len(set(gone))
            assert not (set(gone) & deleted)  # never reported twice
            deleted |= set(gone)
        else:
            registry.pin(blobs)
            pinned.update(blobs)
        live = set().union(*held.values()) | pinned
        assert registry.referenced() == live
        for name in [f"blob-{i}" for i in range(6)]:
            assert registry.is_live(name) == (name in live)
