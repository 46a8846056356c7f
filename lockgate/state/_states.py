"""State objects: what a user function holds and calls, scoped to the current key and namespace.

Every method of a state object exists twice: ``m()`` to await, and ``m_nowait()`` that does the same
without an await on backends whose state is local (heap and RocksDB), for hot paths. The logic of each
method is written once, as a pure step from what is stored to what is returned and what to store
instead; the two forms differ only in how they reach the backend.

What a backend's ``get`` returns belongs to the state object: it may change it and store it back.
A backend whose live objects are shared with a snapshot must hand out copies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from lockgate.state._descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from lockgate.state._keygroups import check_key

if TYPE_CHECKING:
    from lockgate.state._backend import KeyedStateBackend

T = TypeVar("T")
K = TypeVar("K")
IN = TypeVar("IN")
OUT = TypeVar("OUT")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Returned by a backend's ``get`` for a key that holds no value (None is a value a state may hold).
MISSING: Final = _Missing()

#: The namespace of state that is not scoped to a window.
DEFAULT_NAMESPACE: Final = None


class _Keep:
    __slots__ = ()


#: A step's replacement meaning "store nothing new".
_KEEP: Final = _Keep()


@dataclass(frozen=True, slots=True)
class TtlValue:
    """A stored value with the time its time to live counts from (seconds since the epoch)."""

    value: Any
    timestamp: float


class _Ttl:
    """The TTL rules of one state, applied to one stored entry at a time."""

    __slots__ = ("clock", "return_expired", "seconds", "update_on_read")

    def __init__(self, config: StateTtlConfig, clock: Callable[[], float]) -> None:
        self.seconds = config.ttl_seconds
        self.update_on_read = config.update_type is StateTtlConfig.UpdateType.OnReadAndWrite
        self.return_expired = config.visibility is StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp
        self.clock = clock

    def expired(self, entry: TtlValue, now: float) -> bool:
        return now >= entry.timestamp + self.seconds


def _check_elements(values: Iterable[Any] | None, method: str) -> list[Any]:
    if values is None:
        raise TypeError(f"{method}() takes a list of values, got None; use clear() to empty the state")
    return list(values)


class State(Generic[T]):
    """The base of every state object: access to the stored value of the current key in its state
    and namespace."""

    __slots__ = ("_backend", "_descriptor", "_name", "_ttl", "namespace")

    def __init__(self, backend: KeyedStateBackend, descriptor: StateDescriptor[Any]) -> None:
        self._backend = backend
        self._descriptor = descriptor
        self._name = descriptor.name
        self._ttl = None if descriptor.ttl is None else _Ttl(descriptor.ttl, backend.clock)
        self.namespace: Any = DEFAULT_NAMESPACE

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} of {self._backend.operator_uid!r}>"

    async def _load(self) -> Any:
        backend = self._backend
        return await backend.get(self._name, backend.current_key, self.namespace)

    def _load_nowait(self) -> Any:
        backend = self._backend
        return backend.get_nowait(self._name, backend.current_key, self.namespace)

    async def _apply(self, replacement: Any) -> None:
        if replacement is _KEEP:
            return
        backend = self._backend
        if replacement is MISSING:
            await backend.delete(self._name, backend.current_key, self.namespace)
        else:
            await backend.put(self._name, backend.current_key, self.namespace, replacement)

    def _apply_nowait(self, replacement: Any) -> None:
        if replacement is _KEEP:
            return
        backend = self._backend
        if replacement is MISSING:
            backend.delete_nowait(self._name, backend.current_key, self.namespace)
        else:
            backend.put_nowait(self._name, backend.current_key, self.namespace, replacement)

    async def clear(self) -> None:
        """Remove the current key's state."""
        await self._apply(MISSING)

    def clear_nowait(self) -> None:
        """:meth:`clear` without an await (local backends only)."""
        self._apply_nowait(MISSING)

    # ---- one stored entry under TTL: (visible value or MISSING, replacement entry)

    def _read_entry(self, entry: Any, now: float) -> tuple[Any, Any]:
        ttl = self._ttl
        if ttl is None or entry is MISSING:
            return entry, _KEEP
        if ttl.expired(entry, now):
            return (entry.value if ttl.return_expired else MISSING), MISSING
        if ttl.update_on_read:
            return entry.value, TtlValue(entry.value, now)
        return entry.value, _KEEP

    def _unexpired(self, entry: Any, now: float) -> Any:
        """The entry's value, or MISSING if it expired: what a write builds on, whatever the visibility."""
        ttl = self._ttl
        if ttl is None or entry is MISSING:
            return entry
        return MISSING if ttl.expired(entry, now) else entry.value

    def _wrap(self, value: Any, now: float) -> Any:
        return value if self._ttl is None else TtlValue(value, now)

    def _now(self) -> float:
        return 0.0 if self._ttl is None else self._ttl.clock()


