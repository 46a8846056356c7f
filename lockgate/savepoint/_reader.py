"""Reading a savepoint or a checkpoint offline, as a database: every operator uid a namespace, every
state a table (the State Processor API's reading half).

Nothing here needs a job or the runtime. A subtask's state is read when it is asked for, one subtask
at a time, and handed out key group by key group; values are decoded with the serializer stored with
them (typed ones into their plain form, or into objects with a serializer passed in, migrating them
as a restore would).
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeVar

from lockgate._errors import ConfigurationError, CorruptCheckpointError, StateNotFoundError
from lockgate._threads import run_sync
from lockgate.savepoint._operator_state import decode_operator_state
from lockgate.snapshots import (
    CheckpointMetadata,
    CheckpointStorage,
    SubtaskStateHandles,
    checkpoints_at,
    read_checkpoint_metadata,
)
from lockgate.state import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERIALIZER,
    MISSING,
    TIMER_KIND,
    KeyedStateManifest,
    KeyedStateSnapshot,
    OperatorStateSnapshot,
    Serializer,
    SerializerSnapshot,
    StateCodec,
    StateMetaInfo,
    StateTtlConfig,
    timer_state_name,
)
from lockgate.state._evolution import restore_reader
from lockgate.state._keygroups import uncached_key_hash
from lockgate.state._schema import to_named
from lockgate.state._snapshot import (
    Entry,
    Packed,
    StateEncoding,
    entries_of,
    load_keyed_state,
    packed_count,
    read_held_key_groups,
    table_holds_values,
    unpack_tables,
)
from lockgate.state._states import TtlValue
from lockgate.state._timers import decode_timestamp

T = TypeVar("T")


@dataclass(frozen=True)
class StateInfo:
    """One state of an operator in a savepoint.

    Attributes:
        name: The state's name.
        kind: ``value``, ``list``, ``map``, ``reducing``, ``aggregating`` or ``timers`` (keyed), or
            ``split``, ``union`` or ``broadcast`` (operator state).
        serializer: The snapshot of the serializer that wrote its values.
        ttl: Its time to live, if it has one (keyed state only).
        entries: How many entries it holds (keys and namespaces; list elements or map entries for
            operator state), over every subtask.
    """

    name: str
    kind: str
    serializer: SerializerSnapshot
    ttl: StateTtlConfig | None
    entries: int

    @property
    def keyed(self) -> bool:
        return self.kind not in ("split", "union", "broadcast")


@dataclass(frozen=True)
class OperatorInfo:
    """An operator in a savepoint: its uid, the parallelism that wrote it, its states, and the bytes
    its subtasks' state files hold (shared files of incremental checkpoints included)."""

    uid: str
    parallelism: int
    states: list[StateInfo]
    size: int


