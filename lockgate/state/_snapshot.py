"""Keyed state snapshots, independent of the backend that took them.

A snapshot is taken in two parts, the same for every backend. The synchronous part
(:meth:`KeyedStateBackend.snapshot_sync`) runs inside the actor between two records and only captures
a consistent view, the :class:`SnapshotResources`: O(1) or O(changed). The asynchronous part,
:meth:`SnapshotResources.write`, persists the view through a :class:`KeyedStateWriter` away from the hot
path, while records keep flowing, and returns handles to what it persisted: a whole
:class:`KeyedStateSnapshot`, or (incremental backends) a manifest and the shared blobs it references.

Entries are grouped by key group, so a restore at any parallelism takes exactly the key groups of
its range. Values are bytes written by the state's codec (its descriptor's serializer inside).
"""

from __future__ import annotations

import io
import pickle
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, BinaryIO, Final, Protocol

from lockgate._errors import StateSerializationError
from lockgate._threads import run_sync
from lockgate.snapshots import SharedStateHandle, StreamStateHandle
from lockgate.state._descriptors import StateDescriptor, StateTtlConfig
from lockgate.state._keygroups import KeyGroupRange, key_groups_of
from lockgate.state._serializers import DEFAULT_SERIALIZER, PICKLE_PROTOCOL, Serializer, SerializerSnapshot
from lockgate.state._states import MISSING, TtlValue
from lockgate.state._timers import TIMER_KIND

#: (key, namespace, encoded value) of one stored entry.
Entry = tuple[Any, Any, bytes]
#: One key group's tables of a state of the default serializer without TTL, as a savepoint holds them
#: (see :func:`pack_columns`): the keys by namespace, and the values of all of them pickled together.
Packed = tuple[dict[Any, list[Any]], bytes]
#: Tables as keys and stored values, by namespace: ``{namespace: (keys, values)}``, each value that
#: of the key in the same place (what :func:`pack_columns` packs and :func:`unpack_columns` unpacks).
Columns = dict[Any, tuple[list[Any], list[Any]]]


def pickle_snapshot(
    snapshot: object, tables: dict[str, dict[Any, dict[Any, Any]]], operator_uid: str
) -> bytes:
    """``snapshot`` (a keyed snapshot or delta holding ``tables``) pickled whole; what plain pickle
    refuses goes through cloudpickle.

    Raises:
        StateSerializationError: A value cannot be written at all; it names the state and the key
            (found by trying each value of ``tables`` alone, the slow path of a failed snapshot).
    """
    try:
        return DEFAULT_SERIALIZER.dumps(snapshot)
    except Exception as exc:
        for name, spaces in tables.items():
            for table in spaces.values():
                for key, value in table.items():
                    try:
                        DEFAULT_SERIALIZER.dumps(value)
                    except Exception as error:
                        reason = f"{type(error).__name__}: {error}"
                        raise StateSerializationError(operator_uid, name, key, reason) from exc
        raise


@dataclass(frozen=True)
class StateMetaInfo:
    """What a restore needs to know about a state besides its entries."""

    name: str
    kind: str
    serializer: SerializerSnapshot
    ttl: StateTtlConfig | None

    @classmethod
    def of(cls, descriptor: StateDescriptor[Any]) -> StateMetaInfo:
        """The meta info of the state that ``descriptor`` declares."""
        return cls(descriptor.name, descriptor.kind, descriptor.serializer.snapshot(), descriptor.ttl)


