"""The heap state backend: live keyed state in Python dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lockgate.state._backend import MISSING, KeyedStateBackend, StateBackend
from lockgate.state._keygroups import KeyGroupRange


class HeapKeyedStateBackend(KeyedStateBackend):
    """Keyed state of one subtask in dicts: ``tables[state][namespace][key] -> value``."""

    supports_nowait = True

    def __init__(self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int) -> None:
        super().__init__(operator_uid, key_group_range, max_parallelism)
        self._tables: dict[str, dict[Any, dict[Any, Any]]] = {}

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}: {sum(map(len, spaces.values()))} entries" for name, spaces in self._tables.items()
        )
        return f"<HeapKeyedStateBackend {self.operator_uid!r} [{sizes}]>"

    def _create_state(self, name: str) -> None:
        self._tables.setdefault(name, {})

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
            if not entries:
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


class HeapStateBackend(StateBackend):
    """Keeps live keyed state on the Python heap: the fastest backend, bounded by memory."""

    def __repr__(self) -> str:
        return "HeapStateBackend()"

    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> KeyedStateBackend:
        return HeapKeyedStateBackend(operator_uid, key_group_range, max_parallelism)
