"""Stop a job with a savepoint, then start it again with more subtasks and another state backend.

    python examples/savepoint_rescale.py

A running count of page views per user. The first run (parallelism 2, state on the heap) reads part
of the views and is stopped with a savepoint. The second run (parallelism 3, state in RocksDB)
restores it: each count subtask takes the key groups it now owns, and the source resumes right
after the last view the first run read. Operators find their state by uid, so every one has an
explicit uid. Each run's ``CollectSink`` shows what that run committed: together, each running
count appears exactly once.
"""

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

import lockgate as lg

USERS = ["ana", "bo", "cy", "dee", "eve"]
VIEWS = [f"{USERS[(i * i + i // 3) % 5]},/page/{i % 7}" for i in range(60)]  # "user,page"
STOP_AT = 25  # the first run holds this view until its savepoint has begun


class CountViews(lg.KeyedProcessFunction[tuple[str, str], tuple[str, int]]):
    """Emits (user, views so far) for each view; the count lives in keyed state."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

    def process_element(self, value: tuple[str, str], ctx: lg.RuntimeContext) -> Any:
        count = self.count.value_nowait() + 1
        self.count.update_nowait(count)
        yield (value[0], count)


def run(env: lg.StreamEnvironment, parse: Any) -> lg.CollectSink:
    """The same pipeline in both runs: the uids are what ties the savepoint to the operators."""
    return (
        env.from_collection(VIEWS, uid="views")
        .map(parse, uid="parse", parallelism=1)  # chained with the source
        .key_by(lambda view: view[0])
        .process(CountViews(), uid="count")
        .sink(lg.CollectSink(), uid="out")
    )


def parse(line: str) -> tuple[str, str]:
    user, page = line.split(",")
    return user, page


def files_in(url: str) -> list[str]:
    return sorted(path.name for path in Path(url.removeprefix("file://")).iterdir())


async def first_run(checkpoints: Path, savepoints: Path) -> tuple[str, list[tuple[str, int]]]:
    env = lg.StreamEnvironment(parallelism=2, batch_size=1)  # one view at a time: a precise stop
    env.set_state_backend(lg.HeapStateBackend())
    env.set_checkpoint_storage(checkpoints.as_uri())
    env.enable_checkpointing(60.0)  # savepoints need checkpointing on; we take none ourselves
    reached, go = anyio.Event(), anyio.Event()
    seen = 0

    async def parse_holding(line: str) -> tuple[str, str]:
        nonlocal seen
        seen += 1
        if seen == STOP_AT:  # wait here until the savepoint's barrier is on its way
            reached.set()
            await go.wait()
        return parse(line)

    out = run(env, parse_holding)
    job = await env.start("page-views-p2")
    await reached.wait()
    async with anyio.create_task_group() as tg:
        stopped: list[str] = []

        async def stop() -> None:
            stopped.append(await job.stop_with_savepoint(savepoints.as_uri()))

        tg.start_soon(stop)
        # No event says "the savepoint has begun" (its barrier is on its way): watch its statistics.
        while not job.checkpoint_stats.history:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        go.set()
    return stopped[0], out.results


async def second_run(savepoint: str) -> list[tuple[str, int]]:
    env = lg.StreamEnvironment(parallelism=3)
    env.set_state_backend(lg.RocksDBStateBackend())
    out = run(env, parse)
    await env.execute("page-views-p3", restore_from=savepoint)
    return out.results


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        savepoint, first = await first_run(Path(tmp, "checkpoints"), Path(tmp, "savepoints"))
        print(f"First run (parallelism 2, heap): {len(first)} of {len(VIEWS)} views counted, then stopped.")
        print(f"Savepoint: {savepoint}")
        print("\n".join(f"  {name}" for name in files_in(savepoint)))
        print("  (state blobs under the storage's inline threshold, 20 KiB by default, are in _metadata)")
        second = await second_run(savepoint)
    print(f"Second run (parallelism 3, RocksDB): restored, counted the other {len(second)} views.")

    after_first, final = dict(sorted(first)), dict(sorted(first + second))  # the highest count wins
    print("\nViews per user (the second run counts on from the restored state):")
    for user, count in final.items():
        print(f"  {user:<4} {after_first.get(user, 0):>3} after the first run, {count:>3} in all")
    totals = Counter(view.split(",")[0] for view in VIEWS)  # the answer of a plain loop
    expected = sorted((user, n) for user, total in totals.items() for n in range(1, total + 1))
    print(f"exactly once: {sorted(first + second) == expected}")


if __name__ == "__main__":
    anyio.run(main)
