"""Typed serializers on their own: what they write and read back, the schema in their snapshot, and
how they resolve the snapshot of the serializer that wrote some state (the rules of the README's
table of schema changes)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import pickle
from typing import Annotated, Any, Literal

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lockgate as lg
from lockgate.state import OperatorStateBackend

AS_IS = lg.Compatibility.COMPATIBLE_AS_IS
MIGRATION = lg.Compatibility.COMPATIBLE_AFTER_MIGRATION
INCOMPATIBLE = lg.Compatibility.INCOMPATIBLE


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Inner:
    when: datetime.datetime
    colour: Colour = Colour.RED


@dataclasses.dataclass
class Rich:
    number: int
    ratio: float
    name: str
    raw: bytes
    flag: bool
    day: datetime.date
    span: datetime.timedelta
    tags: list[str]
    scores: dict[str, int]
    pair: tuple[int, str]
    unique: frozenset[int]
    inner: Inner | None = None
    inners: list[Inner] = dataclasses.field(default_factory=list)
    mode: Literal["a", "b"] = "a"


moments = st.datetimes(timezones=st.just(datetime.UTC))
inners = st.builds(Inner, when=moments, colour=st.sampled_from(Colour))
richs = st.builds(
    Rich,
    number=st.integers(-(2**63), 2**64 - 1),
    ratio=st.floats(allow_nan=False),
    name=st.text(),
    raw=st.binary(),
    flag=st.booleans(),
    day=st.dates(),
    span=st.timedeltas(),
    tags=st.lists(st.text()),
    scores=st.dictionaries(st.text(), st.integers(-(2**63), 2**63 - 1)),
    pair=st.tuples(st.integers(-(2**63), 2**63 - 1), st.text()),
    unique=st.frozensets(st.integers(-(2**63), 2**63 - 1)),
    inner=st.none() | inners,
    inners=st.lists(inners, max_size=3),
    mode=st.sampled_from(["a", "b"]),
)


@given(richs)
def test_a_dataclass_of_every_supported_type_reads_back_equal(value: Rich) -> None:
    serializer = lg.DataclassSerializer(Rich)
    assert serializer.loads(serializer.dumps(value)) == value


class RichStruct(msgspec.Struct):
    number: int
    when: datetime.datetime
    colour: Colour = Colour.BLUE
    tags: list[str] = []


class RichModel(pydantic.BaseModel):
    number: int
    when: datetime.datetime
    colour: Colour = Colour.BLUE
    tags: list[str] = []
    inner: Inner | None = None


@given(
    st.integers(-(2**63), 2**63 - 1),
    moments,
    st.sampled_from(Colour),
    st.lists(st.text(), max_size=3),
    st.none() | inners,
)
def test_structs_and_models_read_back_equal(
    number: int, when: datetime.datetime, colour: Colour, tags: list[str], inner: Inner | None
) -> None:
    struct = RichStruct(number, when, colour, tags)
    msgspec_serializer = lg.MsgspecSerializer(RichStruct)
    assert msgspec_serializer.loads(msgspec_serializer.dumps(struct)) == struct
    model = RichModel(number=number, when=when, colour=colour, tags=tags, inner=inner)
    pydantic_serializer = lg.PydanticSerializer(RichModel)
    assert pydantic_serializer.loads(pydantic_serializer.dumps(model)) == model


def test_typed_bytes_are_msgpack_and_run_no_code_when_read() -> None:
    data = lg.DataclassSerializer(Inner).dumps(Inner(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)))
    assert msgspec.msgpack.decode(data) == {
        "when": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        "colour": "red",
    }


def test_a_value_of_another_type_is_refused_when_written() -> None:
    with pytest.raises(TypeError, match="writes Inner values, not dict"):
        lg.DataclassSerializer(Inner).dumps({"when": 1})


def test_an_integer_msgpack_cannot_hold_is_refused_saying_what_to_do() -> None:
    now = datetime.datetime.now(datetime.UTC)
    for serializer, value in [
        (lg.MsgspecSerializer(RichStruct), RichStruct(2**64, now)),
        (lg.PydanticSerializer(RichModel), RichModel(number=-(2**63) - 1, when=now)),
    ]:
        with pytest.raises(
            ValueError, match=r"integers from -2\*\*63 to 2\*\*64 - 1; keep larger ones as str"
        ):
            serializer.dumps(value)


def test_the_snapshot_holds_the_schema_as_plain_data() -> None:
    snapshot = lg.DataclassSerializer(Inner, version=2, migrations={1: dict}).snapshot()
    assert (snapshot.name, snapshot.version) == ("dataclass", 2)
    assert (
        snapshot.describe()
        == "dataclass serializer version 2 of Inner(when: datetime, colour: Colour(RED, BLUE) = ...)"
    )
    # Plain data: it pickles and reads back without the classes it describes.
    assert b"Inner" in pickle.dumps(snapshot) and b"tests.test_serializers" not in pickle.dumps(snapshot)
    assert pickle.loads(pickle.dumps(snapshot)) == snapshot


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: lg.DataclassSerializer(dict), "takes a dataclass"),
        (lambda: lg.MsgspecSerializer(Inner), "takes a msgspec Struct"),
        (lambda: lg.PydanticSerializer(Inner), "takes a pydantic model"),
        (lambda: lg.DataclassSerializer(Inner, version=0), "an int of at least 1"),
        (lambda: lg.DataclassSerializer(Inner, version=2, migrations={2: dict}), "from 1 to version - 1 = 1"),
        (lambda: lg.DataclassSerializer(Inner, version=2, migrations={1: "no"}), "migrations map a version"),
        (lambda: lg.field_alias(), "the old names of a field"),
        (
            lambda: lg.DataclassSerializer(dataclasses.make_dataclass("Odd", [("lock", type(object()))])),
            "cannot describe",
        ),
    ],
)
def test_bad_declarations_say_what_is_wrong(make: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        make()


# ---- the rules, version 1 -> version 2 of a record


def versions(*specs: list[tuple[Any, ...]], library: str = "dataclass") -> list[Any]:
    """A class per spec (fields as make_dataclass takes them), all named Record."""
    classes = []
    for fields in specs:
        if library == "dataclass":
            classes.append(dataclasses.make_dataclass("Record", fields, kw_only=True))
        else:
            struct_fields = [
                (f[0], f[1]) if len(f) == 2 else (f[0], f[1], f[2].default)
                for f in fields  # type: ignore[attr-defined]
            ]
            classes.append(msgspec.defstruct("Record", struct_fields, kw_only=True))
    return classes


def resolve(old: Any, new: Any, **options: Any) -> lg.state.Resolution[Any]:
    return lg.DataclassSerializer(new, **options).resolve(lg.DataclassSerializer(old).snapshot())


def default(value: Any) -> Any:
    return dataclasses.field(default=value)


RULES: list[tuple[str, list[Any], list[Any], dict[str, Any], lg.Compatibility]] = [
    ("nothing changed", [("a", int)], [("a", int)], {}, AS_IS),
    ("a field added with a default", [("a", int)], [("a", int), ("b", str, default("x"))], {}, MIGRATION),
    ("a field added without a default", [("a", int)], [("a", int), ("b", str)], {}, INCOMPATIBLE),
    ("a field removed", [("a", int), ("b", str)], [("a", int)], {}, MIGRATION),
    (
        "a field renamed with an alias",
        [("a", int)],
        [("z", Annotated[int, lg.field_alias("a")])],
        {},
        MIGRATION,
    ),
    ("a field renamed without one", [("a", int)], [("z", int)], {}, INCOMPATIBLE),
    ("int widened to float", [("a", int)], [("a", float)], {}, MIGRATION),
    ("X widened to X | None", [("a", int)], [("a", int | None)], {}, MIGRATION),
    ("X | None narrowed to X", [("a", int | None)], [("a", int)], {}, INCOMPATIBLE),
    ("a type changed", [("a", int)], [("a", str)], {}, INCOMPATIBLE),
    (
        "a type changed with a migration",
        [("a", int)],
        [("a", str)],
        {"version": 2, "migrations": {1: dict}},
        MIGRATION,
    ),
    (
        "a version bumped with a migration",
        [("a", int)],
        [("a", int)],
        {"version": 2, "migrations": {1: dict}},
        MIGRATION,
    ),
    ("a version bumped alone", [("a", int)], [("a", int)], {"version": 2}, AS_IS),
    ("list elements changed", [("a", list[int])], [("a", list[str])], {}, INCOMPATIBLE),
    ("dict values widened", [("a", dict[str, int])], [("a", dict[str, float])], {}, MIGRATION),
    ("an enum member added", [("a", Literal["x"])], [("a", Literal["x", "y"])], {}, MIGRATION),
    ("an enum member removed", [("a", Literal["x", "y"])], [("a", Literal["x"])], {}, INCOMPATIBLE),
]


@pytest.mark.parametrize(
    ("change", "old", "new", "options", "expected"), RULES, ids=[rule[0] for rule in RULES]
)
def test_each_change_resolves_as_the_table_says(
    change: str, old: list[Any], new: list[Any], options: dict[str, Any], expected: lg.Compatibility
) -> None:
    before, after = versions(old, new)
    assert (
        lg.DataclassSerializer(after, **options).resolve_compatibility(
            lg.DataclassSerializer(before).snapshot()
        )
        is expected
    )


def test_an_older_version_cannot_be_read_by_a_newer_one_going_back() -> None:
    assert resolve(Inner, Inner, version=1).compatibility is AS_IS
    newer = lg.DataclassSerializer(Inner, version=3).snapshot()
    assert lg.DataclassSerializer(Inner, version=2).resolve_compatibility(newer) is INCOMPATIBLE


@dataclasses.dataclass
class OuterV1:
    inner: dict[str, list[Inner]]


@dataclasses.dataclass
class InnerV2:
    moment: Annotated[datetime.datetime, lg.field_alias("when")]
    size: int = 1


@dataclasses.dataclass
class OuterV2:
    inner: dict[str, list[InnerV2]]


def test_nested_records_evolve_inside_containers() -> None:
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    resolution = resolve(OuterV1, OuterV2)
    assert resolution.compatibility is MIGRATION
    assert "$.inner{}[].moment: renamed from 'when'" in resolution.changes
    assert resolution.read is not None
    old = lg.DataclassSerializer(OuterV1).dumps(OuterV1({"k": [Inner(when, Colour.BLUE)]}))
    assert resolution.read(old) == OuterV2({"k": [InnerV2(when)]})


def test_migrations_chain_version_by_version_and_see_current_names() -> None:
    @dataclasses.dataclass
    class Money:
        euros: Annotated[float, lg.field_alias("cents")]
        label: str = "-"

    seen: list[dict[str, Any]] = []

    def to_euros(old: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(old))
        return {**old, "euros": old["euros"] / 100}

    def label(old: dict[str, Any]) -> dict[str, Any]:
        return {**old, "label": f"{old['euros']:.2f}"}

    old = lg.DataclassSerializer(Inner).snapshot()
    del old
    before = dataclasses.make_dataclass("Money", [("cents", int), ("note", str)])
    serializer = lg.DataclassSerializer(Money, version=3, migrations={1: to_euros, 2: label})
    resolution = serializer.resolve(lg.DataclassSerializer(before).snapshot())
    assert resolution.read is not None
    value = resolution.read(lg.DataclassSerializer(before).dumps(before(250, "n")))
    assert value == Money(2.5, "2.50")
    assert seen == [{"euros": 250, "note": "n"}]  # renamed first; the removed field still there
    # Saved by version 2: only the second migration runs.
    version2 = dataclasses.make_dataclass("Money", [("euros", float)])
    read = serializer.resolve(lg.DataclassSerializer(version2, version=2).snapshot()).read
    assert read is not None and read(lg.DataclassSerializer(version2).dumps(version2(1.5))) == Money(
        1.5, "1.50"
    )


def test_typed_serializers_read_each_others_bytes() -> None:
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    written = lg.MsgspecSerializer(RichStruct).dumps(RichStruct(3, when, Colour.RED, ["t"]))
    snapshot = lg.MsgspecSerializer(RichStruct).snapshot()
    pydantic_serializer = lg.PydanticSerializer(RichModel)
    resolution = pydantic_serializer.resolve(snapshot)
    assert resolution.compatibility is MIGRATION and resolution.read is not None
    assert resolution.read(written) == RichModel(number=3, when=when, colour=Colour.RED, tags=["t"])


def test_values_the_default_pickle_wrote_are_taken_over_by_a_typed_serializer() -> None:
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    resolution = lg.DataclassSerializer(InnerV2).resolve(lg.PickleSerializer().snapshot())
    assert resolution.compatibility is MIGRATION and resolution.read is not None
    assert resolution.read(pickle.dumps(Inner(when))) == InnerV2(when)


def test_a_typed_serializer_cannot_be_read_back_by_pickle() -> None:
    assert (
        lg.PickleSerializer().resolve_compatibility(lg.DataclassSerializer(Inner).snapshot()) is INCOMPATIBLE
    )


def test_array_like_structs_may_only_append_fields() -> None:
    class V1(msgspec.Struct, array_like=True):
        a: int
        b: str

    class Appended(msgspec.Struct, array_like=True):
        a: int
        b: str
        c: int = 5

    class Removed(msgspec.Struct, array_like=True):
        b: str

    old = lg.MsgspecSerializer(V1)
    resolution = lg.MsgspecSerializer(Appended).resolve(old.snapshot())
    assert resolution.compatibility is MIGRATION and resolution.read is not None
    assert resolution.read(old.dumps(V1(1, "x"))) == Appended(1, "x", 5)
    assert lg.MsgspecSerializer(Removed).resolve_compatibility(old.snapshot()) is INCOMPATIBLE


def test_msgspec_renames_are_its_own_wire_names() -> None:
    class Camel(msgspec.Struct, rename="camel"):
        first_name: str

    class Renamed(msgspec.Struct, rename={"given": "firstName"}):
        given: str

    class Moved(msgspec.Struct):
        given: Annotated[str, lg.field_alias("first_name")]

    old = lg.MsgspecSerializer(Camel)
    data = old.dumps(Camel("Ada"))
    # The attribute changed its name, not what is written: msgspec's own alias; the bytes read as they are.
    renamed = lg.MsgspecSerializer(Renamed)
    assert renamed.resolve_compatibility(old.snapshot()) is AS_IS
    assert renamed.loads(data) == Renamed("Ada")
    # Written under another name too: the alias names the old attribute (or its wire name).
    resolution = lg.MsgspecSerializer(Moved).resolve(old.snapshot())
    assert resolution.compatibility is MIGRATION and resolution.read is not None
    assert resolution.read(data) == Moved("Ada")


def test_operator_and_broadcast_state_migrate_when_declared_again() -> None:
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    old = OperatorStateBackend("op")
    old.get_list_state(
        lg.ListStateDescriptor[Any]("list", serializer=lg.DataclassSerializer(Inner))
    ).add_nowait(Inner(when))
    old.get_broadcast_state(
        lg.MapStateDescriptor[Any]("shared", serializer=lg.DataclassSerializer(Inner))
    ).put_nowait("k", Inner(when, Colour.BLUE))
    restored = OperatorStateBackend("op", old.snapshot(0, 1).states)
    new = lg.DataclassSerializer(InnerV2)
    assert restored.get_list_state(lg.ListStateDescriptor[Any]("list", serializer=new)).get_nowait() == [
        InnerV2(when)
    ]
    shared = restored.get_broadcast_state(lg.MapStateDescriptor[Any]("shared", serializer=new))
    assert shared.to_dict_nowait() == {"k": InnerV2(when)}

    again = OperatorStateBackend("op", old.snapshot(0, 1).states)
    retyped = dataclasses.make_dataclass("Inner", [("when", int)])
    with pytest.raises(lg.IncompatibleStateError, match=r"\$\.when: datetime became int"):
        again.get_list_state(lg.ListStateDescriptor[Any]("list", serializer=lg.DataclassSerializer(retyped)))
