"""State descriptors: the name, kind, serializer and TTL of a piece of state, declared in ``open()``."""

from __future__ import annotations

import copy
import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

from lockgate.state._serializers import DEFAULT_SERIALIZER, Serializer

T = TypeVar("T")
IN = TypeVar("IN")
ACC = TypeVar("ACC")
OUT = TypeVar("OUT")

# Defaults of these types are immutable, so value() may hand out the descriptor's own object.
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset)


@dataclass(frozen=True)
class StateTtlConfig:
    """Time to live of keyed state: entries older than ``ttl_seconds`` expire.

    List elements and map entries expire one by one. Expired entries are removed when they are
    accessed and left out of snapshots.

    Args:
        ttl_seconds: How long an entry lives after its timestamp was last set.
        update_type: When the timestamp is set: on create and write (default), or on read too.
        visibility: Whether an expired entry that is still stored may be returned once.
    """

    class UpdateType(enum.Enum):
        """When an entry's timestamp is refreshed."""

        OnCreateAndWrite = "on_create_and_write"
        OnReadAndWrite = "on_read_and_write"

    class StateVisibility(enum.Enum):
        """Whether reads may return an expired entry that was not cleaned up yet."""

        NeverReturnExpired = "never_return_expired"
        ReturnExpiredIfNotCleanedUp = "return_expired_if_not_cleaned_up"

    ttl_seconds: float
    update_type: StateTtlConfig.UpdateType = UpdateType.OnCreateAndWrite
    visibility: StateTtlConfig.StateVisibility = StateVisibility.NeverReturnExpired

    def __post_init__(self) -> None:
        if not isinstance(self.ttl_seconds, int | float) or not self.ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be a positive number, got {self.ttl_seconds!r}")
        if not isinstance(self.update_type, StateTtlConfig.UpdateType):
            raise ValueError(f"update_type must be a StateTtlConfig.UpdateType, got {self.update_type!r}")
        if not isinstance(self.visibility, StateTtlConfig.StateVisibility):
            raise ValueError(f"visibility must be a StateTtlConfig.StateVisibility, got {self.visibility!r}")


class AggregateFunction(ABC, Generic[IN, ACC, OUT]):
    """Aggregates values into an accumulator (for :class:`AggregatingStateDescriptor`)."""

    @abstractmethod
    def create_accumulator(self) -> ACC:
        """A new, empty accumulator."""

    @abstractmethod
    def add(self, value: IN, accumulator: ACC) -> ACC:
        """The accumulator with ``value`` added; may update ``accumulator`` in place and return it."""

    @abstractmethod
    def get_result(self, accumulator: ACC) -> OUT:
        """The result of an accumulator."""

    @abstractmethod
    def merge(self, a: ACC, b: ACC) -> ACC:
        """One accumulator holding both (used when windows merge)."""


