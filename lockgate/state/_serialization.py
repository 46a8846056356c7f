"""Canonical key bytes: equal keys give equal bytes, in every process and Python version.

Supported keys are None, bool, int, float, str, bytes, tuples of supported keys and dataclass instances
whose fields are supported keys. Numbers that Python holds equal (``1 == 1.0 == True``) encode equally,
because a dict of state treats them as one key too. Every other type raises
:class:`~lockgate.KeySerializationError`: there is no deterministic encoding of an arbitrary object.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any, TypeVar

from lockgate._errors import KeySerializationError

T = TypeVar("T")

_LEN = struct.Struct(">I")
_FLOAT = struct.Struct(">d")
_NAN = _FLOAT.pack(math.nan)


#: Dataclasses whose canonical bytes decode back to an equal instance (windows, say), by the name
#: their bytes carry.
_EXACT_DATACLASSES: dict[bytes, type] = {}


def register_exact_dataclass(cls: type[T]) -> type[T]:
    """Declare that instances of the dataclass ``cls`` decode exactly from their canonical bytes (its
    fields are ints, strs and the like), so a backend can rebuild them from their key bytes alone."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    _EXACT_DATACLASSES[f"{cls.__module__}.{cls.__qualname__}".encode()] = cls
    return cls


def exact_dataclass(name: bytes) -> type | None:
    """The registered dataclass of canonical name ``name``, or None."""
    return _EXACT_DATACLASSES.get(name)


def is_exact_dataclass(key: Any) -> bool:
    """Whether ``key`` is an instance of a registered dataclass."""
    cls = type(key)
    return _EXACT_DATACLASSES.get(f"{cls.__module__}.{cls.__qualname__}".encode()) is cls


def canonical_key_bytes(key: Any) -> bytes:
    """Encode ``key`` canonically; raise :class:`KeySerializationError` for unsupported types."""
    if type(key) is str:  # the common case first
        data = key.encode("utf-8", "surrogatepass")
        return b"S" + _LEN.pack(len(data)) + data
    out = bytearray()
    _encode(key, out)
    return bytes(out)


def _encode(key: Any, out: bytearray) -> None:
    if key is None:
        out += b"N"
    elif isinstance(key, int):  # bool and IntEnum too: they compare equal to their int value
        _encode_int(int(key), out)
    elif isinstance(key, float):
        if key.is_integer():
            _encode_int(int(key), out)
        else:
            out += b"F"
            out += _NAN if math.isnan(key) else _FLOAT.pack(key)
    elif isinstance(key, str):
        data = str.encode(key, "utf-8", "surrogatepass")  # the value, not a subclass's __str__
        out += b"S" + _LEN.pack(len(data)) + data
    elif isinstance(key, bytes):
        out += b"B" + _LEN.pack(len(key)) + bytes(key)
    elif isinstance(key, tuple):
        out += b"T" + _LEN.pack(len(key))
        for item in key:
            _encode(item, out)
    elif dataclasses.is_dataclass(key) and not isinstance(key, type):
        cls = type(key)
        name = f"{cls.__module__}.{cls.__qualname__}".encode()
        fields = [f for f in dataclasses.fields(key) if f.compare]  # as __eq__ sees the key
        out += b"D" + _LEN.pack(len(name)) + name + _LEN.pack(len(fields))
        for field in fields:
            _encode(field.name, out)
            _encode(getattr(key, field.name), out)
    else:
        raise KeySerializationError(
            f"cannot use a {type(key).__qualname__} as a key: keys must be None, bool, int, float, str, "
            "bytes, tuples of those or dataclass instances; return one of these from the key_by function"
        )


def _encode_int(value: int, out: bytearray) -> None:
    data = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
    out += b"I" + _LEN.pack(len(data)) + data
