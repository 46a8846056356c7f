"""The command line, from the outside: small jobs take real checkpoints (incremental, heap and RocksDB)
and savepoints, then ``lockgate savepoint inspect | dump | verify`` reads them as a person would run it
(click's runner, and once a real ``python -m lockgate``): what it prints, and its exit status."""

from __future__ import annotations

import csv
import datetime
import enum
import io
import json
import os
import subprocess
import sys
import time
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.cli import main
from lockgate.cli._encoding import plain, to_cell
from tests._sources import GUARD
from tests.test_recovery import Watch

ROOT = Path(__file__).resolve().parent.parent
ITEMS = [(key, n) for n in range(4) for key in "abc"]
RULES = [1, 2]
HOUR = 3_600_000


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class Account:
    balance: int
    currency: str = "EUR"


#: A value JSON cannot carry as it is: bytes, a dataclass, a datetime, a map with int keys, NaN, a set.
ODD = (b"\x00\xff", Point(1, -1), datetime.datetime(2024, 1, 1, 12, 0), {1: "a"}, float("nan"), {3, 1})
#: ... and what dump writes for it.
ODD_JSON = [
    {"$bytes": "AP8="},
    {"$dataclass": f"{__name__}.Point", "fields": {"x": 1, "y": -1}},
    {"$datetime": "2024-01-01T12:00:00"},
    {"$map": [[1, "a"]]},
    {"$float": "nan"},
    [1, 3],
]


class Keep(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int]]):
    """Keeps a state of every kind per key, with a TTL, a typed serializer and odd values; an event-time
    timer per record."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor[int]("total", default=0))
        self.seen = ctx.get_list_state(lg.ListStateDescriptor[int]("seen"))
        self.parity = ctx.get_map_state(lg.MapStateDescriptor[int]("parity"))
        self.recent = ctx.get_state(lg.ValueStateDescriptor[int]("recent", ttl=lg.StateTtlConfig(3600)))
        self.account = ctx.get_state(
            lg.ValueStateDescriptor("account", serializer=lg.DataclassSerializer(Account))
        )
        self.odd = ctx.get_state(lg.ValueStateDescriptor[Any]("odd"))

    def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Iterator[tuple[str, int]]:
        _, n = value
        total = self.total.value_nowait() + n
        self.total.update_nowait(total)
        self.seen.add_nowait(n)
        self.parity.put_nowait("even" if n % 2 == 0 else "odd", n)
        self.recent.update_nowait(n)
        self.account.update_nowait(Account(total))
        self.odd.update_nowait(ODD)
        ctx.timer_service().register_event_time_timer(1000 + n)
        yield value


class Buffer(lg.BroadcastProcessFunction[tuple[str, int], int, Any]):
    """Operator state of every mode: each record in list and union state, each rule in broadcast state."""

    rules = lg.MapStateDescriptor[int]("rules")

    def initialize_state(self, ctx: lg.RuntimeContext) -> None:
        self.split = ctx.get_list_state(lg.ListStateDescriptor[tuple[str, int]]("split"))
        self.union = ctx.get_union_list_state(lg.ListStateDescriptor[int]("union"))

    def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Iterator[Any]:
        self.split.add_nowait(value)
        self.union.add_nowait(value[1])
        yield value

    def process_broadcast_element(self, value: int, ctx: lg.RuntimeContext) -> Iterator[Any]:
        ctx.get_broadcast_state(self.rules).put_nowait(value, value * 10)
        yield ("rule", value)


def add(a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int]:
    return (a[0], a[1] + b[1])


@dataclass(frozen=True)
class Taken:
    """One backend's run: the directory of its snapshots, its last incremental checkpoint, its savepoint."""

    checkpoint: Path
    savepoint: Path


