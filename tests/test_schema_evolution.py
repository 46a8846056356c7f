"""State schema evolution, from the outside: a job saves typed state, the next version of its code
(fields added, removed, renamed, retyped with migrations) resumes from the savepoint or checkpoint, and
reads every value as the migrations make it; on either backend, at any parallelism, through
savepoints and retained (incremental) checkpoints. Incompatible changes are refused before anything
is read or written."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from tests._sources import GUARD, until_or_failure
from tests.test_recovery import Watch

pytestmark = pytest.mark.anyio

MAX_PARALLELISM = 16
RUNS = itertools.count()
NO_DEFAULT: Any = object()
CONVERSIONS: dict[tuple[type, type], Callable[[Any], Any]] = {(int, str): str, (str, int): len}


# ---- a model of a record type's versions


@dataclasses.dataclass(frozen=True)
class FieldModel:
    """One field of one version: ``ident`` follows it through renames."""

    ident: int
    name: str
    type: type
    default: Any = NO_DEFAULT
    aliases: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class VersionModel:
    fields: tuple[FieldModel, ...]
    version: int = 1
    # (from version, field ident, conversion) of each retype
    retypes: tuple[tuple[int, int, Callable[[Any], Any]], ...] = ()

    def field(self, ident: int) -> FieldModel | None:
        return next((f for f in self.fields if f.ident == ident), None)


def initial_fields(kinds: list[type]) -> VersionModel:
    return VersionModel(tuple(FieldModel(i, f"first{i}", kind) for i, kind in enumerate(kinds)))


def apply(model: VersionModel, kind: str, index: int, fresh: int, new_type: type) -> VersionModel:
    """The next version after a change: "add" a field of ``new_type`` (with a default), "remove",
    "rename" or "retype" the field at ``index`` (mod the number of fields); ``fresh`` is unused so
    far, for the new field's ident and name."""
    fields = list(model.fields)
    if kind == "add":
        default = 7 if new_type is int else "seven"
        return dataclasses.replace(model, fields=(*fields, FieldModel(fresh, f"f{fresh}", new_type, default)))
    if not fields:
        return model
    index %= len(fields)
    field = fields[index]
    if kind == "remove":
        del fields[index]
        return dataclasses.replace(model, fields=tuple(fields))
    if kind == "rename":
        fields[index] = dataclasses.replace(field, name=f"f{fresh}", aliases=(*field.aliases, field.name))
        return dataclasses.replace(model, fields=tuple(fields))
    retyped = str if field.type is int else int
    convert = CONVERSIONS[(field.type, retyped)]
    default = NO_DEFAULT if field.default is NO_DEFAULT else convert(field.default)
    fields[index] = dataclasses.replace(field, type=retyped, default=default)
    return VersionModel(
        tuple(fields), model.version + 1, (*model.retypes, (model.version, field.ident, convert))
    )


def migrations_of(model: VersionModel) -> dict[int, Callable[[dict[str, Any]], dict[str, Any]]]:
    """One migration per retype: it converts the field, named as it is now (migrations see renamed
    fields under their current names), if the old value has it."""
    steps: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
    for version, ident, convert in model.retypes:
        field = model.field(ident)
        if field is None:
            continue  # removed later: its conversion does not matter
        name = field.name

        def step(old: dict[str, Any], name: str = name, convert: Callable[[Any], Any] = convert) -> Any:
            return {**old, name: convert(old[name])} if name in old else old

        steps[version] = step
    return steps


def expected_value(old: VersionModel, new: VersionModel, value: dict[str, Any]) -> dict[str, Any]:
    """What a value saved by ``old`` (as a dict by field name) reads as in ``new``."""
    result = {}
    for field in new.fields:
        before = old.field(field.ident)
        if before is None:
            result[field.name] = field.default
            continue
        current = value[before.name]
        for _, ident, convert in new.retypes:
            if ident == field.ident:
                current = convert(current)
        result[field.name] = current
    return result


