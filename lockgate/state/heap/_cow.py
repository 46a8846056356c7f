"""Copy-on-write tables: the heap backend's live state, snapshotted in O(1).

A table is a stack of dict layers. Writes go to the top layer only. A snapshot freezes the stack as
it is (a tuple of references, O(1)) and starts a new, empty top layer; the frozen layers are never
changed while a snapshot holds them, so a snapshot sees exactly the state of its moment, however
long it takes to write away. When no snapshot holds them any more, the layers are merged back into
one dict, which costs O(entries changed since the freeze).

State objects may change what they read in place (a list they append to), so a value read from a frozen
layer is first copied into the top layer: copy-on-write of each touched entry, once per snapshot.

A table that ``tracks_changes`` (incremental snapshots) never merges its top layer down: once
frozen, it keeps a base layer below a top layer that holds exactly what was written, read for
change or deleted (as tombstones) since the last freeze. Each frozen top is then the change set of
one snapshot, which an incremental snapshot writes instead of the whole table.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Final

from lockgate.state._states import MISSING


class _Tombstone:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TOMBSTONE"


#: In a layer above others: the key was deleted since the layers below were frozen.
TOMBSTONE: Final = _Tombstone()

#: What a layer lookup returns for a key it does not hold.
ABSENT: Final = object()
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset)


def _own_copy(value: Any) -> Any:
    if isinstance(value, _IMMUTABLE):
        return value
    if type(value) is tuple and all(isinstance(item, _IMMUTABLE) for item in value):
        return value
    return copy.deepcopy(value)


class CowTable:
    """The entries ``key -> value`` of one state and namespace."""

    __slots__ = ("frozen", "holds", "pins", "top", "tracks_changes")

    def __init__(self, tracks_changes: bool = False) -> None:
        self.top: dict[Any, Any] = {}
        self.frozen: tuple[dict[Any, Any], ...] = ()  # oldest first
        self.holds = 0  # snapshots that hold the frozen layers
        self.tracks_changes = tracks_changes
        #: Views (as :meth:`freeze` returned them) kept readable for queries, oldest first: a merge
        #: then only folds the layers of the oldest into its base layer, which leaves every view's
        #: answers as they were (see :meth:`_merge`).
        self.pins: list[tuple[dict[Any, Any], ...]] = []

    def __repr__(self) -> str:
        return f"<CowTable [{len(self.frozen) + 1} layers, {self.holds} snapshots holding]>"

    def __len__(self) -> int:
        if not self.frozen:
            return len(self.top)
        return sum(1 for _ in self.items())

    def get(self, key: Any) -> Any:
        """The value of ``key`` (the table's own copy, free to change), or MISSING."""
        value = self.top.get(key, ABSENT)
        if value is ABSENT:
            return self._get_frozen(key) if self.frozen else MISSING
        return MISSING if value is TOMBSTONE else value

    def peek(self, key: Any) -> Any:
        """The value of ``key`` as the table holds it (do not change it), or MISSING; unlike
        :meth:`get` it leaves the layers as they are."""
        value = self.top.get(key, ABSENT)
        if value is ABSENT and self.frozen:
            value = frozen_get(self.frozen, key)
        return MISSING if value is ABSENT or value is TOMBSTONE else value

    def _get_frozen(self, key: Any) -> Any:
        value = frozen_get(self.frozen, key)
        if value is ABSENT or value is TOMBSTONE:
            return MISSING
        copied = _own_copy(value)
        # An immutable value needs no copy; a table that tracks changes then leaves its top layer
        # alone, so that reading a key does not count as changing it.
        if copied is not value or not self.tracks_changes:
            self.top[key] = copied
        return copied

    def put(self, key: Any, value: Any) -> None:
        self.top[key] = value

    def delete(self, key: Any) -> None:
        if self.frozen:
            self.top[key] = TOMBSTONE
        else:
            self.top.pop(key, None)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every live entry, without copying: do not change the values."""
        return _merged_items((*self.frozen, self.top))

    def freeze(self) -> tuple[dict[Any, Any], ...]:
        """Freeze the table as it is now for a snapshot; O(1). Call :meth:`release` when done."""
        layers = (*self.frozen, self.top)
        self.frozen = layers
        self.top = {}
        self.holds += 1
        return layers

    def release(self) -> None:
        """A snapshot no longer needs its layers; merge them once none does (into the base layer,
        which is never a change set that an incremental snapshot still reads: see the module)."""
        self.holds -= 1
        if self.holds or not self.frozen:
            return
        self._merge()

    def unpin_before(self, view: tuple[dict[Any, Any], ...]) -> None:
        """Stop keeping the pinned views older than ``view`` (itself pinned), and merge what that
        lets merge."""
        position = next(i for i, pinned in enumerate(self.pins) if pinned is view)
        del self.pins[:position]
        if not self.holds and self.frozen:
            self._merge()

    def _merge(self) -> None:
        pins = self.pins
        if pins:
            # Only layers of the oldest pinned view fold into its base layer: each view searches its
            # own layers newest first, so what they add to the base is hidden under themselves in
            # every view that holds them, which every newer view does. Layers above stay.
            oldest = {id(layer) for layer in pins[0]}
            frozen = self.frozen
            depth = 1
            while depth < len(frozen) and id(frozen[depth]) in oldest:
                depth += 1
            if id(frozen[0]) not in oldest or depth == 1:
                return
            base = frozen[0]
            for layer in frozen[1:depth]:
                for key, value in layer.items():
                    if value is TOMBSTONE:
                        base.pop(key, None)
                    else:
                        base[key] = value
            self.frozen = (base, *frozen[depth:])
            return
        base = self.frozen[0]
        above = self.frozen[1:] if self.tracks_changes else (*self.frozen[1:], self.top)
        for layer in above:
            for key, value in layer.items():
                if value is TOMBSTONE:
                    base.pop(key, None)
                else:
                    base[key] = value
        if self.tracks_changes:
            self.frozen = (base,)
        else:
            self.top = base
            self.frozen = ()


def _merged_items(layers: tuple[dict[Any, Any], ...]) -> Iterator[tuple[Any, Any]]:
    if len(layers) == 1:
        yield from layers[0].items()
        return
    seen: set[Any] = set()
    for layer in reversed(layers):
        for key, value in layer.items():
            if key in seen:
                continue
            seen.add(key)
            if value is not TOMBSTONE:
                yield key, value


def frozen_get(layers: tuple[dict[Any, Any], ...], key: Any) -> Any:
    """The value of ``key`` in frozen layers, the newest first: TOMBSTONE if deleted, ABSENT if never
    there. The value is the layer's own: do not change it."""
    for layer in reversed(layers):
        value = layer.get(key, ABSENT)
        if value is not ABSENT:
            return value
    return ABSENT


def frozen_items(layers: tuple[dict[Any, Any], ...]) -> Iterator[tuple[Any, Any]]:
    """The entries of a frozen view, as returned by :meth:`CowTable.freeze`."""
    return _merged_items(layers)
