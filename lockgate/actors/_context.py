"""The runtime context of one operator subtask."""

from __future__ import annotations

from typing import Any, TypeVar

from lockgate._errors import ConfigurationError
from lockgate.functions import RuntimeContext
from lockgate.state import KeyedStateBackend, ValueState, ValueStateDescriptor

T = TypeVar("T")


class SubtaskContext(RuntimeContext):
    """The context of one operator subtask; keyed operators carry their state backend."""

    def __init__(
        self,
        operator_uid: str,
        operator_name: str,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        keyed_backend: KeyedStateBackend | None = None,
    ) -> None:
        self.operator_uid = operator_uid
        self.operator_name = operator_name
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.keyed_backend = keyed_backend

    def __repr__(self) -> str:
        return f"<SubtaskContext {self.operator_uid!r} [{self.subtask_index + 1}/{self.parallelism}]>"

    def _require_keyed(self, what: str) -> KeyedStateBackend:
        if self.keyed_backend is None:
            raise ConfigurationError(
                f"{what} needs a keyed stream, but operator {self.operator_uid!r} is not keyed; "
                "apply it after key_by(...)"
            )
        return self.keyed_backend

    def get_state(self, descriptor: ValueStateDescriptor[T]) -> ValueState[T]:
        backend = self._require_keyed("get_state()")
        if not isinstance(descriptor, ValueStateDescriptor):
            raise TypeError(f"get_state() takes a ValueStateDescriptor, got {type(descriptor).__qualname__}")
        return backend.create_value_state(descriptor)

    def get_current_key(self) -> Any:
        return self._require_keyed("get_current_key()").current_key
