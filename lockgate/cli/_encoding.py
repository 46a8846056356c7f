"""State values as JSON: what ``lockgate savepoint dump`` writes.

JSON carries strings, numbers, booleans, null, arrays and objects with string keys; state holds any
Python value. What JSON cannot carry is written as an object marked by a first key that starts with
``$``, so nothing is lost silently and nothing makes the dump fail:

=============================================  ================================================
value                                          JSON
=============================================  ================================================
``str``, ``int``, ``bool``, ``None``           itself
``float``                                      itself; NaN and the infinities ``{"$float": "nan"}``,
                                               ``"inf"``, ``"-inf"``
``list``, ``tuple``                            an array
``set``, ``frozenset``                         an array, sorted by its elements' JSON text
``dict`` with ``str`` keys only                an object
any other ``dict``                             ``{"$map": [[key, value], ...]}``
``bytes``, ``bytearray``, ``memoryview``       ``{"$bytes": "<base64>"}``
``datetime``, ``date``, ``time``               ``{"$datetime": "<ISO 8601>"}``, ``{"$date": ...}``,
                                               ``{"$time": ...}``
a dataclass instance                           ``{"$dataclass": "module.Class", "fields": {...}}``,
                                               the fields its repr shows
anything else                                  ``{"$repr": repr(value)}``
=============================================  ================================================

Values read with a typed serializer (dataclass, msgspec, pydantic) arrive in their plain form already:
a dict by field name.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import math
from typing import Any

#: Shown by ``dump --help``: the table above, short.
ENCODING_HELP = (
    'Values JSON cannot carry are written as objects marked by a "$" key: bytes as {"$bytes": '
    'base64}, datetimes, dates and times as {"$datetime" | "$date" | "$time": ISO 8601}, dicts with '
    'keys other than strings as {"$map": [[key, value], ...]}, dataclasses as {"$dataclass": '
    '"module.Class", "fields": {...}}, NaN and infinities as {"$float": "nan" | "inf" | "-inf"}, '
    'anything else as {"$repr": "repr(value)"}. Tuples are arrays, sets sorted arrays.'
)


def plain(value: Any) -> Any:
    """``value`` as plain JSON data (see the module's table); never raises."""
    return _plain(value, set())


def to_json(value: Any) -> str:
    """``value`` as one line of JSON text."""
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False)


def to_cell(value: Any) -> str:
    """``value`` as a CSV cell: a string as it is, anything else as its JSON text."""
    return value if isinstance(value, str) else to_json(value)


def _plain(value: Any, active: set[int]) -> Any:
    if value is None or type(value) in (str, bool, int):
        return value
    if isinstance(value, str):  # a subclass (enum.StrEnum, say): the string it is, as json writes it
        return str.__str__(value)
    if isinstance(value, int):  # enum.IntEnum and the like: the number
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.isoformat()}
    if id(value) in active:  # a container that holds itself
        return {"$repr": "<cycle>"}
    if isinstance(value, list | tuple | set | frozenset | dict) or _is_dataclass(value):
        active.add(id(value))
        try:
            return _container(value, active)
        finally:
            active.discard(id(value))
    return {"$repr": _safe_repr(value)}


def _container(value: Any, active: set[int]) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(element, active) for element in value]
    if isinstance(value, set | frozenset):
        elements = [_plain(element, active) for element in value]
        return sorted(elements, key=lambda element: json.dumps(element, sort_keys=True))
    if isinstance(value, dict):
        if all(type(key) is str for key in value):
            return {key: _plain(element, active) for key, element in value.items()}
        return {"$map": [[_plain(key, active), _plain(element, active)] for key, element in value.items()]}
    cls = type(value)
    fields = {
        field.name: _plain(getattr(value, field.name, None), active)
        for field in dataclasses.fields(value)
        if field.repr  # what its repr shows: derived fields (a cached hash, say) are left out
    }
    return {"$dataclass": f"{cls.__module__}.{cls.__qualname__}", "fields": fields}


def _is_dataclass(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not end the dump
        return f"<{type(value).__qualname__} object, repr() raised {type(exc).__name__}>"