@dataclass(frozen=True)
class KeyedStateSnapshot:
    """The keyed state of one subtask at one checkpoint.

    A state is held in one of two forms. ``entries`` holds it encoded, entry by entry, grouped by key
    group: what a restore at another parallelism picks from. ``tables`` holds it by namespace and key,
    ``tables[state][namespace][key]``, for states without TTL, and the key groups are worked out on
    restore: no key is hashed and no tuple made per entry when the snapshot is taken. A table holds the
    stored values themselves when the default pickle serializer writes them (the snapshot is then
    pickled whole in one call, many times cheaper than one call per entry), and otherwise the bytes
    the state's codec encodes them to (see :func:`table_holds_values`), which the serializer that
    wrote them, or a migration from it, reads back.

    Attributes:
        operator_uid: The operator the state belongs to.
        max_parallelism: The number of key groups of the job that wrote it.
        key_group_range: The key groups of the subtask that wrote it.
        states: Meta info by state name.
        entries: ``entries[state][key_group]`` lists that key group's entries.
        tables: ``tables[state][namespace]`` maps each key to its stored value.
        packed: ``packed[state][key_group]`` holds that key group's tables of a state of the default
            serializer without TTL as a savepoint holds them, its values pickled together (see
            :func:`pack_columns`): only a snapshot loaded for a restore has them
            (``load_keyed_state(file, packed=True)``), or a part of one that the offline reader
            hands out; a restore unpickles the values of the key groups it takes.
    """

    operator_uid: str
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMetaInfo]
    entries: dict[str, dict[int, list[Entry]]] = field(repr=False)
    tables: dict[str, dict[Any, dict[Any, Any]]] = field(default_factory=dict, repr=False)
    #: In a savepoint's file: the entries follow this snapshot, key group by key group (see
    #: :func:`encode_canonical`); the snapshot itself holds none.
    chunked: bool = False
    packed: dict[str, dict[int, Packed]] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled without ``packed`` when it is empty, as always but in a restore's memory: the header
        # of a savepoint's file keeps the fields docs/savepoint-format.md lists.
        state = dict(self.__dict__)
        if not state["packed"]:
            del state["packed"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Without ``packed``: none (and a snapshot pickled before it existed has none).
        self.__dict__.update({"packed": {}, **state})

    def entry_count(self) -> int:
        """How many entries the snapshot holds."""
        encoded = sum(len(group) for groups in self.entries.values() for group in groups.values())
        packed = sum(packed_count(held) for groups in self.packed.values() for held in groups.values())
        return (
            encoded + packed + sum(len(table) for spaces in self.tables.values() for table in spaces.values())
        )

    def grouped_entries(self) -> dict[str, dict[int, list[Entry]]]:
        """Every state's entries, encoded and grouped by key group, whichever form holds them."""
        grouped = dict(self.entries)
        for name, packs in self.packed.items():
            kind, mine = self.states[name].kind, dict(grouped.get(name, {}))
            for key_group, held in packs.items():
                mine[key_group] = mine.get(key_group, []) + _unpacked_entries(
                    held, kind, self.operator_uid, name
                )
            grouped[name] = mine
        for name, spaces in self.tables.items():
            groups: dict[int, list[Entry]] = {}
            for namespace, by_group in self._encoded_tables(name, spaces):
                for key_group, table in by_group.items():
                    groups.setdefault(key_group, []).extend(zip(table, repeat(namespace), table.values()))
            for key_group, group in self.entries.get(name, {}).items():  # a state held in both forms
                groups.setdefault(key_group, []).extend(group)
            grouped[name] = groups
        return grouped

    def _encoded_tables(
        self, name: str, spaces: dict[Any, dict[Any, Any]]
    ) -> Iterator[tuple[Any, dict[int, dict[Any, bytes]]]]:
        """The tables of state ``name`` (``self.tables[name]``) split by key group, each namespace's
        ``{key group: {key: value bytes}}``: every key hashed and every value encoded in C-level
        loops, no tuple made per entry."""
        meta = self.states[name]
        max_parallelism = self.max_parallelism
        for namespace, table in spaces.items():
            keys = list(table)
            values: Iterator[Any] | list[bytes] = iter(table.values())
            if table_holds_values(meta.serializer):
                values = encode_values(table, meta.kind, self.operator_uid, name)
            by_group: defaultdict[int, dict[Any, bytes]] = defaultdict(dict)
            for key, key_group, data in zip(keys, key_groups_of(keys, max_parallelism), values, strict=True):
                by_group[key_group][key] = data
            yield namespace, by_group


def encode_values(table: dict[Any, Any], kind: str, operator_uid: str, state: str) -> list[bytes]:
    """The bytes of each stored value of ``table`` (a state of the default serializer without TTL),
    in order: a plain value by one C-level loop of ``pickle.dumps``; what plain pickle refuses, and
    lists and maps, through the state's codec.

    Raises:
        StateSerializationError: A value cannot be written at all; it names the state and the key.
    """
    if kind not in ("list", "map"):
        try:
            return pickle_each(table.values())
        except Exception:  # the codec's loop below falls back to cloudpickle, or names the key
            pass
    encode = StateCodec(StateEncoding(kind), time.time).encode
    return list(encode_table(table, encode, operator_uid, state).values())


def pickle_each(values: Iterable[Any]) -> list[bytes]:
    """``pickle.dumps(value, protocol=5)`` of each of ``values``, in one C-level loop (the protocol
    passed positionally: through ``functools.partial`` each call costs about twice as much).

    Raises:
        Exception: Whatever plain pickle raises for a value it refuses.
    """
    return list(map(pickle.dumps, values, repeat(PICKLE_PROTOCOL)))


def encode_canonical(snapshot: KeyedStateSnapshot) -> bytes:
    """A snapshot as a savepoint's keyed state file holds it: the snapshot without its entries
    (``chunked``), then one pickle per key group holding entries, ``(key group, {state: held})``, in
    ascending key group order; so a reader holds one key group at a time (:func:`read_key_groups`).
    ``held`` is the key group's tables: of a state of the default serializer without TTL whose values
    the snapshot holds, its keys and its values pickled together (:func:`pack_columns`); of any other
    state ``{namespace: {key: value bytes}}``, each value encoded alone. A timers state's, which may
    hold several entries of one key and namespace, is the list of its entries."""
    by_group: defaultdict[int, dict[str, Any]] = defaultdict(dict)
    for name, spaces in snapshot.tables.items():
        meta = snapshot.states[name]
        if table_holds_values(meta.serializer) and not any(snapshot.entries.get(name, {}).values()):
            for key_group, columns in _columns_by_group(spaces, snapshot.max_parallelism).items():
                by_group[key_group][name] = pack_columns(columns, meta.kind, snapshot.operator_uid, name)
            continue
        for namespace, tables in snapshot._encoded_tables(name, spaces):
            for key_group, table in tables.items():
                by_group[key_group].setdefault(name, {})[namespace] = table
    for name, groups in snapshot.entries.items():
        timers = snapshot.states[name].kind == TIMER_KIND
        for key_group, group in groups.items():
            if not group:
                continue
            held = by_group[key_group].get(name)
            if timers:
                by_group[key_group][name] = group if held is None else held + group
            else:
                by_group[key_group][name] = _tables_of(group, held or {})
    header = KeyedStateSnapshot(
        snapshot.operator_uid,
        snapshot.max_parallelism,
        snapshot.key_group_range,
        snapshot.states,
        {},
        chunked=True,
    )
    return b"".join(
        [
            DEFAULT_SERIALIZER.dumps(header),
            *(_dumps_without_memo((key_group, by_group[key_group])) for key_group in sorted(by_group)),
        ]
    )


def _dumps_without_memo(structure: object) -> bytes:
    """A key group's pickle, written without pickle's memo (``Pickler.fast``): it holds keys,
    namespaces and bytes, each object once or equal copies of it, so remembering every object
    pickled (a dict insert per key) buys nothing. The values are not in it: a packed state's are
    pickled with the memo (:func:`pack_columns`), so what they share stays shared. Anything the fast
    pickler refuses (an object within itself), or that plain pickle refuses (cloudpickle takes it),
    goes through the default serializer."""
    buffer = io.BytesIO()
    try:
        pickler = pickle.Pickler(buffer, protocol=PICKLE_PROTOCOL)
        pickler.fast = True
        pickler.dump(structure)
    except Exception:
        return DEFAULT_SERIALIZER.dumps(structure)
    return buffer.getvalue()


def _columns_by_group(spaces: dict[Any, dict[Any, Any]], max_parallelism: int) -> dict[int, Columns]:
    """``spaces`` (``{namespace: {key: stored}}``) split by the key group of each key, ``{key group:
    {namespace: (keys, stored values)}}``, in lists (appending to a list costs a fraction of a dict's
    insert); the values are not touched."""
    by_group: dict[int, Columns] = {}
    for namespace, table in spaces.items():
        keys = list(table)
        key_lists: defaultdict[int, list[Any]] = defaultdict(list)
        value_lists: defaultdict[int, list[Any]] = defaultdict(list)
        for key, key_group, stored in zip(
            keys, key_groups_of(keys, max_parallelism), table.values(), strict=True
        ):
            key_lists[key_group].append(key)
            value_lists[key_group].append(stored)
        for key_group, group_keys in key_lists.items():
            by_group.setdefault(key_group, {})[namespace] = (group_keys, value_lists[key_group])
    return by_group


def pack_columns(columns: Columns, kind: str, operator_uid: str, state: str) -> Packed:
    """One key group's tables of a state of the default serializer without TTL, given as ``{namespace:
    (keys, stored values)}``, as a savepoint holds them: ``(keys, values)``, ``keys`` the keys of
    each namespace, ``{namespace: [key, ...]}``, and ``values`` their stored values (a value, a list
    of elements, a map's dict), ``[[stored, ...], ...]``, a list per namespace in the order of
    ``keys``, each in the order of its keys, pickled in one call for the key group instead of one per
    value (the namespaces only in ``keys``: one object each, whatever their equality). The keys stay
    apart, so that a reader can see them (and count them) without unpickling a value, which may need
    the job's classes. :func:`unpack_columns` reads it.

    Raises:
        StateSerializationError: A value cannot be written at all; it names the state and the key
            (found by encoding each value alone, the slow path of a failed savepoint).
    """
    try:
        values = DEFAULT_SERIALIZER.dumps([stored for _, stored in columns.values()])
    except Exception:
        encode = StateCodec(StateEncoding(kind), time.time).encode
        for keys, stored in columns.values():
            encode_table(dict(zip(keys, stored, strict=True)), encode, operator_uid, state)  # names the key
        raise
    return {namespace: keys for namespace, (keys, _) in columns.items()}, values


def unpack_tables(held: Packed) -> dict[Any, dict[Any, Any]]:
    """The tables that :func:`pack_columns` packed, ``{namespace: {key: stored}}``.

    Raises:
        ValueError: The keys and the values do not pair up.
    """
    return {
        namespace: dict(zip(*columns, strict=True)) for namespace, columns in unpack_columns(held).items()
    }


def unpack_columns(held: Packed) -> Columns:
    """The keys and stored values that :func:`pack_columns` packed, ``{namespace: (keys, values)}``, in
    the order of the keys: no dict built (``dict.update(zip(keys, values))`` takes them into a table).

    Raises:
        ValueError: The keys and the values do not pair up.
    """
    keys, data = held
    values: list[list[Any]] = pickle.loads(data)
    if len(values) != len(keys) or any(map(_unequal_lengths, keys.values(), values)):
        raise ValueError("the packed values do not pair up with the keys")
    return {
        namespace: (held_keys, stored)
        for (namespace, held_keys), stored in zip(keys.items(), values, strict=True)
    }


def _unequal_lengths(keys: list[Any], values: list[Any]) -> bool:
    return len(keys) != len(values)


def packed_count(held: Packed) -> int:
    """How many entries packed tables hold, their values left as they are."""
    return sum(map(len, held[0].values()))


def _unpacked_entries(held: Packed, kind: str, operator_uid: str, state: str) -> list[Entry]:
    """The entries of a key group's packed tables (:func:`pack_columns`), each value encoded as the
    state's codec would (the "no TTL" column of the default serializer)."""
    entries: list[Entry] = []
    for namespace, table in unpack_tables(held).items():
        entries.extend(zip(table, repeat(namespace), encode_values(table, kind, operator_uid, state)))
    return entries


def _tables_of(entries: list[Entry], tables: dict[Any, dict[Any, bytes]]) -> dict[Any, dict[Any, bytes]]:
    """``entries`` added to ``tables``, ``{namespace: {key: value bytes}}``."""
    namespaces = set(map(_NAMESPACE, entries))
    if len(namespaces) == 1:  # the usual case, one namespace: C-level loops
        table = tables.setdefault(namespaces.pop(), {})
        table.update(zip(map(_KEY, entries), map(_VALUE, entries), strict=True))
        return tables
    for key, namespace, data in entries:
        tables.setdefault(namespace, {})[key] = data
    return tables


_KEY, _NAMESPACE, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)

