"""The ``lockgate`` command: ``lockgate savepoint inspect | dump | verify``.

Every command reads a savepoint or retained checkpoint offline, through :class:`Savepoint` (inspect,
dump) or the storage's checked reads (verify), on an event loop of its own. Exit status: 0 done; 1 a
file is damaged or missing, or values cannot be decoded here; 2 a mistake in the command (no savepoint
at the URL, an unknown uid or state, a bad option). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import anyio
import click

from lockgate._errors import CheckpointError, ConfigurationError, CorruptCheckpointError
from lockgate.cli._encoding import ENCODING_HELP, to_cell, to_json
from lockgate.cli._inspect import describe, render
from lockgate.cli._verify import verify as verify_files
from lockgate.savepoint import Savepoint, StateInfo
from lockgate.snapshots import METADATA_NAME
from lockgate.state import TIMER_KIND

#: The serializers whose values the command line decodes without the job's code (besides pickle).
_TYPED = ("dataclass", "msgspec", "pydantic")

_IMPORT_HINT = (
    "a class it needs cannot be imported here; run the command where the job's modules import "
    "(PYTHONPATH, or the job's directory with `python -m lockgate`)"
)


class Damaged(click.ClickException):
    """A damaged or missing file, or values this process cannot decode: a one-line error, status 1."""

    exit_code = 1


class Mistake(click.ClickException):
    """A mistake in the command (no savepoint at the URL, an unknown uid or state): a one-line
    error, status 2."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """lockgate's command line."""


@main.group()
def savepoint() -> None:
    """Read savepoints and retained checkpoints without running a job.

    URL is a savepoint or checkpoint directory (file:///data/sp/savepoint-3, a plain path, or any URL
    a checkpoint storage is registered for; its _metadata file works too), or a directory of them,
    whose newest is read (verify checks them all).

    Exit status: 0 on success; 1 if a file is damaged or missing, or values cannot be decoded here; 2 on
    a mistake in the command (no savepoint at URL, an unknown uid or state).
    """


#: The option every command takes: the job's checkpoint signing key, from a file.
key_file = click.option(
    "--key-file",
    type=click.File("rb"),
    help="A file holding the job's checkpoint signing key: every file must be signed with it, or it "
    "is refused before anything in it is read.",
)


@savepoint.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@key_file
def inspect(url: str, as_json: bool, key_file: BinaryIO | None) -> None:
    """Show a savepoint: its id, kind, job and max parallelism; each operator's parallelism and size;
    each state's kind, serializer, TTL and number of entries.

    Entries are keys (keyed state), elements (list and union state) or map entries (broadcast state),
    counted over every subtask (a broadcast map once, as every subtask holds a copy); timers are the
    states _timers/event and _timers/processing.
    """

    async def run() -> None:
        loaded = await _load(url, _key(key_file))
        if as_json:
            click.echo(json.dumps(describe(loaded), ensure_ascii=False, indent=2))
        else:
            render(loaded)

    _run(run)


_DUMP_HELP = f"""Print every entry of one state, one per line.

JSON lines are {{"key": ..., "value": ...}} ({{"key", "window", "value"}} with --windows); CSV has the
columns key,value (key,window,value), a string cell as it is and any other cell as JSON text (lists and
maps too). Keyed state: a key's value, list or map. Timers (_timers/event, _timers/processing): the
timestamp in ms, a line per timer. List and union operator state: each element, keyed by its position
(every subtask's elements, in subtask order). Broadcast state: its map, entry by entry.

Pickled values decode into their classes, which must import here; typed (dataclass, msgspec, pydantic)
values come as their fields.

{ENCODING_HELP}
"""


