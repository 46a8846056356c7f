"""Reading a RocksDB checkpoint directory entry by entry, each value as stored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rocksdict import AccessType, Options, Rdict

from lockgate.state._snapshot import Entry
from lockgate.state.rocksdb._encoding import _PLAIN, CF_PREFIX, _decode_key, _payload, _stored_key


def _open_read_only(path: str, states: Iterable[str]) -> Rdict:
    families = {CF_PREFIX + name: Options(raw_mode=True) for name in states}
    return Rdict(
        path, options=Options(raw_mode=True), column_families=families, access_type=AccessType.read_only()
    )


def _stored_entries(database: Rdict, state: str) -> Iterator[tuple[int, Any, Any, bytes]]:
    """``(key group, key, namespace, stored value)`` of every entry of a state's column family."""
    family: Any = database.get_column_family(CF_PREFIX + state)  # raw mode: bytes in and out
    for raw_key, raw_value in family.items():
        key, end = _decode_key(raw_key, 2)
        namespace, _ = _decode_key(raw_key, end)
        stored_key = _stored_key(raw_value)
        if stored_key is not _PLAIN:
            key = stored_key
        yield int.from_bytes(raw_key[:2], "big"), key, namespace, raw_value


def _stored_groups(database: Rdict, state: str) -> dict[int, list[Entry]]:
    """A state's entries by key group, each value as stored (the bytes its codec wrote)."""
    groups: dict[int, list[Entry]] = {}
    for key_group, key, namespace, raw_value in _stored_entries(database, state):
        groups.setdefault(key_group, []).append((key, namespace, _payload(raw_value)))
    return groups
