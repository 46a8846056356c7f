"""Reading a RocksDB checkpoint directory entry by entry, each value as stored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rocksdict import AccessType, Options, Rdict

from lockgate.state._snapshot import Entry, StateMetaInfo, join_list, join_map
from lockgate.state._timers import TIMER_KIND
from lockgate.state.rocksdb._encoding import (
    _PLAIN,
    CF_PREFIX,
    _decode_key,
    _payload,
    _stored_key,
    _stored_keys,
)
from lockgate.state.rocksdb._timers import stored_timer_groups


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


def _stored_wholes(database: Rdict, state: str, kind: str) -> Iterator[tuple[int, Any, Any, Any]]:
    """``(key group, key, namespace, elements)`` of every map or list of a state whose RocksDB entries
    are one per map entry or element, a map's or list's entries next to each other: ``elements`` maps
    each map key to its element bytes, or lists a list's element bytes in order."""
    family: Any = database.get_column_family(CF_PREFIX + state)
    is_map = kind == "map"
    current: bytes | None = None
    key_group = 0
    key: Any = None
    namespace: Any = None
    elements: Any = None
    for raw_key, raw_value in family.items():
        decoded_key, end = _decode_key(raw_key, 2)
        decoded_namespace, end = _decode_key(raw_key, end)
        if raw_key[:end] != current:
            if current is not None:
                yield key_group, key, namespace, elements
            current, elements = raw_key[:end], {} if is_map else []
            key_group, namespace = int.from_bytes(raw_key[:2], "big"), decoded_namespace
            stored_key = _stored_key(raw_value)
            key = decoded_key if stored_key is _PLAIN else stored_key
        if is_map:
            _, user_key = _stored_keys(raw_value)
            if user_key is _PLAIN:
                user_key = _decode_key(raw_key, end)[0]
            elements[user_key] = _payload(raw_value)
        else:
            elements.append(_payload(raw_value))
    if current is not None:
        yield key_group, key, namespace, elements


def _stored_groups(database: Rdict, state: str, meta: StateMetaInfo) -> dict[int, list[Entry]]:
    """A state's entries by key group, each value as its codec encodes it (a map or a list joined from
    its entries; a timer as its timestamp's bytes), as stored: nothing user-defined is deserialised
    (but the keys and windows of timers that do not decode from their RocksDB keys)."""
    if meta.kind == TIMER_KIND:
        return stored_timer_groups(database, state)
    groups: dict[int, list[Entry]] = {}
    if meta.kind in ("map", "list"):
        join, timed = join_map if meta.kind == "map" else join_list, meta.ttl is not None
        for key_group, key, namespace, elements in _stored_wholes(database, state, meta.kind):
            groups.setdefault(key_group, []).append((key, namespace, join(elements, timed)))
        return groups
    for key_group, key, namespace, raw_value in _stored_entries(database, state):
        groups.setdefault(key_group, []).append((key, namespace, _payload(raw_value)))
    return groups
