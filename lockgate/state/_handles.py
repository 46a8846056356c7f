"""State handles: what a user function holds and calls, scoped to the current key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Generic, TypeVar

from lockgate.state._descriptors import ValueStateDescriptor

if TYPE_CHECKING:
    from lockgate.state._backend import KeyedStateBackend

T = TypeVar("T")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Returned by a backend's ``get`` for a key that holds no value (None is a value a state may hold).
MISSING: Final = _Missing()

#: The namespace of state that is not scoped to a window.
DEFAULT_NAMESPACE: Final = None


class ValueState(Generic[T]):
    """One value per key. Every call acts on the key of the record being processed.

    ``value()`` of a key without a value is the descriptor's default (a fresh copy each time);
    ``update(None)`` is ``clear()``. The ``*_nowait`` forms do the same without an await, on backends
    whose state is local (heap and RocksDB): the fast form for hot paths.

    Handles are created by the backend (``ctx.get_state`` asks it), so a backend can hand out a
    handle specialised for its storage; this one goes through the backend interface.
    """

    __slots__ = ("_backend", "_descriptor", "_name")

    def __init__(self, backend: KeyedStateBackend, descriptor: ValueStateDescriptor[T]) -> None:
        self._backend = backend
        self._descriptor = descriptor
        self._name = descriptor.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} of {self._backend.operator_uid!r}>"

    async def value(self) -> T:
        """The current key's value, or the default."""
        backend = self._backend
        value = await backend.get(self._name, backend.current_key, DEFAULT_NAMESPACE)
        return self._descriptor.fresh_default() if value is MISSING else value

    async def update(self, value: T | None) -> None:
        """Set the current key's value; None clears it."""
        backend = self._backend
        if value is None:
            await backend.delete(self._name, backend.current_key, DEFAULT_NAMESPACE)
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