#: What a savepoint's key group holds of one state: a list of entries (timers, and every state of
#: metadata versions 2 and 3), tables of value bytes (version 4), or packed tables (version 5).
Held = list[Entry] | dict[Any, dict[Any, bytes]] | Packed


def read_held_key_groups(file: BinaryIO) -> Iterator[tuple[int, dict[str, Held]]]:
    """The key groups that follow a chunked snapshot in ``file`` (positioned after the snapshot), one
    at a time, as they are pickled: ``(key group, {state: held})``, packed tables (a tuple) not
    unpacked."""
    while True:
        try:
            key_group, held = pickle.load(file)
        except EOFError:
            return
        yield key_group, held


def read_key_groups(
    file: BinaryIO, states: Mapping[str, StateMetaInfo], operator_uid: str = ""
) -> Iterator[tuple[int, dict[str, list[Entry]]]]:
    """The key groups that follow a chunked snapshot in ``file`` (positioned after the snapshot), one
    at a time: ``(key group, {state: entries})``; ``states`` is the snapshot's (packed tables are
    encoded entry by entry as their state's kind says)."""
    for key_group, held in read_held_key_groups(file):
        yield (
            key_group,
            {name: entries_of(group, states[name].kind, operator_uid, name) for name, group in held.items()},
        )


