"""How entries are laid out in RocksDB: column family names, key bytes and value trailers, both ways."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any, Final

from lockgate.state._serialization import canonical_key_bytes, exact_dataclass, is_exact_dataclass
from lockgate.state._states import DEFAULT_NAMESPACE

#: Column families of states are named with this prefix (RocksDB reserves the name "default").
CF_PREFIX: Final = "state:"

#: Value trailer: the key decodes exactly from the RocksDB key.
_PLAIN: Final = b"\x00"
#: Value trailer tag: the pickled key and its 4-byte length precede it.
_PICKLED_KEY: Final = 1
#: Value trailer tag of a map entry: the pickled ``(key, map key)`` and its 4-byte length precede it.
_PICKLED_KEYS: Final = 2
#: Pickle's last byte (STOP): a value ending with it has no trailer, and a plain key.
_STOP: Final = ord(".")

_LEN = struct.Struct(">I")
_FLOAT = struct.Struct(">d")

#: The canonical bytes of the default namespace, None: the last byte of most RocksDB keys.
_DEFAULT_NS_BYTES: Final = canonical_key_bytes(DEFAULT_NAMESPACE)


def _decoder(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode_raw(raw: bytes) -> Any:
        return decode(_payload(raw))

    return decode_raw


def _payload(raw: bytes) -> bytes:
    """A stored value without its trailer."""
    tag = raw[-1]
    if tag == _STOP:
        return raw
    if tag == 0:
        return raw[:-1]
    (length,) = _LEN.unpack_from(raw, len(raw) - 5)
    return raw[: -5 - length]


def _stored_key(raw: bytes) -> Any:
    """The pickled key in a stored value's trailer, or _PLAIN if the trailer has none."""
    tag = raw[-1]
    if tag != _PICKLED_KEY and tag != _PICKLED_KEYS:
        return _PLAIN
    (length,) = _LEN.unpack_from(raw, len(raw) - 5)
    stored = pickle.loads(raw[-5 - length : -5])
    return stored if tag == _PICKLED_KEY else stored[0]


def _stored_keys(raw: bytes) -> tuple[Any, Any]:
    """A map entry's key and map key from its value's trailer, or (_PLAIN, _PLAIN) if the trailer has
    none (both decode exactly from the RocksDB key)."""
    if raw[-1] != _PICKLED_KEYS:
        return _PLAIN, _PLAIN
    (length,) = _LEN.unpack_from(raw, len(raw) - 5)
    key, user_key = pickle.loads(raw[-5 - length : -5])
    return key, user_key


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix`` (the end of a range delete)."""
    trimmed = prefix.rstrip(b"\xff")
    assert trimmed, prefix  # a prefix starts with its key group, below 0x8000
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


# ---- canonical key bytes, read back


def _decodes_exactly(key: Any) -> bool:
    """Whether ``key`` decodes from its canonical bytes to an object of the same type and value."""
    kind = type(key)
    if kind is str or kind is int or kind is bytes or key is None:
        return True
    if kind is float:
        return not key.is_integer()  # integral floats encode as ints
    if kind is tuple:
        return all(_decodes_exactly(item) for item in key)
    return is_exact_dataclass(key)


class _Opaque:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<dataclass key>"


# A dataclass key's canonical bytes hold its class name and fields, not a way to rebuild it.
_DATACLASS: Final = _Opaque()


def _decode_key(data: bytes, pos: int) -> tuple[Any, int]:
    """The key encoded by :func:`canonical_key_bytes` at ``data[pos:]``, and where it ends."""
    tag = data[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x46:  # F
        return _FLOAT.unpack_from(data, pos)[0], pos + 8
    (length,) = _LEN.unpack_from(data, pos)
    pos += 4
    if tag == 0x53:  # S
        return data[pos : pos + length].decode("utf-8", "surrogatepass"), pos + length
    if tag == 0x49:  # I
        return int.from_bytes(data[pos : pos + length], "big", signed=True), pos + length
    if tag == 0x42:  # B
        return data[pos : pos + length], pos + length
    if tag == 0x54:  # T
        items = []
        for _ in range(length):
            item, pos = _decode_key(data, pos)
            items.append(item)
        return tuple(items), pos
    if tag == 0x44:  # D: class name, field count, then (name, value) per field
        cls = exact_dataclass(data[pos : pos + length])
        pos += length
        (fields,) = _LEN.unpack_from(data, pos)
        pos += 4
        values = {}
        for _ in range(fields):
            name, pos = _decode_key(data, pos)
            values[name], pos = _decode_key(data, pos)
        return (_DATACLASS if cls is None else cls(**values)), pos
    raise ValueError(f"not canonical key bytes: tag {tag!r} at {pos - 5}")
