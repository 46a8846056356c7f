"""Value serializers: how state values become bytes in RocksDB, checkpoints and savepoints.

A serializer also describes itself (:meth:`Serializer.snapshot`): the description is written with the
state, so a restore can tell whether the bytes it finds were written by a compatible serializer.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
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