def entries_of(held: Held, kind: str, operator_uid: str, state: str) -> list[Entry]:
    """A state's entries in one key group, from what a savepoint's key group holds of it: a timers
    state's list (and every state's, in a savepoint written before tables), its tables, or its packed
    tables."""
    if isinstance(held, list):
        return held
    if isinstance(held, tuple):
        return _unpacked_entries(held, kind, operator_uid, state)
    return list(
        chain.from_iterable(
            zip(table, repeat(namespace), table.values()) for namespace, table in held.items()
        )
    )


def load_keyed_state(file: BinaryIO, packed: bool = False) -> object:
    """What a keyed state file holds, whole: a snapshot (its key groups read back into its entries, if
    it is chunked) or a manifest. With ``packed``, a savepoint's packed tables stay as they are, in
    ``KeyedStateSnapshot.packed``, for a restore that unpickles only the key groups it takes."""
    held = pickle.load(file)
    if not isinstance(held, KeyedStateSnapshot) or not held.chunked:
        return held
    uid, states = held.operator_uid, held.states
    entries: dict[str, dict[int, list[Entry]]] = {name: {} for name in states}
    packs: dict[str, dict[int, Packed]] = {}
    for key_group, groups in read_held_key_groups(file):
        for name, group in groups.items():
            if packed and isinstance(group, tuple):
                packs.setdefault(name, {})[key_group] = group
            else:
                entries.setdefault(name, {})[key_group] = entries_of(group, states[name].kind, uid, name)
    return KeyedStateSnapshot(
        held.operator_uid, held.max_parallelism, held.key_group_range, states, entries, packed=packs
    )