@savepoint.command(help=_DUMP_HELP)
@click.argument("url")
@click.option("--uid", required=True, help="The operator's uid (inspect lists them).")
@click.option("--state", "name", required=True, help="The state's name, e.g. total or _timers/event.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="JSON lines, or CSV with a header row.",
)
@click.option("--include-expired", is_flag=True, help="Also entries whose TTL has expired.")
@click.option(
    "--windows",
    is_flag=True,
    help="Also entries scoped to a window (window contents, window timers), with a window field.",
)
@key_file
def dump(
    url: str,
    uid: str,
    name: str,
    output: str,
    include_expired: bool,
    windows: bool,
    key_file: BinaryIO | None,
) -> None:
    """Print one state, entry by entry (the help is ``_DUMP_HELP``)."""

    async def run() -> None:
        loaded = await _load(url, _key(key_file))
        info = _state_info(loaded, uid, name)
        _check_readable(loaded, uid, info)
        write = _writer(output, windows)
        left_out = 0
        with _reading(url, f"state {name!r} of {uid!r}"):
            async for key, window, value in _entries(loaded, uid, info, include_expired):
                if window is not None and not windows:
                    left_out += 1
                    continue
                write(key, window, value)
        if left_out:
            click.echo(f"note: {left_out} window-scoped entries left out (--windows shows them)", err=True)

    _run(run)


@savepoint.command()
@click.argument("url")
@key_file
def verify(url: str, key_file: BinaryIO | None) -> None:
    """Check every file of a savepoint or checkpoint: _metadata, each state file and each shared file
    it names (incremental checkpoints), frame by frame against their sizes and CRC-32 checksums.

    Nothing is unpickled: verifying runs no code from the files. A directory of checkpoints and
    savepoints has each one checked. Exits 0 when every file is intact, 1 naming each damaged or
    missing file. With --key-file, a file that is not signed with the key is damaged too.
    """

    async def run() -> None:
        with _url_errors(url):
            found = await verify_files(_snapshot_url(url), _key(key_file))
        for snapshot in found.snapshots:
            damaged = f", {len(snapshot.damaged)} damaged or missing" if snapshot.damaged else ""
            click.echo(
                f"{snapshot.description} at {snapshot.pointer}: {snapshot.intact} files intact{damaged}"
            )
        for damage in found.damaged:
            click.echo(f"damaged: {damage.path}: {damage.reason}", err=True)
        if found.ok:
            click.echo(f"ok: all {found.intact} files intact")
            return
        raise Damaged(f"{len(found.damaged)} of {found.intact + len(found.damaged)} files damaged or missing")

    _run(run)


# ---- what the commands share


