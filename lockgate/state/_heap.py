"""The heap state backend: live keyed state in Python dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

from lockgate.state._backend import H, KeyedStateBackend, StateBackend
from lockgate.state._descriptors import StateDescriptor, ValueStateDescriptor
from lockgate.state._handles import DEFAULT_NAMESPACE, MISSING, ValueState
from lockgate.state._keygroups import KeyGroupRange

T = TypeVar("T")


class HeapKeyedStateBackend(KeyedStateBackend):
    """Keyed state of one subtask in dicts: ``tables[state][namespace][key] -> value``.

    The dict of the default namespace of each state lives as long as the backend, so handles can
    hold it and reach a value in one lookup.
    """

    supports_nowait = True

    def __init__(self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int) -> None:
        super().__init__(operator_uid, key_group_range, max_parallelism)
        self._tables: dict[str, dict[Any, dict[Any, Any]]] = {}

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}: {sum(map(len, spaces.values()))} entries" for name, spaces in self._tables.items()
        )
        return f"<HeapKeyedStateBackend {self.operator_uid!r} [{sizes}]>"

    def _create_state(self, descriptor: StateDescriptor[Any]) -> None:
        self._tables.setdefault(descriptor.name, {DEFAULT_NAMESPACE: {}})

    def create_state(self, descriptor: StateDescriptor[Any], handle_type: type[H]) -> H:
        handle = super().create_state(descriptor, handle_type)
        if isinstance(descriptor, ValueStateDescriptor) and descriptor.ttl is None:
            # Without TTL a value is stored as is: the handle can reach its dict directly.
            entries = self._tables[descriptor.name][DEFAULT_NAMESPACE]
            return HeapValueState(self, descriptor, entries)  # type: ignore[return-value]
        return handle

    def get_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        entries = self._tables[state].get(namespace)
        return MISSING if entries is None else entries.get(key, MISSING)

    def put_nowait(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        spaces = self._tables[state]
        entries = spaces.get(namespace)
        if entries is None:
            entries = spaces[namespace] = {}
        entries[key] = value

    def delete_nowait(self, state: str, key: Any, namespace: Any) -> None:
        spaces = self._tables[state]
        entries = spaces.get(namespace)
        if entries is not None:
            entries.pop(key, None)
            if not entries and namespace is not DEFAULT_NAMESPACE:
                del spaces[namespace]

    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        return self.get_nowait(state, key, namespace)

    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self.put_nowait(state, key, namespace, value)

    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        self.delete_nowait(state, key, namespace)

    async def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        for item in list(self._tables[state].get(namespace, {}).items()):
            yield item


class HeapValueState(ValueState[T]):
    """A value state that reads and writes its dict directly: one lookup per access, no await."""

    __slots__ = ("_entries",)

    def __init__(
        self, backend: HeapKeyedStateBackend, descriptor: ValueStateDescriptor[T], entries: dict[Any, Any]
    ) -> None:
        super().__init__(backend, descriptor)
        self._entries = entries

    async def value(self) -> T:
        value = self._entries.get(self._backend.current_key, MISSING)
        return self._descriptor.fresh_default() if value is MISSING else value

    async def update(self, value: T | None) -> None:
        if value is None:
            self._entries.pop(self._backend.current_key, None)
        else:
            self._entries[self._backend.current_key] = value

    async def clear(self) -> None:
        self._entries.pop(self._backend.current_key, None)

    def value_nowait(self) -> T:
        value = self._entries.get(self._backend.current_key, MISSING)
        return self._descriptor.fresh_default() if value is MISSING else value

    def update_nowait(self, value: T | None) -> None:
        if value is None:
            self._entries.pop(self._backend.current_key, None)
        else:
            self._entries[self._backend.current_key] = value

    def clear_nowait(self) -> None:
        self._entries.pop(self._backend.current_key, None)


class HeapStateBackend(StateBackend):
    """Keeps live keyed state on the Python heap: the fastest backend, bounded by memory."""

    def __repr__(self) -> str:
        return "HeapStateBackend()"

    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> KeyedStateBackend:
        return HeapKeyedStateBackend(operator_uid, key_group_range, max_parallelism)
