"""Writing savepoints offline: bootstrap state from data, or change an existing savepoint or checkpoint
(the State Processor API's writing half).

A :class:`SavepointWriter` records what to do; :meth:`SavepointWriter.write` does it, in order, and
writes a savepoint in the format a job writes (``docs/savepoint-format.md``): it restores like one, on
either backend, at any parallelism up to its max parallelism. Operators no step touches are copied from
the existing savepoint as they are, file by file, without decoding them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lockgate._errors import ConfigurationError
from lockgate._threads import run_sync
from lockgate.savepoint._operator_state import encode_operator_state
from lockgate.savepoint._reader import Savepoint, _unwrapped
from lockgate.snapshots import (
    CheckpointLocation,
    CheckpointMetadata,
    CheckpointStorage,
    OperatorCheckpointState,
    StreamStateHandle,
    SubtaskStateHandles,
    storage_for,
)
from lockgate.snapshots._blobs import blob_name
from lockgate.state import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERIALIZER,
    UPPER_BOUND_MAX_PARALLELISM,
    KeyedStateSnapshot,
    KeyGroupRange,
    OperatorStateEntry,
    OperatorStateSnapshot,
    Serializer,
    StateCodec,
    StateMetaInfo,
    StateTtlConfig,
    key_group_for,
)
from lockgate.state._evolution import restore_reader
from lockgate.state._snapshot import Entry, StateEncoding, encode_canonical
from lockgate.state._states import TtlValue

#: The kinds of keyed state a savepoint can be bootstrapped with.
BootstrapKind = Literal["value", "list", "map"]


@dataclass
class _Operator:
    """One operator of the savepoint being written: copied as it is (``copied``), or held decoded."""

    uid: str
    parallelism: int
    copied: dict[int, SubtaskStateHandles] | None = None
    # Decoded: every key group's entries of every keyed state in one snapshot, and each subtask's
    # operator state.
    keyed: KeyedStateSnapshot | None = None
    operator: dict[int, dict[str, OperatorStateEntry]] = field(default_factory=dict)


class SavepointWriter:
    """Builds a savepoint without a job: from data (:meth:`new`) or from an existing savepoint or
    checkpoint (:meth:`from_existing`). Each ``with_*``, ``transform_*``, ``remove_*`` and ``rename_*``
    call records a step and returns the writer; :meth:`write` runs them in order."""

    def __init__(self, max_parallelism: int, source: Savepoint | None) -> None:
        self._max_parallelism = _checked_max_parallelism(max_parallelism)
        self._source = source
        self._steps: list[Callable[[_Draft], Any]] = []

    def __repr__(self) -> str:
        origin = "new" if self._source is None else f"from {self._source.pointer}"
        return (
            f"<SavepointWriter {origin}, max_parallelism {self._max_parallelism}, {len(self._steps)} step(s)>"
        )

    @classmethod
    def new(cls, max_parallelism: int = 128) -> SavepointWriter:
        """A writer of a savepoint holding only what it is given, with ``max_parallelism`` key groups
        (the max parallelism of every job that restores it)."""
        return cls(max_parallelism, None)

    @classmethod
    def from_existing(cls, savepoint: Savepoint) -> SavepointWriter:
        """A writer of a changed copy of ``savepoint`` (a savepoint or a retained checkpoint); the
        original is never changed."""
        if not isinstance(savepoint, Savepoint):
            raise TypeError(f"from_existing takes a loaded lg.Savepoint, got {savepoint!r}")
        return cls(savepoint.max_parallelism, savepoint)

    # ---- steps

    def with_keyed_state(
        self,
        uid: str,
        state: str,
        data: Iterable[tuple[Any, Any]] | AsyncIterable[tuple[Any, Any]],
        *,
        kind: BootstrapKind = "value",
        serializer: Serializer[Any] | None = None,
        ttl: StateTtlConfig | None = None,
    ) -> SavepointWriter:
        """Keyed state ``state`` of operator ``uid`` from ``(key, value)`` pairs (a list's value is a
        list, a map's a dict), replacing any state of that name; a key given twice keeps its last
        value. Keys are what the job's key selector returns. Under ``ttl``, entries count their time
        to live from the write."""
        if kind not in ("value", "list", "map"):
            raise ConfigurationError(f"kind is 'value', 'list' or 'map', got {kind!r}")
        encoding = StateEncoding(kind, serializer or DEFAULT_SERIALIZER, ttl)

        async def step(draft: _Draft) -> None:
            pairs = [pair async for pair in data] if isinstance(data, AsyncIterable) else data
            await draft.put_keyed(uid, state, encoding, pairs)

        self._steps.append(step)
        return self

    def with_list_state(
        self, uid: str, name: str, items: Iterable[Any], *, serializer: Serializer[Any] | None = None
    ) -> SavepointWriter:
        """Operator list state ``name`` of ``uid`` (split over the subtasks of a restoring job)."""
        return self._operator_step(uid, name, "split", list(items), serializer)

    def with_union_state(
        self, uid: str, name: str, items: Iterable[Any], *, serializer: Serializer[Any] | None = None
    ) -> SavepointWriter:
        """Union list state ``name`` of ``uid`` (every subtask of a restoring job gets all of it)."""
        return self._operator_step(uid, name, "union", list(items), serializer)

    def with_broadcast_state(
        self, uid: str, name: str, mapping: Mapping[Any, Any], *, serializer: Serializer[Any] | None = None
    ) -> SavepointWriter:
        """Broadcast state ``name`` of ``uid`` (every subtask of a restoring job gets a copy)."""
        return self._operator_step(uid, name, "broadcast", dict(mapping), serializer)

    def transform_keyed_state(
        self,
        uid: str,
        state: str,
        function: Callable[[Any, Any], Any],
        *,
        serializer: Serializer[Any] | None = None,
    ) -> SavepointWriter:
        """Replace each value of keyed state ``state`` of ``uid`` with ``function(key, value)``; None
        removes the entry. Values are read with the serializer that wrote them, or with ``serializer``
        (which then writes them; a typed state needs one: it says what class its values are)."""

        async def step(draft: _Draft) -> None:
            await draft.transform_keyed(uid, state, function, serializer)

        self._steps.append(step)
        return self

    def remove_operator(self, uid: str) -> SavepointWriter:
        """Leave out every state of operator ``uid``."""

        def step(draft: _Draft) -> None:
            draft.operator(uid)  # it must be there
            del draft.operators[uid]

        self._steps.append(step)
        return self

    def rename_operator(self, old_uid: str, new_uid: str) -> SavepointWriter:
        """Give the state of operator ``old_uid`` to ``new_uid`` (which must not have any)."""

        async def step(draft: _Draft) -> None:
            await draft.rename(old_uid, new_uid)

        self._steps.append(step)
        return self

    def with_max_parallelism(self, max_parallelism: int) -> SavepointWriter:
        """Give the savepoint ``max_parallelism`` key groups, re-spreading every key of every keyed
        state (a running job can never change its max parallelism; a job restoring this one runs with
        the new one). Operators written at a higher parallelism are written at this one."""
        checked = _checked_max_parallelism(max_parallelism)

        async def step(draft: _Draft) -> None:
            await draft.respread(checked)

        self._steps.append(step)
        return self

    def _operator_step(
        self, uid: str, name: str, mode: str, raw_values: Any, serializer: Serializer[Any] | None
    ) -> SavepointWriter:
        chosen = serializer or DEFAULT_SERIALIZER

        async def step(draft: _Draft) -> None:
            await draft.put_operator_state(uid, name, mode, raw_values, chosen)

        self._steps.append(step)
        return self

    # ---- writing

    async def write(self, url: str, *, key: bytes | str | None = None) -> str:
        """Run the steps and write the savepoint into the directory ``url``, as ``savepoint-<id>/``
        (the next id there); its URL. Its files are signed with ``key`` if given, else with the key
        the existing savepoint was loaded with, if any.

        Raises:
            ConfigurationError: A step names an operator or state that is not there, or ``url``
                holds no savepoints.
            StateSerializationError: A value cannot be written by its serializer.
        """
        place = storage_for(url)
        signing_key = key.encode("utf-8") if isinstance(key, str) else key
        if signing_key is None and self._source is not None:
            signing_key = self._source._storage.signing_key
        if signing_key is not None:
            place.signing_key = signing_key
        storage = place.savepoints()
        if storage is None:
            raise ConfigurationError(f"a savepoint cannot go to {url!r}: {place!r} holds no savepoints")
        draft = await _Draft.start(self._max_parallelism, self._source)
        for step in self._steps:
            done = step(draft)
            if done is not None:
                await done
        existing = await storage.completed_checkpoints()
        checkpoint_id = existing[-1].checkpoint_id + 1 if existing else 1
        location = await storage.create_checkpoint_location(checkpoint_id)
        operators: dict[str, OperatorCheckpointState] = {}
        try:
            for uid, operator in draft.operators.items():
                operators[uid] = await draft.write_operator(operator, storage, location)
            job_name = "savepoint-writer" if self._source is None else self._source.job_name
            metadata = CheckpointMetadata(
                checkpoint_id, job_name, draft.max_parallelism, time.time(), operators, kind="savepoint"
            )
            completed = await storage.write_metadata(location, metadata.to_bytes())
        except BaseException:
            await storage.discard_checkpoint(checkpoint_id)
            raise
        return completed.pointer


def _checked_max_parallelism(max_parallelism: int) -> int:
    if type(max_parallelism) is not int or not 1 <= max_parallelism <= UPPER_BOUND_MAX_PARALLELISM:
        raise ConfigurationError(
            f"max_parallelism must be an int from 1 to {UPPER_BOUND_MAX_PARALLELISM}, got {max_parallelism!r}"
        )
    return max_parallelism


class _Draft:
    """The savepoint being written: its operators, as they are changed step by step."""

    def __init__(self, max_parallelism: int, source: Savepoint | None) -> None:
        self.max_parallelism = max_parallelism
        self.source = source
        self.operators: dict[str, _Operator] = {}
        self.clock: Callable[[], float] = time.time

    @classmethod
    async def start(cls, max_parallelism: int, source: Savepoint | None) -> _Draft:
        draft = cls(max_parallelism, source)
        if source is not None:
            for info in source.operators():
                handles = dict(enumerate(source._subtasks(info.uid)))
                draft.operators[info.uid] = _Operator(info.uid, info.parallelism, copied=handles)
        return draft

    def operator(self, uid: str) -> _Operator:
        operator = self.operators.get(uid)
        if operator is None:
            raise ConfigurationError(
                f"the savepoint has no operator {uid!r}; it has {sorted(self.operators)}"
            )
        return operator

    async def decoded(self, uid: str, *, create: bool = False) -> _Operator:
        """Operator ``uid`` with its state decoded (one keyed snapshot of every key group)."""
        operator = self.operators.get(uid)
        if operator is None:
            if not create:
                self.operator(uid)  # raises, naming what there is
            operator = self.operators[uid] = _Operator(uid, 1)
        if operator.copied is None:
            return operator
        assert self.source is not None
        states: dict[str, StateMetaInfo] = {}
        entries: dict[str, dict[int, list[Entry]]] = {}
        for index, handles in operator.copied.items():
            if handles.keyed is not None:
                snapshot = await self.source._keyed_snapshot(uid, handles)
                states.update(snapshot.states)
                for name, groups in (await run_sync(snapshot.grouped_entries)).items():
                    mine = entries.setdefault(name, {})
                    for key_group, group in groups.items():
                        mine.setdefault(key_group, []).extend(group)
            if handles.operator is not None:
                operator.operator[index] = dict((await self.source._operator_snapshot(handles)).states)
        if states:
            everything = KeyGroupRange(0, self.max_parallelism - 1)
            operator.keyed = KeyedStateSnapshot(uid, self.max_parallelism, everything, states, entries)
        operator.copied = None
        return operator

    async def put_keyed(
        self, uid: str, state: str, encoding: StateEncoding, pairs: Iterable[tuple[Any, Any]]
    ) -> None:
        operator = await self.decoded(uid, create=True)
        codec = StateCodec(encoding, self.clock)
        now = self.clock()
        kind, timed = encoding.kind, encoding.ttl is not None
        by_key: dict[Any, Any] = {}
        for pair in pairs:
            key, value = pair
            if kind == "list" and not isinstance(value, list):
                raise ConfigurationError(f"list state {state!r}: the value of key {key!r} is not a list")
            if kind == "map" and not isinstance(value, dict):
                raise ConfigurationError(f"map state {state!r}: the value of key {key!r} is not a dict")
            by_key[key] = value
        groups: dict[int, list[Entry]] = {}
        for key, value in by_key.items():
            stored = value
            if timed:
                if kind == "list":
                    stored = [TtlValue(element, now) for element in value]
                elif kind == "map":
                    stored = {user_key: TtlValue(element, now) for user_key, element in value.items()}
                else:
                    stored = TtlValue(value, now)
            key_group = key_group_for(key, self.max_parallelism)
            groups.setdefault(key_group, []).append((key, DEFAULT_NAMESPACE, codec.encode(stored)))
        meta = StateMetaInfo(state, kind, encoding.serializer.snapshot(), encoding.ttl)
        self._set_keyed(operator, state, meta, groups)

    def _set_keyed(
        self, operator: _Operator, state: str, meta: StateMetaInfo, groups: dict[int, list[Entry]]
    ) -> None:
        held = operator.keyed
        states = {} if held is None else dict(held.states)
        entries = {} if held is None else dict(held.entries)
        states[state], entries[state] = meta, groups
        everything = KeyGroupRange(0, self.max_parallelism - 1)
        operator.keyed = KeyedStateSnapshot(operator.uid, self.max_parallelism, everything, states, entries)

    async def transform_keyed(
        self, uid: str, state: str, function: Callable[[Any, Any], Any], serializer: Serializer[Any] | None
    ) -> None:
        operator = await self.decoded(uid)
        held = operator.keyed
        if held is None or state not in held.states:
            have = [] if held is None else sorted(held.states)
            raise ConfigurationError(f"operator {uid!r} has no keyed state {state!r}; it has {have}")
        meta = held.states[state]
        if serializer is None and meta.serializer != DEFAULT_SERIALIZER.snapshot():
            raise ConfigurationError(
                f"state {state!r} of {uid!r} was written by {meta.serializer.describe()}: pass serializer= "
                "to transform it (it reads the values into objects and writes the new ones)"
            )
        writer = serializer or DEFAULT_SERIALIZER
        read = restore_reader(uid, state, meta.serializer, writer)
        old = StateCodec(StateEncoding(meta.kind, writer, meta.ttl), self.clock, read)
        new = StateCodec(StateEncoding(meta.kind, writer, meta.ttl), self.clock)
        timed = meta.ttl is not None
        groups: dict[int, list[Entry]] = {}
        for key_group, entries in held.entries.get(state, {}).items():
            kept = []
            for key, namespace, data in entries:
                stored = old.decode(data)
                value = _unwrapped(stored) if timed else stored
                changed = function(key, value)
                if changed is None:
                    continue
                if timed:  # the entry keeps the time its time to live counts from
                    changed = _rewrapped(stored, changed, self.clock())
                kept.append((key, namespace, new.encode(changed)))
            if kept:
                groups[key_group] = kept
        self._set_keyed(operator, state, StateMetaInfo(state, meta.kind, writer.snapshot(), meta.ttl), groups)

    async def put_operator_state(
        self, uid: str, name: str, mode: str, values: Any, serializer: Serializer[Any]
    ) -> None:
        operator = await self.decoded(uid, create=True)
        for states in operator.operator.values():  # replaced: the new one lives in subtask 0
            states.pop(name, None)
        if mode == "broadcast":
            raw: Any = {key: serializer.dumps(value) for key, value in values.items()}
        else:
            raw = [serializer.dumps(value) for value in values]
        operator.operator.setdefault(0, {})[name] = OperatorStateEntry(mode, serializer.snapshot(), raw)  # type: ignore[arg-type]

    async def rename(self, old_uid: str, new_uid: str) -> None:
        if new_uid in self.operators:
            raise ConfigurationError(f"operator {new_uid!r} has state already: remove it first")
        operator = await self.decoded(old_uid)  # its uid is inside its state: written anew
        del self.operators[old_uid]
        operator.uid = new_uid
        if operator.keyed is not None:
            held = operator.keyed
            operator.keyed = KeyedStateSnapshot(
                new_uid, held.max_parallelism, held.key_group_range, held.states, held.entries
            )
        self.operators[new_uid] = operator

    async def respread(self, max_parallelism: int) -> None:
        for uid in list(self.operators):
            operator = await self.decoded(uid)
            if operator.parallelism > max_parallelism:
                operator.parallelism = max_parallelism
                _fold_operator_state(operator)
            held = operator.keyed
            if held is None:
                continue
            entries: dict[str, dict[int, list[Entry]]] = {}
            for name, groups in held.entries.items():
                spread: dict[int, list[Entry]] = {}
                for group in groups.values():
                    for entry in group:
                        spread.setdefault(key_group_for(entry[0], max_parallelism), []).append(entry)
                entries[name] = spread
            everything = KeyGroupRange(0, max_parallelism - 1)
            operator.keyed = KeyedStateSnapshot(uid, max_parallelism, everything, held.states, entries)
        self.max_parallelism = max_parallelism

    async def write_operator(
        self, operator: _Operator, storage: CheckpointStorage, location: CheckpointLocation
    ) -> OperatorCheckpointState:
        """Write one operator's files: copied as they are, or encoded subtask by subtask."""
        uid, parallelism = operator.uid, operator.parallelism
        written = OperatorCheckpointState(uid, parallelism)

        async def put(index: int, kind: str, data: bytes | None) -> StreamStateHandle | None:
            if data is None:
                return None
            return await storage.write_state(location, blob_name(uid, index, kind), data)

        if operator.copied is not None:
            assert self.source is not None
            source = self.source._storage
            for index, handles in operator.copied.items():
                keyed = None if handles.keyed is None else await source.read_state(handles.keyed)
                state = None if handles.operator is None else await source.read_state(handles.operator)
                written.subtasks[index] = SubtaskStateHandles(
                    await put(index, "keyed", keyed), await put(index, "operator", state)
                )
            return written
        for index in range(parallelism):
            keyed = None
            if operator.keyed is not None:
                key_groups = KeyGroupRange.for_subtask(self.max_parallelism, parallelism, index)
                keyed = await run_sync(encode_canonical, _part(operator.keyed, key_groups))
            states = operator.operator.get(index)
            state = None
            if states:
                state = encode_operator_state(OperatorStateSnapshot(uid, index, parallelism, states))
            written.subtasks[index] = SubtaskStateHandles(
                await put(index, "keyed", keyed), await put(index, "operator", state)
            )
        return written


def _fold_operator_state(operator: _Operator) -> None:
    """The operator state of subtasks beyond the operator's (narrowed) parallelism, moved into the
    subtasks that remain: list elements kept in full (a restore splits or unions them anyway),
    broadcast state kept once (every subtask holds the same)."""
    parallelism = operator.parallelism
    for index in sorted(i for i in operator.operator if i >= parallelism):
        target = operator.operator.setdefault(index % parallelism, {})
        for name, entry in operator.operator.pop(index).items():
            held = target.get(name)
            if held is None:
                target[name] = entry
            elif entry.mode != "broadcast":
                assert isinstance(held.raw, list) and isinstance(entry.raw, list)
                target[name] = OperatorStateEntry(held.mode, held.serializer, held.raw + entry.raw)


def _part(snapshot: KeyedStateSnapshot, key_groups: KeyGroupRange) -> KeyedStateSnapshot:
    """The key groups ``key_groups`` of a snapshot of every key group."""
    entries = {
        name: {key_group: group for key_group, group in groups.items() if key_group in key_groups}
        for name, groups in snapshot.entries.items()
    }
    return KeyedStateSnapshot(
        snapshot.operator_uid, snapshot.max_parallelism, key_groups, snapshot.states, entries
    )


def _rewrapped(stored: Any, value: Any, now: float) -> Any:
    """``value`` under TTL: the timestamps ``stored`` had (new elements count from ``now``)."""
    if isinstance(stored, TtlValue):
        return TtlValue(value, stored.timestamp)
    if isinstance(stored, dict):
        return {k: TtlValue(v, stored[k].timestamp if k in stored else now) for k, v in value.items()}
    return [TtlValue(v, stored[i].timestamp if i < len(stored) else now) for i, v in enumerate(value)]
