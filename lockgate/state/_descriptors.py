"""State descriptors: the name, kind and default of a piece of state, declared in ``open()``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Defaults of these types are immutable, so value() may hand out the descriptor's own object.
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset)


@dataclass(frozen=True)
class ValueStateDescriptor(Generic[T]):
    """Declares a keyed :class:`ValueState`: one value per key (and namespace).

    Args:
        name: The state's name, unique within its operator. Checkpoints map state by operator uid and
            this name, so keep it stable across versions of a job.
        default: What ``value()`` returns for a key that has no value. Each call gets a fresh copy, so
            a mutable default (a list, a dict) is never shared between keys.
    """

    name: str
    default: T | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a state name must be a non-empty str, got {self.name!r}")

    def fresh_default(self) -> T | None:
        """The default value, copied unless it is immutable."""
        default = self.default
        if isinstance(default, _IMMUTABLE):
            return default
        return copy.deepcopy(default)

    @property
    def kind(self) -> str:
        """The kind of state the descriptor declares."""
        return "value"
