"""Snapshots of a heap backend: the frozen copy-on-write layers of its tables, read whole in a worker
thread, or written incrementally as a chain of a base and deltas (see ``_incremental``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from lockgate._errors import StateSerializationError
from lockgate._threads import run_sync
from lockgate.state._keygroups import key_groups_of
from lockgate.state._snapshot import (
    Entry,
    IncrementalKeyedState,
    IncrementalSnapshotResources,
    KeyedStateSnapshot,
    SharedStateWriter,
    SnapshotResources,
    StateCodec,
    StateMetaInfo,
    encode_table,
    pickle_snapshot,
    stores_whole,
    table_holds_values,
)
from lockgate.state._states import MISSING
from lockgate.state._timers import TIMER_KIND, encode_timestamp
from lockgate.state.heap._cow import ABSENT, TOMBSTONE, CowTable, frozen_get, frozen_items
from lockgate.state.heap._incremental import HeapChainManifest, KeyedStateDelta

if TYPE_CHECKING:
    from lockgate.state.heap._heap import HeapKeyedStateBackend

#: In a change set: the namespace's table was dropped (it emptied) since the snapshot before.
DROPPED: Final[dict[Any, Any]] = {}

#: One snapshot's change sets: the top layer it froze, by (state, namespace); None for a table
#: frozen for the first time, whose every entry counts as changed; DROPPED for a dropped table.
ChangeSets = dict[tuple[str, Any], dict[Any, Any] | None]


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
        # Timers are entries whatever their serializer: several timers of one key and namespace are
        # several entries, which tables (one value per key and namespace) cannot hold.
        self._timers = {name for name in views if backend.descriptors[name].kind == TIMER_KIND}
        self._whole = {
            name: stores_whole(backend.descriptors[name]) and name not in self._timers for name in views
        }
        # Whole states whose tables hold their codec's bytes, and how each value is encoded.
        self._encoders = {
            name: self._codecs[name].encoder
            for name in views
            if self._whole[name] and not table_holds_values(self._metas[name].serializer)
        }
        self._unclaimed = backend.unclaimed_restored_state()
        self._released = False

    def materialize(self) -> KeyedStateSnapshot:
        backend = self._backend
        max_parallelism = backend.max_parallelism
        entries: dict[str, dict[int, list[Entry]]] = {}
        tables: dict[str, dict[Any, dict[Any, Any]]] = {}
        for name, spaces in self._views.items():
            if self._whole[name]:
                tables[name] = {
                    namespace: self._table(name, _merged_copy(layers)) for namespace, _, layers in spaces
                }
                continue
            if name in self._timers:
                entries[name] = _timer_groups(
                    (timer for _, _, layers in spaces for timer, _ in frozen_items(layers)), max_parallelism
                )
                continue
            codec = self._codecs[name]
            encode, prune, now = codec.encode, codec.prune if codec.ttl is not None else None, self._now
            alive: dict[Any, dict[Any, Any]] = {}
            for namespace, _, layers in spaces:
                table = alive[namespace] = {}
                for key, stored in frozen_items(layers):
                    if prune is not None:
                        stored = prune(stored, now)
                        if stored is MISSING:
                            continue
                    table[key] = stored
            entries[name] = _entry_groups(alive, encode, max_parallelism, backend.operator_uid, name)
        return backend.with_unclaimed_restored_state(
            KeyedStateSnapshot(
                backend.operator_uid, max_parallelism, backend.key_group_range, self._metas, entries, tables
            ),
            self._unclaimed,
        )

    def _table(self, name: str, values: dict[Any, Any]) -> dict[Any, Any]:
        """A whole state's table as the snapshot holds it: the values, or their codec's bytes."""
        encode = self._encoders.get(name)
        if encode is None:
            return values
        return encode_table(values, encode, self._backend.operator_uid, name)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        for spaces in self._views.values():
            for _, table, _ in spaces:
                table.release()


class _IncrementalHeapSnapshotResources(_HeapSnapshotResources, IncrementalSnapshotResources):
    def __init__(
        self,
        backend: HeapKeyedStateBackend,
        views: dict[str, list[tuple[Any, CowTable, tuple[dict[Any, Any], ...]]]],
        now: float,
        checkpoint_id: int,
    ) -> None:
        super().__init__(backend, views, now)
        self._checkpoint_id = checkpoint_id

    async def write_incremental(self, writer: SharedStateWriter) -> IncrementalKeyedState:
        backend = self._backend
        links, change_sets = backend._plan_increment(self._checkpoint_id)
        if links and self._mostly_changed(change_sets):
            links = ()  # a delta nearly as large as the state: a new base costs less, and restores faster
        if links:
            handle = await writer.write("delta", await run_sync(self._delta_bytes, change_sets))
        else:
            handle = await writer.write("base", await run_sync(self._base_bytes))
        chain = (*links, handle)
        backend._written[self._checkpoint_id] = chain
        return IncrementalKeyedState(HeapChainManifest(backend.operator_uid, chain), chain)

    def _mostly_changed(self, change_sets: list[ChangeSets]) -> bool:
        """Whether the change sets name at least ``rebase_fraction`` of the entries the view holds (an
        estimate: a key changed in several snapshots counts once in each)."""
        changed = sum(len(keys) for changes in change_sets for keys in changes.values() if keys is not None)
        held = sum(len(layers[0]) for spaces in self._views.values() for _, _, layers in spaces)
        return changed >= self._backend.rebase_fraction * held

    def _base_bytes(self) -> bytes:
        base = self.materialize()
        return pickle_snapshot(base, base.tables, self._backend.operator_uid)

    def _delta_bytes(self, change_sets: list[ChangeSets]) -> bytes:
        delta = self.delta(change_sets)
        return pickle_snapshot(delta, delta.tables, self._backend.operator_uid)

    def delta(self, change_sets: list[ChangeSets]) -> KeyedStateDelta:
        """The entries that ``change_sets`` name, as this view holds them (or their removal)."""
        max_parallelism = self._backend.max_parallelism
        entries: dict[str, dict[int, list[Entry]]] = {}
        tables: dict[str, dict[Any, dict[Any, Any]]] = {}
        removed: dict[str, list[tuple[Any, ...]]] = {}
        replaced: dict[str, list[Any]] = {}
        metas: dict[str, StateMetaInfo] = {}
        for name, spaces in self._views.items():
            if name in self._timers:
                self._timer_delta(name, spaces, change_sets, metas, entries, removed, replaced)
                continue
            whole = self._whole[name]
            codec = self._codecs[name]
            prune = codec.prune if codec.ttl is not None else None
            gone: list[tuple[Any, ...]] = []
            changed: dict[Any, dict[Any, Any]] = {}
            for namespace, _, layers in spaces:
                sets = [changes.get((name, namespace), {}) for changes in change_sets]
                if any(keys is None for keys in sets):  # a table new since: all of it
                    replaced.setdefault(name, []).append(namespace)
                    items = dict(frozen_items(layers))
                else:
                    items = {}
                    for key in set().union(*(keys for keys in sets if keys)):
                        value = frozen_get(layers, key)
                        if value is ABSENT or value is TOMBSTONE:
                            gone.append((namespace, key))
                        else:
                            items[key] = value
                if prune is not None:
                    for key, stored in list(items.items()):
                        if prune(stored, self._now) is MISSING:
                            del items[key]
                            gone.append((namespace, key))
                if items:
                    changed[namespace] = items
            if not (changed or gone or name in replaced):
                continue
            metas[name] = self._metas[name]
            if gone:
                removed[name] = gone
            if whole:
                tables[name] = {namespace: self._table(name, items) for namespace, items in changed.items()}
                continue
            if prune is not None:
                changed = {
                    namespace: {key: prune(stored, self._now) for key, stored in items.items()}
                    for namespace, items in changed.items()
                }
            entries[name] = _entry_groups(
                changed, codec.encode, max_parallelism, self._backend.operator_uid, name
            )
        for changes in change_sets:  # namespaces dropped since, and not back: replaced by nothing
            for (name, namespace), keys in changes.items():
                if keys is not DROPPED or name not in self._metas:
                    continue
                if any(held == namespace for held, _, _ in self._views[name]):
                    continue
                gone_spaces = replaced.setdefault(name, [])
                if namespace not in gone_spaces:
                    gone_spaces.append(namespace)
                metas[name] = self._metas[name]
        return KeyedStateDelta(metas, entries, tables, removed, replaced)

    def _timer_delta(
        self,
        name: str,
        spaces: list[tuple[Any, CowTable, tuple[dict[Any, Any], ...]]],
        change_sets: list[ChangeSets],
        metas: dict[str, StateMetaInfo],
        entries: dict[str, dict[int, list[Entry]]],
        removed: dict[str, list[tuple[Any, ...]]],
        replaced: dict[str, list[Any]],
    ) -> None:
        """The timers added and removed since, of the timer state ``name``; all of them (and the state
        marked replaced) if its table is new since."""
        added: list[tuple[int, Any, Any]] = []
        gone: list[tuple[Any, ...]] = []
        whole = False
        for namespace, _, layers in spaces:  # one table: the timers' namespaces are in its keys
            sets = [changes.get((name, namespace), {}) for changes in change_sets]
            if any(timers is None for timers in sets):
                whole = True
                added.extend(timer for timer, _ in frozen_items(layers))
                continue
            for timer in set().union(*(timers for timers in sets if timers)):
                value = frozen_get(layers, timer)
                if value is ABSENT or value is TOMBSTONE:
                    timestamp, key, timer_namespace = timer
                    gone.append((timer_namespace, key, encode_timestamp(timestamp)))
                else:
                    added.append(timer)
        if not (added or gone or whole):
            return
        metas[name] = self._metas[name]
        if whole:
            replaced[name] = [namespace for namespace, _, _ in spaces]
        if gone:
            removed[name] = gone
        entries[name] = _timer_groups(added, self._backend.max_parallelism)


def _encoded(encode: Callable[[Any], bytes], stored: Any, operator_uid: str, state: str, key: Any) -> bytes:
    """``encode(stored)``; should the state's serializer refuse the value, the error names the state
    and the key."""
    try:
        return encode(stored)
    except Exception as exc:
        raise StateSerializationError(operator_uid, state, key, f"{type(exc).__name__}: {exc}") from exc


def _entry_groups(
    spaces: dict[Any, dict[Any, Any]],
    encode: Callable[[Any], bytes],
    max_parallelism: int,
    operator_uid: str,
    state: str,
) -> dict[int, list[Entry]]:
    """The stored values of ``spaces`` (``{namespace: {key: stored}}``) as snapshot entries, each
    encoded, by the key group of its key."""
    groups: defaultdict[int, list[Entry]] = defaultdict(list)
    for namespace, table in spaces.items():
        keys = list(table)
        for key, key_group, stored in zip(
            keys, key_groups_of(keys, max_parallelism), table.values(), strict=True
        ):
            groups[key_group].append((key, namespace, _encoded(encode, stored, operator_uid, state, key)))
    return dict(groups)


def _timer_groups(timers: Iterable[tuple[int, Any, Any]], max_parallelism: int) -> dict[int, list[Entry]]:
    """Timers as snapshot entries, ``(key, namespace, timestamp bytes)``, by the key group of the key."""
    timers = list(timers)
    groups: defaultdict[int, list[Entry]] = defaultdict(list)
    key_groups = key_groups_of([key for _, key, _ in timers], max_parallelism)
    for (timestamp, key, namespace), key_group in zip(timers, key_groups, strict=True):
        groups[key_group].append((key, namespace, encode_timestamp(timestamp)))
    return dict(groups)


def _merged_copy(layers: tuple[dict[Any, Any], ...]) -> dict[Any, Any]:
    """One dict of the live entries of frozen layers, built by C-level copies and updates."""
    merged = dict(layers[0])
    for layer in layers[1:]:
        merged.update(layer)
    if len(layers) > 1:
        for key in [key for key, value in merged.items() if value is TOMBSTONE]:
            del merged[key]
    return merged