class _SingleValueState(State[T]):
    """A state that stores one entry per key: value, reducing and aggregating state."""

    __slots__ = ()

    def _visible(self, stored: Any) -> tuple[Any, Any]:
        return self._read_entry(stored, self._now())


class ValueState(_SingleValueState[T]):
    """One value per key.

    ``value()`` of a key without a value is the descriptor's default (a fresh copy each time);
    ``update(None)`` is ``clear()``.
    """

    __slots__ = ()
    _descriptor: ValueStateDescriptor[T]

    def _value(self, stored: Any) -> tuple[T, Any]:
        value, replacement = self._visible(stored)
        return (self._descriptor.fresh_default() if value is MISSING else value), replacement

    def _updated(self, value: T | None) -> Any:
        return MISSING if value is None else self._wrap(value, self._now())

    async def value(self) -> T:
        """The current key's value, or the default."""
        value, replacement = self._value(await self._load())
        await self._apply(replacement)
        return value

    def value_nowait(self) -> T:
        """:meth:`value` without an await (local backends only)."""
        value, replacement = self._value(self._load_nowait())
        self._apply_nowait(replacement)
        return value

    async def update(self, value: T | None) -> None:
        """Set the current key's value; None clears it."""
        await self._apply(self._updated(value))

    def update_nowait(self, value: T | None) -> None:
        """:meth:`update` without an await (local backends only)."""
        self._apply_nowait(self._updated(value))

    def map_batch_nowait(
        self,
        keys: Sequence[Any],
        records: Sequence[Any],
        step: Callable[[Any, T], tuple[Any, T | None]],
    ) -> list[Any]:
        """The outputs of ``output, new_value = step(record, value)`` for each record in order, with
        ``value`` its key's :meth:`value` and ``new_value`` stored as by :meth:`update` (local backends
        only). The runtime's loop for functions that take and give the state (``map_with_state``,
        ``reduce``); backends may run it without the calls per record. ``keys`` need not be checked
        (:func:`check_key`): each key is, at the latest when it is first stored."""
        backend = self._backend
        out: list[Any] = []
        append = out.append
        for key, record in zip(keys, records, strict=True):
            check_key(key)
            backend.current_key = key
            output, value = step(record, self.value_nowait())
            self.update_nowait(value)
            append(output)
        return out


class ReducingState(_SingleValueState[T]):
    """Keeps ``reduce_function(previous, value)`` of the values added for the current key.

    ``get()`` before any ``add`` (or after ``clear``) is None.
    """

    __slots__ = ()
    _descriptor: ReducingStateDescriptor[T]

    def _get(self, stored: Any) -> tuple[T | None, Any]:
        value, replacement = self._visible(stored)
        return (None if value is MISSING else value), replacement

    def _added(self, stored: Any, value: T) -> Any:
        now = self._now()
        previous = self._unexpired(stored, now)
        reduced = value if previous is MISSING else self._descriptor.reduce_function(previous, value)
        return self._wrap(reduced, now)

    async def get(self) -> T | None:
        """The reduced value, or None."""
        value, replacement = self._get(await self._load())
        await self._apply(replacement)
        return value

    def get_nowait(self) -> T | None:
        """:meth:`get` without an await (local backends only)."""
        value, replacement = self._get(self._load_nowait())
        self._apply_nowait(replacement)
        return value

    async def add(self, value: T) -> None:
        """Reduce ``value`` into the state."""
        await self._apply(self._added(await self._load(), value))

    def add_nowait(self, value: T) -> None:
        """:meth:`add` without an await (local backends only)."""
        self._apply_nowait(self._added(self._load_nowait(), value))