@dataclass(frozen=True)
class StateEncoding:
    """A state's kind, serializer and TTL, as a codec takes them without its descriptor. By default
    how states in ``KeyedStateSnapshot.tables`` hold values: the default serializer, no TTL."""

    kind: str
    serializer: Serializer[Any] = field(default_factory=lambda: DEFAULT_SERIALIZER)
    ttl: StateTtlConfig | None = None


def stores_whole(descriptor: StateDescriptor[Any]) -> bool:
    """Whether a snapshot may hold ``descriptor``'s state in tables (see ``KeyedStateSnapshot.tables``)."""
    return descriptor.ttl is None


def table_holds_values(serializer: SerializerSnapshot) -> bool:
    """Whether the tables of a state written by ``serializer`` hold the stored values (the default
    pickle serializer's: pickled whole with the snapshot) rather than their codec's bytes."""
    return serializer == _PICKLED


_PICKLED: Final = DEFAULT_SERIALIZER.snapshot()


def encode_table(
    table: dict[Any, Any], encode: Callable[[Any], bytes], operator_uid: str, state: str
) -> dict[Any, bytes]:
    """Each stored value of ``table`` encoded, by key, in C-level loops.

    Raises:
        StateSerializationError: The serializer refused a value; it names the state and the key.
    """
    try:
        return dict(zip(table, map(encode, table.values()), strict=True))
    except Exception as failure:
        for key, stored in table.items():  # the slow path of a failed snapshot: which key it was
            try:
                encode(stored)
            except Exception as exc:
                raise StateSerializationError(
                    operator_uid, state, key, f"{type(exc).__name__}: {exc}"
                ) from failure
        raise


