"""Objects that live in a job's driver process, reached from subtasks running in other processes.

A job on the Ray runner runs its subtasks in Ray workers, but some objects a job holds belong in the
process that started it: a :class:`~lockgate.connectors.CollectSink`'s results, a checkpoint storage
that keeps its files in memory, a test's fault injector. Such an object registers itself here
(:func:`resident_token`); its pickled copy in a worker asks :func:`driver_link` whether it runs away
from its driver and, if so, sends its calls there by that token. In the driver's own process there is
no link, and the object does its work itself.
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any, Protocol

#: This process's id: part of the names of what it creates that must never collide with another's.
PROCESS_ID = uuid.uuid4().hex

_residents: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


class DriverLink(Protocol):
    """The way from a worker to the job's driver process."""

    #: The driver process's :data:`PROCESS_ID`.
    driver_process: str

    def send(self, token: str, method: str, *args: Any) -> None:
        """Have the driver call ``method(*args)`` on the object registered as ``token``, without
        waiting; the calls a worker sends are made in the order it sent them."""

    async def call(self, token: str, method: str, *args: Any) -> Any:
        """Have the driver call (and await, if it is a coroutine function) ``method(*args)`` on the
        object registered as ``token``, and return what it returned (or raise what it raised)."""

    async def kill_self(self) -> None:
        """Have the driver kill this process's part of the job as a lost process would die (fault
        injection in tests); never returns."""


_link: DriverLink | None = None


def resident_token(obj: Any) -> str:
    """Register ``obj`` as living in this process (for as long as it lives) and return its token."""
    token = uuid.uuid4().hex
    _residents[token] = obj
    return token


def resident(token: str) -> Any:
    """The object registered as ``token`` in this process.

    Raises:
        LookupError: None is (it was collected, or registered in another process).
    """
    try:
        return _residents[token]
    except KeyError:
        raise LookupError(f"no object of this process is registered as {token!r}") from None


def driver_link() -> DriverLink | None:
    """The way to the driver if this process runs subtasks for a driver elsewhere; None in the driver."""
    return _link


def driver_process() -> str:
    """The :data:`PROCESS_ID` of the process whose job this process works for (its own, in a driver)."""
    return PROCESS_ID if _link is None else _link.driver_process


def install_driver_link(link: DriverLink | None) -> None:
    """Make ``link`` the way to the driver for this process (a Ray worker hosting a subtask)."""
    global _link
    _link = link
