"""The job's loggers: every record lockgate logs while a job runs names the job, and, from inside a
subtask, the operator uid and the subtask.

Each record carries three attributes, for formatters (``%(job)s``) and structured handlers alike:

- ``job``: the job's name, or None outside a job;
- ``operator_uid``: the uid of the operator (the head of a chain) whose subtask logged it, or None for
  the job's own records (start, restarts, end, checkpoints);
- ``subtask``: that subtask's index, or None likewise.

Two ways put them there. :func:`job_logger` makes a :class:`logging.LoggerAdapter` that sets them on
each record it logs: the runtime's own log sites use it. The parts below the runtime (snapshots, state,
checkpointing) log on the ``lockgate`` logger directly; a filter on that logger (and on
``lockgate.server``) gives their records the fields of the scope they were logged in. The runtime opens
the scopes (:func:`log_scope`): the job's around its run, a subtask's around the subtask's task. A
scope is a context variable, so the tasks a subtask starts, and the worker threads they hand work to,
log under it too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

#: The names of the attributes every lockgate record carries.
LOG_FIELDS = ("job", "operator_uid", "subtask")

#: lockgate's loggers: records logged on them get the fields of their scope.
LOGGER_NAMES = ("lockgate", "lockgate.server")


@dataclass(frozen=True)
class _Scope:
    job: str | None = None
    operator_uid: str | None = None
    subtask: int | None = None

    def fields(self) -> dict[str, Any]:
        return {"job": self.job, "operator_uid": self.operator_uid, "subtask": self.subtask}


_OUTSIDE = _Scope()  # outside any job
_scope: ContextVar[_Scope] = ContextVar("lockgate_log_scope", default=_OUTSIDE)


@contextmanager
def log_scope(
    job: str | None = None, operator_uid: str | None = None, subtask: int | None = None
) -> Iterator[None]:
    """Within the block (and in tasks and worker threads started from it), lockgate's records name
    ``job``, ``operator_uid`` and ``subtask``; a field not given keeps the enclosing scope's value.

    The runtime opens the job's scope around a job's run, and each subtask's around its task.
    """
    current = _scope.get()
    changes: dict[str, Any] = {}
    if job is not None:
        changes["job"] = job
    if operator_uid is not None:
        changes["operator_uid"] = operator_uid
    if subtask is not None:
        changes["subtask"] = subtask
    token = _scope.set(replace(current, **changes))
    try:
        yield
    finally:
        _scope.reset(token)


def current_log_fields() -> dict[str, Any]:
    """The fields lockgate's records get here: ``{"job": ..., "operator_uid": ..., "subtask": ...}``."""
    return _scope.get().fields()


class JobLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """A lockgate logger that sets the job, operator uid and subtask on each record: the ones given
    when it was made, and for those not given, the current scope's (see :func:`log_scope`)."""

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any]) -> None:
        super().__init__(logger, dict(fields))

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = current_log_fields()
        fields.update((name, value) for name, value in (self.extra or {}).items() if value is not None)
        fields.update(kwargs.get("extra") or {})
        kwargs["extra"] = fields
        return msg, kwargs


def job_logger(
    job: str | None = None,
    operator_uid: str | None = None,
    subtask: int | None = None,
    *,
    name: str = "lockgate",
) -> JobLoggerAdapter:
    """A logger (the adapter factory) whose records name ``job``, ``operator_uid`` and ``subtask``;
    the fields not given are taken from the scope each record is logged in.

    For a job-level record give the job only; for one from inside a subtask, all three.
    """
    return JobLoggerAdapter(
        logging.getLogger(name), {"job": job, "operator_uid": operator_uid, "subtask": subtask}
    )


class ScopeFieldsFilter(logging.Filter):
    """Gives a record the fields of the scope it was logged in, where it has not got them already
    (records of a :class:`JobLoggerAdapter` have). It lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        for field, value in scope.fields().items():
            if not hasattr(record, field):
                setattr(record, field, value)
        return True


def install_scope_filters() -> None:
    """Put a :class:`ScopeFieldsFilter` on each of lockgate's loggers, once."""
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        if not any(isinstance(each, ScopeFieldsFilter) for each in logger.filters):
            logger.addFilter(ScopeFieldsFilter())


install_scope_filters()