def _run(command: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``command`` on an event loop of its own."""
    anyio.run(command)


def _snapshot_url(url: str) -> str:
    """``url`` without a trailing ``/_metadata``: the directory holding it."""
    stripped = url.rstrip("/")
    if stripped.endswith(f"/{METADATA_NAME}"):
        return stripped[: -len(METADATA_NAME) - 1]
    return url


@contextmanager
def _url_errors(url: str) -> Iterator[None]:
    """Turn what finding the savepoint at ``url`` raises into one-line errors."""
    try:
        yield
    except CorruptCheckpointError as exc:
        raise _damaged(exc) from None
    except (CheckpointError, ConfigurationError) as exc:
        raise Mistake(str(exc)) from None


def _key(key_file: BinaryIO | None) -> bytes | None:
    """The signing key a --key-file holds (a trailing newline is not part of it)."""
    if key_file is None:
        return None
    key = key_file.read().rstrip(b"\r\n")
    if not key:
        raise Mistake(f"the key file {key_file.name} is empty")
    return key


async def _load(url: str, key: bytes | None = None) -> Savepoint:
    """The savepoint at ``url``, with one-line errors."""
    with _url_errors(url):
        try:
            return await Savepoint.load(_snapshot_url(url), key=key)
        except (ImportError, AttributeError) as exc:
            if not _cannot_import(exc):
                raise
            raise Damaged(f"cannot decode {url}: {exc}; {_IMPORT_HINT}") from None


@contextmanager
def _reading(url: str, what: str = "") -> Iterator[None]:
    """Turn what reading a loaded savepoint raises into one-line errors (exit status 1)."""
    subject = f"{what} in {url}" if what else url
    try:
        yield
    except CorruptCheckpointError as exc:
        raise _damaged(exc) from None
    except (ImportError, AttributeError) as exc:
        if not _cannot_import(exc):
            raise
        raise Damaged(f"cannot decode {subject}: {exc}; {_IMPORT_HINT}") from None
    except (CheckpointError, ConfigurationError) as exc:
        raise Damaged(f"cannot read {subject}: {exc}") from None


def _damaged(exc: CorruptCheckpointError) -> Damaged:
    cause = exc.__cause__
    if cause is not None and _cannot_import(cause):  # intact bytes (the CRC held), unknown classes
        return Damaged(f"cannot decode {exc.path}: {cause}; {_IMPORT_HINT}")
    return Damaged(f"cannot read {exc.path}: {exc.reason}")


def _cannot_import(exc: BaseException) -> bool:
    """Whether ``exc`` is unpickling failing to find a class (its module, or the class in it)."""
    if isinstance(exc, ImportError):
        return True
    return isinstance(exc, AttributeError) and str(exc).startswith("Can't get attribute")


def _state_info(loaded: Savepoint, uid: str, name: str) -> StateInfo:
    operators = {operator.uid: operator for operator in loaded.operators()}
    operator = operators.get(uid)
    if operator is None:
        raise Mistake(
            f"{loaded.kind} {loaded.checkpoint_id} has no operator {uid!r}; its operators: "
            f"{', '.join(sorted(operators)) or 'none'}"
        )
    for info in operator.states:
        if info.name == name:
            return info
    states = ", ".join(info.name for info in operator.states) or "none"
    raise Mistake(f"operator {uid!r} has no state {name!r}; its states: {states}")


def _check_readable(loaded: Savepoint, uid: str, info: StateInfo) -> None:
    """Refuse, before reading, a state whose values only its own serializer decodes."""
    serializer = info.serializer
    if info.kind == TIMER_KIND or serializer.name == "pickle" or serializer.name in _TYPED:
        return
    raise Damaged(
        f"state {info.name!r} of {uid!r} was written by {serializer.describe()}, which the command line "
        "cannot decode; read it in Python with lg.Savepoint.load(url), passing serializer= to its reader"
    )


async def _entries(
    loaded: Savepoint, uid: str, info: StateInfo, include_expired: bool
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Every ``(key, window or None, value)`` of one state, read the way its kind is."""
    if info.kind == TIMER_KIND:
        domain = info.name.rpartition("/")[2]
        async for key, timestamp, namespace in loaded.read_timers(uid, domain, namespaces=True):
            yield key, namespace, timestamp
    elif info.keyed:
        async for key, window, value in loaded.read_keyed_state(
            uid, info.name, include_expired=include_expired, windows=True
        ):
            yield key, window, value
    elif info.kind == "broadcast":
        for key, value in (await loaded.read_broadcast_state(uid, info.name)).items():
            yield key, None, value
    else:
        read = loaded.read_union_state if info.kind == "union" else loaded.read_list_state
        for position, element in enumerate(await read(uid, info.name)):
            yield position, None, element


def _writer(output: str, windows: bool) -> Callable[[Any, Any, Any], None]:
    """What writes one entry to stdout, as JSON lines or CSV (whose header it writes at once)."""
    if output == "json":

        def write_json(key: Any, window: Any, value: Any) -> None:
            line = {"key": key, "window": window, "value": value} if windows else {"key": key, "value": value}
            click.echo(to_json(line))

        return write_json

    def row(cells: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        click.echo(buffer.getvalue(), nl=False)

    row(["key", "window", "value"] if windows else ["key", "value"])

    def write_csv(key: Any, window: Any, value: Any) -> None:
        cells = [key, window, value] if windows else [key, value]
        row([to_cell(cell) for cell in cells])

    return write_csv
