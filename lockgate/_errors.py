"""The exception hierarchy: every error lockgate raises derives from :class:`LockgateError`."""

from __future__ import annotations

import reprlib


class LockgateError(Exception):
    """Base of every error raised by lockgate."""


class ConfigurationError(LockgateError):
    """A job graph or a setting is invalid; raised while the job is being built, before it runs."""


class StateNotFoundError(LockgateError, KeyError):
    """A query or a savepoint read names an operator or a state that is not there; the message lists
    what there is. A ``KeyError`` too, as a failed lookup is in Python."""

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


class JobFailedError(LockgateError):
    """A job failed because an operator subtask raised.

    Attributes:
        job_name: The name the job was started with.
        operator_uid: The uid of the operator whose function raised.
        subtask_index: The index of the failing subtask, from 0.
        parallelism: The operator's parallelism.

    The original exception is chained as ``__cause__``.
    """

    def __init__(
        self,
        job_name: str,
        operator_uid: str,
        subtask_index: int,
        parallelism: int,
        cause: BaseException,
    ) -> None:
        self.job_name = job_name
        self.operator_uid = operator_uid
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        super().__init__(
            f"job {job_name!r} failed: operator {operator_uid!r} subtask {subtask_index} "
            f"(of {parallelism}) raised {type(cause).__name__}: {cause}"
        )
        self.__cause__ = cause


class JobCancelledError(LockgateError):
    """The result of a job was asked for, but the job was cancelled before it finished."""


class KeySerializationError(LockgateError):
    """A key cannot be serialised canonically, so it cannot pick a key group or address state."""


class CheckpointError(LockgateError):
    """A checkpoint could not be written, completed, found or read."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is damaged: its checksum, header or length does not match what was written.

    A restore that meets one falls back to the previous complete checkpoint; it never loads the bytes.

    Attributes:
        path: The damaged file: a file system path, or a ``memory:`` reference for in-memory storage.
        reason: What is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"checkpoint file {path} is damaged: {reason}")

    def __reduce__(self) -> tuple[type[CorruptCheckpointError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


class StateValueTooLargeError(LockgateError):
    """A state value serialises to more bytes than the RocksDB backend accepts (``max_value_size``).

    Attributes:
        operator_uid: The operator whose state it is.
        state: The state's name.
        key: The key whose value is too large.
        size: The serialised size in bytes.
        limit: The backend's ``max_value_size`` in bytes.
    """

    def __init__(self, operator_uid: str, state: str, key: object, size: int, limit: int) -> None:
        self.operator_uid = operator_uid
        self.state = state
        self.key = key
        self.size = size
        self.limit = limit
        super().__init__(
            f"operator {operator_uid!r}: the value of state {state!r} for key {reprlib.repr(key)} serialises "
            f"to {size} bytes, above the RocksDB backend's max_value_size of {limit} bytes; keep less per "
            f"key, or raise the limit: RocksDBStateBackend(max_value_size={_next_power_of_two(size)})"
        )

    def __reduce__(self) -> tuple[type[StateValueTooLargeError], tuple[str, str, object, int, int]]:
        return (type(self), (self.operator_uid, self.state, self.key, self.size, self.limit))


class StateSerializationError(CheckpointError):
    """A state value cannot be serialised (pickled, or written by its descriptor's serializer), so no
    checkpoint can hold it: it names the operator, the state and the key.

    Attributes:
        operator_uid: The operator whose state it is.
        state: The state's name.
        key: The key whose value cannot be serialised.
        reason: What the serializer said.
    """

    def __init__(self, operator_uid: str, state: str, key: object, reason: str) -> None:
        self.operator_uid = operator_uid
        self.state = state
        self.key = key
        self.reason = reason
        super().__init__(
            f"operator {operator_uid!r}: the value of state {state!r} for key {reprlib.repr(key)} cannot be "
            f"serialised ({reason}); keep only values that pickle in state (create locks, clients and files "
            "in open(), not in state), or give the descriptor a serializer= that writes them"
        )

    def __reduce__(self) -> tuple[type[StateSerializationError], tuple[str, str, object, str]]:
        return (type(self), (self.operator_uid, self.state, self.key, self.reason))


class IncompatibleStateError(ConfigurationError):
    """A restored state cannot be read as the job declares it now: another kind of state, a serializer
    that cannot read what the old one wrote, a TTL added or dropped. Nothing is overwritten: the job
    does not start. The message says what to do.

    Attributes:
        operator_uid: The operator whose state it is.
        state: The state's name.
        old: What the state was when it was saved (its kind, serializer, TTL).
        new: What the job declares now.
    """

    def __init__(self, operator_uid: str, state: str, old: str, new: str, message: str) -> None:
        self.operator_uid = operator_uid
        self.state = state
        self.old = old
        self.new = new
        super().__init__(message)

    def __reduce__(self) -> tuple[type[IncompatibleStateError], tuple[str, str, str, str, str]]:
        return (type(self), (self.operator_uid, self.state, self.old, self.new, str(self)))


class StateMigrationError(LockgateError):
    """A restored state's values could not be migrated to the schema the job declares now (the error
    that the migration raised is the cause). Nothing is overwritten: the job does not start.

    Attributes:
        operator_uid: The operator whose state it is.
        state: The state's name.
        old: The schema the values were saved with.
        new: The schema the job declares now.
        reason: What went wrong.
    """

    def __init__(self, operator_uid: str, state: str, old: str, new: str, reason: str) -> None:
        self.operator_uid = operator_uid
        self.state = state
        self.old = old
        self.new = new
        self.reason = reason
        super().__init__(
            f"operator {operator_uid!r}: the values of state {state!r}, saved as {old}, cannot be migrated "
            f"to {new}: {reason}"
        )

    def __reduce__(self) -> tuple[type[StateMigrationError], tuple[str, str, str, str, str]]:
        return (type(self), (self.operator_uid, self.state, self.old, self.new, self.reason))


def _next_power_of_two(size: int) -> int:
    return 1 << max(0, size - 1).bit_length()
