"""Worker threads that get to run while the event loop is busy.

CPython hands the GIL to a waiting thread only when the thread holding it keeps it for a whole switch
interval (5 ms) or blocks. An event loop busy with records gives the GIL up at every iteration, in a
select() that does not block, and takes it straight back: a waiting worker thread is woken each time,
finds the GIL taken again, and never waits long enough to demand it (the convoy effect). A checkpoint's
file writes then wait until the stream goes idle, or forever; a short one (a file created, written,
synced, renamed: a few system calls, each giving the GIL up and needing it back) takes a switch
interval per system call, and the result waits again for the busy loop to pick it up.

:func:`run_sync` hands a function to a worker thread and first waits for it in the loop's own thread,
the GIL released, for up to :data:`_WAIT_AT_ONCE`: most work handed to a thread is that short, and then
it costs what the system calls cost, not a few switch intervals and loop iterations each. Work that
takes longer goes on in the worker while the loop goes back to its tasks; meanwhile the loop briefly
blocks every few milliseconds, so the worker takes the GIL and keeps it for up to a switch interval:
about half the CPU for the worker while it has work, none once it is done.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel
import sniffio

T = TypeVar("T")

#: How long the loop waits for a worker thread's work before it goes back to its tasks: above what
#: a few system calls on a local disk take (0.2-0.6 ms), short beside a batch of records.
_WAIT_AT_ONCE: Final = 0.002

#: While longer work runs, how often the loop steps aside for the worker thread, and for how long it
#: blocks to do so.
_NUDGE_EVERY = 0.004
_NUDGE_FOR = 0.0002

_workers = concurrent.futures.ThreadPoolExecutor(max_workers=40, thread_name_prefix="lockgate-worker")


async def run_sync(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread, which gets the GIL even if the event loop never idles.

    Not cancellable once started: a cancelled caller waits for the function to return, as with
    :func:`anyio.to_thread.run_sync`. Work that ends within :data:`_WAIT_AT_ONCE` returns without
    letting other tasks run meanwhile, as a plain function call would.
    """
    context = contextvars.copy_context()  # the caller's context variables (its log scope) go along
    future = _workers.submit(context.run, function, *args)
    done, _ = concurrent.futures.wait((future,), timeout=_WAIT_AT_ONCE)  # the GIL released
    if not done:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                group.start_soon(_step_aside, name="let a worker thread run")
                await _until_done(future)  # its error is raised below, outside the group
                group.cancel_scope.cancel()
        await anyio.lowlevel.checkpoint()  # a cancellation that came meanwhile, now that it is done
    return future.result()


async def await_future(future: concurrent.futures.Future[T]) -> T:
    """The result of ``future`` (of a thread pool, of Ray), awaited on asyncio or trio: its callback
    wakes the loop in the loop's own thread-safe way; no thread waits. Cancelling the wait leaves
    the work running."""
    await _until_done(future)
    return future.result()


async def _until_done(future: concurrent.futures.Future[Any]) -> None:
    if future.done():
        return
    done = anyio.Event()
    wake = _waker(done)

    def woken(_: object) -> None:
        # The loop may have ended meanwhile (trio's RunFinishedError is one): nobody waits then.
        with contextlib.suppress(RuntimeError):
            wake()

    future.add_done_callback(woken)
    await done.wait()


def _waker(event: anyio.Event) -> Callable[[], object]:
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


async def _step_aside() -> None:
    interval = min(_NUDGE_EVERY, sys.getswitchinterval())
    while True:
        await anyio.sleep(interval)
        # A real block of the thread, not an await: the worker, woken by the GIL's release, takes it.
        time.sleep(_NUDGE_FOR)  # noqa: ASYNC251 - blocking is the point (see above)