class SharedStateWriter(Protocol):
    """Writes blobs into the checkpoint storage's shared area for one subtask's incremental snapshot
    (the runtime names them, and deletes them again should the checkpoint not complete)."""

    async def write(self, kind: str, data: bytes) -> SharedStateHandle:
        """Persist ``data``; ``kind`` goes into the blob's name, for people looking at the files."""
        ...


class KeyedStateWriter(Protocol):
    """Where the asynchronous part of one operator subtask's keyed snapshot persists its bytes: the
    runtime hands one to :meth:`SnapshotResources.write` per operator and checkpoint."""

    @property
    def canonical(self) -> bool:
        """Whether the snapshot goes into a savepoint: every state whole, entry by entry (the
        backend-independent form), never incremental."""
        ...

    @property
    def shared(self) -> SharedStateWriter:
        """Where an incremental snapshot writes blobs that later checkpoints may reference."""
        ...

    async def write(self, data: bytes) -> StreamStateHandle:
        """Persist the subtask's own keyed state blob: a pickled snapshot, or a manifest."""
        ...


@dataclass(frozen=True)
class PersistedKeyedState:
    """What the asynchronous part of a keyed snapshot persisted: the subtask's own blob, and the shared
    blobs it references, new or reused (an incremental snapshot's; none for a whole one)."""

    handle: StreamStateHandle
    shared: tuple[SharedStateHandle, ...] = ()


class SnapshotResources(ABC):
    """The consistent view captured by a backend's synchronous snapshot part."""

    @abstractmethod
    def materialize(self) -> KeyedStateSnapshot:
        """Build the snapshot from the view. Runs in a worker thread: it must not touch live state."""

    @abstractmethod
    def release(self) -> None:
        """The snapshot is written (or abandoned): let the backend reclaim the view. Runs on the
        event loop, exactly once, whether :meth:`write` ran, failed or never ran."""

    async def write(self, writer: KeyedStateWriter) -> PersistedKeyedState:
        """The asynchronous part: persist the view through ``writer``, the costly work in a worker
        thread; handles to what was persisted.

        Raises:
            StateSerializationError: A value cannot be written at all (it names the state and key).
        """
        data = await run_sync(self.encode, writer.canonical)
        return PersistedKeyedState(await writer.write(data))

    def encode(self, canonical: bool = False) -> bytes:
        """Build the snapshot and pickle it: ``canonical``, with every state entry by entry, as
        savepoints hold them. Runs in a worker thread."""
        snapshot = self.materialize()
        if canonical:
            return encode_canonical(snapshot)
        return pickle_snapshot(snapshot, snapshot.tables, snapshot.operator_uid)