class Savepoint:
    """A savepoint or retained checkpoint, read without a job (see :meth:`load`).

    Attributes:
        pointer: Where it is.
        checkpoint_id: Its id.
        kind: ``"savepoint"`` or ``"checkpoint"``.
        job_name: The job that took it.
        max_parallelism: Its number of key groups.
        timestamp: When it was triggered, seconds since the epoch.
    """

    def __init__(
        self,
        storage: CheckpointStorage,
        pointer: str,
        metadata: CheckpointMetadata,
        operators: dict[str, OperatorInfo],
    ) -> None:
        self._storage = storage
        self.pointer = pointer
        self._metadata = metadata
        self.checkpoint_id = metadata.checkpoint_id
        self.kind = metadata.kind
        self.job_name = metadata.job_name
        self.max_parallelism = metadata.max_parallelism
        #: When it was triggered, seconds since the epoch.
        self.timestamp = metadata.timestamp
        self._operators = operators
        #: Seconds since the epoch, as TTL counts them (tests may replace it).
        self.clock: Callable[[], float] = time.time

    def __repr__(self) -> str:
        return f"<Savepoint {self.kind} {self.checkpoint_id} of {self.job_name!r} at {self.pointer}>"

    @classmethod
    async def load(cls, url: str, *, key: bytes | str | None = None) -> Savepoint:
        """The savepoint or checkpoint at ``url`` (``.../savepoint-3``, ``.../chk-7``), or the newest of a
        directory of them. Every state file is read once, one at a time, to list what it holds.

        With ``key`` (the job's checkpoint signing key), every file must be signed with it: one that
        is not, or was changed, is refused before anything in it is unpickled.

        Raises:
            CheckpointError: There is none at ``url``.
            CorruptCheckpointError: A file is missing or damaged; the error names it.
        """
        signing_key = key.encode("utf-8") if isinstance(key, str) else key
        storage, checkpoint = (await checkpoints_at(url, signing_key=signing_key))[-1]
        metadata = await read_checkpoint_metadata(storage, checkpoint)
        savepoint = cls(storage, checkpoint.pointer, metadata, {})
        for uid, state in metadata.operators.items():
            states: dict[str, tuple[StateMetaInfo | tuple[str, SerializerSnapshot], int]] = {}
            size = 0
            for index in sorted(state.subtasks):
                handles = state.subtasks[index]
                size += handles.size
                if handles.keyed is not None:
                    async with aclosing(savepoint._keyed_parts(handles, _counts)) as parts:
                        async for counts in parts:
                            for name, (meta, count) in counts.items():
                                states[name] = (meta, states.get(name, (meta, 0))[1] + count)
                if handles.operator is not None:
                    operator = await savepoint._operator_snapshot(handles)
                    for name, entry in operator.states.items():
                        held = (entry.mode, entry.serializer)
                        before = states.get(name, (held, 0))[1]
                        if entry.mode == "broadcast" and name in states:
                            continue  # every subtask holds the same copy: counted once
                        states[name] = (held, before + len(entry.raw))
            infos = []
            for name, (described, count) in sorted(states.items()):
                if isinstance(described, StateMetaInfo):
                    infos.append(StateInfo(name, described.kind, described.serializer, described.ttl, count))
                else:
                    infos.append(StateInfo(name, described[0], described[1], None, count))
            savepoint._operators[uid] = OperatorInfo(uid, state.parallelism, infos, size)
        return savepoint

    def operators(self) -> list[OperatorInfo]:
        """Every operator of the job that took it, by uid, with its states."""
        return [self._operators[uid] for uid in sorted(self._operators)]

    def operator(self, uid: str) -> OperatorInfo:
        """The operator ``uid``.

        Raises:
            StateNotFoundError: It has no such operator; the message lists those it has.
        """
        info = self._operators.get(uid)
        if info is None:
            raise StateNotFoundError(f"{self!r} has no operator {uid!r}; it has {sorted(self._operators)}")
        return info

    # ---- keyed state

    async def read_keyed_state(
        self,
        uid: str,
        state: str,
        *,
        serializer: Serializer[Any] | None = None,
        include_expired: bool = False,
        windows: bool = False,
    ) -> AsyncIterator[Any]:
        """Every ``(key, value)`` of keyed state ``state`` of operator ``uid``, key group by key group.

        A list state's value is its list, a map state's its dict. Values decode with the serializer
        that wrote them: pickled values as they were; a typed serializer's as their plain form (a dict
        by field name), unless ``serializer`` is given, which reads them into its objects (migrating
        them, as a restore would). Entries whose TTL has expired are left out unless
        ``include_expired``. With ``windows``, window-scoped entries come too, as ``(key, window,
        value)`` triples (the others with the window None).

        Raises:
            StateNotFoundError: No such operator or state; the message lists what there is.
            ConfigurationError: The state is not keyed state, or no serializer can read it.
        """
        batches = self.read_keyed_state_batches(
            uid, state, serializer=serializer, include_expired=include_expired, windows=windows
        )
        async with aclosing(batches):
            async for batch in batches:
                for item in batch:
                    yield item

    async def read_keyed_state_batches(
        self,
        uid: str,
        state: str,
        *,
        serializer: Serializer[Any] | None = None,
        include_expired: bool = False,
        windows: bool = False,
    ) -> AsyncGenerator[list[Any], None]:
        """What :meth:`read_keyed_state` hands out, a list at a time (a key group of a savepoint, a
        subtask of a checkpoint): for code that works on many entries at once, without a step of the
        event loop per entry."""
        info = self._keyed_info(uid, state)
        if info.kind == TIMER_KIND:
            raise ConfigurationError(f"state {state!r} of {uid!r} holds timers: read them with read_timers()")

        def items(part: KeyedStateSnapshot) -> list[Any]:
            """What to hand out of a part, prepared in the worker thread that read it."""
            meta = part.states.get(state)
            if (
                meta is not None
                and meta.ttl is None
                and not windows
                and not part.tables.get(state)
                and not part.packed.get(state)
            ):
                # The common case: one comprehension from the stored entries to the pairs handed out.
                decode = self._codec(uid, state, meta, serializer).decoder
                groups = part.entries.get(state, {})
                return [
                    (key, decode(data))
                    for key_group in sorted(groups)
                    for key, namespace, data in groups[key_group]
                    if namespace is DEFAULT_NAMESPACE
                ]
            decoded = self._decoded_groups(part, state, serializer, include_expired)
            if windows:
                return [
                    (key, None if namespace is DEFAULT_NAMESPACE else namespace, value)
                    for _, entries in decoded
                    for key, namespace, value in entries
                ]
            return [
                (key, value)
                for _, entries in decoded
                for key, namespace, value in entries
                if namespace is DEFAULT_NAMESPACE
            ]

        async with aclosing(self._parts(uid, items)) as parts:
            async for batch in parts:
                if batch:
                    yield batch

    async def read_keyed(
        self,
        uid: str,
        *,
        serializers: dict[str, Serializer[Any]] | None = None,
        include_expired: bool = False,
    ) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
        """Every key of operator ``uid`` with the values of all its keyed states (timers aside), by
        state name: ``(key, {name: value})``, key group by key group; states a key has no value in are
        absent from its dict. ``serializers`` by state name, as ``serializer`` of
        :meth:`read_keyed_state`."""
        names = [info.name for info in self.operator(uid).states if info.keyed and info.kind != TIMER_KIND]
        serializers = serializers or {}

        def by_key(part: KeyedStateSnapshot) -> list[tuple[Any, dict[str, Any]]]:
            groups: dict[int, dict[Any, dict[str, Any]]] = {}
            for name in names:
                if name not in part.states:
                    continue
                decoded = self._decoded_groups(part, name, serializers.get(name), include_expired)
                for key_group, entries in decoded:
                    keys = groups.setdefault(key_group, {})
                    for key, namespace, value in entries:
                        if namespace is DEFAULT_NAMESPACE:
                            keys.setdefault(key, {})[name] = value
            return [item for key_group in sorted(groups) for item in groups[key_group].items()]

        async with aclosing(self._parts(uid, by_key)) as parts:
            async for found in parts:
                for key, values in found:
                    yield key, values

    async def read_timers(
        self, uid: str, domain: str = "event", *, namespaces: bool = False
    ) -> AsyncIterator[Any]:
        """Every timer of operator ``uid`` in ``domain`` (``"event"`` or ``"processing"``): ``(key,
        timestamp)``, or ``(key, timestamp, namespace)`` with ``namespaces`` (a window's timers have
        the window), key group by key group."""
        name = timer_state_name(domain)
        if not any(info.name == name for info in self.operator(uid).states):
            return

        def timers(part: KeyedStateSnapshot) -> list[tuple[Any, int, Any]]:
            groups = part.entries.get(name, {})
            return [
                (key, decode_timestamp(data), namespace)
                for key_group in sorted(groups)
                for key, namespace, data in groups[key_group]
            ]

        async with aclosing(self._parts(uid, timers)) as parts:
            async for found in parts:
                for key, timestamp, namespace in found:
                    yield (key, timestamp, namespace) if namespaces else (key, timestamp)

    # ---- data frames

    async def to_pandas(self, uid: str, *, states: list[str] | None = None, **options: Any) -> Any:
        """Operator ``uid``'s keyed state as a pandas DataFrame: a ``key`` column (``_key`` if a state
        is named so) and a column per state (``states``, or all but timers; None where a key has no
        value in it), a row per key; ``options`` as :meth:`read_keyed`'s. Needs
        ``pip install 'lockgate[pandas]'``."""
        try:
            import pandas
        except ImportError as exc:
            raise ImportError("to_pandas needs pandas: pip install 'lockgate[pandas]'") from exc
        return pandas.DataFrame(await self._columns(uid, states, options))

    async def to_arrow(self, uid: str, *, states: list[str] | None = None, **options: Any) -> Any:
        """Operator ``uid``'s keyed state as a pyarrow Table, columns as :meth:`to_pandas` makes them,
        their types inferred by pyarrow. Needs ``pip install 'lockgate[arrow]'``.

        Raises:
            ConfigurationError: pyarrow cannot type a state's values (maps with keys other than
                strings, mixed types): it names the state; leave it out with ``states=``.
        """
        try:
            import pyarrow
        except ImportError as exc:
            raise ImportError("to_arrow needs pyarrow: pip install 'lockgate[arrow]'") from exc
        columns = await self._columns(uid, states, options)
        arrays = {}
        for name, values in columns.items():
            try:
                arrays[name] = pyarrow.array(values)
            except (pyarrow.ArrowException, TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"state {name!r} of {uid!r} holds values pyarrow cannot type ({type(exc).__name__}: "
                    f"{exc}); leave it out with states=[...], or read it with to_pandas()"
                ) from exc
        return pyarrow.table(arrays)

    async def _columns(
        self, uid: str, states: list[str] | None, options: dict[str, Any]
    ) -> dict[str, list[Any]]:
        keyed = [info.name for info in self.operator(uid).states if info.keyed and info.kind != TIMER_KIND]
        names = keyed if states is None else states
        for name in names:
            self._keyed_info(uid, name)  # there, and keyed
        key_column = "key" if "key" not in names else "_key"  # a state may be named "key"
        columns: dict[str, list[Any]] = {key_column: [], **{name: [] for name in names}}
        async for key, values in self.read_keyed(uid, **options):
            columns[key_column].append(key)
            for name in names:
                columns[name].append(values.get(name))
        return columns

    # ---- operator state

    async def read_list_state(
        self, uid: str, name: str, *, serializer: Serializer[Any] | None = None
    ) -> list[Any]:
        """The elements of operator list state ``name`` of ``uid``, every subtask's in subtask order."""
        return await self._operator_list(uid, name, "split", serializer)

    async def read_union_state(
        self, uid: str, name: str, *, serializer: Serializer[Any] | None = None
    ) -> list[Any]:
        """The elements of union list state ``name`` of ``uid``: every subtask's, in subtask order (what
        each subtask of a restored job gets)."""
        return await self._operator_list(uid, name, "union", serializer)

    async def read_broadcast_state(
        self, uid: str, name: str, *, serializer: Serializer[Any] | None = None
    ) -> dict[Any, Any]:
        """The broadcast state ``name`` of ``uid`` (every subtask holds the same: the first one's)."""
        self._operator_info(uid, name, "broadcast")
        for handles in self._subtasks(uid):
            if handles.operator is None:
                continue
            entry = (await self._operator_snapshot(handles)).states.get(name)
            if entry is not None:
                read = self._value_reader(uid, name, entry.serializer, serializer)
                assert isinstance(entry.raw, dict)
                return {key: read(data) for key, data in entry.raw.items()}
        return {}

    async def _operator_list(
        self, uid: str, name: str, mode: str, serializer: Serializer[Any] | None
    ) -> list[Any]:
        self._operator_info(uid, name, mode)
        elements: list[Any] = []
        for handles in self._subtasks(uid):
            if handles.operator is None:
                continue
            entry = (await self._operator_snapshot(handles)).states.get(name)
            if entry is not None:
                read = self._value_reader(uid, name, entry.serializer, serializer)
                elements += [read(data) for data in entry.raw]
        return elements

    # ---- what the reading rests on

    def _keyed_info(self, uid: str, state: str) -> StateInfo:
        info = self._state_info(uid, state)
        if not info.keyed:
            raise ConfigurationError(
                f"state {state!r} of {uid!r} is {info.kind} operator state: read it with "
                f"{_OPERATOR_READERS[info.kind]}()"
            )
        return info

    def _operator_info(self, uid: str, name: str, mode: str) -> StateInfo:
        info = self._state_info(uid, name)
        if info.kind != mode:
            raise ConfigurationError(
                f"state {name!r} of {uid!r} is {info.kind} state, not {mode} state"
                + (": read it with read_keyed_state()" if info.keyed else "")
            )
        return info

    def _state_info(self, uid: str, name: str) -> StateInfo:
        operator = self.operator(uid)
        for info in operator.states:
            if info.name == name:
                return info
        raise StateNotFoundError(
            f"operator {uid!r} has no state {name!r}; it has {[i.name for i in operator.states]}"
        )

    def _subtasks(self, uid: str) -> list[SubtaskStateHandles]:
        state = self._metadata.operators[uid]
        return [state.subtasks[index] for index in sorted(state.subtasks)]

    async def _parts(self, uid: str, prepare: Callable[[KeyedStateSnapshot], T]) -> AsyncGenerator[T, None]:
        """Operator ``uid``'s keyed state in parts, subtask by subtask (see :meth:`_keyed_parts`)."""
        for handles in self._subtasks(uid):
            if handles.keyed is not None:
                async with aclosing(self._keyed_parts(handles, prepare)) as parts:
                    async for part in parts:
                        yield part

    async def _keyed_parts(
        self, handles: SubtaskStateHandles, prepare: Callable[[KeyedStateSnapshot], T]
    ) -> AsyncGenerator[T, None]:
        """A subtask's keyed state in parts, each passed through ``prepare`` in the worker thread that
        read it: one key group at a time from a savepoint's file (streamed from storage, never held
        whole), or the whole subtask from a checkpoint's."""
        keyed = handles.keyed
        assert keyed is not None
        file = await self._storage.open_state(keyed)
        try:
            held = await run_sync(_loaded, pickle.load, file, keyed.pointer)
            if isinstance(held, KeyedStateSnapshot) and held.chunked:
                chunks = read_held_key_groups(file)
                uid, metas = held.operator_uid, held.states

                def next_part() -> tuple[T] | None:
                    chunk = _loaded(next, chunks, None, keyed.pointer)
                    if chunk is None:
                        return None
                    key_group, states = chunk
                    # Packed tables stay packed: their values are unpickled only if they are read.
                    entries: dict[str, dict[int, list[Entry]]] = {}
                    packed: dict[str, dict[int, Packed]] = {}
                    for name, group in states.items():
                        if isinstance(group, tuple):
                            packed[name] = {key_group: group}
                        else:
                            kind = metas[name].kind
                            entries[name] = {
                                key_group: _loaded(entries_of, group, kind, uid, name, keyed.pointer)
                            }
                    part = dataclasses.replace(held, entries=entries, packed=packed, chunked=False)
                    return (prepare(part),)

                while (part := await run_sync(next_part)) is not None:
                    yield part[0]
                if held.states:  # every state, even one without entries
                    yield await run_sync(prepare, dataclasses.replace(held, chunked=False))
                return
            yield await run_sync(prepare, await self._resolved(held, handles))
        finally:
            file.close()

    async def _keyed_snapshot(self, uid: str, handles: SubtaskStateHandles) -> KeyedStateSnapshot:
        """A subtask's keyed state whole."""
        keyed = handles.keyed
        assert keyed is not None
        file = await self._storage.open_state(keyed)
        try:
            held = await run_sync(_loaded, load_keyed_state, file, keyed.pointer)
        finally:
            file.close()
        return await self._resolved(held, handles)

    async def _resolved(self, held: object, handles: SubtaskStateHandles) -> KeyedStateSnapshot:
        """A keyed state file's content as one snapshot (an incremental one's shared files read)."""
        assert handles.keyed is not None
        if isinstance(held, KeyedStateSnapshot):
            return held
        if isinstance(held, KeyedStateManifest):  # incremental: a heap chain or RocksDB files
            storage = self._storage
            shared = {
                handle.name: (await storage.read_shared(handle), handle.pointer) for handle in handles.shared
            }
            return await run_sync(held.resolve, shared)
        raise CorruptCheckpointError(
            handles.keyed.pointer, f"it holds {type(held).__name__}, not keyed state"
        )

    async def _operator_snapshot(self, handles: SubtaskStateHandles) -> OperatorStateSnapshot:
        assert handles.operator is not None
        return decode_operator_state(
            (await self._storage.read_state(handles.operator), handles.operator.pointer)
        )

    def _value_reader(
        self, uid: str, state: str, saved: SerializerSnapshot, serializer: Serializer[Any] | None
    ) -> Callable[[bytes], Any]:
        """Reads one user value written by the serializer ``saved`` describes."""
        if serializer is not None:
            read = restore_reader(uid, state, saved, serializer)
            return serializer.loads if read is None else read
        if saved == DEFAULT_SERIALIZER.snapshot():
            return pickle.loads  # what the default serializer's loads does, without its frame
        if saved.name in ("dataclass", "msgspec", "pydantic") and isinstance(saved.schema, tuple):
            import msgspec

            decode, schema = msgspec.msgpack.Decoder().decode, saved.schema
            return lambda data: to_named(schema, decode(data))
        raise ConfigurationError(
            f"state {state!r} of {uid!r} was written by {saved.describe()}: pass serializer= (one that reads "
            "what it wrote) to read it"
        )

    def _codec(
        self, uid: str, state: str, meta: StateMetaInfo, serializer: Serializer[Any] | None
    ) -> StateCodec:
        """The codec of a stored state whose user values ``serializer`` (or the one that wrote them)
        reads."""
        read = self._value_reader(uid, state, meta.serializer, serializer)
        return StateCodec(StateEncoding(meta.kind, DEFAULT_SERIALIZER, meta.ttl), self.clock, read)

    def _decoded_groups(
        self,
        snapshot: KeyedStateSnapshot,
        state: str,
        serializer: Serializer[Any] | None,
        include_expired: bool,
    ) -> list[tuple[int, list[tuple[Any, Any, Any]]]]:
        """The entries of ``state`` in one subtask's snapshot, ``(key group, [(key, namespace, value)])``
        in key group order, values decoded (and unwrapped from their TTL). Runs in a worker thread."""
        meta = snapshot.states.get(state)
        if meta is None:
            return []
        codec = self._codec(snapshot.operator_uid, state, meta, serializer)
        now = self.clock()
        expired = None if include_expired or meta.ttl is None else codec.prune

        def value_of(stored: Any) -> Any:
            if expired is not None:
                stored = expired(stored, now)
                if stored is MISSING:
                    return MISSING
            return _unwrapped(stored) if meta.ttl is not None else stored

        groups: dict[int, list[tuple[Any, Any, Any]]] = {}
        decoder = codec.decoder
        # A value the default serializer stored, read by another serializer (a typed one taking over).
        encode = StateCodec(StateEncoding(meta.kind), self.clock).encode

        def read_stored(stored: Any) -> Any:
            return codec.decode(encode(stored))

        for key_group, entries in snapshot.entries.get(state, {}).items():
            if meta.ttl is None:  # the common case, in one comprehension
                groups[key_group] = [(key, namespace, decoder(data)) for key, namespace, data in entries]
                continue
            out = groups.setdefault(key_group, [])
            for key, namespace, data in entries:
                value = value_of(decoder(data))
                if value is not MISSING:
                    out.append((key, namespace, value))
        for key_group, held in snapshot.packed.get(state, {}).items():  # the values themselves
            out = groups.setdefault(key_group, [])
            for namespace, table in unpack_tables(held).items():
                if serializer is None:
                    out.extend(zip(table, repeat(namespace), table.values()))
                else:
                    out.extend((key, namespace, read_stored(stored)) for key, stored in table.items())
        spaces = snapshot.tables.get(state)
        if spaces:
            decode: Callable[[Any], Any] | None = codec.decode
            if table_holds_values(meta.serializer):  # the values themselves, unless read by another
                decode = None if serializer is None else read_stored
            max_parallelism = snapshot.max_parallelism
            for namespace, table in spaces.items():
                for key, stored in table.items():
                    value = value_of(stored if decode is None else decode(stored))
                    if value is not MISSING:
                        key_group = uncached_key_hash(key) % max_parallelism
                        groups.setdefault(key_group, []).append((key, namespace, value))
        return [(key_group, groups[key_group]) for key_group in sorted(groups)]


