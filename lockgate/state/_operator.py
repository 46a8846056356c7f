"""Operator state: state of a non-keyed operator subtask, redistributed as a whole on rescale.

Three kinds, as the seed describes them:

- list state: on restore at another parallelism the elements of all subtasks are split evenly;
- union list state: on restore every subtask gets the elements of all subtasks;
- broadcast state: a map that every subtask holds identically; on restore each gets a copy.

Operator state is small by nature (offsets, buffers), so its snapshot copies it in the synchronous
part; the encoding happens in the asynchronous part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from lockgate._errors import ConfigurationError, IncompatibleStateError
from lockgate.state._descriptors import ListStateDescriptor, MapStateDescriptor, StateDescriptor
from lockgate.state._evolution import restore_reader
from lockgate.state._serializers import SerializerSnapshot

T = TypeVar("T")
K = TypeVar("K")

Mode = Literal["split", "union", "broadcast"]


class OperatorListState(Generic[T]):
    """A list of one operator subtask; the awaitable and ``*_nowait`` forms do the same."""

    __slots__ = ("_elements", "name")

    def __init__(self, name: str, elements: list[T]) -> None:
        self.name = name
        self._elements = elements

    def __repr__(self) -> str:
        return f"<OperatorListState {self.name!r} [{len(self._elements)} elements]>"

    def get_nowait(self) -> list[T]:
        """A copy of the elements."""
        return list(self._elements)

    def add_nowait(self, value: T) -> None:
        """Append one element."""
        self._elements.append(value)

    def add_all_nowait(self, values: Iterable[T]) -> None:
        """Append every element of ``values``."""
        if values is None:
            raise TypeError("add_all() takes a list of values, got None; use clear() to empty the state")
        self._elements.extend(values)

    def update_nowait(self, values: Iterable[T]) -> None:
        """Replace the elements."""
        if values is None:
            raise TypeError("update() takes a list of values, got None; use clear() to empty the state")
        self._elements[:] = list(values)

    def clear_nowait(self) -> None:
        """Remove every element."""
        self._elements.clear()

    async def get(self) -> list[T]:
        """A copy of the elements."""
        return self.get_nowait()

    async def add(self, value: T) -> None:
        """Append one element."""
        self.add_nowait(value)

    async def add_all(self, values: Iterable[T]) -> None:
        """Append every element of ``values``."""
        self.add_all_nowait(values)

    async def update(self, values: Iterable[T]) -> None:
        """Replace the elements."""
        self.update_nowait(values)

    async def clear(self) -> None:
        """Remove every element."""
        self.clear_nowait()


class BroadcastState(Generic[K, T]):
    """A map that every subtask of an operator holds identically.

    Only the broadcast side (``process_broadcast_element``) may change it; the other side reads it
    through a read-only view, so all subtasks keep the same contents.
    """

    __slots__ = ("_entries", "_writable", "name")

    def __init__(self, name: str, entries: dict[K, T], writable: bool = True) -> None:
        self.name = name
        self._entries = entries
        self._writable = writable

    def __repr__(self) -> str:
        mode = "writable" if self._writable else "read-only"
        return f"<BroadcastState {self.name!r} [{len(self._entries)} entries, {mode}]>"

    def read_only(self) -> BroadcastState[K, T]:
        """A view of the same entries that refuses changes."""
        return BroadcastState(self.name, self._entries, writable=False)

    def _check_writable(self) -> None:
        if not self._writable:
            raise ConfigurationError(
                f"broadcast state {self.name!r} is read-only in process_element(): change it in "
                "process_broadcast_element(), so every subtask keeps the same contents"
            )

    def get_nowait(self, key: K) -> T | None:
        """The value of ``key``, or None."""
        return self._entries.get(key)

    def contains_nowait(self, key: K) -> bool:
        """Whether ``key`` has a value."""
        return key in self._entries

    def put_nowait(self, key: K, value: T) -> None:
        """Set the value of ``key`` (broadcast side only)."""
        self._check_writable()
        self._entries[key] = value

    def remove_nowait(self, key: K) -> None:
        """Remove ``key`` (broadcast side only)."""
        self._check_writable()
        self._entries.pop(key, None)

    def clear_nowait(self) -> None:
        """Remove every entry (broadcast side only)."""
        self._check_writable()
        self._entries.clear()

    def to_dict_nowait(self) -> dict[K, T]:
        """A copy of the entries."""
        return dict(self._entries)

    async def get(self, key: K) -> T | None:
        """The value of ``key``, or None."""
        return self.get_nowait(key)

    async def contains(self, key: K) -> bool:
        """Whether ``key`` has a value."""
        return self.contains_nowait(key)

    async def put(self, key: K, value: T) -> None:
        """Set the value of ``key`` (broadcast side only)."""
        self.put_nowait(key, value)

    async def remove(self, key: K) -> None:
        """Remove ``key`` (broadcast side only)."""
        self.remove_nowait(key)

    async def clear(self) -> None:
        """Remove every entry (broadcast side only)."""
        self.clear_nowait()

    async def items(self) -> AsyncIterator[tuple[K, T]]:
        """Every entry, as they were when iteration began."""
        for item in list(self._entries.items()):
            yield item


#: Encoded contents of one state: element bytes (list states) or key -> value bytes (broadcast).
Raw = list[bytes] | dict[Any, bytes]


@dataclass(frozen=True)
class OperatorStateEntry:
    """One state of an operator subtask's snapshot: its mode, serializer and encoded contents."""

    mode: Mode
    serializer: SerializerSnapshot
    raw: Raw