def record_class(library: str, model: VersionModel) -> type:
    """The model as a dataclass, a msgspec Struct or a pydantic model named ``Record``."""
    if library == "dataclass":
        specs = []
        for f in model.fields:
            options: dict[str, Any] = {"metadata": lg.field_alias(*f.aliases)} if f.aliases else {}
            if f.default is not NO_DEFAULT:
                options["default"] = f.default
            specs.append((f.name, f.type, dataclasses.field(**options)))
        return dataclasses.make_dataclass("Record", specs, kw_only=True)
    annotated = {
        f.name: Annotated[f.type, lg.field_alias(*f.aliases)] if f.aliases else f.type for f in model.fields
    }
    if library == "msgspec":
        return msgspec.defstruct(
            "Record",
            [
                (f.name, annotated[f.name])
                if f.default is NO_DEFAULT
                else (f.name, annotated[f.name], f.default)
                for f in model.fields
            ],
            kw_only=True,
        )
    definitions: Any = {
        f.name: (annotated[f.name], ... if f.default is NO_DEFAULT else f.default) for f in model.fields
    }
    return pydantic.create_model("Record", **definitions)


SERIALIZERS: dict[str, Any] = {
    "dataclass": lg.DataclassSerializer,
    "msgspec": lg.MsgspecSerializer,
    "pydantic": lg.PydanticSerializer,
}


def serializer_of(library: str, model: VersionModel) -> lg.Serializer[Any]:
    return SERIALIZERS[library](
        record_class(library, model), version=model.version, migrations=migrations_of(model)
    )  # type: ignore[no-any-return]


def as_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)  # type: ignore[arg-type]
    if isinstance(value, msgspec.Struct):
        return msgspec.structs.asdict(value)
    assert isinstance(value, pydantic.BaseModel)
    return value.model_dump()


# ---- the jobs


class Keep(lg.KeyedProcessFunction[str, Any]):
    """Version 1 writes each key's record into value, list and map state; later versions only read
    them and emit (key, value, list, map) as dicts."""

    def __init__(self, serializer: lg.Serializer[Any], values: dict[str, dict[str, Any]] | None) -> None:
        self.serializer = serializer
        self.values = values

    def open(self, ctx: lg.RuntimeContext) -> None:
        s = self.serializer
        self.value = ctx.get_state(lg.ValueStateDescriptor[Any]("value", serializer=s))
        self.list = ctx.get_list_state(lg.ListStateDescriptor[Any]("list", serializer=s))
        self.map = ctx.get_map_state(lg.MapStateDescriptor[Any]("map", serializer=s))

    def process_element(self, key: str, ctx: lg.RuntimeContext) -> Iterator[Any]:
        if self.values is not None:
            record = self.serializer.type(**self.values[key])  # type: ignore[attr-defined]
            self.value.update_nowait(record)
            self.list.add_nowait(record)
            self.map.put_nowait("m", record)
            yield key
            return
        value, listed, mapped = self.value.value_nowait(), self.list.get_nowait(), self.map.get_nowait("m")
        yield (key, as_dict(value), [as_dict(v) for v in listed], as_dict(mapped))


def backend_of(name: str) -> lg.StateBackend:
    kind, _, incremental = name.partition("-")
    if kind == "rocksdb":
        return lg.RocksDBStateBackend(incremental=bool(incremental))
    return lg.HeapStateBackend(incremental=bool(incremental))


