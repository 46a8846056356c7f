"""Schemas of typed state values: what a typed serializer writes into its snapshot, how two schemas
compare, and how a value moves from the old schema's plain form to the new one's.

A schema is plain data (tuples of strings, booleans and schemas), so it pickles without the user's
classes and compares with ``==``; a checkpoint written years ago still says what it holds. The kinds:

- ``("any",)``; ``("scalar", name)`` for ``int``, ``str``, ``datetime`` and the like;
- ``("list" | "tuple" | "set" | "frozenset", element)``, ``("fixed", (element, ...))`` for a tuple of
  fixed length, ``("dict", key, value)``;
- ``("union", (member, ...))`` (``Optional[X]`` is a union with ``("scalar", "none")``),
  ``("literal", (value, ...))``, ``("enum", name, ((member, value), ...))``;
- ``("record", name, array_like, (field, ...))``, a dataclass, msgspec Struct or pydantic model; a
  field is ``(name, wire_name, schema, has_default, aliases)``: ``wire_name`` is the name the value
  is written under (msgspec's ``rename``), ``aliases`` the names it had before (``field_alias``);
- ``("ref", name)``: a record inside itself.

A value's *plain form* is what msgpack reads back without a type: records are dicts by field name,
enums their values, sequences lists. Migrations work on it (see ``DataclassSerializer``).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import types
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

#: Schema of a record: ("record", name, array_like, fields); a field: (name, wire, schema, default, aliases).
Schema = tuple[Any, ...]
Field = tuple[str, str, Schema, bool, tuple[str, ...]]
#: What a record type's fields are to :func:`describe`: (name, wire name, annotation, has default,
#: aliases) of each.
RecordFields = list[tuple[str, str, Any, bool, tuple[str, ...]]]

ANY: Final[Schema] = ("any",)
NONE: Final[Schema] = ("scalar", "none")

_SCALARS: Final[dict[Any, str]] = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    bytes: "bytes",
    bytearray: "bytearray",
    type(None): "none",
    None: "none",
    datetime.datetime: "datetime",
    datetime.date: "date",
    datetime.time: "time",
    datetime.timedelta: "timedelta",
    decimal.Decimal: "decimal",
    uuid.UUID: "uuid",
}
_SEQUENCES: Final[dict[Any, str]] = {
    list: "list",
    tuple: "tuple",
    set: "set",
    frozenset: "frozenset",
    typing.List: "list",  # noqa: UP006 - the typing aliases are still written
    typing.Tuple: "tuple",  # noqa: UP006
    typing.Set: "set",  # noqa: UP006
    typing.FrozenSet: "frozenset",  # noqa: UP006
}
_SEQUENCE_ORIGINS: Final = {list, tuple, set, frozenset}
#: Scalar changes every decoder accepts: the old values are values of the new type.
_WIDENINGS: Final = {("int", "float")}
#: Sequence kinds that msgpack writes alike: a change between them reads back unchanged.
_ARRAYS: Final = {"list", "tuple"}


class FieldAlias(Mapping[str, tuple[str, ...]]):
    """The names a field had before it was renamed (see :func:`field_alias`). It is a mapping so that
    it can be a dataclass field's ``metadata``, and plain metadata of ``Annotated``."""

    KEY: Final = "lockgate.aliases"

    __slots__ = ("names",)

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __repr__(self) -> str:
        return f"field_alias({', '.join(map(repr, self.names))})"

    def __getitem__(self, key: str) -> tuple[str, ...]:
        if key != self.KEY:
            raise KeyError(key)
        return self.names

    def __iter__(self) -> Iterator[str]:
        return iter((self.KEY,))

    def __len__(self) -> int:
        return 1


def field_alias(*old_names: str) -> FieldAlias:
    """Mark a renamed field with the names it had: values saved under an old name are read into it.

    Use it as a dataclass field's metadata, ``balance: int = field(metadata=lg.field_alias("amount"))``,
    or in ``Annotated`` for any typed serializer, ``balance: Annotated[int, lg.field_alias("amount")]``.

    Raises:
        TypeError: No name, or a name that is not a non-empty string.
    """
    if not old_names or not all(isinstance(name, str) and name for name in old_names):
        raise TypeError(f"field_alias takes the old names of a field, non-empty strings; got {old_names!r}")
    return FieldAlias(tuple(old_names))