class AggregatingState(_SingleValueState[Any], Generic[IN, OUT]):
    """Folds the values added for the current key into an accumulator with an
    :class:`~lockgate.AggregateFunction`; ``get()`` is its result, or None before any ``add``."""

    __slots__ = ()
    _descriptor: AggregatingStateDescriptor[IN, Any, OUT]

    def _get(self, stored: Any) -> tuple[OUT | None, Any]:
        accumulator, replacement = self._visible(stored)
        if accumulator is MISSING:
            return None, replacement
        return self._descriptor.aggregate_function.get_result(accumulator), replacement

    def _added(self, stored: Any, value: IN) -> Any:
        now = self._now()
        function = self._descriptor.aggregate_function
        accumulator = self._unexpired(stored, now)
        if accumulator is MISSING:
            accumulator = function.create_accumulator()
        return self._wrap(function.add(value, accumulator), now)

    async def get(self) -> OUT | None:
        """The aggregate's result, or None."""
        value, replacement = self._get(await self._load())
        await self._apply(replacement)
        return value

    def get_nowait(self) -> OUT | None:
        """:meth:`get` without an await (local backends only)."""
        value, replacement = self._get(self._load_nowait())
        self._apply_nowait(replacement)
        return value

    async def add(self, value: IN) -> None:
        """Fold ``value`` into the accumulator."""
        await self._apply(self._added(await self._load(), value))

    def add_nowait(self, value: IN) -> None:
        """:meth:`add` without an await (local backends only)."""
        self._apply_nowait(self._added(self._load_nowait(), value))


class ListState(State[T]):
    """A list per key, in insertion order; elements may be None.

    ``get()`` returns a new list (``[]`` when empty); ``add_all([])`` does nothing; ``update([])``
    empties; a None list argument raises ``TypeError``. Under TTL each element expires on its own.
    """

    __slots__ = ()

    def _live(self, stored: Any) -> tuple[list[Any], Any]:
        """The visible elements, and the replacement that drops expired ones (or refreshes)."""
        if stored is MISSING:
            return [], _KEEP
        if self._ttl is None:
            return list(stored), _KEEP
        now = self._now()
        visible: list[Any] = []
        kept: list[TtlValue] = []
        changed = False
        for entry in stored:
            value, replacement = self._read_entry(entry, now)
            if value is not MISSING:
                visible.append(value)
            if replacement is _KEEP:
                kept.append(entry)
            else:
                changed = True
                if replacement is not MISSING:
                    kept.append(replacement)
        if not changed:
            return visible, _KEEP
        return visible, (kept or MISSING)

    def _extended(self, stored: Any, values: list[Any]) -> Any:
        if not values:
            return _KEEP
        now = self._now()
        elements = [] if stored is MISSING else stored
        elements.extend(self._wrap(value, now) for value in values)
        return elements

    def _replaced(self, values: list[Any]) -> Any:
        now = self._now()
        return [self._wrap(value, now) for value in values] or MISSING

    async def get(self) -> list[T]:
        """The current key's elements."""
        values, replacement = self._live(await self._load())
        await self._apply(replacement)
        return values

    def get_nowait(self) -> list[T]:
        """:meth:`get` without an await (local backends only)."""
        values, replacement = self._live(self._load_nowait())
        self._apply_nowait(replacement)
        return values

    async def add(self, value: T) -> None:
        """Append one element."""
        await self._apply(self._extended(await self._load(), [value]))

    def add_nowait(self, value: T) -> None:
        """:meth:`add` without an await (local backends only)."""
        self._apply_nowait(self._extended(self._load_nowait(), [value]))

    async def add_all(self, values: Iterable[T]) -> None:
        """Append every element of ``values``."""
        elements = _check_elements(values, "add_all")
        await self._apply(self._extended(await self._load(), elements))

    def add_all_nowait(self, values: Iterable[T]) -> None:
        """:meth:`add_all` without an await (local backends only)."""
        elements = _check_elements(values, "add_all")
        self._apply_nowait(self._extended(self._load_nowait(), elements))

    async def update(self, values: Iterable[T]) -> None:
        """Replace the elements by ``values``; ``[]`` empties the state."""
        await self._apply(self._replaced(_check_elements(values, "update")))

    def update_nowait(self, values: Iterable[T]) -> None:
        """:meth:`update` without an await (local backends only)."""
        self._apply_nowait(self._replaced(_check_elements(values, "update")))