async def run(
    function: Keep,
    keys: list[str],
    parallelism: int,
    backend: str,
    storage: Path,
    *,
    restore_from: str | None = None,
    save: str = "checkpoint",
    restart: bool = False,
) -> tuple[list[Any], str]:
    """Run ``function`` over ``keys`` (restored from ``restore_from``); once every key is through,
    take a checkpoint or a savepoint (``save``) and cancel; the output and the pointer."""
    env = lg.StreamEnvironment(parallelism=parallelism, max_parallelism=MAX_PARALLELISM, batch_size=4)
    env.set_state_backend(backend_of(backend))
    env.set_checkpoint_storage(storage.as_uri())
    env.enable_checkpointing(3600)
    if restart:
        env.set_restart_strategy(lg.RestartStrategy.fixed_delay(3, 0))
    source: lg.QueueSource[str] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid=f"keys-{next(RUNS)}").key_by(lambda key: key)
    keyed.process(function, uid="keep").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("evolve", restore_from=restore_from, allow_non_restored_state=True)
        for key in keys:
            await source.put(key)
        await until_or_failure(job, lambda: watch.until(len(keys)))
        if save == "savepoint":
            pointer = await job.trigger_savepoint((storage / "savepoints").as_uri())
        else:
            pointer = (await job.trigger_checkpoint()).pointer
        await job.cancel()
    return watch.seen, pointer


values_strategy = st.one_of(st.integers(-5, 5), st.text(max_size=3))