def aliases_in(metadata: Any) -> tuple[str, ...]:
    """The old names that ``metadata`` (Annotated metadata, a dataclass field's metadata) gives."""
    if isinstance(metadata, FieldAlias):
        return metadata.names
    if isinstance(metadata, Mapping):
        names = metadata.get(FieldAlias.KEY, ())
        return tuple(names)
    return ()


# ---- describing types


class _Describer:
    """Builds the schema of a type; records it meets inside themselves become refs."""

    def __init__(self, record_fields: Callable[[Any], RecordFields | None]) -> None:
        self._record_fields = record_fields
        self._open: set[str] = set()

    def describe(self, annotation: Any) -> Schema:
        annotation, _ = _strip_annotated(annotation, ())  # aliases matter on a record's field only
        if annotation is Any or isinstance(annotation, typing.TypeVar):
            return ANY
        if annotation in _SCALARS:
            return ("scalar", _SCALARS[annotation])
        if isinstance(annotation, typing.NewType):
            return self.describe(annotation.__supertype__)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            members = tuple((member.name, _plain_scalar(member.value)) for member in annotation)
            return ("enum", annotation.__qualname__, members)
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Union or origin is types.UnionType:
            members_schema = {self.describe(arg) for arg in args}
            return ("union", tuple(sorted(members_schema, key=repr)))
        if origin is typing.Literal:
            return ("literal", tuple(sorted(args, key=repr)))
        if annotation in _SEQUENCES:
            return (_SEQUENCES[annotation], ANY)
        if origin in _SEQUENCE_ORIGINS:
            name = _SEQUENCES[origin]
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                if args == ((),):
                    return ("fixed", ())
                return ("fixed", tuple(self.describe(arg) for arg in args))
            return (name, self.describe(args[0]) if args else ANY)
        if annotation is dict or annotation is typing.Dict:  # noqa: UP006
            return ("dict", ANY, ANY)
        if origin is dict or origin is Mapping or origin is typing.Mapping:
            return ("dict", *(self.describe(arg) for arg in args)) if args else ("dict", ANY, ANY)
        fields = self._record_fields(annotation) if isinstance(annotation, type) else None
        if fields is not None:
            return self._record(annotation, fields)
        raise TypeError(
            f"a typed serializer cannot describe {annotation!r}: use scalars (int, float, str, bool, bytes, "
            "datetime, date, time, timedelta, Decimal, UUID), enums, lists, tuples, sets, dicts, "
            "Optional/unions, Literal, and dataclasses, msgspec Structs or pydantic models of those"
        )

    def _record(self, cls: type, fields: RecordFields) -> Schema:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in self._open:
            return ("ref", name)
        self._open.add(name)
        try:
            described: list[Field] = []
            for field_name, wire, annotation, has_default, aliases in fields:
                _, annotated_aliases = _strip_annotated(annotation, ())
                described.append(
                    (field_name, wire, self.describe(annotation), has_default, aliases + annotated_aliases)
                )
        finally:
            self._open.discard(name)
        array_like = bool(getattr(getattr(cls, "__struct_config__", None), "array_like", False))
        return ("record", cls.__qualname__, array_like, tuple(described))


