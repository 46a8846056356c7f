"""Worker threads run while the event loop is busy: a checkpoint's writes cannot starve."""

from __future__ import annotations

import contextvars
import os
import threading
import time

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from lockgate._threads import run_sync

pytestmark = pytest.mark.anyio


async def test_a_worker_thread_finishes_while_the_event_loop_never_idles() -> None:
    # A task that keeps the loop busy, as actors with records to process do: it works 1 ms at a
    # time and yields without ever letting the loop wait. Plain worker threads starve beside it.
    done = anyio.Event()

    async def busy() -> None:
        while not done.is_set():
            until = time.perf_counter() + 0.001
            while time.perf_counter() < until:
                pass
            await anyio.lowlevel.checkpoint()

    def many_small_calls() -> int:
        return sum(os.stat(".").st_mode & 1 for _ in range(200))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(busy)
            await run_sync(many_small_calls)
            done.set()


async def test_run_sync_returns_the_result_and_raises_the_error() -> None:
    assert await run_sync(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await run_sync(divmod, 1, 0)


async def test_the_worker_sees_the_callers_context_variables() -> None:
    # The runtime's log scope is a context variable: a worker's log records must carry it too.
    scope: contextvars.ContextVar[str] = contextvars.ContextVar("scope", default="none")
    scope.set("subtask 3")
    assert await run_sync(scope.get) == "subtask 3"


async def test_a_cancelled_caller_waits_for_the_function_to_return() -> None:
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait()
        returned.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(run_sync, slow)
            await anyio.to_thread.run_sync(started.wait)  # it runs, and the loop went on meanwhile
            scope.cancel()
            release.set()
    assert scope.cancelled_caught and returned.is_set()


async def test_an_error_of_work_longer_than_the_wait_at_once_is_raised_as_it_is() -> None:
    # Past the first wait the loop goes on meanwhile; the error must still come out unwrapped.
    release = threading.Event()

    def slow_failure() -> None:
        release.wait()
        raise ZeroDivisionError("late")

    async def let_go() -> None:
        release.set()  # runs once run_sync waits no more at once: the loop is blocked until then

    async with anyio.create_task_group() as group:
        group.start_soon(let_go)
        with pytest.raises(ZeroDivisionError, match="late"):
            await run_sync(slow_failure)
