"""Keyed state snapshots, independent of the backend that took them.

A snapshot is taken in two parts. The synchronous part (:meth:`KeyedStateBackend.snapshot_sync`)
runs inside the actor between two records and only captures a consistent view: O(1) or O(changed).
The asynchronous part (:meth:`SnapshotResources.materialize`) turns the view into a
:class:`KeyedStateSnapshot` away from the hot path, while records keep flowing.

Entries are grouped by key group, so a restore at any parallelism takes exactly the key groups of
its range. Values are bytes written by the state's codec (its descriptor's serializer inside).
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lockgate.state._descriptors import StateDescriptor, StateTtlConfig
from lockgate.state._handles import MISSING, TtlValue
from lockgate.state._keygroups import KeyGroupRange
from lockgate.state._serializers import Serializer, SerializerSnapshot

#: (key, namespace, encoded value) of one stored entry.
Entry = tuple[Any, Any, bytes]


@dataclass(frozen=True)
class StateMetaInfo:
    """What a restore needs to know about a state besides its entries."""

    name: str
    kind: str
    serializer: SerializerSnapshot
    ttl: StateTtlConfig | None

    @classmethod
    def of(cls, descriptor: StateDescriptor[Any]) -> StateMetaInfo:
        """The meta info of the state that ``descriptor`` declares."""
        return cls(descriptor.name, descriptor.kind, descriptor.serializer.snapshot(), descriptor.ttl)


@dataclass(frozen=True)
class KeyedStateSnapshot:
    """The keyed state of one subtask at one checkpoint.

    Attributes:
        operator_uid: The operator the state belongs to.
        max_parallelism: The number of key groups of the job that wrote it.
        key_group_range: The key groups of the subtask that wrote it.
        states: Meta info by state name.
        entries: ``entries[state][key_group]`` lists that key group's entries.
    """

    operator_uid: str
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMetaInfo]
    entries: dict[str, dict[int, list[Entry]]] = field(repr=False)

    def entry_count(self) -> int:
        """How many entries the snapshot holds."""
        return sum(len(group) for groups in self.entries.values() for group in groups.values())


class SnapshotResources(ABC):
    """The consistent view captured by a backend's synchronous snapshot part."""

    @abstractmethod
    def materialize(self) -> KeyedStateSnapshot:
        """Build the snapshot from the view. Runs in a worker thread: it must not touch live state."""

    @abstractmethod
    def release(self) -> None:
        """The snapshot is written (or abandoned): let the backend reclaim the view. Runs on the
        event loop, exactly once, whether :meth:`materialize` ran, failed or never ran."""


class StateCodec:
    """Encodes what a backend stores for one state (a value, a list of elements, a map of entries,
    each possibly under TTL) to bytes and back, with the state's serializer for user values."""

    def __init__(self, descriptor: StateDescriptor[Any], clock: Callable[[], float]) -> None:
        self.kind = descriptor.kind
        self.serializer: Serializer[Any] = descriptor.serializer
        self.ttl = descriptor.ttl
        self.clock = clock

    # User values go through the serializer; TTL timestamps and containers through pickle.

    def _dump_one(self, entry: Any) -> Any:
        if self.ttl is None:
            return self.serializer.dumps(entry)
        return (entry.timestamp, self.serializer.dumps(entry.value))

    def _load_one(self, data: Any) -> Any:
        if self.ttl is None:
            return self.serializer.loads(data)
        timestamp, value = data
        return TtlValue(self.serializer.loads(value), timestamp)

    def encode(self, stored: Any) -> bytes:
        """The bytes of a stored value."""
        if self.kind == "list":
            return pickle.dumps([self._dump_one(element) for element in stored], protocol=5)
        if self.kind == "map":
            return pickle.dumps({k: self._dump_one(v) for k, v in stored.items()}, protocol=5)
        return pickle.dumps(self._dump_one(stored), protocol=5)

    def decode(self, data: bytes) -> Any:
        """The stored value of some bytes."""
        raw = pickle.loads(data)
        if self.kind == "list":
            return [self._load_one(element) for element in raw]
        if self.kind == "map":
            return {k: self._load_one(v) for k, v in raw.items()}
        return self._load_one(raw)

    def prune(self, stored: Any, now: float) -> Any:
        """``stored`` without its expired parts (MISSING if nothing is left): cleanup on snapshot."""
        ttl = self.ttl
        if ttl is None:
            return stored
        limit = now - ttl.ttl_seconds
        if self.kind == "list":
            alive = [element for element in stored if element.timestamp > limit]
            return alive or MISSING
        if self.kind == "map":
            entries = {k: v for k, v in stored.items() if v.timestamp > limit}
            return entries or MISSING
        return stored if stored.timestamp > limit else MISSING
