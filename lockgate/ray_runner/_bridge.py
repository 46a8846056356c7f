"""Awaiting a Ray call's result from the driver's event loop, on asyncio and on trio.

Ray's object refs are awaitable on asyncio only. Both loops are served alike here: the ref's
``concurrent.futures.Future`` calls back from Ray's thread, and the callback wakes the loop in the
loop's own thread-safe way; no thread waits.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import sniffio


async def await_ref(ref: Any) -> Any:
    """The result of the Ray call (or object) ``ref``; raises what it raised.

    Cancelling the wait leaves the call running: the runner ends calls by ending their actors.
    """
    future = ref.future()
    if not future.done():
        done = anyio.Event()
        wake = _waker(done)

        def woken(_: Any) -> None:
            # The loop may have ended meanwhile (trio's RunFinishedError is one): nobody waits then.
            with contextlib.suppress(RuntimeError):
                wake()

        future.add_done_callback(woken)
        await done.wait()
    return future.result()


def _waker(event: anyio.Event) -> Any:
    """A function any thread may call that sets ``event`` in the current loop's thread."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        import asyncio

        loop = asyncio.get_running_loop()
        return lambda: loop.call_soon_threadsafe(event.set)
    if library == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        return lambda: token.run_sync_soon(event.set)
    raise RuntimeError(f"lockgate runs on asyncio or trio, not on {library}")
