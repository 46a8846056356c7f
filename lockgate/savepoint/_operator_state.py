"""The stored form of a subtask's operator state (keyed state is written by its backend, through
``SnapshotResources.write``)."""

from __future__ import annotations

import pickle

from lockgate.snapshots import Blob, unpickle_state
from lockgate.state import OperatorStateSnapshot


def encode_operator_state(snapshot: OperatorStateSnapshot) -> bytes:
    """The bytes of one subtask's operator state: the snapshot pickled (``docs/savepoint-format.md``)."""
    return pickle.dumps(snapshot, protocol=5)


def decode_operator_state(blob: Blob) -> OperatorStateSnapshot:
    """One subtask's operator state read back.

    Raises:
        CorruptCheckpointError: The blob does not hold operator state; the error names it.
    """
    return unpickle_state(blob, OperatorStateSnapshot)
