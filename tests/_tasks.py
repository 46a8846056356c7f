"""Counting the tasks of the running event loop, to prove a job leaves none behind."""

from __future__ import annotations

import sniffio


def running_task_count() -> int:
    """How many tasks the current event loop has now, the caller's included."""
    if sniffio.current_async_library() == "trio":
        import trio

        def count(task: trio.lowlevel.Task) -> int:
            return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

        return count(trio.lowlevel.current_root_task())
    import asyncio

    return len([task for task in asyncio.all_tasks() if not task.done()])