class MapState(State[T], Generic[K, T]):
    """A map per key. ``get(missing)`` is None, and None is a value (``contains`` tells them apart).

    ``keys()``, ``values()`` and ``items()`` are async iterators (empty, never None) over the entries
    as they were when iteration began; changing the map while iterating it is not supported. Under
    TTL each entry expires on its own.
    """

    __slots__ = ()

    def _live(self, stored: Any) -> tuple[dict[Any, Any], Any]:
        """The visible entries, and the replacement that drops expired ones (or refreshes)."""
        if stored is MISSING:
            return {}, _KEEP
        if self._ttl is None:
            return dict(stored), _KEEP
        now = self._now()
        visible: dict[Any, Any] = {}
        kept: dict[Any, Any] = {}
        changed = False
        for user_key, entry in stored.items():
            value, replacement = self._read_entry(entry, now)
            if value is not MISSING:
                visible[user_key] = value
            if replacement is _KEEP:
                kept[user_key] = entry
            else:
                changed = True
                if replacement is not MISSING:
                    kept[user_key] = replacement
        if not changed:
            return visible, _KEEP
        return visible, (kept or MISSING)

    def _lookup(self, stored: Any, user_key: K) -> tuple[Any, Any]:
        """The visible value of one entry (MISSING if absent), and the map to store instead."""
        if stored is MISSING or user_key not in stored:
            return MISSING, _KEEP
        value, replacement = self._read_entry(stored[user_key], self._now())
        if replacement is _KEEP:
            return value, _KEEP
        if replacement is MISSING:
            del stored[user_key]
            return value, (stored or MISSING)
        stored[user_key] = replacement
        return value, stored

    def _put(self, stored: Any, entries: Iterable[tuple[K, T]]) -> Any:
        now = self._now()
        updated = {} if stored is MISSING else stored
        for user_key, value in entries:
            updated[user_key] = self._wrap(value, now)
        return updated or _KEEP

    def _removed(self, stored: Any, user_key: K) -> Any:
        if stored is MISSING or user_key not in stored:
            return _KEEP
        del stored[user_key]
        return stored or MISSING

    async def get(self, user_key: K) -> T | None:
        """The value of ``user_key``, or None."""
        value, replacement = self._lookup(await self._load(), user_key)
        await self._apply(replacement)
        return None if value is MISSING else value

    def get_nowait(self, user_key: K) -> T | None:
        """:meth:`get` without an await (local backends only)."""
        value, replacement = self._lookup(self._load_nowait(), user_key)
        self._apply_nowait(replacement)
        return None if value is MISSING else value

    async def contains(self, user_key: K) -> bool:
        """Whether ``user_key`` has a value (None included)."""
        value, replacement = self._lookup(await self._load(), user_key)
        await self._apply(replacement)
        return value is not MISSING

    def contains_nowait(self, user_key: K) -> bool:
        """:meth:`contains` without an await (local backends only)."""
        value, replacement = self._lookup(self._load_nowait(), user_key)
        self._apply_nowait(replacement)
        return value is not MISSING

    async def put(self, user_key: K, value: T) -> None:
        """Set the value of ``user_key``."""
        await self._apply(self._put(await self._load(), [(user_key, value)]))

    def put_nowait(self, user_key: K, value: T) -> None:
        """:meth:`put` without an await (local backends only)."""
        self._apply_nowait(self._put(self._load_nowait(), [(user_key, value)]))

    async def put_all(self, entries: Mapping[K, T]) -> None:
        """Set every entry of ``entries``."""
        await self._apply(self._put(await self._load(), list(entries.items())))

    def put_all_nowait(self, entries: Mapping[K, T]) -> None:
        """:meth:`put_all` without an await (local backends only)."""
        self._apply_nowait(self._put(self._load_nowait(), list(entries.items())))

    async def remove(self, user_key: K) -> None:
        """Remove ``user_key``; removing an absent key does nothing."""
        await self._apply(self._removed(await self._load(), user_key))

    def remove_nowait(self, user_key: K) -> None:
        """:meth:`remove` without an await (local backends only)."""
        self._apply_nowait(self._removed(self._load_nowait(), user_key))

    async def is_empty(self) -> bool:
        """Whether the map has no entry."""
        return not await self.to_dict()

    def is_empty_nowait(self) -> bool:
        """:meth:`is_empty` without an await (local backends only)."""
        return not self.to_dict_nowait()

    async def to_dict(self) -> dict[K, T]:
        """A copy of the map as a dict."""
        entries, replacement = self._live(await self._load())
        await self._apply(replacement)
        return entries

    def to_dict_nowait(self) -> dict[K, T]:
        """:meth:`to_dict` without an await (local backends only)."""
        entries, replacement = self._live(self._load_nowait())
        self._apply_nowait(replacement)
        return entries

    async def items(self) -> AsyncIterator[tuple[K, T]]:
        """Every ``(key, value)`` entry."""
        for item in (await self.to_dict()).items():
            yield item

    async def keys(self) -> AsyncIterator[K]:
        """Every key."""
        for user_key in await self.to_dict():
            yield user_key

    async def values(self) -> AsyncIterator[T]:
        """Every value."""
        for value in (await self.to_dict()).values():
            yield value


#: The state object class of each kind of state.
STATE_TYPES: Final[dict[str, type[State[Any]]]] = {
    ValueStateDescriptor.kind: ValueState,
    ListStateDescriptor.kind: ListState,
    MapStateDescriptor.kind: MapState,
    ReducingStateDescriptor.kind: ReducingState,
    AggregatingStateDescriptor.kind: AggregatingState,
}