@st.composite
def evolutions(draw: st.DrawFn) -> tuple[VersionModel, VersionModel, dict[str, dict[str, Any]]]:
    kinds = draw(st.lists(st.sampled_from([int, str]), min_size=1, max_size=3))
    old = initial_fields(kinds)
    changes = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "remove", "rename", "retype"]),
                st.integers(0, 5),
                st.sampled_from([int, str]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    new = old
    for fresh, (kind, index, new_type) in enumerate(changes, start=100):
        new = apply(new, kind, index, fresh, new_type)
    keys = draw(st.lists(st.sampled_from([f"k{i}" for i in range(10)]), min_size=1, max_size=10, unique=True))
    values = {
        key: {
            f.name: draw(st.integers(-5, 5) if f.type is int else st.text(max_size=3), label=f.name)
            for f in old.fields
        }
        for key in keys
    }
    return old, new, values


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    evolution=evolutions(),
    library=st.sampled_from(sorted(SERIALIZERS)),
    backends=st.tuples(
        st.sampled_from(["heap", "heap-incremental", "rocksdb", "rocksdb-incremental"]),
        st.sampled_from(["heap", "rocksdb"]),
    ),
    save=st.sampled_from(["savepoint", "checkpoint"]),
    parallelism=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
async def test_state_saved_by_one_version_reads_as_the_migrations_make_it_in_the_next(
    tmp_path_factory: pytest.TempPathFactory,
    evolution: tuple[VersionModel, VersionModel, dict[str, dict[str, Any]]],
    library: str,
    backends: tuple[str, str],
    save: str,
    parallelism: tuple[int, int],
) -> None:
    old, new, values = evolution
    storage = tmp_path_factory.mktemp("evolve")
    keys = sorted(values)
    _, pointer = await run(
        Keep(serializer_of(library, old), values), keys, parallelism[0], backends[0], storage, save=save
    )
    seen, _ = await run(
        Keep(serializer_of(library, new), None),
        keys,
        parallelism[1],
        backends[1],
        storage,
        restore_from=pointer,
    )
    migrated = {key: expected_value(old, new, values[key]) for key in keys}
    assert sorted(seen, key=lambda row: row[0]) == [
        (key, migrated[key], [migrated[key]], migrated[key]) for key in keys
    ]


# ---- one evolution through every restore path


@dataclasses.dataclass
class AccountV1:
    amount: int
    cents: int
    note: str = ""


@dataclasses.dataclass
class AccountV2:
    balance: int = dataclasses.field(metadata=lg.field_alias("amount"))  # renamed
    cents: float = 0.0  # retyped: a migration makes it euros
    currency: str = "EUR"  # added with a default; note removed


V1 = lg.DataclassSerializer(AccountV1)
V2 = lg.DataclassSerializer(
    AccountV2, version=2, migrations={1: lambda old: {**old, "cents": old["cents"] / 100}}
)


class Accounts(lg.KeyedProcessFunction[str, Any]):
    """Writes AccountV1 values in version 1 (value, list, map, reducing state); reads them in version 2."""

    def __init__(self, serializer: lg.Serializer[Any], write: bool) -> None:
        self.serializer = serializer
        self.write = write

    def open(self, ctx: lg.RuntimeContext) -> None:
        s = self.serializer
        self.value = ctx.get_state(lg.ValueStateDescriptor[Any]("value", serializer=s))
        self.list = ctx.get_list_state(lg.ListStateDescriptor[Any]("list", serializer=s))
        self.map = ctx.get_map_state(lg.MapStateDescriptor[Any]("map", serializer=s))
        self.timed = ctx.get_state(
            lg.ValueStateDescriptor[Any]("timed", serializer=s, ttl=lg.StateTtlConfig(3600))
        )

    def process_element(self, key: str, ctx: lg.RuntimeContext) -> Iterator[Any]:
        number = int(key[1:])
        if self.write:
            account = AccountV1(number, number * 150, "n")
            self.value.update_nowait(account)
            self.list.add_nowait(account)
            self.list.add_nowait(AccountV1(-number, 5))
            self.map.put_nowait(number, account)
            self.timed.update_nowait(account)
            yield key
            return
        yield (
            key,
            self.value.value_nowait(),
            self.list.get_nowait(),
            self.map.to_dict_nowait(),
            self.timed.value_nowait(),
        )


def expected_accounts(keys: list[str]) -> list[Any]:
    rows = []
    for key in keys:
        number = int(key[1:])
        account = AccountV2(number, number * 1.5)
        rows.append((key, account, [account, AccountV2(-number, 0.05)], {number: account}, account))
    return rows


PATHS = [
    ("heap", "heap", "savepoint"),
    ("heap", "rocksdb", "checkpoint"),
    ("heap-incremental", "heap", "checkpoint"),
    ("heap-incremental", "rocksdb", "checkpoint"),
    ("rocksdb", "rocksdb", "checkpoint"),
    ("rocksdb", "heap", "savepoint"),
    ("rocksdb-incremental", "rocksdb", "checkpoint"),  # native: the database is migrated in place
    ("rocksdb-incremental", "heap", "checkpoint"),
]


@pytest.mark.parametrize(("before", "after", "save"), PATHS)
async def test_every_restore_path_migrates_every_kind_of_state(
    tmp_path: Path, before: str, after: str, save: str
) -> None:
    keys = [f"k{n}" for n in range(1, 9)]
    # Two checkpoints: an incremental backend's second one is a delta (heap) or shares files (RocksDB).
    _, pointer = await run(Accounts(V1, True), keys[:4], 2, before, tmp_path, save="checkpoint")
    _, pointer = await run(Accounts(V1, True), keys[4:], 2, before, tmp_path, restore_from=pointer, save=save)
    seen, _ = await run(Accounts(V2, False), keys, 3, after, tmp_path, restore_from=pointer)
    assert sorted(seen, key=lambda row: row[0]) == expected_accounts(sorted(keys))


# ---- refusals and failures


def files_of(pointer: str) -> dict[str, str]:
    """Every file under a checkpoint or savepoint and the hash of its bytes."""
    root = Path(pointer.removeprefix("file://"))
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


async def restore_fails(function: Any, pointer: str, backend: str, keys: list[str]) -> lg.JobFailedError:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=MAX_PARALLELISM)
    env.set_state_backend(backend_of(backend))
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(5))  # it must not restart
    env.from_collection(keys, uid="keys").key_by(lambda key: key).process(function, uid="keep").sink(
        lg.CollectSink(), uid="out"
    )
    with anyio.fail_after(GUARD), pytest.raises(lg.JobFailedError) as failed:
        await env.execute("evolve", restore_from=pointer, allow_non_restored_state=True)
    assert "restarted" not in "".join(getattr(failed.value, "__notes__", []))
    return failed.value


@dataclasses.dataclass
class AccountRetyped:
    amount: str  # retyped without a migration
    cents: int
    note: str = ""