@dataclass(frozen=True)
class IncrementalKeyedState:
    """What an incremental snapshot persists: a small manifest (the subtask's own keyed state blob,
    a pickled :class:`KeyedStateManifest`) and every shared blob it references, new or reused."""

    manifest: KeyedStateManifest
    shared: tuple[SharedStateHandle, ...]


class KeyedStateManifest(ABC):
    """How to rebuild a subtask's keyed state from shared blobs: what an incremental checkpoint holds
    where a full one holds a :class:`KeyedStateSnapshot`."""

    @abstractmethod
    def resolve(self, shared: Mapping[str, tuple[bytes, str]]) -> KeyedStateSnapshot:
        """The state as one snapshot, given the bytes (and pointer, for errors) of each shared blob
        by name. Runs in a worker thread."""


class PreparedKeyedState(ABC):
    """One subtask's keyed state from a checkpoint, made ready in a worker thread for a backend that
    restores it natively (RocksDB opening the checkpoint's files), rather than entry by entry.

    Attributes:
        operator_uid: The operator the state belongs to.
        max_parallelism: The number of key groups of the job that wrote it.
        key_group_range: The key groups of the subtask that wrote it.
    """

    operator_uid: str
    max_parallelism: int
    key_group_range: KeyGroupRange

    @abstractmethod
    def resolve(self) -> KeyedStateSnapshot:
        """The state as one snapshot, for a restore that takes it entry by entry after all."""


class IncrementalSnapshotResources(SnapshotResources):
    """A captured view that can also be persisted incrementally: only what changed since the last
    checkpoint this subtask knows complete is written; the rest is referenced. A savepoint still
    holds the whole state, in the canonical form."""

    @abstractmethod
    async def write_incremental(self, writer: SharedStateWriter) -> IncrementalKeyedState:
        """Write what is new through ``writer``; the manifest and every shared blob it references."""

    async def write(self, writer: KeyedStateWriter) -> PersistedKeyedState:
        if writer.canonical:
            return await super().write(writer)
        written = await self.write_incremental(writer.shared)
        handle = await writer.write(pickle.dumps(written.manifest, protocol=5))
        return PersistedKeyedState(handle, written.shared)


def split_map(data: bytes, timed: bool) -> dict[Any, bytes]:
    """A map's bytes (as :meth:`StateCodec.encode` writes them) as each entry's element bytes (as
    :meth:`StateCodec.encode_element` writes them), by map key; ``timed``: the state has a TTL. No user
    value is deserialised."""
    entries = pickle.loads(data)
    if not timed:
        return dict(entries)
    return {user_key: pickle.dumps(entry, protocol=5) for user_key, entry in entries.items()}


def join_map(entries: Mapping[Any, bytes], timed: bool) -> bytes:
    """The inverse of :func:`split_map`: a map's bytes from each entry's element bytes."""
    if not timed:
        return pickle.dumps(dict(entries), protocol=5)
    return pickle.dumps({user_key: pickle.loads(data) for user_key, data in entries.items()}, protocol=5)


def split_list(data: bytes, timed: bool) -> list[bytes]:
    """A list's bytes (as :meth:`StateCodec.encode` writes them) as each element's bytes (as
    :meth:`StateCodec.encode_element` writes them), in order; no user value is deserialised."""
    elements = pickle.loads(data)
    if not timed:
        return list(elements)
    return [pickle.dumps(element, protocol=5) for element in elements]


def join_list(elements: list[bytes], timed: bool) -> bytes:
    """The inverse of :func:`split_list`: a list's bytes from each element's bytes."""
    if not timed:
        return pickle.dumps(elements, protocol=5)
    return pickle.dumps([pickle.loads(data) for data in elements], protocol=5)


