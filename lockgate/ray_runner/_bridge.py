"""Awaiting a Ray call's result from the driver's event loop, on asyncio and on trio.

Ray's object refs are awaitable on asyncio only. Both loops are served alike here, through the ref's
``concurrent.futures.Future`` (:func:`lockgate._threads.await_future`); no thread waits.
"""

from __future__ import annotations

from typing import Any

from lockgate._threads import await_future


async def await_ref(ref: Any) -> Any:
    """The result of the Ray call (or object) ``ref``; raises what it raised.

    Cancelling the wait leaves the call running: the runner ends calls by ending their actors.
    """
    return await await_future(ref.future())
