"""Typed serializers: values of a declared type, written as msgpack by msgspec, with their schema in
the snapshot so that a restore can evolve them (see :mod:`lockgate.state._schema`).

Their bytes are a msgpack map of the value's fields by name (an array for msgspec's ``array_like``
Structs): reading them runs no code, unlike a pickle. msgspec is imported when the first typed
serializer is made, pydantic only by :class:`PydanticSerializer`.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
import sys
import typing
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from lockgate.state._schema import (
    RecordFields,
    Schema,
    aliases_in,
    compare,
    describe,
    render,
    to_current,
    to_wire,
)
from lockgate.state._serializers import (
    Compatibility,
    Resolution,
    Serializer,
    SerializerSnapshot,
)

T = TypeVar("T")

#: A migration: the plain form of a value of one version (a dict by field name) to the next version's.
Migration = Callable[[Any], Any]

#: Snapshot names of the typed serializers: all write msgpack maps by field name, so each reads the
#: others' bytes through the schemas.
TYPED_NAMES: Final = frozenset({"dataclass", "msgspec", "pydantic"})


def record_fields(cls: Any) -> RecordFields | None:
    """(name, wire name, annotation, has default, aliases) of each field of a dataclass, msgspec
    Struct or pydantic model; None for any other type."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        return [
            (
                field.name,
                field.name,
                hints.get(field.name, Any),
                field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING,
                aliases_in(field.metadata),
            )
            for field in dataclasses.fields(cls)
            if field.init
        ]
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        hints = typing.get_type_hints(cls, include_extras=True)
        return [
            (
                info.name,
                info.encode_name,
                hints.get(info.name, info.type),
                info.default is not msgspec.NODEFAULT or info.default_factory is not msgspec.NODEFAULT,
                (),
            )
            for info in msgspec.structs.fields(cls)
        ]
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        fields: RecordFields = []
        for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
            aliases: tuple[str, ...] = ()
            for metadata in info.metadata:
                aliases += aliases_in(metadata)
            choices = info.validation_alias
            if isinstance(choices, pydantic.AliasChoices):
                aliases += tuple(c for c in choices.choices if isinstance(c, str) and c != name)
            elif isinstance(choices, str) and choices != name:
                aliases += (choices,)
            fields.append((name, name, info.annotation, not info.is_required(), aliases))
        return fields
    return None


