"""Worker threads run while the event loop is busy: a checkpoint's writes cannot starve."""

from __future__ import annotations

import os
import time

import anyio
import anyio.lowlevel
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