@dataclass(frozen=True)
class OperatorStateSnapshot:
    """The operator state of one subtask at one checkpoint, by state name."""

    operator_uid: str
    subtask_index: int
    parallelism: int
    states: dict[str, OperatorStateEntry] = field(default_factory=dict)


#: What one subtask restores: per state name, its entry with the contents this subtask gets.
RestoredOperatorState = dict[str, OperatorStateEntry]


def redistribute(snapshots: Sequence[OperatorStateSnapshot], parallelism: int) -> list[RestoredOperatorState]:
    """Split the operator state of the old subtasks over ``parallelism`` new ones.

    List state: all elements in old-subtask order, cut into ``parallelism`` contiguous, even parts.
    Union list state: every new subtask gets all elements. Broadcast state: every new subtask gets
    the first old subtask's map (all old subtasks held the same).
    """
    ordered = sorted(snapshots, key=lambda snapshot: snapshot.subtask_index)
    restored: list[RestoredOperatorState] = [{} for _ in range(parallelism)]
    names = {name for snapshot in ordered for name in snapshot.states}
    for name in sorted(names):
        entries = [snapshot.states[name] for snapshot in ordered if name in snapshot.states]
        modes = {entry.mode for entry in entries}
        if len(modes) != 1:
            raise ConfigurationError(f"operator state {name!r} was saved in several modes: {sorted(modes)}")
        mode, serializer = entries[0].mode, entries[0].serializer
        if mode == "broadcast":
            first = entries[0].raw
            assert isinstance(first, dict)
            for target in restored:
                target[name] = OperatorStateEntry(mode, serializer, dict(first))
            continue
        elements = [element for entry in entries for element in entry.raw]
        for index, target in enumerate(restored):
            if mode == "union":
                part = list(elements)
            else:
                part = elements[
                    index * len(elements) // parallelism : (index + 1) * len(elements) // parallelism
                ]
            target[name] = OperatorStateEntry(mode, serializer, part)
    return restored