def _strip_annotated(annotation: Any, aliases: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    """``annotation`` without ``Annotated``, and the aliases its metadata names."""
    while typing.get_origin(annotation) is typing.Annotated:
        for metadata in annotation.__metadata__:
            aliases += aliases_in(metadata)
        annotation = annotation.__origin__
    return annotation, aliases


def _plain_scalar(value: Any) -> Any:
    return value if isinstance(value, (int, str, float, bool, bytes)) or value is None else repr(value)


def describe(
    annotation: Any,
    record_fields: Callable[[Any], RecordFields | None],
) -> Schema:
    """The schema of ``annotation``; ``record_fields`` gives the fields of a record type (None for a
    type that is not one).

    Raises:
        TypeError: A type the typed serializers cannot write.
    """
    return _Describer(record_fields).describe(annotation)


def render(schema: Schema) -> str:
    """``schema`` as a person reads it: ``Account(balance: int, currency: str = ...)``."""
    kind = schema[0]
    if kind == "any":
        return "Any"
    if kind == "scalar":
        return "None" if schema[1] == "none" else str(schema[1])
    if kind in ("list", "tuple", "set", "frozenset"):
        return f"{kind}[{render(schema[1])}{', ...' if kind == 'tuple' else ''}]"
    if kind == "fixed":
        return f"tuple[{', '.join(render(item) for item in schema[1]) or '()'}]"
    if kind == "dict":
        return f"dict[{render(schema[1])}, {render(schema[2])}]"
    if kind == "union":
        return " | ".join(render(member) for member in schema[1])
    if kind == "literal":
        return f"Literal[{', '.join(map(repr, schema[1]))}]"
    if kind == "enum":
        return f"{schema[1]}({', '.join(name for name, _ in schema[2])})"
    if kind == "ref":
        return str(schema[1]).rpartition(".")[2]
    parts = []
    for name, _, field_schema, has_default, aliases in schema[3]:
        was = f" (was {', '.join(aliases)})" if aliases else ""
        parts.append(f"{name}: {render(field_schema)}{' = ...' if has_default else ''}{was}")
    return f"{schema[1]}({', '.join(parts)})"


# ---- comparing schemas


@dataclasses.dataclass(frozen=True)
class SchemaChanges:
    """How a new schema differs from an old one.

    Attributes:
        automatic: Changes every old value survives: a field added with a default, a field removed,
            a renamed field with its old name as an alias, a type widened (``int`` to ``float``,
            ``X`` to ``X | None``, enum members added).
        breaking: Changes that old values do not survive without a migration: a type changed, a
            field added without a default, a type narrowed.
    """

    automatic: tuple[str, ...] = ()
    breaking: tuple[str, ...] = ()

    @property
    def none(self) -> bool:
        return not (self.automatic or self.breaking)


def compare(old: Schema, new: Schema) -> SchemaChanges:
    """How ``new`` differs from ``old``, change by change."""
    automatic: list[str] = []
    breaking: list[str] = []
    _compare(old, new, "$", automatic, breaking)
    return SchemaChanges(tuple(automatic), tuple(breaking))


def _compare(old: Schema, new: Schema, at: str, automatic: list[str], breaking: list[str]) -> None:
    if old == new:
        return
    kind, old_kind = new[0], old[0]
    if kind == "any":
        automatic.append(f"{at}: {render(old)} widened to Any")
        return
    if kind == "ref" or old_kind == "ref":
        if kind != old_kind or old[1].rpartition(".")[2] != new[1].rpartition(".")[2]:
            breaking.append(f"{at}: {render(old)} became {render(new)}")
        return
    if kind == "union":
        olds = old[1] if old_kind == "union" else (old,)
        for member in olds:
            if all(compare(member, candidate).breaking for candidate in new[1]):
                breaking.append(f"{at}: {render(old)} became {render(new)}")
                return
        automatic.append(f"{at}: {render(old)} widened to {render(new)}")
        return
    if kind != old_kind:
        if kind in _ARRAYS and old_kind in _ARRAYS:
            _compare(old[1], new[1], f"{at}[]", automatic, breaking)
            automatic.append(f"{at}: {old_kind} became {kind}")
            return
        breaking.append(f"{at}: {render(old)} became {render(new)}")
        return
    if kind == "scalar":
        if (old[1], new[1]) in _WIDENINGS:
            automatic.append(f"{at}: {old[1]} widened to {new[1]}")
        else:
            breaking.append(f"{at}: {old[1]} became {new[1]}")
        return
    if kind in ("list", "tuple", "set", "frozenset"):
        _compare(old[1], new[1], f"{at}[]", automatic, breaking)
        return
    if kind == "dict":
        _compare(old[1], new[1], f"{at}{{key}}", automatic, breaking)
        _compare(old[2], new[2], f"{at}{{}}", automatic, breaking)
        return
    if kind == "fixed":
        if len(old[1]) != len(new[1]):
            breaking.append(f"{at}: {render(old)} became {render(new)}")
            return
        for index, (before, after) in enumerate(zip(old[1], new[1], strict=True)):
            _compare(before, after, f"{at}[{index}]", automatic, breaking)
        return
    if kind in ("enum", "literal"):
        before_values = {value for _, value in old[2]} if kind == "enum" else set(old[1])
        after_values = {value for _, value in new[2]} if kind == "enum" else set(new[1])
        if before_values <= after_values:
            if before_values != after_values:
                automatic.append(f"{at}: {render(old)} widened to {render(new)}")
        else:
            gone = ", ".join(map(repr, sorted(before_values - after_values, key=repr)))
            breaking.append(f"{at}: the values {gone} of {render(old)} are gone")
        return
    _compare_records(old, new, at, automatic, breaking)


def match_fields(old: Schema, new: Schema) -> list[tuple[Field, Field | None, bool]]:
    """Each field of the record ``new`` with the field of ``old`` it continues (None if it is new), and
    whether it was renamed. A field continues the old one of the same name, else of the same wire name
    (msgspec's ``rename`` keeps what is written), else of one of its aliases (an old name or wire name)."""
    by_name = {field[0]: field for field in old[3]}
    by_wire = {field[1]: field for field in old[3]}
    taken: set[str] = set()
    matched: list[tuple[Field, Field | None, bool]] = []
    for field in new[3]:
        name, wire, _, _, aliases = field
        before = by_name.get(name)
        if before is None or before[0] in taken:
            before = by_wire.get(wire)
        if before is None or before[0] in taken:
            before = next(
                (
                    candidate
                    for alias in aliases
                    for candidate in (by_name.get(alias), by_wire.get(alias))
                    if candidate is not None and candidate[0] not in taken
                ),
                None,
            )
        if before is not None:
            taken.add(before[0])
        matched.append((field, before, before is not None and before[1] != wire))
    return matched


def _compare_records(old: Schema, new: Schema, at: str, automatic: list[str], breaking: list[str]) -> None:
    positional = old[2] or new[2]  # array-like: fields are positions, not names
    continued: set[str] = set()
    for index, (field, before, renamed) in enumerate(match_fields(old, new)):
        name, _, schema, has_default, _ = field
        path = f"{at}.{name}"
        if before is None:
            if has_default:
                automatic.append(f"{path}: added, with a default")
            else:
                breaking.append(f"{path}: added without a default")
            continue
        continued.add(before[0])
        if renamed:
            automatic.append(f"{path}: renamed from {before[0]!r}")
        if positional and (index >= len(old[3]) or old[3][index][0] != before[0]):
            breaking.append(f"{path}: moved in an array-like record (fields there may only be appended)")
            continue
        _compare(before[2], schema, path, automatic, breaking)
    for name, *_ in old[3]:
        if name not in continued:
            if positional:
                breaking.append(f"{at}.{name}: removed from an array-like record")
            else:
                automatic.append(f"{at}.{name}: removed")


# ---- plain forms


def to_named(schema: Schema, plain: Any) -> Any:
    """A value read without a type (records as dicts by wire name, or lists if array-like) as its
    plain form by field name, recursively: what a migration takes."""
    kind = schema[0]
    if kind == "record":
        fields = schema[3]
        if isinstance(plain, list):  # array-like
            return {field[0]: to_named(field[2], item) for field, item in zip(fields, plain, strict=False)}
        if not isinstance(plain, dict):
            return plain
        by_wire = {field[1]: field for field in fields}
        named = {}
        for wire, value in plain.items():
            field = by_wire.get(wire)
            if field is None:
                named[wire] = value
            else:
                named[field[0]] = to_named(field[2], value)
        return named
    return _through(schema, plain, to_named)


def to_current(old: Schema, new: Schema, plain: Any) -> Any:
    """A value read without a type, written under ``old``, as the plain form by field name that
    migrations take: each field that continues into ``new`` under its name there (renames followed,
    see :func:`match_fields`), recursively; a removed field under its old name, as a migration may
    still want it."""
    if old[0] == "record" and new[0] == "record":
        if isinstance(plain, list):  # array-like
            plain = {field[1]: item for field, item in zip(old[3], plain, strict=False)}
        if not isinstance(plain, dict):
            return plain
        current: dict[str, Any] = {}
        continued: set[str] = set()
        for field, before, _ in match_fields(old, new):
            if before is not None and before[1] in plain:
                continued.add(before[1])
                current[field[0]] = to_current(before[2], field[2], plain[before[1]])
        by_wire = {field[1]: field for field in old[3]}
        for wire, value in plain.items():
            if wire not in continued:
                before = by_wire.get(wire)
                current[wire if before is None else before[0]] = (
                    value if before is None else to_named(before[2], value)
                )
        return current
    pairs = _paired(old, new)
    if pairs is None:
        return to_named(old, plain)
    return _through(old, plain, lambda inner, value: to_current(inner, pairs.get(inner, inner), value))


def _paired(old: Schema, new: Schema) -> dict[Schema, Schema] | None:
    """The new schema of each part of the container ``old`` that holds records, where ``new`` is a
    container of the same shape; None where the shapes differ."""
    kind = old[0]
    if kind != new[0] and not (kind in _ARRAYS and new[0] in _ARRAYS):
        return None
    if kind in ("list", "tuple", "set", "frozenset"):
        return {old[1]: new[1]}
    if kind == "dict":
        return {old[2]: new[2]}
    if kind == "fixed" and len(old[1]) == len(new[1]):
        return dict(zip(old[1], new[1], strict=True))
    if kind == "union":
        olds = [member for member in old[1] if _holds_records(member)]
        news = [member for member in new[1] if _holds_records(member)]
        return {olds[0]: news[0]} if len(olds) == 1 and len(news) == 1 else None
    return None


def to_wire(schema: Schema, named: Any, defaults: Callable[[Schema, str], Any]) -> Any:
    """A plain form by field name as the new schema reads it: a renamed field moved from its alias,
    fields the schema lacks dropped, names as written (wire names; a list for an array-like record,
    whose missing fields before a present one take ``defaults(record, field)``)."""
    kind = schema[0]
    if kind == "record":
        if not isinstance(named, dict):
            return named
        fields = schema[3]
        wired: dict[str, Any] = {}
        for name, wire, field_schema, _, aliases in fields:
            if name in named:
                value = named[name]
            else:
                source = next((alias for alias in aliases if alias in named), None)
                if source is None:
                    continue
                value = named[source]
            wired[wire] = to_wire(field_schema, value, defaults)
        if not schema[2]:
            return wired
        last = max((i for i, field in enumerate(fields) if field[1] in wired), default=-1)
        return [
            wired[field[1]] if field[1] in wired else defaults(schema, field[0])
            for field in fields[: last + 1]
        ]
    return _through(schema, named, lambda inner, value: to_wire(inner, value, defaults))


def _through(schema: Schema, value: Any, convert: Callable[[Schema, Any], Any]) -> Any:
    """``convert`` applied to the records inside a container value of ``schema``."""
    kind = schema[0]
    if kind in ("list", "tuple", "set", "frozenset"):
        if isinstance(value, list) and _holds_records(schema[1]):
            return [convert(schema[1], item) for item in value]
        return value
    if kind == "fixed":
        if isinstance(value, list):
            return [convert(item_schema, item) for item_schema, item in zip(schema[1], value, strict=False)]
        return value
    if kind == "dict":
        if isinstance(value, dict) and _holds_records(schema[2]):
            return {key: convert(schema[2], item) for key, item in value.items()}
        return value
    if kind == "union":
        records = [member for member in schema[1] if _holds_records(member)]
        if len(records) == 1 and value is not None:
            return convert(records[0], value)  # the only member it can be, if it is a record at all
        return value
    return value


def _holds_records(schema: Schema) -> bool:
    kind = schema[0]
    if kind == "record":
        return True
    if kind in ("list", "tuple", "set", "frozenset"):
        return _holds_records(schema[1])
    if kind == "dict":
        return _holds_records(schema[2])
    if kind in ("fixed", "union"):
        return any(_holds_records(member) for member in schema[1])
    return False
