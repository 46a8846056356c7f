"""Incremental heap snapshots: a chain of a full base and the changes of each later checkpoint.

A heap backend that snapshots incrementally writes, for checkpoint m, only what changed since the
last checkpoint it knows complete (c): the entries written and deleted since c's snapshot, as a
:class:`KeyedStateDelta`. Checkpoint m's state is then the chain ``base, delta, ..., delta`` of
shared blobs: c's chain plus the new delta. Every ``max_chain_length`` links (or when no checkpoint is
known complete yet, as after a restore) the link is a full :class:`KeyedStateSnapshot` again, so a
restore reads and replays a bounded number of links.

On restore, :meth:`HeapChainManifest.resolve` loads the base and applies each delta in order:
changed entries overwrite, deleted ones (tombstones) are removed, and a namespace the delta holds
whole replaces what came before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lockgate._errors import CorruptCheckpointError
from lockgate.snapshots import SharedStateHandle, unpickle_state
from lockgate.state._snapshot import (
    Entry,
    KeyedStateManifest,
    KeyedStateSnapshot,
    StateMetaInfo,
)
from lockgate.state._timers import TIMER_KIND

T = TypeVar("T")


@dataclass(frozen=True)
class KeyedStateDelta:
    """What changed in one subtask's keyed state between two links of its chain.

    Attributes:
        states: Meta info of every state the delta touches.
        entries: Changed entries of encoded states, ``entries[state][key_group]``, as in a snapshot.
        tables: Changed values of plain states, ``tables[state][namespace][key]``, as in a snapshot.
        removed: ``removed[state]`` lists the ``(namespace, key)`` deleted (or expired) since; for a
            timer state (kind ``TIMER_KIND``), whose key and namespace may hold several timers, the
            ``(namespace, key, timestamp bytes)`` of each timer removed.
        replaced: ``replaced[state]`` lists the namespaces whose whole contents the delta holds: what
            the chain held for them before is dropped first. A timer state holds its timers in one
            table, whatever their namespaces: replaced, it is replaced whole.
    """

    states: dict[str, StateMetaInfo]
    entries: dict[str, dict[int, list[Entry]]] = field(default_factory=dict, repr=False)
    tables: dict[str, dict[Any, dict[Any, Any]]] = field(default_factory=dict, repr=False)
    removed: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict, repr=False)
    replaced: dict[str, list[Any]] = field(default_factory=dict)

    def change_count(self) -> int:
        """How many entries the delta writes or removes."""
        written = sum(len(group) for groups in self.entries.values() for group in groups.values())
        written += sum(len(table) for spaces in self.tables.values() for table in spaces.values())
        return written + sum(len(removed) for removed in self.removed.values())


@dataclass(frozen=True)
class HeapChainManifest(KeyedStateManifest):
    """The keyed state of one subtask in an incremental heap checkpoint: its chain of shared blobs,
    a pickled :class:`KeyedStateSnapshot` first and pickled :class:`KeyedStateDelta` after it."""

    operator_uid: str
    links: tuple[SharedStateHandle, ...]

    def resolve(self, shared: Mapping[str, tuple[bytes, str]]) -> KeyedStateSnapshot:
        base = _load_link(shared, self.links[0], KeyedStateSnapshot)
        if len(self.links) == 1:
            return base
        folded = _Folding(base)
        for link in self.links[1:]:
            folded.apply(_load_link(shared, link, KeyedStateDelta))
        return folded.result()


def _load_link(shared: Mapping[str, tuple[bytes, str]], handle: SharedStateHandle, expected: type[T]) -> T:
    blob = shared.get(handle.name)
    if blob is None:
        raise CorruptCheckpointError(
            handle.pointer, "missing: the checkpoint references it, but it was not read"
        )
    return unpickle_state(blob, expected)


class _Folding:
    """A base snapshot with deltas applied, in whichever form each state is held.

    A state is held as plain tables (``namespace -> key -> value``) or as encoded entries (``(namespace,
    key) -> (key group, bytes)``). Base and deltas of one job agree on each state's form; where they do
    not (a state restored unregistered, then registered), the tables are encoded into entries.
    """

    def __init__(self, base: KeyedStateSnapshot) -> None:
        self.base = base
        self.states = dict(base.states)
        self.tables: dict[str, dict[Any, dict[Any, Any]]] = {
            name: {namespace: dict(table) for namespace, table in spaces.items()}
            for name, spaces in base.tables.items()
        }
        self.entries: dict[str, dict[tuple[Any, ...], tuple[int, bytes]]] = {}
        for name, groups in base.entries.items():
            index = self.entries[name] = {}
            self._index(name, index, groups)

    def _is_timers(self, name: str) -> bool:
        return self.states[name].kind == TIMER_KIND

    def _index(
        self, name: str, index: dict[tuple[Any, ...], tuple[int, bytes]], groups: dict[int, list[Entry]]
    ) -> None:
        """Add entries to a state's index. An entry is known by ``(namespace, key)``, a timer by
        ``(namespace, key, timestamp bytes)``: as the delta's ``removed`` names them."""
        if self._is_timers(name):
            for key_group, group in groups.items():
                for key, namespace, data in group:
                    index[(namespace, key, data)] = (key_group, data)
            return
        for key_group, group in groups.items():
            for key, namespace, data in group:
                index[(namespace, key)] = (key_group, data)

    def _as_entries(self, name: str) -> dict[tuple[Any, ...], tuple[int, bytes]]:
        index = self.entries.setdefault(name, {})
        spaces = self.tables.pop(name, None)
        if spaces:
            index.update(self._encoded(name, spaces))
        return index

    def _encoded(
        self, name: str, spaces: dict[Any, dict[Any, Any]]
    ) -> dict[tuple[Any, ...], tuple[int, bytes]]:
        """Plain table values of state ``name``, encoded as a snapshot encodes them, by entry."""
        base = self.base
        tables = KeyedStateSnapshot(
            base.operator_uid,
            base.max_parallelism,
            base.key_group_range,
            {name: self.states[name]},
            {},
            {name: spaces},
        )
        return {
            (namespace, key): (key_group, data)
            for key_group, group in tables.grouped_entries()[name].items()
            for key, namespace, data in group
        }

    def apply(self, delta: KeyedStateDelta) -> None:
        self.states.update(delta.states)
        for name, namespaces in delta.replaced.items():
            index = self.entries.get(name)
            if self._is_timers(name):  # one table holds the timers of every namespace
                if index:
                    index.clear()
                continue
            dropped = set(namespaces)
            for namespace in dropped:
                self.tables.get(name, {}).pop(namespace, None)
            if index:
                for item in [item for item in index if item[0] in dropped]:
                    del index[item]
        for name, spaces in delta.tables.items():
            if name in self.entries:
                self._as_entries(name).update(self._encoded(name, spaces))
                continue
            mine = self.tables.setdefault(name, {})
            for namespace, table in spaces.items():
                mine.setdefault(namespace, {}).update(table)
        for name, groups in delta.entries.items():
            self._index(name, self._as_entries(name), groups)
        for name, removed in delta.removed.items():
            held = self.tables.get(name)
            encoded = self.entries.get(name)
            for item in removed:
                namespace, key = item[0], item[1]
                if held is not None and namespace in held:
                    held[namespace].pop(key, None)
                if encoded is not None:
                    encoded.pop(item, None)  # (namespace, key), or a timer's (namespace, key, bytes)

    def result(self) -> KeyedStateSnapshot:
        entries: dict[str, dict[int, list[Entry]]] = {}
        for name, index in self.entries.items():
            groups: dict[int, list[Entry]] = {}
            for item, (key_group, data) in index.items():
                groups.setdefault(key_group, []).append((item[1], item[0], data))
            entries[name] = groups
        tables = {
            name: {namespace: table for namespace, table in spaces.items() if table}
            for name, spaces in self.tables.items()
        }
        base = self.base
        return KeyedStateSnapshot(
            base.operator_uid, base.max_parallelism, base.key_group_range, self.states, entries, tables
        )