async def take(directory: Path, variant: str) -> Taken:
    """Run the job: half the records, a checkpoint, the rest, another (incremental) checkpoint and a
    savepoint. ``variant``: ``heap`` or ``rocksdb``, every state blob in a file of its own; ``inline``:
    heap, the storage's default inline threshold (this job's small state is kept in ``_metadata``)."""
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=4)
    incremental = lg.RocksDBStateBackend(incremental=True) if variant == "rocksdb" else None
    env.set_state_backend(incremental or lg.HeapStateBackend(incremental=True))
    checkpoints = (directory / "checkpoints").as_uri()
    if variant == "inline":
        env.set_checkpoint_storage(checkpoints)
    else:
        env.set_checkpoint_storage(lg.FileCheckpointStorage(checkpoints, inline_threshold=0))
    env.enable_checkpointing(3600)
    records: lg.QueueSource[tuple[str, int]] = lg.QueueSource()
    rules: lg.QueueSource[int] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(records, uid="records").key_by(lambda record: record[0])
    windows = keyed.window(lg.TumblingProcessingTimeWindows.of(datetime.timedelta(hours=1)))
    windows.reduce(add, uid="window").sink(lg.CollectSink(), uid="window-out")
    kept = keyed.process(Keep(), uid="keep").connect(env.from_source(rules, uid="rules").broadcast())
    kept.process(Buffer(), uid="buffer").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    half = len(ITEMS) // 2
    with anyio.fail_after(GUARD):
        job = await env.start(f"cli-{variant}")
        for rule in RULES:
            await rules.put(rule)
        for item in ITEMS[:half]:
            await records.put(item)
        await watch.until(len(RULES) + half)
        await job.trigger_checkpoint()
        for item in ITEMS[half:]:
            await records.put(item)
        await watch.until(len(RULES) + len(ITEMS))
        checkpoint = await job.trigger_checkpoint()
        savepoint = await job.trigger_savepoint((directory / "savepoints").as_uri())
        await job.cancel()
    return Taken(local(checkpoint.pointer), local(savepoint))


def local(url: str) -> Path:
    return Path(url.removeprefix("file://"))


