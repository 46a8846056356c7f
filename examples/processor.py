"""Read a job's savepoint, change it offline, and resume the job from the result.

    python examples/processor.py

A job counts page views per user (parallelism 2, max parallelism 8) and is stopped with a savepoint.
Offline, with no job running, ``lg.Savepoint`` reads the counts, and ``lg.SavepointWriter``:

- fixes a bad value: a crawler's views were counted under "bot" (dropped), and "ana"'s count was
  doubled by a replayed batch (set to what the reconciliation says);
- renames the counting operator (the next version of the job calls it "views-v2");
- raises the max parallelism to 32, which a running job can never do: every key is re-spread.

The next version of the job resumes from the new savepoint at parallelism 12, wider than the old max
parallelism allowed, and counts on from the fixed values.
"""

import tempfile
from pathlib import Path
from typing import Any

import anyio

import lockgate as lg

DAY_1 = ["ana", "bo", "ana", "bot", "bot", "bot", "cy", "ana", "bo", "ana"]
DAY_2 = ["ana", "cy", "dee", "bo"]
RECONCILED = {"ana": 2}  # ana's true count after day 1: a replayed batch counted her views twice


class CountViews(lg.KeyedProcessFunction[str, tuple[str, int]]):
    """Emits (user, views so far) for each view."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

    def process_element(self, user: str, ctx: lg.RuntimeContext) -> Any:
        count = self.count.value_nowait() + 1
        self.count.update_nowait(count)
        yield (user, count)


async def run_day_1(savepoints: Path) -> str:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=8)
    env.enable_checkpointing(60.0)
    views: lg.QueueSource[str] = lg.QueueSource()
    done = anyio.Event()
    seen = 0

    def watch(row: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == len(DAY_1):
            done.set()
        return row

    keyed = env.from_source(views, uid="views").key_by(lambda user: user)
    keyed.process(CountViews(), uid="views-per-user").map(watch, uid="watch").sink(
        lg.CollectSink(), uid="out"
    )
    job = await env.start("page-views")
    for user in DAY_1:
        await views.put(user)
    await done.wait()
    return await job.stop_with_savepoint(savepoints.as_uri())


async def fix_offline(url: str, savepoints: Path) -> str:
    savepoint = await lg.Savepoint.load(url)
    print(f"Read {savepoint.kind} {savepoint.checkpoint_id}: max parallelism {savepoint.max_parallelism}")
    for operator in savepoint.operators():
        states = ", ".join(f"{state.name} ({state.kind}, {state.entries})" for state in operator.states)
        print(f"  {operator.uid:<15} parallelism {operator.parallelism}  {states or '-'}")
    counts = {user: count async for user, count in savepoint.read_keyed_state("views-per-user", "count")}
    print(f"Counts saved: {dict(sorted(counts.items()))}")

    writer = lg.SavepointWriter.from_existing(savepoint)
    writer.transform_keyed_state(
        "views-per-user", "count", lambda user, count: None if user == "bot" else RECONCILED.get(user, count)
    )
    writer.rename_operator("views-per-user", "views-v2")
    writer.with_max_parallelism(32)
    fixed = await writer.write(savepoints.as_uri())
    changed = await lg.Savepoint.load(fixed)
    counts = {user: count async for user, count in changed.read_keyed_state("views-v2", "count")}
    name = fixed.rpartition("/")[2]
    print(f"Wrote {name}: max parallelism {changed.max_parallelism}, counts {dict(sorted(counts.items()))}")
    return fixed


async def run_day_2(url: str) -> list[tuple[str, int]]:
    env = lg.StreamEnvironment(parallelism=12, max_parallelism=32)  # wider than the old max of 8
    sink: lg.CollectSink[tuple[str, int]] = lg.CollectSink()
    keyed = env.from_collection(DAY_2, uid="views-day-2").key_by(lambda user: user)
    keyed.process(CountViews(), uid="views-v2").map(lambda row: row, uid="watch").sink(sink, uid="out")
    # The day-1 source ("views") is not in this job: its state is dropped.
    await env.execute("page-views-v2", restore_from=url, allow_non_restored_state=True)
    return sink.results


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        savepoint = await run_day_1(Path(tmp))
        fixed = await fix_offline(savepoint, Path(tmp))
        day_2 = await run_day_2(fixed)
    print(f"Day 2 at parallelism 12 counted on: {sorted(day_2)}")


if __name__ == "__main__":
    anyio.run(main)