@pytest.mark.parametrize(("backend", "save"), [("heap", "savepoint"), ("rocksdb-incremental", "checkpoint")])
async def test_an_incompatible_change_is_refused_at_once_and_leaves_the_state_untouched(
    tmp_path: Path, backend: str, save: str
) -> None:
    keys = ["k1", "k2", "k3"]
    _, pointer = await run(Accounts(V1, True), keys, 2, backend, tmp_path, save=save)
    before = files_of(pointer)
    failure = await restore_fails(
        Accounts(lg.DataclassSerializer(AccountRetyped), False), pointer, backend.partition("-")[0], keys
    )
    refusal = failure.__cause__
    assert isinstance(refusal, lg.IncompatibleStateError)
    assert (refusal.operator_uid, refusal.state) == ("keep", "value")
    assert (
        refusal.old == "dataclass serializer version 1 of AccountV1(amount: int, cents: int, note: str = ...)"
    )
    assert refusal.new.startswith("dataclass serializer version 1 of AccountRetyped(amount: str")
    assert "$.amount: int became str" in str(refusal) and "migrations={1: function}" in str(refusal)
    assert files_of(pointer) == before

    # The same state still restores into the version that can read it.
    seen, _ = await run(Accounts(V2, False), keys, 1, "heap", tmp_path, restore_from=pointer)
    assert sorted(seen, key=lambda row: row[0]) == expected_accounts(keys)


async def test_a_migration_that_raises_fails_the_job_with_its_cause_and_no_restart(tmp_path: Path) -> None:
    keys = ["k1", "k2"]
    _, pointer = await run(Accounts(V1, True), keys, 1, "rocksdb", tmp_path, save="savepoint")
    before = files_of(pointer)
    broken = lg.DataclassSerializer(
        AccountV2, version=2, migrations={1: lambda old: {**old, "cents": old["gone"]}}
    )
    failure = await restore_fails(Accounts(broken, False), pointer, "rocksdb", keys)
    error = failure.__cause__
    assert isinstance(error, lg.StateMigrationError)
    assert (error.operator_uid, error.old.split(" of ")[1]) == (
        "keep",
        "AccountV1(amount: int, cents: int, note: str = ...)",
    )
    assert isinstance(error.__cause__, KeyError) and "'gone'" in str(error)
    assert files_of(pointer) == before


async def test_going_back_to_an_older_version_is_refused(tmp_path: Path) -> None:
    values = {"k1": {"balance": 1, "cents": 2.5}}
    _, pointer = await run(Keep(V2, values), ["k1"], 1, "heap", tmp_path, save="savepoint")
    failure = await restore_fails(Keep(lg.DataclassSerializer(AccountV2), None), pointer, "heap", [])
    refusal = failure.__cause__
    assert isinstance(refusal, lg.IncompatibleStateError)
    assert "written by version 2 of the schema, and this is version 1" in str(refusal)


@dataclasses.dataclass(frozen=True)
class Customer:
    region: str
    number: int


class CountCustomers(lg.KeyedProcessFunction[Any, Any]):
    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))

    def process_element(self, value: Any, ctx: lg.RuntimeContext) -> Iterator[Any]:
        self.count.update_nowait(self.count.value_nowait() + 1)
        yield value


async def test_a_key_type_whose_fields_changed_is_refused(tmp_path: Path) -> None:
    lg.state.register_exact_dataclass(Customer)
    env = lg.StreamEnvironment(parallelism=1, max_parallelism=MAX_PARALLELISM)
    source: lg.QueueSource[Any] = lg.QueueSource()
    watch = Watch()
    env.from_source(source, uid="customers").key_by(lambda c: c).process(CountCustomers(), uid="keep").map(
        watch, uid="watch"
    ).sink(lg.CollectSink(), uid="out")
    with anyio.fail_after(GUARD):
        job = await env.start("keys")
        await source.put(Customer("eu", 1))
        await until_or_failure(job, lambda: watch.until(1))
        pointer = await job.trigger_savepoint(tmp_path.as_uri())
        await job.cancel()

    @dataclasses.dataclass(frozen=True)
    class NextCustomer:  # the next version of Customer: a field more
        region: str
        number: int
        tier: int = 0

    NextCustomer.__qualname__ = NextCustomer.__name__ = "Customer"
    original = globals()["Customer"]
    globals()["Customer"] = NextCustomer  # where unpickling the saved keys finds the class
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=MAX_PARALLELISM)
    env.from_collection([], uid="customers").key_by(lambda c: c).process(CountCustomers(), uid="keep").sink(
        lg.CollectSink(), uid="out"
    )
    try:
        with anyio.fail_after(GUARD), pytest.raises(lg.IncompatibleStateError) as refused:
            await env.execute("keys", restore_from=pointer)  # refused as the job's state is read
    finally:
        globals()["Customer"] = original
    refusal = refused.value
    assert "Customer(region, number)" in refusal.old and "Customer(region, number, tier)" in refusal.new
    assert "A key cannot change" in str(refusal)


