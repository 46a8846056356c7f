"""State handles: what a user function holds and calls, scoped to the current key."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from lockgate.state._backend import DEFAULT_NAMESPACE, MISSING, KeyedStateBackend
from lockgate.state._descriptors import ValueStateDescriptor

T = TypeVar("T")


class ValueState(Generic[T]):
    """One value per key. Every call acts on the key of the record being processed.

    ``value()`` of a key without a value is the descriptor's default (a fresh copy each time);
    ``update(None)`` is ``clear()``. The ``*_nowait`` forms do the same without an await, on backends
    whose state is local (heap and RocksDB): the fast form for hot paths.
    """

    __slots__ = ("_backend", "_descriptor", "_name", "_nowait")

    def __init__(self, backend: KeyedStateBackend, descriptor: ValueStateDescriptor[T]) -> None:
        backend.register_state(descriptor)
        self._backend = backend
        self._descriptor = descriptor
        self._name = descriptor.name
        self._nowait = backend.supports_nowait

    def __repr__(self) -> str:
        return f"<ValueState {self._name!r} of {self._backend.operator_uid!r}>"

    async def value(self) -> T:
        """The current key's value, or the default."""
        backend = self._backend
        if self._nowait:
            value = backend.get_nowait(self._name, backend.current_key, DEFAULT_NAMESPACE)
        else:
            value = await backend.get(self._name, backend.current_key, DEFAULT_NAMESPACE)
        return self._descriptor.fresh_default() if value is MISSING else value

    async def update(self, value: T | None) -> None:
        """Set the current key's value; None clears it."""
        backend = self._backend
        if value is None:
            await backend.delete(self._name, backend.current_key, DEFAULT_NAMESPACE)
        elif self._nowait:
            backend.put_nowait(self._name, backend.current_key, DEFAULT_NAMESPACE, value)
        else:
            await backend.put(self._name, backend.current_key, DEFAULT_NAMESPACE, value)

    async def clear(self) -> None:
        """Remove the current key's value."""
        backend = self._backend
        await backend.delete(self._name, backend.current_key, DEFAULT_NAMESPACE)

    def value_nowait(self) -> T:
        """:meth:`value` without an await (local backends only)."""
        backend = self._backend
        value = backend.get_nowait(self._name, backend.current_key, DEFAULT_NAMESPACE)
        return self._descriptor.fresh_default() if value is MISSING else value

    def update_nowait(self, value: T | None) -> None:
        """:meth:`update` without an await (local backends only)."""
        backend = self._backend
        if value is None:
            backend.delete_nowait(self._name, backend.current_key, DEFAULT_NAMESPACE)
        else:
            backend.put_nowait(self._name, backend.current_key, DEFAULT_NAMESPACE, value)

    def clear_nowait(self) -> None:
        """:meth:`clear` without an await (local backends only)."""
        backend = self._backend
        backend.delete_nowait(self._name, backend.current_key, DEFAULT_NAMESPACE)


def make_value_state(backend: KeyedStateBackend, descriptor: Any) -> ValueState[Any]:
    """The handle for ``descriptor``, with a clear error if it is not a value state descriptor."""
    if not isinstance(descriptor, ValueStateDescriptor):
        raise TypeError(f"get_state() takes a ValueStateDescriptor, got {type(descriptor).__qualname__}")
    return ValueState(backend, descriptor)
