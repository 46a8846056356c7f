"""Worker threads that get to run while the event loop is busy.

CPython hands the GIL to a waiting thread only when the thread holding it keeps it for a whole switch
interval (5 ms) or blocks. An event loop busy with records gives the GIL up at every iteration, in a
select() that does not block, and takes it straight back: a waiting worker thread is woken each time,
finds the GIL taken again, and never waits long enough to demand it (the convoy effect). A checkpoint's
file writes then wait until the stream goes idle, or forever.

:func:`run_sync` runs a function in a worker thread as :func:`anyio.to_thread.run_sync` does and, while
it runs, briefly blocks the event loop every few milliseconds, so the worker takes the GIL and keeps it
for up to a switch interval: about half the CPU for the worker while it has work, none once it is done.
When the loop is idle anyway, the worker runs at once and the nudges cost nothing noticeable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

#: How often the loop steps aside for a worker thread, and for how long it blocks to do so: often at
#: first (most work handed to a thread is short: a file created, written, synced or renamed, each
#: system call giving the GIL up and needing it back), then less, for long work such as encoding state.
_NUDGE_FIRST = 0.001
_NUDGE_FIRST_COUNT = 10
_NUDGE_EVERY = 0.004
_NUDGE_FOR = 0.0002


async def run_sync(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread, which gets the GIL even if the event loop never idles.

    Not cancellable once started: a cancelled caller waits for the function to return, as with
    :func:`anyio.to_thread.run_sync`.
    """
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_step_aside, name="let a worker thread run")
        try:
            result = await anyio.to_thread.run_sync(function, *args)
        except Exception as exc:  # raised below, outside the group, so it is not wrapped
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def _step_aside() -> None:
    interval = min(_NUDGE_EVERY, sys.getswitchinterval())
    nudges = 0
    while True:
        nudges += 1
        await anyio.sleep(_NUDGE_FIRST if nudges <= _NUDGE_FIRST_COUNT else interval)
        # A real block of the thread, not an await: the worker, woken by the GIL's release, takes it.
        time.sleep(_NUDGE_FOR)  # noqa: ASYNC251 - blocking is the point (see above)
