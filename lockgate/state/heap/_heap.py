"""The heap state backend: live keyed state in Python dicts, snapshotted copy-on-write, in full or
incrementally (see :mod:`lockgate.state.heap._incremental`)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import AsyncIterator, Callable, Sequence
from operator import itemgetter
from typing import Any, Final, TypeVar

from lockgate._errors import CheckpointError, ConfigurationError
from lockgate.snapshots import SharedStateHandle
from lockgate.state._backend import _PLAIN_TYPES, KeyedStateBackend, S, StateBackend
from lockgate.state._descriptors import StateDescriptor, ValueStateDescriptor
from lockgate.state._keygroups import CANONICAL_KEY_TYPES, KeyGroupRange, check_key
from lockgate.state._serializers import PickleSerializer
from lockgate.state._snapshot import (
    Entry,
    SnapshotResources,
    stores_whole,
)
from lockgate.state._states import DEFAULT_NAMESPACE, MISSING, ValueState
from lockgate.state._timers import TimerQueue
from lockgate.state.heap._cow import ABSENT, TOMBSTONE, CowTable, frozen_get
from lockgate.state.heap._snapshots import (
    DROPPED,
    ChangeSets,
    _HeapSnapshotResources,
    _IncrementalHeapSnapshotResources,
)
from lockgate.state.heap._timers import HeapTimerQueue

T = TypeVar("T")

_KEY, _NAMESPACE, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)
_DEFAULT_ONLY: Final = {DEFAULT_NAMESPACE}

#: An incremental chain holds a full base and at most this many links in all, by default.
DEFAULT_MAX_CHAIN_LENGTH: Final = 8
# Change sets kept while no checkpoint is confirmed (savepoints only, or failing checkpoints): past
# this many, they are dropped and the next incremental snapshot is a full base.
_MAX_TRACKED_SNAPSHOTS = 64


class HeapKeyedStateBackend(KeyedStateBackend):
    """Keyed state of one subtask in copy-on-write tables: ``tables[state][namespace]``.

    The table of the default namespace of each state lives as long as the backend, so state objects
    can hold it. Snapshots freeze every table in O(1) (see :mod:`lockgate.state.heap._cow`).

    With ``incremental``, tables track their changes, and a checkpoint writes what changed since the
    last checkpoint this backend knows complete, chained to that checkpoint's links; every
    ``max_chain_length`` links it writes a full base again.
    """

    supports_nowait = True
    holds_timers = True

    def __init__(
        self,
        operator_uid: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        *,
        incremental: bool = False,
        max_chain_length: int = DEFAULT_MAX_CHAIN_LENGTH,
    ) -> None:
        super().__init__(operator_uid, key_group_range, max_parallelism)
        self._tables: dict[str, dict[Any, CowTable]] = {}
        self.incremental = incremental
        self.max_chain_length = max_chain_length
        #: A delta that would name at least this share of the entries is written as a new base instead.
        self.rebase_fraction = 0.5
        # Incremental snapshots: each snapshot's change sets since the confirmed checkpoint, in order;
        # the chain written for each checkpoint; the newest confirmed checkpoint and its chain.
        self._changes: list[tuple[int, ChangeSets]] = []
        self._written: dict[int, tuple[SharedStateHandle, ...]] = {}
        self._confirmed: tuple[int, tuple[SharedStateHandle, ...]] | None = None
        # Window namespaces whose tables may be empty, and those dropped since the last snapshot.
        self._maybe_empty: set[tuple[str, Any]] = set()
        self._dropped: list[tuple[str, Any]] = []
        # Queries as of the last completed checkpoint: while keeping_views, each snapshot pins the
        # views of the default namespace's tables; the completed checkpoint's views answer them.
        self._pinned: dict[int, dict[str, tuple[dict[Any, Any], ...]]] = {}
        self._checkpoint_views: dict[str, tuple[dict[Any, Any], ...]] = {}

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}: {sum(map(len, spaces.values()))} entries" for name, spaces in self._tables.items()
        )
        return f"<HeapKeyedStateBackend {self.operator_uid!r} [{sizes}]>"

    def _create_state(self, descriptor: StateDescriptor[Any]) -> None:
        self._tables.setdefault(descriptor.name, {DEFAULT_NAMESPACE: CowTable(self.incremental)})

    def create_state(
        self, descriptor: StateDescriptor[Any], state_type: type[S], *, namespaced: bool = False
    ) -> S:
        state = super().create_state(descriptor, state_type, namespaced=namespaced)
        if not namespaced and isinstance(descriptor, ValueStateDescriptor) and descriptor.ttl is None:
            # Without TTL a value is stored as is: the state object can reach its table directly.
            table = self._tables[descriptor.name][DEFAULT_NAMESPACE]
            return HeapValueState(self, descriptor, table)  # type: ignore[return-value]
        return state

    def _create_timer_queue(self, domain: str) -> TimerQueue:
        """A heap over the timers' copy-on-write table (see :mod:`lockgate.state.heap._timers`)."""
        descriptor, restored = self._register_timers(domain)
        return HeapTimerQueue(self._tables[descriptor.name][DEFAULT_NAMESPACE], restored.values())

    def _restore_state(self, descriptor: StateDescriptor[Any], groups: dict[int, list[Entry]]) -> None:
        if not (
            stores_whole(descriptor)
            and descriptor.kind not in ("list", "map")
            and type(descriptor.serializer) is PickleSerializer
        ):
            super()._restore_state(descriptor, groups)
            return
        # A value written by the default serializer alone: unpickle straight into the tables, a key
        # group of the default namespace at a time in C-level loops.
        top = self._tables[descriptor.name][DEFAULT_NAMESPACE].top
        loads = pickle.loads
        for entries in groups.values():
            if set(map(_NAMESPACE, entries)) <= _DEFAULT_ONLY:
                top.update(zip(map(_KEY, entries), map(loads, map(_VALUE, entries)), strict=True))
                continue
            for key, namespace, data in entries:  # entries of other namespaces (windows, say) too
                self.put_nowait(descriptor.name, key, namespace, loads(data))

    def _restore_values(self, descriptor: StateDescriptor[Any], spaces: dict[Any, dict[Any, Any]]) -> None:
        # The values as they were stored: the dicts become the tables (they are this backend's).
        tables = self._tables[descriptor.name]
        for namespace, values in spaces.items():
            table = tables.get(namespace)
            if table is None:
                table = tables[namespace] = CowTable(self.incremental)
            if table.top or table.frozen:
                table.top.update(values)
            else:
                table.top = values

    def get_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        table = self._tables[state].get(namespace)
        return MISSING if table is None else table.get(key)

    def query_reader(self, state: str) -> Callable[[Any], Any]:
        descriptor = self._queried(state)
        if descriptor.kind != "value" or descriptor.ttl is not None or state in self.namespaced_states:
            return super().query_reader(state)
        # A plain value state: its default table lives as long as the state (HeapValueState holds
        # it). CowTable.peek inlined: this is the whole of an in-process query's read.
        table = self._tables[state][DEFAULT_NAMESPACE]

        def read(key: Any) -> Any:
            value = table.top.get(key, ABSENT)
            if value is ABSENT and table.frozen:
                value = frozen_get(table.frozen, key)
            if value is ABSENT or value is TOMBSTONE:
                return None
            return value if type(value) in _PLAIN_TYPES else copy.deepcopy(value)

        return read

    def namespaces_of(self, state: str, key: Any) -> list[Any]:
        return [namespace for namespace in self._tables[state] if namespace is not DEFAULT_NAMESPACE]

    def peek_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        table = self._tables[state].get(namespace)
        return MISSING if table is None else table.peek(key)

    def put_nowait(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        spaces = self._tables[state]
        table = spaces.get(namespace)
        if table is None:
            table = spaces[namespace] = CowTable(self.incremental)
        table.put(key, value)

    def delete_nowait(self, state: str, key: Any, namespace: Any) -> None:
        spaces = self._tables[state]
        table = spaces.get(namespace)
        if table is None:
            return
        table.delete(key)
        if namespace is not DEFAULT_NAMESPACE:
            # A window's namespace empties when the window goes: drop its table, or snapshots would
            # freeze one more empty table per window ever seen.
            if not table.frozen and not table.top:
                del spaces[namespace]
            else:
                self._maybe_empty.add((state, namespace))

    def _drop_empty_tables(self) -> None:
        """Drop the tables of namespaces that emptied while a snapshot held them, or that track
        changes; an incremental backend remembers each, so the next delta says it is gone."""
        for name, namespace in self._maybe_empty:
            spaces = self._tables.get(name)
            table = None if spaces is None else spaces.get(namespace)
            if table is None or table.holds or next(table.items(), None) is not None:
                continue
            del spaces[namespace]  # type: ignore[union-attr]
            if self.incremental:
                self._dropped.append((name, namespace))
        self._maybe_empty = {
            (name, namespace)
            for name, namespace in self._maybe_empty
            if namespace in self._tables.get(name, {})
        }

    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        return self.get_nowait(state, key, namespace)

    async def read_checkpoint_view(self, state: str, key: Any) -> Any:
        layers = self._checkpoint_views.get(state)  # None: the state was registered after that checkpoint
        value = ABSENT if layers is None else frozen_get(layers, key)
        return MISSING if value is ABSENT or value is TOMBSTONE else value

    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self.put_nowait(state, key, namespace, value)

    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        self.delete_nowait(state, key, namespace)

    async def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        table = self._tables[state].get(namespace)
        for item in [] if table is None else list(table.items()):
            yield item

    def snapshot_sync(self, checkpoint_id: int = 0) -> SnapshotResources:
        """Freeze every table: O(number of tables), whatever the number of entries."""
        if self._maybe_empty:
            self._drop_empty_tables()
        views = {
            name: [(namespace, table, table.freeze()) for namespace, table in spaces.items()]
            for name, spaces in self._tables.items()
        }
        if self.keeping_views and checkpoint_id:
            pinned = self._pinned[checkpoint_id] = {}
            for name, spaces in views.items():
                for namespace, table, layers in spaces:
                    if namespace is DEFAULT_NAMESPACE:
                        table.pins.append(layers)
                        pinned[name] = layers
        if not self.incremental:
            return _HeapSnapshotResources(self, views, self.clock())
        changes: ChangeSets = {
            (name, namespace): layers[-1] if len(layers) > 1 else None
            for name, spaces in views.items()
            for namespace, _, layers in spaces
        }
        for dropped in self._dropped:  # gone since the last snapshot: a delta replaces it with nothing
            changes[dropped] = DROPPED
        self._dropped = []
        if len(self._changes) >= _MAX_TRACKED_SNAPSHOTS:
            # Nothing written so far can be built on any more: the changes since are partly gone.
            self._changes.clear()
            self._written.clear()
            self._confirmed = None
        self._changes.append((checkpoint_id, changes))
        return _IncrementalHeapSnapshotResources(self, views, self.clock(), checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        pinned = self._pinned.pop(checkpoint_id, None)
        if pinned is not None:
            for name, layers in pinned.items():
                self._tables[name][DEFAULT_NAMESPACE].unpin_before(layers)
            self._pinned = {cid: views for cid, views in self._pinned.items() if cid > checkpoint_id}
            self._checkpoint_views = pinned
            self.publish_checkpoint_view(checkpoint_id)
        chain = self._written.get(checkpoint_id)
        if chain is None:
            return  # not a checkpoint this backend wrote incrementally (a savepoint, say)
        self._confirmed = (checkpoint_id, chain)
        self._written = {cid: links for cid, links in self._written.items() if cid > checkpoint_id}
        self._changes = [(cid, sets) for cid, sets in self._changes if cid > checkpoint_id]

    def _plan_increment(self, checkpoint_id: int) -> tuple[tuple[SharedStateHandle, ...], list[ChangeSets]]:
        """What checkpoint ``checkpoint_id`` builds on: the links of the confirmed checkpoint and the
        change sets of every snapshot since, up to its own; no links when it must be a full base."""
        confirmed = self._confirmed
        if confirmed is not None and confirmed[0] >= checkpoint_id:
            raise CheckpointError(f"checkpoint {confirmed[0]} completed first; it subsumes this one")
        if confirmed is None or len(confirmed[1]) >= self.max_chain_length:
            return (), []
        sets: list[ChangeSets] = []
        for cid, changes in self._changes:
            sets.append(changes)
            if cid == checkpoint_id:
                return confirmed[1], sets
        return (), []  # its change sets were dropped: write it whole


class HeapValueState(ValueState[T]):
    """A value state that reads and writes its table's top layer directly: one dict lookup per
    access and no await, except for the first access of a key after a snapshot froze the table."""

    __slots__ = ("_table",)

    def __init__(
        self, backend: HeapKeyedStateBackend, descriptor: ValueStateDescriptor[T], table: CowTable
    ) -> None:
        super().__init__(backend, descriptor)
        self._table = table

    # The awaitable forms repeat the bodies of the *_nowait ones: one call less on the hot path.

    async def value(self) -> T:
        key = self._backend.current_key
        value = self._table.top.get(key, ABSENT)
        if value is ABSENT or value is TOMBSTONE:
            value = self._table.get(key)
            if value is MISSING:
                return self._descriptor.fresh_default()
        return value  # type: ignore[no-any-return]

    async def update(self, value: T | None) -> None:
        if value is None:
            self._table.delete(self._backend.current_key)
        else:
            self._table.top[self._backend.current_key] = value

    async def clear(self) -> None:
        self._table.delete(self._backend.current_key)

    def value_nowait(self) -> T:
        # Inline on purpose: this is the hot path of every keyed function.
        key = self._backend.current_key
        value = self._table.top.get(key, ABSENT)
        if value is ABSENT or value is TOMBSTONE:
            value = self._table.get(key)
            if value is MISSING:
                return self._descriptor.fresh_default()
        return value  # type: ignore[no-any-return]

    def update_nowait(self, value: T | None) -> None:
        if value is None:
            self._table.delete(self._backend.current_key)
        else:
            self._table.top[self._backend.current_key] = value

    def clear_nowait(self) -> None:
        self._table.delete(self._backend.current_key)

    def map_batch_nowait(
        self,
        keys: Sequence[Any],
        records: Sequence[Any],
        step: Callable[[Any, T], tuple[Any, T | None]],
    ) -> list[Any]:
        # value_nowait and update_nowait inline, without setting the current key: the step sees only
        # the record and the value. The top layer stays the same dict for the whole batch (snapshots
        # freeze it between batches); reads of frozen keys and deletes go through the table.
        table = self._table
        top = table.top
        get = top.get
        fresh_default = self._descriptor.fresh_default
        out: list[Any] = []
        append = out.append
        key: Any = None
        try:
            for key, record in zip(keys, records, strict=True):
                value = get(key, ABSENT)
                if value is ABSENT or value is TOMBSTONE:
                    if type(key) not in CANONICAL_KEY_TYPES:  # keys the table holds were checked
                        check_key(key)
                    value = table.get(key)
                    if value is MISSING:
                        value = fresh_default()
                output, value = step(record, value)
                if value is None:
                    table.delete(key)
                else:
                    top[key] = value
                append(output)
        except TypeError:
            check_key(key)  # an unhashable key fails its lookup before its check: say what is wrong
            raise
        return out


class HeapStateBackend(StateBackend):
    """Keeps live keyed state on the Python heap: the fastest backend, bounded by memory.

    Args:
        incremental: Whether checkpoints write only what changed since the previous complete one
            (a chain of a full base and deltas; savepoints are always whole).
        max_chain_length: With ``incremental``, the most links (a base and its deltas) a restore
            replays: every this many checkpoints, a full base is written again.

    Raises:
        ConfigurationError: An argument of the wrong type or out of range.
    """

    def __init__(
        self, *, incremental: bool = False, max_chain_length: int = DEFAULT_MAX_CHAIN_LENGTH
    ) -> None:
        super().__init__()
        if not isinstance(incremental, bool):
            raise ConfigurationError(f"incremental must be True or False, got {incremental!r}")
        if type(max_chain_length) is not int or max_chain_length < 1:
            raise ConfigurationError(
                f"max_chain_length is the most links of an incremental chain, an int of at least 1, "
                f"got {max_chain_length!r}"
            )
        self.incremental = incremental
        self.max_chain_length = max_chain_length

    def __repr__(self) -> str:
        if not self.incremental:
            return "HeapStateBackend()"
        return f"HeapStateBackend(incremental=True, max_chain_length={self.max_chain_length})"

    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> KeyedStateBackend:
        return HeapKeyedStateBackend(
            operator_uid,
            key_group_range,
            max_parallelism,
            incremental=self.incremental,
            max_chain_length=self.max_chain_length,
        )
