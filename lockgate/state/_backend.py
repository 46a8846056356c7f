"""The keyed state backend interface: one instance per keyed operator subtask.

A backend holds the keyed state of the key groups its subtask owns. Access is async, so a backend may
live anywhere; a local backend (heap, RocksDB) also answers synchronously through the ``*_nowait``
methods, which state objects use to skip an await on the hot path.

Every access names the state, the key and the namespace. The runtime sets :attr:`current_key` before
it hands a record to a keyed function; state objects read it, as Flink's ``setCurrentKey`` does.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from lockgate._errors import ConfigurationError, IncompatibleStateError, StateNotFoundError
from lockgate._threads import run_sync
from lockgate.state._descriptors import (
    _IMMUTABLE,
    AggregatingStateDescriptor,
    StateDescriptor,
    StateTtlConfig,
)
from lockgate.state._evolution import Reader, restore_reader
from lockgate.state._keygroups import KeyGroupRange, key_groups_of
from lockgate.state._snapshot import (
    Columns,
    Entry,
    KeyedStateManifest,
    KeyedStateSnapshot,
    PreparedKeyedState,
    SnapshotResources,
    StateCodec,
    StateEncoding,
    StateMetaInfo,
    encode_values,
    table_holds_values,
    unpack_columns,
)
from lockgate.state._states import DEFAULT_NAMESPACE, MISSING, STATE_TYPES, State
from lockgate.state._timers import TIMER_DOMAINS, TIMER_KIND, TimerQueue, TimerStateDescriptor

S = TypeVar("S", bound=State[Any])

#: Restored entries of states not registered yet: state name -> (meta info, key group -> entries).
RestoredEntries = dict[str, tuple[StateMetaInfo, dict[int, list[Entry]]]]
#: Restored plain values of states not registered yet: state name -> (meta info, namespace -> key ->
#: stored value), as ``KeyedStateSnapshot.tables`` holds them.
RestoredTables = dict[str, tuple[StateMetaInfo, dict[Any, dict[Any, Any]]]]
#: Restored plain values of states not registered yet, still by key group: state name -> (meta info,
#: key group -> namespace -> (keys, stored values)), a savepoint's packed tables unpickled.
RestoredGroups = dict[str, tuple[StateMetaInfo, dict[int, Columns]]]

#: Types whose values a query returns as they are (no copy can be changed by the caller).
_PLAIN_TYPES: frozenset[type] = frozenset(_IMMUTABLE)


@dataclass(frozen=True)
class PendingMigration:
    """Restored values of a registered state to migrate: encoded entries by key group; tables
    (``KeyedStateSnapshot.tables``) of the default serializer's values or of codec bytes, by
    namespace; or ``in_place``, what the backend already holds (a RocksDB database opened from a
    checkpoint)."""

    descriptor: StateDescriptor[Any]
    read: Reader
    groups: dict[int, list[Entry]] | None = None
    values: dict[Any, dict[Any, Any]] | None = None
    encoded: dict[Any, dict[Any, bytes]] | None = None
    in_place: bool = False


@dataclass(frozen=True)
class UnclaimedState:
    """Restored state that no function has registered yet, in the forms a restore holds it."""

    entries: RestoredEntries
    tables: RestoredTables
    groups: RestoredGroups = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entries or self.tables or self.groups)


class KeyedStateBackend(ABC):
    """Keyed state of one subtask, scoped to its key group range.

    Attributes:
        current_key: The key of the record being processed; state objects read and write under it.
        key_group_range: The key groups this subtask owns.
        max_parallelism: The number of key groups of the job.
        clock: Seconds since the epoch, as TTL counts them (tests may replace it).
    """

    #: Whether the ``*_nowait`` methods work. Backends whose state is remote set this to False.
    supports_nowait: bool = False
    #: Whether :meth:`timer_queue` works (timers of keyed functions and windows).
    holds_timers: bool = False

    def __init__(self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int) -> None:
        self.operator_uid = operator_uid
        self.key_group_range = key_group_range
        self.max_parallelism = max_parallelism
        self.current_key: Any = None
        self.clock: Callable[[], float] = time.time
        #: The descriptor of every registered state, by name.
        self.descriptors: dict[str, StateDescriptor[Any]] = {}
        # Restored state of states not registered yet, by state name: encoded entries, plain values.
        self._restored: RestoredEntries = {}
        self._restored_tables: RestoredTables = {}
        self._restored_groups: RestoredGroups = {}
        self._timer_queues: dict[str, TimerQueue] = {}
        # Registered states whose restored values need migrating to their new schema, and whether
        # the actor has migrated the pending ones (states registered later migrate at once).
        self._migrations: list[PendingMigration] = []
        self._migrated = False
        # Queries as of the last completed checkpoint: once asked for (keeping_views), each snapshot
        # keeps what it froze readable; the newest completed checkpoint's answers (views_id).
        #: States kept under other namespaces than the default (a window's contents, under each
        #: window): a query of one answers every namespace of the key.
        self.namespaced_states: set[str] = set()
        self.keeping_views = False
        self.views_id = 0
        self._views_ready: anyio.Event | None = None  # made by the first wait: it needs a loop

    def create_state(
        self, descriptor: StateDescriptor[Any], state_type: type[S], *, namespaced: bool = False
    ) -> S:
        """Register ``descriptor`` and return its state object, an instance of ``state_type``.

        Backends may override this to return a subclass specialised for their storage. With
        ``namespaced``, the caller sets the object's ``namespace`` (a window, say) before each use, so
        it must not be one bound to the default namespace.
        """
        self.register_state(descriptor)
        if STATE_TYPES[descriptor.kind] is not state_type:
            raise TypeError(f"{descriptor!r} declares {descriptor.kind} state, not {state_type.__name__}")
        if namespaced:
            self.namespaced_states.add(descriptor.name)
        return state_type(self, descriptor)

    def register_state(self, descriptor: StateDescriptor[Any]) -> None:
        """Declare a state; the same name may be declared again only with the same kind.

        Restored entries of the state are loaded now, with the serializer the descriptor names.
        """
        known = self.descriptors.get(descriptor.name)
        if known is not None and known.kind != descriptor.kind:
            raise ConfigurationError(
                f"operator {self.operator_uid!r} declares state {descriptor.name!r} as {descriptor.kind} "
                f"state, but it is already {known.kind} state; give each state its own name"
            )
        restored = self._restored.get(descriptor.name)
        values = self._restored_tables.get(descriptor.name)
        grouped = self._restored_groups.get(descriptor.name)
        # Resolved before anything is created or loaded: a refused state leaves the backend as it was.
        read = None if restored is None else self.check_restored_meta(restored[0], descriptor)
        read_values = None if values is None else self.check_restored_meta(values[0], descriptor)
        read_grouped = None if grouped is None else self.check_restored_meta(grouped[0], descriptor)
        self._create_state(descriptor)
        if known is None:
            self.descriptors[descriptor.name] = descriptor
        if restored is not None:
            del self._restored[descriptor.name]
            if read is None:
                self._restore_state(descriptor, restored[1])
            else:
                self._migrate_later(PendingMigration(descriptor, read, restored[1]))
        if values is not None:
            del self._restored_tables[descriptor.name]
            meta, spaces = values
            if not table_holds_values(meta.serializer):  # the codec's bytes
                if read_values is None:
                    self._restore_encoded(descriptor, spaces)
                else:
                    self._migrate_later(PendingMigration(descriptor, read_values, encoded=spaces))
            elif read_values is None:
                self._restore_values(descriptor, spaces)
            else:  # values the default serializer wrote, which a typed serializer takes over
                self._migrate_later(PendingMigration(descriptor, read_values, values=spaces))
        if grouped is not None:  # the default serializer's values as well, by key group
            del self._restored_groups[descriptor.name]
            if read_grouped is None:
                self._restore_grouped_values(descriptor, grouped[1])
            else:
                values_by_namespace = _by_namespace(grouped[1])
                self._migrate_later(PendingMigration(descriptor, read_grouped, values=values_by_namespace))

    def _migrate_later(self, migration: PendingMigration) -> None:
        if self._migrated:
            self._migrate(migration)  # registered after the actor migrated: now, before it is used
        else:
            self._migrations.append(migration)

    async def migrate_restored_state(self) -> None:
        """Migrate the restored values of the states registered so far whose schema changed, in a
        worker thread; the actor calls it once its functions are open, before any record.

        Raises:
            StateMigrationError: A value could not be migrated (nothing was overwritten).
        """
        self._migrated = True
        pending, self._migrations = self._migrations, []
        for migration in pending:
            await run_sync(self._migrate, migration)

    def _migrate(self, migration: PendingMigration) -> None:
        """Read every restored value of a state with its migrating reader and load the results.
        Runs in a worker thread, while the actor waits: nothing else touches the backend."""
        descriptor = migration.descriptor
        decode = StateCodec(descriptor, self.clock, migration.read).decoder
        spaces: dict[Any, dict[Any, Any]] = {}
        for entries in (migration.groups or {}).values():
            for key, namespace, data in entries:
                spaces.setdefault(namespace, {})[key] = decode(data)
        for namespace, table in (migration.encoded or {}).items():
            spaces.setdefault(namespace, {}).update(zip(table, map(decode, table.values()), strict=True))
        if migration.values:
            encode = StateCodec(StateEncoding(descriptor.kind), self.clock).encode
            for namespace, table in migration.values.items():
                target = spaces.setdefault(namespace, {})
                for key, value in table.items():
                    target[key] = decode(encode(value))
        self._restore_values(descriptor, spaces)

    def _restore_grouped_values(self, descriptor: StateDescriptor[Any], groups: dict[int, Columns]) -> None:
        """Load restored stored values of a state that has just been registered, by key group
        (``{key group: {namespace: (keys, stored values)}}``, a savepoint's packed tables), which its
        serializer (the default one) reads as they are."""
        self._restore_values(descriptor, _by_namespace(groups))

    def _restore_encoded(self, descriptor: StateDescriptor[Any], spaces: dict[Any, dict[Any, bytes]]) -> None:
        """Load restored tables of a state's codec bytes (``KeyedStateSnapshot.tables`` of a state
        another serializer than the default writes), which its serializer reads as they are."""
        decode = StateCodec(descriptor, self.clock).decoder
        self._restore_values(
            descriptor,
            {
                namespace: dict(zip(table, map(decode, table.values()), strict=True))
                for namespace, table in spaces.items()
            },
        )

    def query_nowait(self, state: str, key: Any, namespace: Any = DEFAULT_NAMESPACE) -> Any:
        """What a function reading ``state`` for ``key`` would see now (None if it has no value; a
        copy, so that the caller cannot change the state), without touching :attr:`current_key`: a
        list state's list, a map state's dict, an aggregating state's result; entries whose TTL has
        expired are left out unless the state returns them.

        Raises:
            StateNotFoundError: No such state; the message lists the states there are.
        """
        descriptor = self.descriptors.get(state)
        if descriptor is None or descriptor.kind == TIMER_KIND:
            descriptor = self._queried(state)  # raises, naming the states there are
        if state in self.namespaced_states:
            return self._query_namespaces(descriptor, key)
        stored = self.peek_nowait(state, key, namespace)
        if stored is MISSING:
            return None
        if type(stored) in _PLAIN_TYPES and descriptor.ttl is None and descriptor.kind != "aggregating":
            return stored  # the common case, without the general path's checks
        return self._as_read(descriptor, stored)

    def query_reader(self, state: str) -> Callable[[Any], Any]:
        """A function of a key that answers as ``query_nowait(state, key)`` does, for the hot path
        of live queries: backends specialise it where they can read a state more directly.

        Raises:
            StateNotFoundError: No such state; the message lists the states there are.
        """
        self._queried(state)
        return functools.partial(self.query_nowait, state)

    def _query_namespaces(self, descriptor: StateDescriptor[Any], key: Any) -> dict[Any, Any] | None:
        """A namespaced state's values of ``key`` as a query reads them, by namespace (a window's
        contents by window), None if it has none."""
        found = {}
        for namespace in self.namespaces_of(descriptor.name, key):
            stored = self.peek_nowait(descriptor.name, key, namespace)
            value = None if stored is MISSING else self._as_read(descriptor, stored)
            if value is not None:
                found[namespace] = value
        return found or None

    def namespaces_of(self, state: str, key: Any) -> Iterable[Any]:
        """The namespaces other than the default in which ``state`` may hold a value of ``key``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list a key's namespaces")

    def peek_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        """:meth:`get_nowait` without its side effects on the state's buffers (a cache filled, a
        value copied up a layer): what a query reads between two steps of the subtask."""
        return self.get_nowait(state, key, namespace)

    async def query_checkpoint(self, state: str, key: Any, at_least: int = 0) -> Any:
        """:meth:`query_nowait` as of the last completed checkpoint, once this backend knows of one
        numbered ``at_least`` or later: what the exactly-once sinks have shown. The first such query
        starts keeping each checkpoint's state readable, so it waits for the next one to complete.

        Raises:
            StateNotFoundError: No such state.
        """
        descriptor = self._queried(state)
        if state in self.namespaced_states:
            raise ConfigurationError(
                f"state {state!r} of {self.operator_uid!r} is kept per window (namespace): it is "
                "queried live only"
            )
        self.keep_checkpoint_views()
        while self.views_id == 0 or self.views_id < at_least:
            if self._views_ready is None:
                self._views_ready = anyio.Event()
            await self._views_ready.wait()
        return self._as_read(descriptor, await self.read_checkpoint_view(state, key))

    def keep_checkpoint_views(self) -> None:
        """From the next snapshot on, keep each checkpoint's state readable for
        :meth:`query_checkpoint` until the next one completes."""
        self.keeping_views = True

    def publish_checkpoint_view(self, checkpoint_id: int) -> None:
        """The views of checkpoint ``checkpoint_id`` answer from now on: wake the waiting queries."""
        self.views_id = checkpoint_id
        if self._views_ready is not None:
            self._views_ready.set()
            self._views_ready = None  # each wait takes a fresh one

    async def read_checkpoint_view(self, state: str, key: Any) -> Any:
        """The stored value of ``state`` for ``key`` (MISSING if none) in the views of checkpoint
        :attr:`views_id`: a backend that keeps views overrides this."""
        raise ConfigurationError(f"{type(self).__name__} answers 'live' queries only")

    def _queried(self, state: str) -> StateDescriptor[Any]:
        descriptor = self.descriptors.get(state)
        if descriptor is None or descriptor.kind == TIMER_KIND:
            states = sorted(name for name, known in self.descriptors.items() if known.kind != TIMER_KIND)
            raise StateNotFoundError(
                f"operator {self.operator_uid!r} has no keyed state {state!r}; it has {states}"
            )
        return descriptor

    def _as_read(self, descriptor: StateDescriptor[Any], stored: Any) -> Any:
        """A stored value as a function reads it (see :meth:`query_nowait`); None for MISSING."""
        if stored is MISSING:
            return None
        ttl = descriptor.ttl
        if ttl is not None:
            keep_expired = ttl.visibility is StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp
            limit = -math.inf if keep_expired else self.clock() - ttl.ttl_seconds
            if descriptor.kind == "list":
                stored = [entry.value for entry in stored if entry.timestamp > limit]
            elif descriptor.kind == "map":
                stored = {k: entry.value for k, entry in stored.items() if entry.timestamp > limit}
            elif stored.timestamp > limit:
                stored = stored.value
            else:
                return None
            if not stored and descriptor.kind in ("list", "map"):
                return None
        if isinstance(descriptor, AggregatingStateDescriptor):
            return descriptor.aggregate_function.get_result(copy.deepcopy(stored))
        return stored if isinstance(stored, _IMMUTABLE) else copy.deepcopy(stored)

    def timer_queue(self, domain: str) -> TimerQueue:
        """The timers of ``domain`` ("event" or "processing"): the same queue on every call.

        The timers are keyed state: the state named ``timer_state_name(domain)``, of kind
        ``TIMER_KIND``, snapshotted, restored and rescaled with the backend's other states. The first
        call registers that state and loads its restored timers (as registering a state loads its
        entries), so call it after :meth:`restore`. Firing a timer is the caller's: it sets
        :attr:`current_key` to the timer's key itself.

        Raises:
            ValueError: Another domain.
            ConfigurationError: The backend holds no timers.
        """
        queue = self._timer_queues.get(domain)
        if queue is None:
            if domain not in TIMER_DOMAINS:
                raise ValueError(f"timers are kept in the domains {TIMER_DOMAINS}, not {domain!r}")
            queue = self._timer_queues[domain] = self._create_timer_queue(domain)
        return queue

    def _create_timer_queue(self, domain: str) -> TimerQueue:
        """The queue of ``domain``, made once; backends that hold timers override it (with
        :meth:`_register_timers`)."""
        raise ConfigurationError(
            f"operator {self.operator_uid!r}: {type(self).__name__} holds no timers; use a heap or "
            "RocksDB state backend"
        )

    def _register_timers(self, domain: str) -> tuple[TimerStateDescriptor, dict[int, list[Entry]]]:
        """Register the state of ``domain``'s timers; its descriptor, and its restored entries (which
        the backend loads into the queue itself: several timers of a key and namespace are several
        entries, not one value)."""
        descriptor = TimerStateDescriptor(domain)
        restored = self._restored.get(descriptor.name)
        groups: dict[int, list[Entry]] = {}
        if restored is not None:
            meta, groups = restored
            self.check_restored_meta(meta, descriptor)
            del self._restored[descriptor.name]  # not through register_state's value by value
        self.register_state(descriptor)
        return descriptor, groups

    def check_restored_meta(self, meta: StateMetaInfo, descriptor: StateDescriptor[Any]) -> Reader | None:
        """Refuse to read restored state of another kind or TTL than ``descriptor``'s, or that its
        serializer cannot read; None if the restored bytes read as they are, else the function that
        migrates each value (see ``restore_reader``).

        Raises:
            IncompatibleStateError: It names the state, what it was saved as and what it is declared as.
        """
        uid, name = self.operator_uid, descriptor.name
        if meta.kind != descriptor.kind:
            raise IncompatibleStateError(
                uid,
                name,
                f"{meta.kind} state",
                f"{descriptor.kind} state",
                f"operator {uid!r} declares state {name!r} as {descriptor.kind} state, but it was "
                f"{meta.kind} state when it was saved; give the new state another name",
            )
        saved, declared = meta.serializer, descriptor.serializer.snapshot()
        if (meta.ttl is None) != (descriptor.ttl is None):
            old = f"{saved.describe()}, {'with' if meta.ttl is not None else 'without'} a TTL"
            new = f"{declared.describe()}, {'with' if descriptor.ttl is not None else 'without'} a TTL"
            raise IncompatibleStateError(
                uid,
                name,
                old,
                new,
                f"operator {uid!r}: state {name!r} was saved by {old.replace(', ', ' ', 1)}, and cannot be "
                f"read as declared now ({new}); declare it as it was, or give the new state another name",
            )
        return restore_reader(uid, name, saved, descriptor.serializer)

    def _restore_state(self, descriptor: StateDescriptor[Any], groups: dict[int, list[Entry]]) -> None:
        """Load the restored entries of a state that has just been registered, by key group.

        Its serializer reads them as they are and its TTL is theirs (``register_state`` checks; values
        to migrate go through :meth:`_migrate`).
        """
        codec = StateCodec(descriptor, self.clock)
        for entries in groups.values():
            for key, namespace, data in entries:
                self.put_nowait(descriptor.name, key, namespace, codec.decode(data))

    def _restore_values(self, descriptor: StateDescriptor[Any], spaces: dict[Any, dict[Any, Any]]) -> None:
        """Load restored stored values (``KeyedStateSnapshot.tables``, or migrated ones) of a state
        that has just been registered. The dicts are this backend's to keep."""
        name = descriptor.name
        for namespace, table in spaces.items():
            for key, value in table.items():
                self.put_nowait(name, key, namespace, value)

    def restore(self, snapshots: Iterable[KeyedStateSnapshot | PreparedKeyedState]) -> None:
        """Take the entries of this subtask's key groups from ``snapshots`` (of any parallelism).

        Call it before any state is registered; each state's entries load when it is registered.
        Prepared state (see :meth:`StateBackend.prepare_restore`) that this backend does not restore
        natively is resolved to entries.
        """
        if self.descriptors:
            raise RuntimeError("restore() must come before any state is registered")
        own = self.key_group_range
        for state in snapshots:
            if state.max_parallelism != self.max_parallelism:
                raise ConfigurationError(
                    f"operator {self.operator_uid!r}: the state was saved with max_parallelism "
                    f"{state.max_parallelism}, but the job has {self.max_parallelism}; key groups "
                    "only line up with the same max_parallelism, so keep it unchanged"
                )
            theirs = state.key_group_range
            shared = len(own.intersection(theirs))
            if not shared:
                continue  # none of its key groups are this subtask's
            snapshot = state.resolve() if isinstance(state, PreparedKeyedState) else state
            for name, groups in snapshot.entries.items():
                meta = snapshot.states[name]
                for group in itertools.islice(groups.values(), 1):
                    if group:
                        self._check_key_type(name, group[0][0])
                _, mine = self._restored.setdefault(name, (meta, {}))
                for key_group, entries in groups.items():
                    if key_group in own:
                        taken = mine.get(key_group)
                        # Each key group is in one snapshot: its list is taken as it is, not copied.
                        mine[key_group] = entries if taken is None else taken + entries
            # Packed key groups (a savepoint's): only those of this subtask's range are unpickled.
            for name, packs in snapshot.packed.items():
                _, taken_groups = self._restored_groups.setdefault(name, (snapshot.states[name], {}))
                checked = False
                for key_group, pack in packs.items():
                    if key_group not in own:
                        continue
                    columns = unpack_columns(pack)
                    if not checked:
                        for held_keys, _ in itertools.islice(columns.values(), 1):
                            for key in itertools.islice(held_keys, 1):
                                self._check_key_type(name, key)
                                checked = True
                    held_columns = taken_groups.get(key_group)
                    if held_columns is None:
                        taken_groups[key_group] = columns
                    else:  # a key group in two snapshots: never written so, but keep both
                        for namespace, (more_keys, more_values) in columns.items():
                            before = held_columns.get(namespace, ([], []))
                            held_columns[namespace] = (before[0] + more_keys, before[1] + more_values)
            # Plain values stay values: a subtask whose range holds the writer's whole range takes
            # them as they are; otherwise only the keys of its own key groups (hashed once each).
            whole = shared == len(theirs)
            max_parallelism = self.max_parallelism
            for name, spaces in snapshot.tables.items():
                for table in itertools.islice(spaces.values(), 1):
                    for key in itertools.islice(table, 1):
                        self._check_key_type(name, key)
                _, held = self._restored_tables.setdefault(name, (snapshot.states[name], {}))
                for namespace, table in spaces.items():
                    if whole:
                        picked = dict(table)  # this backend's own: the snapshot stays as it was
                    else:
                        key_groups = key_groups_of(list(table), max_parallelism)
                        picked = {
                            key: value
                            for (key, value), key_group in zip(table.items(), key_groups, strict=True)
                            if key_group in own
                        }
                    if namespace in held:
                        held[namespace].update(picked)
                    else:
                        held[namespace] = picked

    def _check_key_type(self, state: str, key: Any) -> None:
        """Refuse restored keys of a dataclass whose fields changed since (checked on one key per
        state and snapshot: one class wrote them all). A key cannot evolve: its canonical bytes, made
        of its fields, decide its key group.

        Raises:
            IncompatibleStateError: It names the class and both sets of fields.
        """
        if type(key) is tuple:
            for item in key:
                self._check_key_type(state, item)
            return
        held = getattr(key, "__dict__", None)
        if not dataclasses.is_dataclass(key) or isinstance(key, type) or held is None:
            return
        declared = [field.name for field in dataclasses.fields(key)]
        if set(held) == set(declared):
            return
        uid, name = self.operator_uid, type(key).__qualname__
        old, new = f"keys of {name}({', '.join(held)})", f"keys of {name}({', '.join(declared)})"
        raise IncompatibleStateError(
            uid,
            state,
            old,
            new,
            f"operator {uid!r}: state {state!r} was saved under {old}, but {name} is now "
            f"{name}({', '.join(declared)}). A key cannot change: its fields decide its key group. Keep "
            "the key type as it was, or key the new version by a new type under a new operator uid",
        )

    def restored_state_names(self) -> set[str]:
        """The names of the restored states no function has registered yet."""
        return set(self._restored) | set(self._restored_tables) | set(self._restored_groups)

    def unclaimed_restored_state(self) -> UnclaimedState:
        """Restored state that no function has registered yet, as it is now.

        The synchronous snapshot part takes this view; the asynchronous part adds it to the snapshot
        with :meth:`with_unclaimed_restored_state`, so restored state is kept, not lost.
        """
        return UnclaimedState(dict(self._restored), dict(self._restored_tables), dict(self._restored_groups))

    @staticmethod
    def with_unclaimed_restored_state(
        snapshot: KeyedStateSnapshot, unclaimed: UnclaimedState
    ) -> KeyedStateSnapshot:
        """``snapshot`` plus the ``unclaimed`` restored state."""
        if not unclaimed:
            return snapshot
        states = dict(snapshot.states)
        entries = dict(snapshot.entries)
        tables = dict(snapshot.tables)
        for name, (meta, spaces) in unclaimed.tables.items():
            states[name] = meta
            merged_spaces = {namespace: dict(table) for namespace, table in tables.get(name, {}).items()}
            for namespace, table in spaces.items():
                merged_spaces.setdefault(namespace, {}).update(table)
            tables[name] = merged_spaces
        for name, (meta, groups) in unclaimed.entries.items():
            states[name] = meta
            # A state may have entries in the snapshot too (a database opened from a checkpoint
            # holds some, others came entry by entry): together they are the state.
            merged = {key_group: list(group) for key_group, group in entries.get(name, {}).items()}
            for key_group, group in groups.items():
                merged.setdefault(key_group, []).extend(group)
            entries[name] = merged
        for name, (meta, by_group) in unclaimed.groups.items():
            # Entries, which every snapshot and reader takes (the default serializer, no TTL).
            states[name] = meta
            merged = {key_group: list(group) for key_group, group in entries.get(name, {}).items()}
            for key_group, columns in by_group.items():
                held = merged.setdefault(key_group, [])
                for namespace, (held_keys, values) in columns.items():
                    table = dict(zip(held_keys, values, strict=True))
                    encoded = encode_values(table, meta.kind, snapshot.operator_uid, name)
                    held.extend(zip(table, itertools.repeat(namespace), encoded))
            entries[name] = merged
        return KeyedStateSnapshot(
            snapshot.operator_uid,
            snapshot.max_parallelism,
            snapshot.key_group_range,
            states,
            entries,
            tables,
        )

    def snapshot_sync(self, checkpoint_id: int = 0) -> SnapshotResources:
        """The synchronous part of a snapshot: capture a consistent view in O(1) or O(changed).

        Runs inside the actor, between two records. The view must not change afterwards.
        ``checkpoint_id`` names the checkpoint the snapshot is for (0: none), so an incremental
        backend can tell, once :meth:`notify_checkpoint_complete` names it, what later snapshots
        may build on. Backends that snapshot incrementally return
        :class:`~lockgate.state.IncrementalSnapshotResources`.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot take snapshots")

    async def snapshot_capture(self, checkpoint_id: int = 0) -> SnapshotResources:
        """:meth:`snapshot_sync` as the actor calls it: the actor waits (its records with it), other
        actors may run meanwhile. Backends whose capture takes milliseconds of I/O run it in a worker
        thread; the default calls :meth:`snapshot_sync` in place."""
        return self.snapshot_sync(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """Checkpoint ``checkpoint_id`` is complete: what it holds may be referenced by later
        incremental snapshots."""

    async def snapshot(self) -> KeyedStateSnapshot:
        """A whole snapshot: the synchronous part, then the rest in a worker thread."""
        resources = self.snapshot_sync()
        try:
            return await run_sync(resources.materialize)
        finally:
            resources.release()

    @abstractmethod
    def _create_state(self, descriptor: StateDescriptor[Any]) -> None:
        """Make room for a state; called once per registration, so it must be idempotent."""

    @abstractmethod
    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        """The value of ``key`` in ``state`` and ``namespace``, or :data:`MISSING`."""

    @abstractmethod
    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        """Set the value of ``key``."""

    @abstractmethod
    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        """Remove the value of ``key``; removing an absent key does nothing."""

    async def get_many(self, state: str, keys: Sequence[Any], namespace: Any) -> list[Any]:
        """The values of ``keys``, :data:`MISSING` where absent; backends batch this where they can."""
        return [await self.get(state, key, namespace) for key in keys]

    async def put_many(self, state: str, items: Iterable[tuple[Any, Any]], namespace: Any) -> None:
        """Set many values at once; backends batch this where they can."""
        for key, value in items:
            await self.put(state, key, namespace, value)

    @abstractmethod
    def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        """Every ``(key, value)`` of ``state`` in ``namespace``, in no particular order."""

    def get_nowait(self, state: str, key: Any, namespace: Any) -> Any:
        """Synchronous :meth:`get`, for local backends (see :attr:`supports_nowait`)."""
        raise self._no_nowait()

    def put_nowait(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        """Synchronous :meth:`put`, for local backends."""
        raise self._no_nowait()

    def delete_nowait(self, state: str, key: Any, namespace: Any) -> None:
        """Synchronous :meth:`delete`, for local backends."""
        raise self._no_nowait()

    def _no_nowait(self) -> ConfigurationError:
        return ConfigurationError(
            f"{type(self).__name__} has no synchronous access; use the awaitable state methods "
            "(await state.value()) instead of the *_nowait ones"
        )

    async def prepare_batch(self, keys: Sequence[Any]) -> None:  # noqa: B027 - optional hook
        """The keys of the next batch's records, in order, before any is processed.

        A backend whose reads are costly can fetch their state at once here (a multi-get).
        """

    async def finish_batch(self) -> None:  # noqa: B027 - optional hook
        """The batch announced by :meth:`prepare_batch` is processed: flush buffered writes."""

    async def dispose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the backend holds; called once when its subtask ends, however it ends."""


class StateBackend(ABC):
    """Decides where live keyed state lives; creates one :class:`KeyedStateBackend` per subtask."""

    def prepare_restore(
        self, manifest: KeyedStateManifest, shared: Mapping[str, tuple[bytes, str]]
    ) -> PreparedKeyedState | None:
        """Make an incremental checkpoint's keyed state ready for a native restore, in a worker thread;
        None (the default) if this backend takes it entry by entry (``manifest.resolve``)."""
        return None

    @abstractmethod
    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> KeyedStateBackend:
        """The backend for one subtask of a keyed operator."""


def _by_namespace(groups: dict[int, Columns]) -> dict[Any, dict[Any, Any]]:
    """Keys and stored values by key group, ``{key group: {namespace: (keys, values)}}``, as new
    tables, ``{namespace: {key: stored}}``: one ``dict.update`` per key group and namespace, no dict
    made for each key group."""
    spaces: dict[Any, dict[Any, Any]] = {}
    for columns in groups.values():
        for namespace, (keys, values) in columns.items():
            table = spaces.get(namespace)
            if table is None:
                table = spaces[namespace] = {}
            table.update(zip(keys, values, strict=True))
    return spaces