class StateDescriptor(Generic[T]):
    """What every descriptor has: a name, a serializer and an optional TTL.

    Args:
        name: The state's name, unique within its operator. Checkpoints map state by operator uid and
            this name, so keep it stable across versions of a job.
        serializer: How values (list elements, map values) become bytes in RocksDB, checkpoints and
            savepoints; pickle by default.
        ttl: The state's time to live, or None for state that never expires.
    """

    kind: ClassVar[str] = "abstract"
    __slots__ = ("name", "queryable_as", "serializer", "ttl")

    def __init__(
        self, name: str, *, serializer: Serializer[Any] | None = None, ttl: StateTtlConfig | None = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a state name must be a non-empty str, got {name!r}")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise TypeError(f"serializer must be a lockgate Serializer, got {serializer!r}")
        if ttl is not None and not isinstance(ttl, StateTtlConfig):
            raise TypeError(f"ttl must be a StateTtlConfig, got {ttl!r}")
        self.name = name
        self.serializer: Serializer[Any] = serializer or DEFAULT_SERIALIZER
        self.ttl = ttl
        #: The public name under which the job server answers queries of this state (None: not over HTTP).
        self.queryable_as: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def queryable(self, name: str) -> Self:
        """Make this state reachable from outside the job under the public ``name`` (the job server's
        ``/api/state/{name}``); in-process queries (``job.query_state``) reach every keyed state.

        Raises:
            ValueError: Not a non-empty str.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a queryable state's public name must be a non-empty str, got {name!r}")
        self.queryable_as = name
        return self


class ValueStateDescriptor(StateDescriptor[T]):
    """Declares a keyed :class:`ValueState`: one value per key (and namespace).

    ``default`` is what ``value()`` returns for a key that has no value (None if not given). Each
    call gets a fresh copy, so a mutable default (a list, a dict) is never shared between keys. The
    value type follows the default: ``ValueStateDescriptor("total", default=0)`` declares
    ``ValueState[int]``.
    """

    kind = "value"
    __slots__ = ("default",)

    @overload
    def __init__(
        self: ValueStateDescriptor[Any],
        name: str,
        *,
        serializer: Serializer[Any] | None = None,
        ttl: StateTtlConfig | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        default: T,
        *,
        serializer: Serializer[Any] | None = None,
        ttl: StateTtlConfig | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        default: Any = None,
        *,
        serializer: Serializer[Any] | None = None,
        ttl: StateTtlConfig | None = None,
    ) -> None:
        super().__init__(name, serializer=serializer, ttl=ttl)
        self.default: T = default

    def __repr__(self) -> str:
        return f"ValueStateDescriptor({self.name!r}, default={self.default!r})"

    def fresh_default(self) -> T:
        """The default value, copied unless it is immutable."""
        default = self.default
        if isinstance(default, _IMMUTABLE):
            return default
        return copy.deepcopy(default)


class ListStateDescriptor(StateDescriptor[T]):
    """Declares a keyed :class:`ListState` (elements of type ``T``); also operator list state."""

    kind = "list"
    __slots__ = ()


class MapStateDescriptor(StateDescriptor[T]):
    """Declares a keyed :class:`MapState` (values of type ``T``); also broadcast state.

    Map keys must be of the types that keys of a stream may have (see ``key_by``), so that every
    backend can store them canonically.
    """

    kind = "map"
    __slots__ = ()


class ReducingStateDescriptor(StateDescriptor[T]):
    """Declares a keyed :class:`ReducingState`: ``add(v)`` keeps ``reduce_function(old, v)``."""

    kind = "reducing"
    __slots__ = ("reduce_function",)

    def __init__(
        self,
        name: str,
        reduce_function: Callable[[T, T], T],
        *,
        serializer: Serializer[Any] | None = None,
        ttl: StateTtlConfig | None = None,
    ) -> None:
        if not callable(reduce_function):
            raise TypeError(f"reduce_function must be a function of two values, got {reduce_function!r}")
        super().__init__(name, serializer=serializer, ttl=ttl)
        self.reduce_function = reduce_function


class AggregatingStateDescriptor(StateDescriptor[T], Generic[IN, T, OUT]):
    """Declares a keyed :class:`AggregatingState`: ``add(v)`` folds ``v`` into an accumulator of type
    ``T`` with ``aggregate_function``; ``get()`` returns its result. The serializer writes accumulators.
    """

    kind = "aggregating"
    __slots__ = ("aggregate_function",)

    def __init__(
        self,
        name: str,
        aggregate_function: AggregateFunction[IN, T, OUT],
        *,
        serializer: Serializer[Any] | None = None,
        ttl: StateTtlConfig | None = None,
    ) -> None:
        if not isinstance(aggregate_function, AggregateFunction):
            raise TypeError(
                f"aggregate_function must be an instance of lg.AggregateFunction, got {aggregate_function!r}"
            )
        super().__init__(name, serializer=serializer, ttl=ttl)
        self.aggregate_function = aggregate_function