@settings(max_examples=200, deadline=None)
@given(evolution=evolutions(), library=st.sampled_from(sorted(SERIALIZERS)))
def test_a_change_is_refused_exactly_when_it_needs_a_migration_that_is_not_there(
    evolution: tuple[VersionModel, VersionModel, dict[str, dict[str, Any]]], library: str
) -> None:
    old, new, _ = evolution
    saved = serializer_of(library, old).snapshot()
    without_migrations = SERIALIZERS[library](record_class(library, new), version=new.version)
    retyped = [
        f.name for f in new.fields if (before := old.field(f.ident)) is not None and before.type is not f.type
    ]
    resolution = without_migrations.resolve(saved)
    if retyped:
        assert resolution.compatibility is lg.Compatibility.INCOMPATIBLE
        assert all(f"$.{name}: " in "\n".join(resolution.changes) for name in retyped)
    else:
        assert resolution.compatibility is not lg.Compatibility.INCOMPATIBLE
    assert serializer_of(library, new).resolve_compatibility(saved) is not lg.Compatibility.INCOMPATIBLE


async def test_migration_runs_in_a_worker_thread_before_the_first_record(tmp_path: Path) -> None:
    keys = ["k1", "k2"]
    _, pointer = await run(Accounts(V1, True), keys, 1, "heap", tmp_path, save="savepoint")
    threads: set[str] = set()

    def to_euros(old: dict[str, Any]) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        return {**old, "cents": old["cents"] / 100}

    recording = lg.DataclassSerializer(AccountV2, version=2, migrations={1: to_euros})
    seen, _ = await run(Accounts(recording, False), keys, 1, "heap", tmp_path, restore_from=pointer)
    assert sorted(seen, key=lambda row: row[0]) == expected_accounts(keys)
    assert threads and threading.current_thread().name not in threads


@pytest.mark.parametrize(
    ("before", "after", "save"),
    [
        ("heap", "heap", "checkpoint"),  # the pickled tables of a heap checkpoint
        ("heap", "heap", "savepoint"),  # a savepoint's packed tables
        ("heap", "rocksdb", "savepoint"),
        ("rocksdb-incremental", "rocksdb", "checkpoint"),  # pickles in a database opened in place
    ],
)
async def test_state_the_default_pickle_wrote_is_taken_over_by_a_typed_serializer(
    tmp_path: Path, before: str, after: str, save: str
) -> None:
    keys = ["k1", "k2", "k3"]
    _, pointer = await run(Accounts(lg.PickleSerializer(), True), keys, 2, before, tmp_path, save=save)
    # From pickle, values are taken over field by field: the alias and the defaults apply (no version
    # of the schema was saved, so no migration runs).
    typed = lg.DataclassSerializer(AccountV2)
    seen, _ = await run(Accounts(typed, False), keys, 2, after, tmp_path, restore_from=pointer)
    rows = []
    for key in keys:
        number = int(key[1:])
        account = AccountV2(number, number * 150)
        rows.append((key, account, [account, AccountV2(-number, 5)], {number: account}, account))
    assert sorted(seen, key=lambda row: row[0]) == rows
