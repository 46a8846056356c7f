"""Map and list state in RocksDB, one RocksDB entry per map entry or list element: a read, a write, a
removal or an add touches one entry, reading the whole scans a prefix lazily, clearing deletes a range
(see ``_EntrySpace``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.lowlevel

from lockgate.state._states import MISSING, ListState, MapState, _check_elements
from lockgate.state.rocksdb._encoding import _PLAIN, _decode_key, _stored_key
from lockgate.state.rocksdb._store import _EntrySpace, _ListSpace, _MapSpace

if TYPE_CHECKING:
    from lockgate.state.rocksdb._keyed import RocksDBKeyedStateBackend

K = TypeVar("K")
T = TypeVar("T")

#: How many entries a long iteration reads before it lets the event loop run.
_YIELD_EVERY = 1024


class RocksDBMapState(MapState[K, T]):
    """A map state of the RocksDB backend that reaches single entries, never the whole map."""

    __slots__ = ()

    def _map(self) -> tuple[_MapSpace, Any]:
        backend: RocksDBKeyedStateBackend = self._backend  # type: ignore[assignment]
        space = backend._space(self._name, self.namespace)
        assert isinstance(space, _MapSpace)
        return space, backend.current_key

    def _entry(self, user_key: K) -> Any:
        """The visible value of ``user_key`` (MISSING if absent or expired), expired entries removed
        and, where the TTL says so, the entry's timestamp refreshed."""
        space, key = self._map()
        element = space.get(key, user_key)
        if element is MISSING or self._ttl is None:
            return element
        value, replacement = self._read_entry(element, self._now())
        space.settle(space.entry_key(key, user_key), key, user_key, replacement)
        return value

    def _visible(self) -> Iterator[tuple[K, T]]:
        """The visible entries, read lazily; expired ones are removed as they are met."""
        space, key = self._map()
        if self._ttl is None:
            yield from space.entries(key)
            return
        now = self._now()
        for entry_key, user_key, element in space.scan(key):
            value, replacement = self._read_entry(element, now)
            space.settle(entry_key, key, user_key, replacement)
            if value is not MISSING:
                yield user_key, value

    def get_nowait(self, user_key: K) -> T | None:
        value = self._entry(user_key)
        return None if value is MISSING else value

    def contains_nowait(self, user_key: K) -> bool:
        return self._entry(user_key) is not MISSING

    def put_nowait(self, user_key: K, value: T) -> None:
        space, key = self._map()
        space.put(key, user_key, self._wrap(value, self._now()))

    def put_all_nowait(self, entries: Mapping[K, T]) -> None:
        space, key = self._map()
        now = self._now()
        for user_key, value in entries.items():
            space.put(key, user_key, self._wrap(value, now))

    def remove_nowait(self, user_key: K) -> None:
        space, key = self._map()
        space.remove(key, user_key)

    def clear_nowait(self) -> None:
        space, key = self._map()
        space.clear(key)

    def is_empty_nowait(self) -> bool:
        if self._ttl is not None:
            # Reading under TTL cleans up (and may refresh) every entry it meets, as on the heap:
            # stopping at the first visible one would leave the rest to differ from it.
            return not self.to_dict_nowait()
        return next(self._visible(), None) is None  # reads at most one entry

    def to_dict_nowait(self) -> dict[K, T]:
        return dict(self._visible())

    async def get(self, user_key: K) -> T | None:
        return self.get_nowait(user_key)

    async def contains(self, user_key: K) -> bool:
        return self.contains_nowait(user_key)

    async def put(self, user_key: K, value: T) -> None:
        self.put_nowait(user_key, value)

    async def put_all(self, entries: Mapping[K, T]) -> None:
        self.put_all_nowait(entries)

    async def remove(self, user_key: K) -> None:
        self.remove_nowait(user_key)

    async def clear(self) -> None:
        self.clear_nowait()

    async def is_empty(self) -> bool:
        return self.is_empty_nowait()

    async def to_dict(self) -> dict[K, T]:
        return self.to_dict_nowait()

    async def items(self) -> AsyncIterator[tuple[K, T]]:
        for count, item in enumerate(self._visible(), 1):
            yield item
            if count % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()  # a long iteration leaves the loop room

    async def keys(self) -> AsyncIterator[K]:
        async for user_key, _ in self.items():
            yield user_key

    async def values(self) -> AsyncIterator[T]:
        async for _, value in self.items():
            yield value


class RocksDBListState(ListState[T]):
    """A list state of the RocksDB backend: an add writes one entry, never reading the list."""

    __slots__ = ()

    def _list(self) -> tuple[_ListSpace, Any]:
        backend: RocksDBKeyedStateBackend = self._backend  # type: ignore[assignment]
        space = backend._space(self._name, self.namespace)
        assert isinstance(space, _ListSpace)
        return space, backend.current_key

    def get_nowait(self) -> list[T]:
        space, key = self._list()
        if self._ttl is None:
            return [element for _, element in space.elements(key)]
        now = self._now()
        visible: list[T] = []
        for entry_key, element in space.elements(key):
            value, replacement = self._read_entry(element, now)
            space.settle(entry_key, key, None, replacement)
            if value is not MISSING:
                visible.append(value)
        return visible

    def add_nowait(self, value: T) -> None:
        space, key = self._list()
        space.add(key, self._wrap(value, self._now()))

    def add_all_nowait(self, values: Iterable[T]) -> None:
        elements = _check_elements(values, "add_all")
        space, key = self._list()
        now = self._now()
        for value in elements:
            space.add(key, self._wrap(value, now))

    def update_nowait(self, values: Iterable[T]) -> None:
        elements = _check_elements(values, "update")
        space, key = self._list()
        space.clear(key)
        now = self._now()
        for value in elements:
            space.add(key, self._wrap(value, now))

    def clear_nowait(self) -> None:
        space, key = self._list()
        space.clear(key)

    async def get(self) -> list[T]:
        return self.get_nowait()

    async def add(self, value: T) -> None:
        self.add_nowait(value)

    async def add_all(self, values: Iterable[T]) -> None:
        self.add_all_nowait(values)

    async def update(self, values: Iterable[T]) -> None:
        self.update_nowait(values)

    async def clear(self) -> None:
        self.clear_nowait()


async def _whole_values(space: _EntrySpace) -> AsyncIterator[tuple[Any, Any]]:
    """Every ``(key, whole value)`` of a map or list state in the namespace of ``space`` (a dict or a
    list of elements), the open batch's writes included: the backend's ``items``, which hands whole
    values out."""
    keys: dict[bytes, Any] = {}
    ns_bytes = space.ns_bytes
    iterator = space.cf.iter(space.store.read_all)
    iterator.seek_to_first()
    while iterator.valid():
        entry_key: bytes = iterator.key()
        key, end = _decode_key(entry_key, 2)
        if entry_key[end : end + len(ns_bytes)] == ns_bytes:
            prefix = entry_key[: end + len(ns_bytes)]
            if prefix not in keys:
                stored_key = _stored_key(iterator.value())
                keys[prefix] = key if stored_key is _PLAIN else stored_key
        iterator.next()
    del iterator  # before the first yield: see _EntrySpace.scan
    for entry_key, (key, *_) in (space.writes or {}).items():
        keys.setdefault(entry_key[: len(space.key_bytes(key))], key)
    for count, key in enumerate(keys.values(), 1):
        whole = space.read(key)
        if whole is not MISSING:
            yield key, whole
        if count % _YIELD_EVERY == 0:
            await anyio.lowlevel.checkpoint()
