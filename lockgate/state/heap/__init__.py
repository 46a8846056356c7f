"""The heap state backend: live keyed state in copy-on-write Python dicts, snapshotted in full or
incrementally (a chain of a full base and deltas).

Modules: ``_heap`` (the backend of a subtask, :class:`HeapValueState`, :class:`HeapStateBackend`),
``_cow`` (copy-on-write tables), ``_snapshots`` (snapshot resources: whole, or deltas), ``_incremental``
(the chain's manifest and deltas, and folding them on restore), ``_timers`` (timer queues: a
copy-on-write table of timers and a heap over it).
"""

from lockgate.state.heap._heap import HeapKeyedStateBackend, HeapStateBackend, HeapValueState

__all__ = ["HeapKeyedStateBackend", "HeapStateBackend", "HeapValueState"]
