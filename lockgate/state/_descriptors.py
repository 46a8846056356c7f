"""State descriptors: the name, kind and default of a piece of state, declared in ``open()``."""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar, overload

from lockgate.state._serializers import DEFAULT_SERIALIZER, Serializer

T = TypeVar("T")

# Defaults of these types are immutable, so value() may hand out the descriptor's own object.
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset)


class ValueStateDescriptor(Generic[T]):
    """Declares a keyed :class:`ValueState`: one value per key (and namespace).

    Args:
        name: The state's name, unique within its operator. Checkpoints map state by operator uid and
            this name, so keep it stable across versions of a job.
        default: What ``value()`` returns for a key that has no value (None if not given). Each call
            gets a fresh copy, so a mutable default (a list, a dict) is never shared between keys.
        serializer: How values become bytes (in RocksDB, checkpoints and savepoints); pickle by default.

    The value type follows the default: ``ValueStateDescriptor("total", default=0)`` declares
    ``ValueState[int]``.
    """

    __slots__ = ("default", "name", "serializer")

    @overload
    def __init__(
        self: ValueStateDescriptor[Any], name: str, *, serializer: Serializer[Any] | None = None
    ) -> None: ...

    @overload
    def __init__(self, name: str, default: T, *, serializer: Serializer[Any] | None = None) -> None: ...

    def __init__(self, name: str, default: Any = None, *, serializer: Serializer[Any] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a state name must be a non-empty str, got {name!r}")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise TypeError(f"serializer must be a lockgate Serializer, got {serializer!r}")
        self.name = name
        self.default: T = default
        self.serializer: Serializer[Any] = serializer or DEFAULT_SERIALIZER

    def __repr__(self) -> str:
        return f"ValueStateDescriptor({self.name!r}, default={self.default!r})"

    def fresh_default(self) -> T:
        """The default value, copied unless it is immutable."""
        default = self.default
        if isinstance(default, _IMMUTABLE):
            return default
        return copy.deepcopy(default)

    @property
    def kind(self) -> str:
        """The kind of state the descriptor declares."""
        return "value"