#: The method that reads each mode of operator state.
_OPERATOR_READERS = {
    "split": "read_list_state",
    "union": "read_union_state",
    "broadcast": "read_broadcast_state",
}


def _unwrapped(stored: Any) -> Any:
    """A stored value without its TTL timestamps."""
    if isinstance(stored, TtlValue):
        return stored.value
    if isinstance(stored, list):
        return [element.value for element in stored]
    if isinstance(stored, dict):
        return {key: element.value for key, element in stored.items()}
    return stored


def _loaded(load: Callable[..., Any], *arguments: Any) -> Any:
    """``load(*arguments[:-1])``, naming the file (the last argument) if what it reads is not state."""
    *rest, pointer = arguments
    try:
        return load(*rest)
    except Exception as exc:
        raise CorruptCheckpointError(pointer, f"the state cannot be read ({exc})") from exc


def _counts(snapshot: KeyedStateSnapshot) -> dict[str, tuple[StateMetaInfo, int]]:
    """Each state of a snapshot (part) with how many entries it holds."""
    counts = {}
    for name, meta in snapshot.states.items():
        encoded = sum(len(group) for group in snapshot.entries.get(name, {}).values())
        encoded += sum(map(packed_count, snapshot.packed.get(name, {}).values()))  # no value unpickled
        counts[name] = (meta, encoded + sum(len(table) for table in snapshot.tables.get(name, {}).values()))
    return counts
