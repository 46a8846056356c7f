"""Restoring state written by another serializer: resolve its snapshot against the one declared now,
refuse what cannot be read, and read the rest, migrating where the schema changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lockgate._errors import IncompatibleStateError, StateMigrationError
from lockgate.state._serializers import Compatibility, Serializer, SerializerSnapshot

#: Reads one value written by the old serializer as a value of the new one.
Reader = Callable[[bytes], Any]


def restore_reader(
    operator_uid: str, state: str, saved: SerializerSnapshot, serializer: Serializer[Any]
) -> Reader | None:
    """How to read ``state``'s restored values, written by the serializer ``saved`` describes, with
    ``serializer``: None when they read as they are, else a function that migrates each value (it
    raises :class:`StateMigrationError` naming the state, the schemas and the cause).

    Raises:
        IncompatibleStateError: ``serializer`` cannot read them; it says what changed and what to do.
    """
    declared = serializer.snapshot()
    if saved == declared:
        return None
    resolution = serializer.resolve(saved)
    old, new = saved.describe(), declared.describe()
    if resolution.compatibility is Compatibility.COMPATIBLE_AS_IS:
        return None
    if resolution.compatibility is Compatibility.INCOMPATIBLE or resolution.read is None:
        changes = "".join(f"\n  - {change}" for change in resolution.changes)
        raise IncompatibleStateError(
            operator_uid,
            state,
            old,
            new,
            f"operator {operator_uid!r}: state {state!r} was saved by {old}, which {new} cannot read:"
            f"{changes}\nDeclare the state as it was, migrate it (see the README's table of schema "
            "changes), or give the new state another name. Nothing was restored or overwritten.",
        )
    read = resolution.read

    def migrate(data: bytes) -> Any:
        try:
            return read(data)
        except Exception as exc:
            raise StateMigrationError(
                operator_uid, state, old, new, f"{type(exc).__name__}: {exc}. Nothing was overwritten."
            ) from exc

    return migrate