@pytest.fixture(scope="module")
def taken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every snapshot the tests read, by name: ``heap-checkpoint``, ``rocksdb-savepoint``, ..."""
    found = {}
    for variant in ("heap", "rocksdb", "inline"):
        run = anyio.run(take, tmp_path_factory.mktemp(variant), variant)
        found[f"{variant}-checkpoint"], found[f"{variant}-savepoint"] = run.checkpoint, run.savepoint
    return found


SNAPSHOTS = [
    "heap-checkpoint",
    "heap-savepoint",
    "rocksdb-checkpoint",
    "rocksdb-savepoint",
    "inline-checkpoint",
    "inline-savepoint",
]


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def lines(result: Result) -> list[Any]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def by_key(result: Result) -> dict[Any, Any]:
    found = lines(result)
    assert all(set(line) == {"key", "value"} for line in found)
    return {line["key"]: line["value"] for line in found}


def one_line_error(result: Result, status: int) -> str:
    """The message of a failed command: one line on stderr, nothing else, no traceback."""
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit)  # no other exception escaped
    assert result.stdout == ""
    message = result.stderr.splitlines()
    assert len(message) == 1 and message[0].startswith("Error: "), result.stderr
    return message[0]


# ---- dump


@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_dump_prints_what_the_job_held(taken: dict[str, Path], snapshot: str) -> None:
    url = taken[snapshot]
    keys = sorted({key for key, _ in ITEMS})
    held = {key: [n for k, n in ITEMS if k == key] for key in keys}

    def dump(uid: str, state: str) -> Result:
        return cli("savepoint", "dump", url, "--uid", uid, "--state", state)

    assert by_key(dump("keep", "total")) == {key: sum(held[key]) for key in keys}
    assert by_key(dump("keep", "seen")) == held
    assert by_key(dump("keep", "parity")) == {key: {"even": 2, "odd": 3} for key in keys}
    assert by_key(dump("keep", "recent")) == {key: 3 for key in keys}
    assert by_key(dump("keep", "account")) == {
        key: {"balance": sum(held[key]), "currency": "EUR"} for key in keys
    }
    assert by_key(dump("keep", "odd")) == {key: ODD_JSON for key in keys}
    timers = lines(dump("keep", "_timers/event"))
    assert sorted((line["key"], line["value"]) for line in timers) == sorted(
        (key, 1000 + n) for key, n in ITEMS
    )
    assert "no state '_timers/processing'" in one_line_error(dump("keep", "_timers/processing"), 2)
    # Operator state: list elements by position, union elements, the broadcast map.
    split = lines(dump("buffer", "split"))
    assert sorted(line["key"] for line in split) == list(range(len(ITEMS)))
    assert sorted(tuple(line["value"]) for line in split) == sorted(ITEMS)
    assert sorted(line["value"] for line in lines(dump("buffer", "union"))) == sorted(n for _, n in ITEMS)
    assert by_key(dump("buffer", "rules")) == {rule: rule * 10 for rule in RULES}
    assert by_key(dump("records", "position")) == {0: len(ITEMS)}


def test_dump_writes_csv_with_json_cells_for_what_is_not_a_string(taken: dict[str, Path]) -> None:
    result = cli(
        "savepoint", "dump", taken["rocksdb-savepoint"], "--uid", "keep", "--state", "seen", "--format", "csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["key", "value"]
    assert {key: json.loads(value) for key, value in rows[1:]} == {
        key: [n for k, n in ITEMS if k == key] for key in "abc"
    }
    result = cli(
        "savepoint", "dump", taken["heap-checkpoint"], "--uid", "keep", "--state", "odd", "--format", "csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert sorted(row[0] for row in rows[1:]) == ["a", "b", "c"]
    assert all(json.loads(row[1]) == ODD_JSON for row in rows[1:])


@pytest.mark.parametrize("snapshot", ["heap-checkpoint", "rocksdb-savepoint"])
def test_window_scoped_entries_come_with_windows_only(taken: dict[str, Path], snapshot: str) -> None:
    args = ("savepoint", "dump", taken[snapshot], "--uid", "window")
    plain = cli(*args, "--state", "window-contents")
    assert plain.exit_code == 0 and plain.stdout == ""
    assert "3 window-scoped entries left out (--windows shows them)" in plain.stderr

    windowed = lines(cli(*args, "--state", "window-contents", "--windows"))
    assert sorted(line["value"][0] for line in windowed) == ["a", "b", "c"]
    for line in windowed:
        assert line["value"] == [line["key"], sum(n for k, n in ITEMS if k == line["key"])]
        window = line["window"]
        assert window["$dataclass"] == "lockgate.eventtime._windows.TimeWindow"
        assert window["fields"]["end"] - window["fields"]["start"] == HOUR
    timers = lines(cli(*args, "--state", "_timers/processing", "--windows"))
    assert sorted(line["key"] for line in timers) == ["a", "b", "c"]
    assert all(line["value"] == line["window"]["fields"]["end"] - 1 for line in timers)


def test_expired_entries_are_left_out_unless_asked_for(
    taken: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("savepoint", "dump", taken["heap-savepoint"], "--uid", "keep", "--state", "recent")
    later = time.time() + 2 * 3600  # past the TTL of an hour
    monkeypatch.setattr(time, "time", lambda: later)
    assert lines(cli(*args)) == []
    assert by_key(cli(*args, "--include-expired")) == {"a": 3, "b": 3, "c": 3}


def test_values_whose_class_does_not_import_are_a_one_line_error(
    taken: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(sys.modules[__name__], "Point")
    result = cli("savepoint", "dump", taken["rocksdb-savepoint"], "--uid", "keep", "--state", "odd")
    message = one_line_error(result, 1)
    assert "cannot decode state 'odd' of 'keep'" in message and "Point" in message
    assert "PYTHONPATH" in message


def test_any_value_encodes_as_json() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    looped: list[Any] = [1]
    looped.append(looped)
    value = {"inf": [float("inf"), -float("inf")], "enum": Color.RED, "when": datetime.date(2024, 2, 29)}
    assert plain(value) == {
        "inf": [{"$float": "inf"}, {"$float": "-inf"}],
        "enum": 1,
        "when": {"$date": "2024-02-29"},
    }
    assert plain(looped) == [1, {"$repr": "<cycle>"}]
    assert plain(Opaque()) == {
        "$repr": "<test_any_value_encodes_as_json.<locals>.Opaque object, repr() raised RuntimeError>"
    }
    assert plain(bytearray(b"hi")) == {"$bytes": "aGk="}
    assert json.loads(to_cell(("a", None))) == ["a", None] and to_cell("plain") == "plain"


# ---- inspect


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """The rows of inspect's table by (operator, state): parallelism, kind, serializer, TTL, entries;
    a cell wrapped over several lines is joined again."""
    rows: dict[tuple[str, str], list[str]] = {}
    operator = parallelism = ""
    row: list[str] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[3] == "":  # a wrapped cell's next line
            row[1:] = [f"{old} {new}".strip() for old, new in zip(row[1:], cells[4:], strict=True)]
            continue
        operator, parallelism = (cells[0], cells[1]) if cells[0] else (operator, parallelism)
        row = [parallelism, *cells[4:]]
        rows[operator, cells[3]] = row
    return rows


@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_inspect_shows_operators_and_states(taken: dict[str, Path], snapshot: str) -> None:
    url = taken[snapshot]
    result = cli("savepoint", "inspect", url)
    assert result.exit_code == 0, result.output
    kind = snapshot.split("-")[1]
    assert f"{kind} {url.name.rpartition('-')[2]} of job 'cli-{snapshot.split('-')[0]}'" in result.stdout
    assert "max parallelism 16" in result.stdout
    rows = table_rows(result.stdout)
    assert rows["keep", "recent"] == ["2", "value", "pickle (protocol 5)", "3600s", "3"]
    assert rows["keep", "_timers/event"] == ["2", "timers", "pickle (protocol 5)", "-", "12"]
    assert rows["buffer", "rules"] == ["2", "broadcast", "pickle (protocol 5)", "-", "2"]  # counted once
    assert rows["keep", "account"][2].startswith("dataclass serializer version 1 of Account(balance: int")
    assert rows["watch", "-"] == ["2", "", "", "", ""]

    document = json.loads(cli("savepoint", "inspect", url, "--json").stdout)
    assert document["kind"] == kind and document["max_parallelism"] == 16
    assert document["job_name"] == f"cli-{snapshot.split('-')[0]}"
    operators = {operator["uid"]: operator for operator in document["operators"]}
    assert set(operators) == {"records", "rules", "keep", "buffer", "window", "window-out", "watch", "out"}
    keep = operators["keep"]
    assert keep["parallelism"] == 2 and keep["size"] > 0
    states = {state["name"]: state for state in keep["states"]}
    assert {name: state["entries"] for name, state in states.items()} == {
        "total": 3,
        "seen": 3,
        "parity": 3,
        "recent": 3,
        "account": 3,
        "odd": 3,
        "_timers/event": 12,
    }
    assert states["recent"]["ttl"] == {
        "seconds": 3600,
        "update_type": "on_create_and_write",
        "visibility": "never_return_expired",
    }
    assert states["total"]["serializer"] == {
        "name": "pickle",
        "version": 5,
        "description": "pickle (protocol 5)",
    }
    assert states["account"]["serializer"]["name"] == "dataclass"
    assert states["total"]["keyed"] and not operators["buffer"]["states"][0]["keyed"]
    assert operators["watch"]["states"] == [] and operators["watch"]["size"] == 0


def test_python_m_lockgate_inspects_a_savepoint(taken: dict[str, Path], tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "lockgate", "savepoint", "inspect", str(taken["heap-savepoint"])],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "savepoint" in done.stdout and "_timers/event" in done.stdout and "buffer" in done.stdout
    assert done.stderr == ""


def test_the_console_script_is_the_click_group() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module, _, name = scripts["lockgate"].partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is main
    result = CliRunner().invoke(main, ["savepoint", "--help"])
    assert result.exit_code == 0 and "inspect" in result.stdout and "verify" in result.stdout
    assert "$bytes" in CliRunner().invoke(main, ["savepoint", "dump", "--help"]).stdout


# ---- mistakes


def test_mistakes_are_one_line_errors_with_status_2(taken: dict[str, Path], tmp_path: Path) -> None:
    url = taken["heap-savepoint"]
    for command in ("inspect", "verify"):
        message = one_line_error(cli("savepoint", command, tmp_path / "nothing"), 2)
        assert "no complete checkpoint or savepoint" in message
    message = one_line_error(cli("savepoint", "dump", url, "--uid", "nope", "--state", "total"), 2)
    assert "no operator 'nope'" in message and "keep" in message
    message = one_line_error(cli("savepoint", "dump", url, "--uid", "keep", "--state", "nope"), 2)
    assert "no state 'nope'" in message and "total" in message
    message = one_line_error(cli("savepoint", "inspect", "s3x://bucket/where"), 2)
    assert "s3x" in message
    assert cli("savepoint", "dump", url, "--state", "total").exit_code == 2  # click: --uid is missing


def test_the_metadata_file_itself_names_its_savepoint(taken: dict[str, Path]) -> None:
    url = taken["rocksdb-savepoint"] / "_metadata"
    assert cli("savepoint", "inspect", url).exit_code == 0
    assert cli("savepoint", "verify", url).exit_code == 0


# ---- verify


def named_files(snapshot: Path) -> list[Path]:
    """Every file the snapshot's ``_metadata`` names, ``_metadata`` first, read with the standard
    library as docs/savepoint-format.md describes (a handle with ``inline`` bytes names no file)."""
    framed = (snapshot / "_metadata").read_bytes()
    payload = framed[20:]
    assert zlib.crc32(payload) == int.from_bytes(framed[16:20], "big")
    metadata = json.loads(payload)
    files = [snapshot / "_metadata"]
    shared: set[str] = set()
    for operator in metadata["operators"].values():
        for subtask in operator["subtasks"].values():
            files += [
                snapshot / subtask[kind]["name"]
                for kind in ("keyed", "operator", "channel")
                if subtask[kind] and "inline" not in subtask[kind]
            ]
            shared |= {handle["name"] for handle in subtask["shared"]}
    return files + [snapshot.parent / "shared" / name for name in sorted(shared)]


@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_an_intact_snapshot_verifies(taken: dict[str, Path], snapshot: str) -> None:
    files = named_files(taken[snapshot])
    assert {path for path in files if path.parent == taken[snapshot]} == set(taken[snapshot].iterdir())
    if snapshot.endswith("-checkpoint"):  # incremental: files in the shared area too
        assert any(path.parent.name == "shared" for path in files)
    result = cli("savepoint", "verify", taken[snapshot])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"ok: all {len(files)} files intact"


@pytest.mark.parametrize("snapshot", SNAPSHOTS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_finds_a_flipped_byte_in_any_file(
    taken: dict[str, Path], snapshot: str, data: st.DataObject
) -> None:
    damaged = data.draw(st.sampled_from(named_files(taken[snapshot])), label="file")
    original = damaged.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = bytearray(original)
    changed[position] ^= flip
    damaged.write_bytes(bytes(changed))
    try:
        result = cli("savepoint", "verify", taken[snapshot])
    finally:
        damaged.write_bytes(original)
    assert result.exit_code == 1, result.output
    assert f"damaged: {damaged}: " in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: 1 of ")
    assert "Traceback" not in result.output


def test_verify_names_a_missing_file_and_checks_every_snapshot_of_a_directory(
    taken: dict[str, Path], tmp_path: Path
) -> None:
    directory = taken["heap-savepoint"].parent
    assert cli("savepoint", "verify", directory).exit_code == 0
    missing = next(path for path in named_files(taken["heap-savepoint"]) if path.name.startswith("keep-"))
    moved = tmp_path / missing.name
    missing.rename(moved)
    try:
        result = cli("savepoint", "verify", directory)
        inspected = cli("savepoint", "inspect", taken["heap-savepoint"])
    finally:
        moved.rename(missing)
    assert result.exit_code == 1
    assert f"damaged: {missing}: missing: the file does not exist" in result.stderr
    assert one_line_error(inspected, 1) == f"Error: cannot read {missing}: missing: the file does not exist"
