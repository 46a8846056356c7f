"""``lockgate savepoint inspect``: what a savepoint holds, as plain data (``--json``) or as tables."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lockgate.savepoint import OperatorInfo, Savepoint, StateInfo
from lockgate.state import StateTtlConfig

#: The width of the tables when stdout is no terminal (a file, a pipe) and COLUMNS is not set.
_PIPED_WIDTH = 160


def describe(savepoint: Savepoint) -> dict[str, Any]:
    """The savepoint as plain JSON data: the document ``inspect --json`` prints."""
    return {
        "pointer": savepoint.pointer,
        "checkpoint_id": savepoint.checkpoint_id,
        "kind": savepoint.kind,
        "job_name": savepoint.job_name,
        "max_parallelism": savepoint.max_parallelism,
        "operators": [_operator(operator) for operator in savepoint.operators()],
    }


def _operator(operator: OperatorInfo) -> dict[str, Any]:
    return {
        "uid": operator.uid,
        "parallelism": operator.parallelism,
        "size": operator.size,
        "states": [_state(state) for state in operator.states],
    }


def _state(state: StateInfo) -> dict[str, Any]:
    serializer = state.serializer
    return {
        "name": state.name,
        "kind": state.kind,
        "keyed": state.keyed,
        "serializer": {
            "name": serializer.name,
            "version": serializer.version,
            "description": serializer.describe(),
        },
        "ttl": _ttl(state.ttl),
        "entries": state.entries,
    }


def _ttl(ttl: StateTtlConfig | None) -> dict[str, Any] | None:
    if ttl is None:
        return None
    return {
        "seconds": ttl.ttl_seconds,
        "update_type": ttl.update_type.value,
        "visibility": ttl.visibility.value,
    }


def render(savepoint: Savepoint) -> None:
    """Print the savepoint to stdout: a heading, then a table of its operators and their states."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPED_WIDTH
    operators = savepoint.operators()
    total = sum(operator.size for operator in operators)
    console.print(
        Text(f"{savepoint.kind} {savepoint.checkpoint_id} of job {savepoint.job_name!r}", style="bold")
    )
    console.print(Text(f"  at {savepoint.pointer}"))
    console.print(
        Text(
            f"  max parallelism {savepoint.max_parallelism}, {len(operators)} operators, "
            f"{human_size(total)} of state"
        )
    )
    table = Table(show_lines=False)
    table.add_column("operator", no_wrap=True)
    table.add_column("parallelism", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("kind")
    table.add_column("serializer")
    table.add_column("TTL")
    table.add_column("entries", justify="right")
    for operator in operators:
        first: list[Text | str] = [Text(operator.uid), str(operator.parallelism), human_size(operator.size)]
        if not operator.states:
            table.add_row(*first, "-", "", "", "", "", end_section=True)
            continue
        for position, state in enumerate(operator.states):
            table.add_row(
                *(first if position == 0 else ["", "", ""]),
                Text(state.name),
                state.kind,
                Text(state.serializer.describe()),
                _ttl_text(state.ttl),
                str(state.entries),
                end_section=position == len(operator.states) - 1,
            )
    console.print(table)


def _ttl_text(ttl: StateTtlConfig | None) -> str:
    if ttl is None:
        return "-"
    text = f"{ttl.ttl_seconds:g}s"
    if ttl.update_type is StateTtlConfig.UpdateType.OnReadAndWrite:
        text += ", refreshed on read"
    if ttl.visibility is StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp:
        text += ", expired returned until cleaned up"
    return text


def human_size(size: int) -> str:
    """A number of bytes for people: ``812 B``, ``1.3 KiB``, ``4.0 MiB``."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")