def _plain_of(value: Any) -> Any:
    """A value read from a pickle as the plain form of its fields (records as dicts of what their
    objects hold, whatever their class declares now), so a typed serializer can take it over."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain_of(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain_of(item) for key, item in value.items()}
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and not isinstance(value, type):
        return {name: _plain_of(item) for name, item in state.items() if not name.startswith("_")}
    slots = getattr(type(value), "__struct_fields__", None)  # a msgspec Struct
    if slots is not None:
        return {name: _plain_of(getattr(value, name)) for name in slots if hasattr(value, name)}
    return value


class _TypedSerializer(Serializer[T]):
    """What the typed serializers share: a type, a version, migrations, and a schema."""

    NAME: str = ""

    def __init__(
        self, cls: type[T], *, version: int = 1, migrations: Mapping[int, Migration] | None = None
    ) -> None:
        if not isinstance(cls, type):
            raise TypeError(f"{type(self).__name__} takes a class, got {cls!r}")
        if type(version) is not int or version < 1:
            raise TypeError(f"version is the schema's version, an int of at least 1; got {version!r}")
        steps = dict(migrations or {})
        for start, migration in steps.items():
            if type(start) is not int or not 1 <= start < version or not callable(migration):
                raise TypeError(
                    f"migrations map a version (an int from 1 to version - 1 = {version - 1}) to a function "
                    f"from that version's values (dicts by field name) to the next one's; got {start!r}: "
                    f"{migration!r}"
                )
        self.type = cls
        self.version = version
        self.migrations = steps
        self.schema: Schema = describe(cls, record_fields)
        import msgspec  # only when a typed serializer is made

        self._plain_decode: Callable[[bytes], Any] = msgspec.msgpack.Decoder().decode
        self._snapshot = SerializerSnapshot(self.NAME, version, self.schema)

    def __repr__(self) -> str:
        version = "" if self.version == 1 else f", version={self.version}"
        return f"{type(self).__name__}({self.type.__qualname__}{version})"

    def snapshot(self) -> SerializerSnapshot:
        return self._snapshot

    def dumps(self, value: T) -> bytes:
        if not isinstance(value, self.type):
            raise TypeError(
                f"{self!r} writes {self.type.__qualname__} values, not {type(value).__qualname__}"
            )
        try:
            return self._write(value)
        except OverflowError as exc:
            raise ValueError(
                f"{self!r} cannot write the value ({exc}): msgpack holds integers from -2**63 to "
                "2**64 - 1; keep larger ones as str (with a migration), or use the PickleSerializer"
            ) from exc

    @abstractmethod
    def _write(self, value: T) -> bytes:
        """The bytes of a value of the type."""

    @abstractmethod
    def from_plain(self, wired: Any) -> T:
        """A value of the type from its plain form as this schema writes it (wire names)."""

    def _default(self, record: Schema, field: str) -> Any:
        """The default of ``field`` of an array-like record (only msgspec Structs are)."""
        raise LookupError(f"{render(record)} has no default for {field!r}")

    def from_named(self, named: Any) -> T:
        """A value of the type from its plain form by field name (renamed fields by an old name)."""
        return self.from_plain(to_wire(self.schema, named, self._default))

    def resolve(self, old: SerializerSnapshot) -> Resolution[T]:
        if old.name == "pickle":
            return Resolution(
                Compatibility.COMPATIBLE_AFTER_MIGRATION,
                ("values written by pickle are read with pickle, then taken over field by field",),
                lambda data: self.from_named(_plain_of(pickle.loads(data))),
            )
        if old.name not in TYPED_NAMES or not isinstance(old.schema, tuple):
            return super().resolve(old)
        if old.version > self.version:
            return Resolution(
                Compatibility.INCOMPATIBLE,
                (
                    f"the state was written by version {old.version} of the schema, and this is version "
                    f"{self.version}: a job cannot go back to an older version",
                ),
            )
        steps = [self.migrations[v] for v in sorted(self.migrations) if old.version <= v < self.version]
        changes = compare(old.schema, self.schema)
        old_schema = old.schema
        if steps:

            def migrate(data: bytes) -> T:
                plain = to_current(old_schema, self.schema, self._plain_decode(data))
                for step in steps:
                    plain = step(plain)
                return self.from_named(plain)

            return Resolution(
                Compatibility.COMPATIBLE_AFTER_MIGRATION, changes.automatic + changes.breaking, migrate
            )
        if changes.breaking:
            hint = (
                f"bump version= (it is {self.version}) and give migrations={{{old.version}: function}}, a "
                "function from the old value's fields (a dict) to the new one's"
            )
            return Resolution(Compatibility.INCOMPATIBLE, (*changes.breaking, hint))
        if changes.none:
            return Resolution(Compatibility.COMPATIBLE_AS_IS, (), self.loads)
        return Resolution(
            Compatibility.COMPATIBLE_AFTER_MIGRATION,
            changes.automatic,
            lambda data: self.from_named(to_current(old_schema, self.schema, self._plain_decode(data))),
        )


class _MsgspecTyped(_TypedSerializer[T]):
    """Values msgspec encodes and decodes itself: dataclasses and Structs."""

    def __init__(
        self, cls: type[T], *, version: int = 1, migrations: Mapping[int, Migration] | None = None
    ) -> None:
        super().__init__(cls, version=version, migrations=migrations)
        import msgspec

        self._encode: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
        self._decode: Callable[[bytes], T] = msgspec.msgpack.Decoder(cls).decode
        # msgspec caches what it learnt of a dataclass on the class itself, in an object that does not
        # pickle: a dataclass defined in a function (pickled by value, as values in a CollectSink are)
        # would no longer pickle. The decoder keeps its own copy; the encoder needs none.
        for record in _record_types(cls):
            if dataclasses.is_dataclass(record) and "__msgspec_cache__" in vars(record):
                delattr(record, "__msgspec_cache__")

    def _write(self, value: T) -> bytes:
        return self._encode(value)

    def loads(self, data: bytes) -> T:
        return self._decode(data)

    def from_plain(self, wired: Any) -> T:
        # Through the bytes and the decoder: a migrated value is checked exactly as a stored one.
        return self._decode(self._encode(wired))


class DataclassSerializer(_MsgspecTyped[T]):
    """Values of a dataclass (its fields: scalars, datetimes, enums, lists, tuples, sets, dicts,
    optionals and unions of those, nested dataclasses), written as msgpack maps of their fields.

    Args:
        cls: The dataclass.
        version: The schema's version: bump it with a migration when a field changes type.
        migrations: ``{from_version: function}``: each function takes a value of that version as its
            plain form and returns the next version's. They run in order, from the saved version up.
            The plain form is a dict by field name, nested records as dicts too, renamed fields
            already under their current names (so every migration names fields as the class does
            now), removed fields still there; enums are their values, sequences lists, datetimes
            datetimes, dates, times and durations ISO strings. What the last one returns is
            validated against the class; fields it lacks take their defaults.

    Raises:
        TypeError: Not a dataclass, or a field of a type that cannot be written, or bad migrations.
    """

    NAME = "dataclass"

    def __init__(
        self, cls: type[T], *, version: int = 1, migrations: Mapping[int, Migration] | None = None
    ) -> None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"DataclassSerializer takes a dataclass, got {cls!r}")
        super().__init__(cls, version=version, migrations=migrations)


class MsgspecSerializer(_MsgspecTyped[T]):
    """Values of a msgspec Struct, written as msgspec writes them (maps, or arrays for ``array_like``
    Structs, under the names its ``rename`` gives), following msgspec's rules of evolution: fields
    added with defaults, fields removed (an array-like Struct may only append fields).

    Args: as :class:`DataclassSerializer`'s (``migrations`` take dicts by field name).
    """

    NAME = "msgspec"

    def __init__(
        self, cls: type[T], *, version: int = 1, migrations: Mapping[int, Migration] | None = None
    ) -> None:
        import msgspec

        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise TypeError(f"MsgspecSerializer takes a msgspec Struct type, got {cls!r}")
        super().__init__(cls, version=version, migrations=migrations)

    def _default(self, record: Schema, field: str) -> Any:
        import msgspec

        for cls in _record_types(self.type):
            if not issubclass(cls, msgspec.Struct) or cls.__qualname__ != record[1]:
                continue
            for info in msgspec.structs.fields(cls):
                if info.name == field:
                    if info.default_factory is not msgspec.NODEFAULT:
                        return info.default_factory()
                    if info.default is not msgspec.NODEFAULT:
                        return info.default
        return super()._default(record, field)


def _record_types(cls: Any) -> list[Any]:
    """``cls`` and every record type (dataclass, Struct, model) its fields name, recursively."""
    found: list[Any] = []
    pending = [cls]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        fields = record_fields(current) if isinstance(current, type) else None
        if fields is None:
            continue
        found.append(current)
        for field in fields:
            pending += _type_args(field[2])
    return found


def _type_args(annotation: Any) -> list[Any]:
    found = [annotation]
    for arg in typing.get_args(annotation):
        found += _type_args(arg)
    return found


class PydanticSerializer(_TypedSerializer[T]):
    """Values of a pydantic (v2) model, dumped to their fields (``model_dump``) and written as msgpack
    maps, read back through the model's validation. Renamed fields take ``validation_alias`` or
    :func:`field_alias`. Needs ``pip install lockgate[pydantic]``.

    Args: as :class:`DataclassSerializer`'s.
    """

    NAME = "pydantic"

    def __init__(
        self, cls: type[T], *, version: int = 1, migrations: Mapping[int, Migration] | None = None
    ) -> None:
        try:
            import pydantic
        except ImportError as exc:  # pragma: no cover - the test extras install it
            raise ImportError("PydanticSerializer needs pydantic: pip install 'lockgate[pydantic]'") from exc
        if not (isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)):
            raise TypeError(f"PydanticSerializer takes a pydantic model class, got {cls!r}")
        super().__init__(cls, version=version, migrations=migrations)
        import msgspec

        self._encode = msgspec.msgpack.Encoder().encode
        self._validate = cls.model_validate

    def _write(self, value: T) -> bytes:
        return self._encode(value.model_dump(mode="python", by_alias=False))  # type: ignore[attr-defined]

    def loads(self, data: bytes) -> T:
        return self._validate(self._plain_decode(data), by_alias=False, by_name=True)

    def from_plain(self, wired: Any) -> T:
        return self._validate(wired, by_alias=False, by_name=True)
