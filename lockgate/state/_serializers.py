"""Value serializers: how state values become bytes in RocksDB, checkpoints and savepoints.

A serializer also describes itself (:meth:`Serializer.snapshot`): the description is written with the
state, so a restore can tell whether the bytes it finds were written by a compatible serializer.
"""

from __future__ import annotations

import enum
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cloudpickle

T = TypeVar("T")

PICKLE_PROTOCOL = 5


@dataclass(frozen=True)
class SerializerSnapshot:
    """What a serializer writes about itself next to the state it serialised.

    Attributes:
        name: The serializer's stable name (not its Python class path, which may move).
        version: The version of its format; bump it when the bytes change.
        schema: Anything else a restore needs to judge compatibility.
    """

    name: str
    version: int
    schema: Any = None

    def describe(self) -> str:
        """The snapshot as a person reads it, in errors: serializer, version and schema."""
        if self.name == "pickle":
            return f"pickle (protocol {self.version})"
        if isinstance(self.schema, tuple) and self.schema and isinstance(self.schema[0], str):
            from lockgate.state._schema import render

            return f"{self.name} serializer version {self.version} of {render(self.schema)}"
        schema = "" if self.schema is None else f" ({self.schema!r})"
        return f"{self.name} serializer version {self.version}{schema}"


class Compatibility(enum.Enum):
    """Whether a serializer reads what another one (described by its snapshot) wrote."""

    #: The bytes read as they are.
    COMPATIBLE_AS_IS = "compatible as is"
    #: The values are read, then migrated to the new schema (on restore).
    COMPATIBLE_AFTER_MIGRATION = "compatible after migration"
    #: The values cannot be read: a restore refuses the state.
    INCOMPATIBLE = "incompatible"


@dataclass(frozen=True)
class Resolution(Generic[T]):
    """A serializer's answer to the snapshot of the one that wrote some state.

    Attributes:
        compatibility: Whether it can read the state.
        changes: What differs, one line per change (why it is incompatible, if it is).
        read: Reads one value written by the old serializer as a value of the new one (None when
            incompatible). It may raise: a migration failed.
    """

    compatibility: Compatibility
    changes: tuple[str, ...] = ()
    read: Callable[[bytes], T] | None = None


class Serializer(ABC, Generic[T]):
    """Turns values into bytes and back. ``loads(dumps(v))`` must equal ``v``."""

    @abstractmethod
    def dumps(self, value: T) -> bytes:
        """The bytes of ``value``."""

    @abstractmethod
    def loads(self, data: bytes) -> T:
        """The value of ``data``."""

    @abstractmethod
    def snapshot(self) -> SerializerSnapshot:
        """The description of this serializer, stored with what it wrote."""

    def resolve_compatibility(self, old: SerializerSnapshot) -> Compatibility:
        """Whether this serializer reads what the serializer described by ``old`` wrote: as is, after
        a migration, or not at all."""
        return self.resolve(old).compatibility

    def resolve(self, old: SerializerSnapshot) -> Resolution[T]:
        """How this serializer reads what the serializer described by ``old`` wrote (see
        :class:`Resolution`). Serializers that can migrate override it; by default only bytes of an
        equal snapshot are read (as they are)."""
        if old == self.snapshot():
            return Resolution(Compatibility.COMPATIBLE_AS_IS, (), self.loads)
        return Resolution(
            Compatibility.INCOMPATIBLE,
            (f"written by {old.describe()}, which {self.snapshot().describe()} does not read",),
        )


class PickleSerializer(Serializer[Any]):
    """The default: pickle protocol 5; what plain pickle refuses (lambdas, local classes) goes
    through cloudpickle, whose output plain ``pickle.loads`` reads back.

    Loading pickled bytes runs code: read only checkpoints you trust.
    """

    def __repr__(self) -> str:
        return "PickleSerializer()"

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            return cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)  # type: ignore[no-any-return]

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)

    def snapshot(self) -> SerializerSnapshot:
        return SerializerSnapshot("pickle", PICKLE_PROTOCOL)


#: The serializer of descriptors that name none.
DEFAULT_SERIALIZER: Serializer[Any] = PickleSerializer()