class _Encoding(Protocol):
    """What a codec needs of a state: a descriptor has it."""

    @property
    def kind(self) -> str: ...

    @property
    def serializer(self) -> Serializer[Any]: ...

    @property
    def ttl(self) -> StateTtlConfig | None: ...


class StateCodec:
    """Encodes what a backend stores for one state (a value, a list of elements, a map of entries,
    each possibly under TTL) to bytes and back, with the state's serializer for user values."""

    def __init__(
        self,
        descriptor: _Encoding,
        clock: Callable[[], float],
        read: Callable[[bytes], Any] | None = None,
    ) -> None:
        """``read``, if given, reads user values instead of the serializer's ``loads``: a restore
        reading values that an older serializer wrote (see ``restore_reader``)."""
        self.kind = descriptor.kind
        self.serializer: Serializer[Any] = descriptor.serializer
        self.loads: Callable[[bytes], Any] = read or self.serializer.loads
        self.ttl = descriptor.ttl
        self.clock = clock
        # A plain value (no container, no TTL) is stored as its serializer writes it, nothing around it.
        self._plain = self.ttl is None and self.kind not in ("list", "map")

    @property
    def encoder(self) -> Callable[[Any], bytes]:
        """:meth:`encode`, without a Python frame of its own for a plain value."""
        return self.serializer.dumps if self._plain else self.encode

    @property
    def decoder(self) -> Callable[[bytes], Any]:
        """:meth:`decode`, without a Python frame of its own for a plain value."""
        return self.loads if self._plain else self.decode

    # User values go through the serializer; TTL timestamps and containers through pickle.

    def _dump_one(self, entry: Any) -> Any:
        if self.ttl is None:
            return self.serializer.dumps(entry)
        return (entry.timestamp, self.serializer.dumps(entry.value))

    def _load_one(self, data: Any) -> Any:
        if self.ttl is None:
            return self.loads(data)
        timestamp, value = data
        return TtlValue(self.loads(value), timestamp)

    def encode(self, stored: Any) -> bytes:
        """The bytes of a stored value."""
        if self._plain:
            return self.serializer.dumps(stored)
        if self.kind == "list":
            return pickle.dumps([self._dump_one(element) for element in stored], protocol=5)
        if self.kind == "map":
            return pickle.dumps({k: self._dump_one(v) for k, v in stored.items()}, protocol=5)
        return pickle.dumps(self._dump_one(stored), protocol=5)

    def decode(self, data: bytes) -> Any:
        """The stored value of some bytes."""
        if self._plain:
            return self.loads(data)
        raw = pickle.loads(data)
        if self.kind == "list":
            return [self._load_one(element) for element in raw]
        if self.kind == "map":
            return {k: self._load_one(v) for k, v in raw.items()}
        return self._load_one(raw)

    # One element of a list or one entry of a map on its own, as backends that store them apart do.

    def encode_element(self, entry: Any) -> bytes:
        """The bytes of one list element or map value (a :class:`TtlValue` under TTL)."""
        if self.ttl is None:
            return self.serializer.dumps(entry)
        return pickle.dumps((entry.timestamp, self.serializer.dumps(entry.value)), protocol=5)

    def decode_element(self, data: bytes) -> Any:
        """One list element or map value from the bytes :meth:`encode_element` wrote."""
        if self.ttl is None:
            return self.loads(data)
        timestamp, value = pickle.loads(data)
        return TtlValue(self.loads(value), timestamp)

    def prune(self, stored: Any, now: float) -> Any:
        """``stored`` without its expired parts (MISSING if nothing is left): cleanup on snapshot."""
        ttl = self.ttl
        if ttl is None:
            return stored
        limit = now - ttl.ttl_seconds
        if self.kind == "list":
            alive = [element for element in stored if element.timestamp > limit]
            return alive or MISSING
        if self.kind == "map":
            entries = {k: v for k, v in stored.items() if v.timestamp > limit}
            return entries or MISSING
        return stored if stored.timestamp > limit else MISSING
