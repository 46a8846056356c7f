"""Reading a RocksDB checkpoint directory entry by entry, each value as stored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rocksdict import AccessType, Options, Rdict

from lockgate.state._snapshot import Entry, StateMetaInfo, join_map
from lockgate.state.rocksdb._encoding import (
    _PLAIN,
    CF_PREFIX,
    _decode_key,
    _payload,
    _stored_key,
    _stored_keys,
)


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


def _stored_maps(database: Rdict, state: str) -> Iterator[tuple[int, Any, Any, dict[Any, bytes]]]:
    """``(key group, key, namespace, {map key: element bytes})`` of every map of a map state's column
    family, whose RocksDB entries are one per map entry, a map's entries next to each other."""
    family: Any = database.get_column_family(CF_PREFIX + state)
    current: bytes | None = None
    key_group = 0
    key: Any = None
    namespace: Any = None
    entries: dict[Any, bytes] = {}
    for raw_key, raw_value in family.items():
        decoded_key, end = _decode_key(raw_key, 2)
        decoded_namespace, end = _decode_key(raw_key, end)
        stored_key, user_key = _stored_keys(raw_value)
        if raw_key[:end] != current:
            if current is not None:
                yield key_group, key, namespace, entries
            current, entries = raw_key[:end], {}
            key_group, namespace = int.from_bytes(raw_key[:2], "big"), decoded_namespace
            key = decoded_key if stored_key is _PLAIN else stored_key
        if user_key is _PLAIN:
            user_key = _decode_key(raw_key, end)[0]
        entries[user_key] = _payload(raw_value)
    if current is not None:
        yield key_group, key, namespace, entries


def _stored_groups(database: Rdict, state: str, meta: StateMetaInfo) -> dict[int, list[Entry]]:
    """A state's entries by key group, each value as its codec encodes it (a map joined from its
    entries), as stored: nothing user-defined is deserialised."""
    groups: dict[int, list[Entry]] = {}
    if meta.kind == "map":
        timed = meta.ttl is not None
        for key_group, key, namespace, entries in _stored_maps(database, state):
            groups.setdefault(key_group, []).append((key, namespace, join_map(entries, timed)))
        return groups
    for key_group, key, namespace, raw_value in _stored_entries(database, state):
        groups.setdefault(key_group, []).append((key, namespace, _payload(raw_value)))
    return groups
