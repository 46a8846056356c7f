"""The heap state backend: live keyed state in Python dicts, snapshotted copy-on-write."""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from lockgate.state._backend import H, KeyedStateBackend, StateBackend
from lockgate.state._cow import ABSENT, TOMBSTONE, CowTable, frozen_items
from lockgate.state._descriptors import StateDescriptor, ValueStateDescriptor
from lockgate.state._handles import DEFAULT_NAMESPACE, MISSING, ValueState
from lockgate.state._keygroups import KeyGroupRange, stable_key_hash
from lockgate.state._snapshot import (
    Entry,
    KeyedStateSnapshot,
    SnapshotResources,
    StateCodec,
    StateMetaInfo,
    stores_whole,
)

T = TypeVar("T")


class HeapKeyedStateBackend(KeyedStateBackend):
    """Keyed state of one subtask in copy-on-write tables: ``tables[state][namespace]``.

    The table of the default namespace of each state lives as long as the backend, so handles can
    hold it. Snapshots freeze every table in O(1) (see :mod:`lockgate.state._cow`).
    """

    supports_nowait = True

    def __init__(self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int) -> None:
        super().__init__(operator_uid, key_group_range, max_parallelism)
        self._tables: dict[str, dict[Any, CowTable]] = {}

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}: {sum(map(len, spaces.values()))} entries" for name, spaces in self._tables.items()
        )
        return f"<HeapKeyedStateBackend {self.operator_uid!r} [{sizes}]>"

    def _create_state(self, descriptor: StateDescriptor[Any]) -> None:
        self._tables.setdefault(descriptor.name, {DEFAULT_NAMESPACE: CowTable()})

    def create_state(self, descriptor: StateDescriptor[Any], handle_type: type[H]) -> H:
        handle = super().create_state(descriptor, handle_type)
        if isinstance(descriptor, ValueStateDescriptor) and descriptor.ttl is None:
            # Without TTL a value is stored as is: the handle can reach its table directly.
            table = self._tables[descriptor.name][DEFAULT_NAMESPACE]
            return HeapValueState(self, descriptor, table)  # type: ignore[return-value]
        return handle

    def _restore_state(self, descriptor: StateDescriptor[Any], groups: dict[int, list[Entry]]) -> None:
        if not (stores_whole(descriptor) and descriptor.kind not in ("list", "map")):
            super()._restore_state(descriptor, groups)
            return
        # A value written by the default serializer alone: unpickle straight into the tables.
        spaces = self._tables[descriptor.name]
        loads = pickle.loads
        for entries in groups.values():
            if all(namespace is DEFAULT_NAMESPACE for _, namespace, _ in entries):
                spaces[DEFAULT_NAMESPACE].top.update({key: loads(data) for key, _, data in entries})
                continue
            for key, namespace, data in entries:
                self.put_nowait(descriptor.name, key, namespace, loads(data))

    def get_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        table = self._tables[state].get(namespace)
        return MISSING if table is None else table.get(key)

    def put_nowait(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        spaces = self._tables[state]
        table = spaces.get(namespace)
        if table is None:
            table = spaces[namespace] = CowTable()
        table.put(key, value)

    def delete_nowait(self, state: str, key: Any, namespace: Any) -> None:
        table = self._tables[state].get(namespace)
        if table is not None:
            table.delete(key)

    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        return self.get_nowait(state, key, namespace)

    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self.put_nowait(state, key, namespace, value)

    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        self.delete_nowait(state, key, namespace)

    async def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        table = self._tables[state].get(namespace)
        for item in [] if table is None else list(table.items()):
            yield item

    def snapshot_sync(self) -> SnapshotResources:
        """Freeze every table: O(number of tables), whatever the number of entries."""
        views = {
            name: [(namespace, table, table.freeze()) for namespace, table in spaces.items()]
            for name, spaces in self._tables.items()
        }
        return _HeapSnapshotResources(self, views, self.clock())


class _HeapSnapshotResources(SnapshotResources):
    def __init__(
        self,
        backend: HeapKeyedStateBackend,
        views: dict[str, list[tuple[Any, CowTable, tuple[dict[Any, Any], ...]]]],
        now: float,
    ) -> None:
        self._backend = backend
        self._views = views
        self._now = now
        self._codecs = {name: StateCodec(backend.descriptors[name], backend.clock) for name in views}
        self._metas = {name: StateMetaInfo.of(backend.descriptors[name]) for name in views}
        self._whole = {name: stores_whole(backend.descriptors[name]) for name in views}
        self._unclaimed = backend.unclaimed_restored_state()
        self._released = False

    def materialize(self) -> KeyedStateSnapshot:
        backend = self._backend
        max_parallelism = backend.max_parallelism
        entries: dict[str, dict[int, list[Entry]]] = {}
        tables: dict[str, dict[Any, dict[Any, Any]]] = {}
        for name, spaces in self._views.items():
            if self._whole[name]:
                tables[name] = {namespace: _merged_copy(layers) for namespace, _, layers in spaces}
                continue
            codec = self._codecs[name]
            encode, prune, now = codec.encode, codec.prune if codec.ttl is not None else None, self._now
            groups: defaultdict[int, list[Entry]] = defaultdict(list)
            for namespace, _, layers in spaces:
                for key, stored in frozen_items(layers):
                    if prune is not None:
                        stored = prune(stored, now)
                        if stored is MISSING:
                            continue
                    groups[stable_key_hash(key) % max_parallelism].append((key, namespace, encode(stored)))
            entries[name] = dict(groups)
        return backend.with_unclaimed_restored_state(
            KeyedStateSnapshot(
                backend.operator_uid, max_parallelism, backend.key_group_range, self._metas, entries, tables
            ),
            self._unclaimed,
        )

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        for spaces in self._views.values():
            for _, table, _ in spaces:
                table.release()


class HeapValueState(ValueState[T]):
    """A value state that reads and writes its table's top layer directly: one dict lookup per
    access and no await, except for the first access of a key after a snapshot froze the table."""

    __slots__ = ("_table",)

    def __init__(
        self, backend: HeapKeyedStateBackend, descriptor: ValueStateDescriptor[T], table: CowTable
    ) -> None:
        super().__init__(backend, descriptor)
        self._table = table

    # The awaitable forms repeat the bodies of the *_nowait ones: one call less on the hot path.

    async def value(self) -> T:
        key = self._backend.current_key
        value = self._table.top.get(key, ABSENT)
        if value is ABSENT or value is TOMBSTONE:
            value = self._table.get(key)
            if value is MISSING:
                return self._descriptor.fresh_default()
        return value  # type: ignore[no-any-return]

    async def update(self, value: T | None) -> None:
        if value is None:
            self._table.delete(self._backend.current_key)
        else:
            self._table.top[self._backend.current_key] = value

    async def clear(self) -> None:
        self._table.delete(self._backend.current_key)

    def value_nowait(self) -> T:
        # Inline on purpose: this is the hot path of every keyed function.
        key = self._backend.current_key
        value = self._table.top.get(key, ABSENT)
        if value is ABSENT or value is TOMBSTONE:
            value = self._table.get(key)
            if value is MISSING:
                return self._descriptor.fresh_default()
        return value  # type: ignore[no-any-return]

    def update_nowait(self, value: T | None) -> None:
        if value is None:
            self._table.delete(self._backend.current_key)
        else:
            self._table.top[self._backend.current_key] = value

    def clear_nowait(self) -> None:
        self._table.delete(self._backend.current_key)


class HeapStateBackend(StateBackend):
    """Keeps live keyed state on the Python heap: the fastest backend, bounded by memory."""

    def __repr__(self) -> str:
        return "HeapStateBackend()"

    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> KeyedStateBackend:
        return HeapKeyedStateBackend(operator_uid, key_group_range, max_parallelism)


def _merged_copy(layers: tuple[dict[Any, Any], ...]) -> dict[Any, Any]:
    """One dict of the live entries of frozen layers, built by C-level copies and updates."""
    merged = dict(layers[0])
    for layer in layers[1:]:
        merged.update(layer)
    if len(layers) > 1:
        for key in [key for key, value in merged.items() if value is TOMBSTONE]:
            del merged[key]
    return merged