class OperatorStateBackend:
    """The operator state of one operator subtask."""

    def __init__(self, operator_uid: str, restored: RestoredOperatorState | None = None) -> None:
        self.operator_uid = operator_uid
        self._descriptors: dict[str, tuple[Mode, StateDescriptor[Any]]] = {}
        self._lists: dict[str, list[Any]] = {}
        self._maps: dict[str, dict[Any, Any]] = {}
        self._restored = dict(restored or {})
        self.is_restored = restored is not None

    def __repr__(self) -> str:
        return f"<OperatorStateBackend {self.operator_uid!r} [{', '.join(self._descriptors)}]>"

    def _register(self, descriptor: StateDescriptor[Any], mode: Mode) -> OperatorStateEntry | None:
        """Declare a state; return its restored entry the first time it is declared."""
        known = self._descriptors.get(descriptor.name)
        if known is not None:
            if known[0] != mode:
                raise ConfigurationError(
                    f"operator {self.operator_uid!r} declares operator state {descriptor.name!r} as "
                    f"{mode} state, but it is already {known[0]} state; give each state its own name"
                )
            return None
        restored = self._restored.pop(descriptor.name, None)
        if restored is not None and restored.mode != mode:
            raise IncompatibleStateError(
                self.operator_uid,
                descriptor.name,
                f"{restored.mode} state",
                f"{mode} state",
                f"operator {self.operator_uid!r} declares operator state {descriptor.name!r} as {mode} "
                f"state, but it was {restored.mode} state when it was saved; give the new state another name",
            )
        self._descriptors[descriptor.name] = (mode, descriptor)
        return restored

    def _reader(
        self, descriptor: StateDescriptor[Any], restored: OperatorStateEntry | None
    ) -> Callable[[bytes], Any]:
        """How to read the restored values of ``descriptor``'s state: its serializer's ``loads``, or
        a migration from the serializer that wrote them (operator state is small: read at once).

        Raises:
            IncompatibleStateError: The serializer cannot read them.
        """
        if restored is None:
            return descriptor.serializer.loads
        read = restore_reader(self.operator_uid, descriptor.name, restored.serializer, descriptor.serializer)
        return descriptor.serializer.loads if read is None else read

    def _list(self, descriptor: ListStateDescriptor[T], mode: Mode) -> OperatorListState[T]:
        if not isinstance(descriptor, ListStateDescriptor):
            raise TypeError(f"operator list state takes a ListStateDescriptor, got {descriptor!r}")
        restored = self._register(descriptor, mode)
        if descriptor.name not in self._lists:
            raw = restored.raw if restored is not None else []
            read = self._reader(descriptor, restored)
            self._lists[descriptor.name] = [read(element) for element in raw]
        return OperatorListState(descriptor.name, self._lists[descriptor.name])

    def get_list_state(self, descriptor: ListStateDescriptor[T]) -> OperatorListState[T]:
        """List state, split evenly over the subtasks on rescale."""
        return self._list(descriptor, "split")

    def get_union_list_state(self, descriptor: ListStateDescriptor[T]) -> OperatorListState[T]:
        """List state that every subtask gets whole on restore."""
        return self._list(descriptor, "union")

    def get_broadcast_state(self, descriptor: MapStateDescriptor[T]) -> BroadcastState[Any, T]:
        """The broadcast state that ``descriptor`` declares (writable)."""
        if not isinstance(descriptor, MapStateDescriptor):
            raise TypeError(f"get_broadcast_state() takes a MapStateDescriptor, got {descriptor!r}")
        restored = self._register(descriptor, "broadcast")
        if descriptor.name not in self._maps:
            raw = restored.raw if restored is not None else {}
            assert isinstance(raw, dict)
            read = self._reader(descriptor, restored)
            self._maps[descriptor.name] = {k: read(v) for k, v in raw.items()}
        return BroadcastState(descriptor.name, self._maps[descriptor.name])

    def snapshot(self, subtask_index: int, parallelism: int) -> OperatorStateSnapshot:
        """Encode every state; restored state nobody declared is kept as it was."""
        states = dict(self._restored)
        for name, (mode, descriptor) in self._descriptors.items():
            serializer = descriptor.serializer
            raw: Raw
            if mode == "broadcast":
                raw = {k: serializer.dumps(v) for k, v in self._maps[name].items()}
            else:
                raw = [serializer.dumps(element) for element in self._lists[name]]
            states[name] = OperatorStateEntry(mode, serializer.snapshot(), raw)
        return OperatorStateSnapshot(self.operator_uid, subtask_index, parallelism, states)
