"""The heap state backend: live keyed state in copy-on-write Python dicts, snapshotted in full or
incrementally (a chain of a full base and deltas)."""

from lockgate.state.heap._heap import HeapKeyedStateBackend, HeapStateBackend, HeapValueState

__all__ = ["HeapKeyedStateBackend", "HeapStateBackend", "HeapValueState"]
