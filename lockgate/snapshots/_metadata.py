"""A checkpoint's metadata: which state blobs make up each operator's state, and how to read them back.

The coordinator writes it last (:meth:`CheckpointStorage.write_metadata`), once every subtask has
acknowledged: a checkpoint is complete exactly when its metadata exists. It holds handles, never
state: the blobs stay where the subtasks wrote them.

It is plain data, JSON with a format name and a version (see ``docs/savepoint-format.md``), never a
pickle: listing or inspecting a directory of checkpoints reads every metadata file, and that must never
run code, whoever wrote the directory. A reader checks every field's type and refuses anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from lockgate._errors import CorruptCheckpointError
from lockgate.snapshots._storage import (
    SharedStateHandle,
    StreamStateHandle,
)

T = TypeVar("T")

#: The version of the metadata layout that is written, and of the state files' layout it covers. Version
#: 1 was a pickle; version 3 added inline handles (a state blob's bytes in the metadata itself); version
#: 4 holds a savepoint's keyed entries as tables by namespace where 2 and 3 held lists of entries (see
#: docs/savepoint-format.md).
METADATA_VERSION: Final = 5

#: The versions a reader takes: 2 is 3 without inline handles, 3 is 4 with lists of entries, 4 is 5
#: without packed tables (each value of a state of the default serializer pickled alone).
READABLE_VERSIONS: Final = (2, 3, 4, 5)

#: What the metadata's ``format`` field says.
METADATA_FORMAT: Final = "lockgate-metadata"


@dataclass(frozen=True)
class SubtaskStateHandles:
    """The state blobs one operator subtask wrote for a checkpoint: keyed and operator state, and the
    shared blobs its keyed state references (an incremental checkpoint; see ``SharedStateHandle``), and
    the in-flight records of its input channels (unaligned checkpoints; held by a chain's first operator)."""

    keyed: StreamStateHandle | None = None
    operator: StreamStateHandle | None = None
    shared: tuple[SharedStateHandle, ...] = ()
    channel: StreamStateHandle | None = None

    @property
    def size(self) -> int:
        """Bytes of this subtask's state, shared blobs included (what a restore reads)."""
        own = sum(handle.size for handle in (self.keyed, self.operator, self.channel) if handle is not None)
        return own + sum(handle.size for handle in self.shared)


@dataclass(frozen=True)
class OperatorCheckpointState:
    """The state of one operator (by uid) in a checkpoint: its parallelism and each subtask's blobs."""

    uid: str
    parallelism: int
    subtasks: dict[int, SubtaskStateHandles] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointMetadata:
    """What ``_metadata`` holds.

    Attributes:
        checkpoint_id: The checkpoint's id.
        job_name: The job that took it.
        max_parallelism: The job's number of key groups.
        timestamp: When it was triggered, in seconds since the epoch.
        operators: The state of every operator, by uid.
        kind: ``"checkpoint"``, or ``"savepoint"`` (every keyed state in the canonical, entry by entry
            form; see ``docs/savepoint-format.md``).
        version: The metadata version it was read as (:data:`METADATA_VERSION` when made here);
            :meth:`to_bytes` always writes :data:`METADATA_VERSION`.
    """

    checkpoint_id: int
    job_name: str
    max_parallelism: int
    timestamp: float
    operators: dict[str, OperatorCheckpointState]
    kind: str = "checkpoint"
    version: int = METADATA_VERSION

    def to_bytes(self) -> bytes:
        """The metadata as stored, JSON (the storage frames it with a checksum)."""
        document = {
            "format": METADATA_FORMAT,
            "version": METADATA_VERSION,  # whatever version it was read as: it may hold inline handles
            "checkpoint_id": self.checkpoint_id,
            "job_name": self.job_name,
            "max_parallelism": self.max_parallelism,
            "timestamp": self.timestamp,
            "kind": self.kind,
            "operators": {
                uid: {
                    "parallelism": state.parallelism,
                    "subtasks": {
                        str(index): _subtask_to_json(handles)
                        for index, handles in sorted(state.subtasks.items())
                    },
                }
                for uid, state in self.operators.items()
            },
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> CheckpointMetadata:
        """Metadata read from ``where`` (a path or reference, for errors). Never runs code.

        Raises:
            CorruptCheckpointError: It is not metadata of this version, or a field has the wrong type.
        """
        if data[:1] == b"\x80":  # a pickle: the metadata of lockgate before version 2
            raise CorruptCheckpointError(
                where,
                "it is metadata version 1, a pickle, which this lockgate does not read (reading a pickle "
                "can run code); restore it with the lockgate version that wrote it, and take a savepoint",
            )
        try:
            document = json.loads(data)
            if not isinstance(document, dict) or document.get("format") != METADATA_FORMAT:
                raise _Invalid(f"it is not {METADATA_FORMAT} JSON")
            version = _field(document, "version", int)
            if version not in READABLE_VERSIONS:
                raise _Invalid(
                    f"metadata version {version} is not supported (this lockgate reads versions "
                    f"{', '.join(map(str, READABLE_VERSIONS))})"
                )
            operators = {}
            for uid, state in _field(document, "operators", dict).items():
                parallelism = _field(state, "parallelism", int)
                subtasks = {
                    _index(index): _subtask_from_json(handles, version)
                    for index, handles in _field(state, "subtasks", dict).items()
                }
                operators[uid] = OperatorCheckpointState(uid, parallelism, subtasks)
            return cls(
                _field(document, "checkpoint_id", int),
                _field(document, "job_name", str),
                _field(document, "max_parallelism", int),
                float(_field(document, "timestamp", (int, float))),
                operators,
                kind=_field(document, "kind", str),
                version=version,
            )
        except (_Invalid, ValueError, UnicodeDecodeError) as exc:
            raise CorruptCheckpointError(where, f"the metadata cannot be read ({exc})") from exc

    @property
    def full_bytes(self) -> int:
        """The bytes of every state blob the checkpoint consists of, shared ones included."""
        return sum(s.size for op in self.operators.values() for s in op.subtasks.values())

    def shared_names(self) -> set[str]:
        """The names of the shared blobs the checkpoint references."""
        return {
            handle.name
            for state in self.operators.values()
            for handles in state.subtasks.values()
            for handle in handles.shared
        }


class _Invalid(ValueError):
    """The metadata document does not have the documented shape."""


def _field(document: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(document, dict) or name not in document:
        raise _Invalid(f"{name!r} is missing")
    value = document[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _Invalid(f"{name!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def _index(text: str) -> int:
    if not text.isdigit():
        raise _Invalid(f"subtask index {text!r} is not a number")
    return int(text)


def _handle_to_json(handle: StreamStateHandle | None) -> dict[str, Any] | None:
    """A state handle as the metadata stores it; an inline one with its bytes in base64 (``inline``)."""
    if handle is None:
        return None
    document: dict[str, Any] = {
        "checkpoint_id": handle.checkpoint_id,
        "name": handle.name,
        "pointer": handle.pointer,
        "size": handle.size,
        "checksum": handle.checksum,
    }
    if handle.inline is not None:
        document["inline"] = base64.b64encode(handle.inline).decode("ascii")
    return document


def _handle_from_json(document: Any, version: int = METADATA_VERSION) -> StreamStateHandle | None:
    """A state handle read from metadata of ``version``; the bytes of an inline one decoded (not yet
    checked against its size and checksum: reading it does that).

    Raises:
        ValueError: The document does not have the shape of a handle.
    """
    if document is None:
        return None
    inline = None
    if isinstance(document, dict) and "inline" in document:
        if version < 3:
            raise _Invalid(f"an inline handle in metadata version {version} (inline handles are version 3)")
        try:
            inline = base64.b64decode(_field(document, "inline", str), validate=True)
        except binascii.Error as exc:
            raise _Invalid(f"an inline handle's bytes are not base64 ({exc})") from exc
    return StreamStateHandle(
        _field(document, "checkpoint_id", int),
        _field(document, "name", str),
        _field(document, "pointer", str),
        _field(document, "size", int),
        _field(document, "checksum", int),
        inline,
    )


def _subtask_to_json(handles: SubtaskStateHandles) -> dict[str, Any]:
    return {
        "keyed": _handle_to_json(handles.keyed),
        "operator": _handle_to_json(handles.operator),
        "channel": _handle_to_json(handles.channel),
        "shared": [
            {"name": h.name, "pointer": h.pointer, "size": h.size, "checksum": h.checksum}
            for h in handles.shared
        ],
    }


def _subtask_from_json(document: Any, version: int) -> SubtaskStateHandles:
    if not isinstance(document, dict):
        raise _Invalid("a subtask's handles are not an object")
    shared = tuple(
        SharedStateHandle(
            _field(entry, "name", str),
            _field(entry, "pointer", str),
            _field(entry, "size", int),
            _field(entry, "checksum", int),
        )
        for entry in _field(document, "shared", list)
    )
    return SubtaskStateHandles(
        _handle_from_json(document.get("keyed"), version),
        _handle_from_json(document.get("operator"), version),
        shared,
        _handle_from_json(document.get("channel"), version),
    )
