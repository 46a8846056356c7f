"""A job crashes halfway, restarts from its latest checkpoint, and its output is still exactly right.

    python examples/crash_and_recover.py

A running count and sum of sales per store. The sales go in through a ``QueueSource``, with a
checkpoint after each of the first chunks; then the parser fails, once. The job restarts from the
latest checkpoint: state comes back, the source replays the sales after it. The ``CollectSink`` shows
only what completed checkpoints (or the job's end) committed, so each total appears exactly once.
"""

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

import lockgate as lg

STORES = ["north", "south", "east"]
SALES = [f"{i},{STORES[i % 3]},{10 + (i * 7) % 50}" for i in range(40)]  # "number,store,amount"
CHUNK = 10  # sales fed at a time; a checkpoint after each chunk before the crash
CRASH_AT = 25  # the parser fails on this sale, on its first try only
crashed = False


def parse(line: str) -> tuple[str, int]:
    global crashed
    number, store, amount = line.split(",")
    if int(number) == CRASH_AT and not crashed:
        crashed = True  # a real bug would fail again after the restart; this one is flaky
        raise RuntimeError(f"the parser failed on sale #{number}")
    return store, int(amount)


class RunningTotals(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int, int]]):
    """Emits (store, sales so far, amount so far) for each sale; both numbers live in keyed state."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.totals = ctx.get_state(lg.ValueStateDescriptor("totals", default=(0, 0)))

    def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        count, total = self.totals.value_nowait()
        self.totals.update_nowait((count + 1, total + value[1]))
        yield (value[0], count + 1, total + value[1])


def failure_free_answer() -> list[tuple[str, int, int]]:  # the same running totals, in a plain loop
    totals: dict[str, tuple[int, int]] = {}
    out = []
    for line in SALES:
        _, store, amount = line.split(",")
        count, total = totals.get(store, (0, 0))
        totals[store] = (count + 1, total + int(amount))
        out.append((store, count + 1, total + int(amount)))
    return out


async def feed(job: lg.Job, sales: lg.QueueSource[str]) -> None:
    """Push the sales in chunks; after each chunk before the crash, take a checkpoint."""
    for start in range(0, len(SALES), CHUNK):
        for sale in SALES[start : start + CHUNK]:
            await sales.put(sale)
        if start + CHUNK <= CRASH_AT:
            done = await job.trigger_checkpoint()  # returns once the checkpoint is complete
            print(f"Fed sales #{start}-#{start + CHUNK - 1}; checkpoint {done.checkpoint_id} completed.")
    sales.close()  # the end of the input: the job finishes once it has processed everything


async def main() -> None:
    # lockgate logs the failure and the restart as warnings: print them as part of the story.
    logging.basicConfig(stream=sys.stdout, format="  [lockgate] %(message)s")
    print(f"{len(SALES)} sales of {len(STORES)} stores; the parser will fail once, on sale #{CRASH_AT}.")
    with tempfile.TemporaryDirectory() as checkpoints:
        env = lg.StreamEnvironment(parallelism=1)
        env.set_checkpoint_storage(lg.FileCheckpointStorage(Path(checkpoints).as_uri()))
        # A long interval: we trigger the checkpoints ourselves, so every run tells the same story.
        env.enable_checkpointing(60.0, mode=lg.CheckpointingMode.EXACTLY_ONCE)
        env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
        sales: lg.QueueSource[str] = lg.QueueSource()
        totals = (
            env.from_source(sales, uid="sales")
            .map(parse, uid="parse")
            .key_by(lambda sale: sale[0])
            .process(RunningTotals(), uid="totals")
            .sink(lg.CollectSink(), uid="collect")  # exactly-once under EXACTLY_ONCE checkpoints
        )
        job = await env.start("crash-and-recover")
        try:
            await feed(job, sales)
            result = await job.wait()
        finally:
            await job.cancel()  # does nothing if the job has ended; stops it if feeding failed

    restarts, checkpoints_done = result.restarts, job.checkpoint_stats.completed
    print(f"The job finished after {restarts} restart(s) and {checkpoints_done} completed checkpoints.")
    print(f"\nCommitted output: {len(totals.results)} running totals, the last ones:")
    for store, count, total in totals.results[-3:]:
        print(f"  {store:<5}  {count:>2} sales  {total:>4}")
    print(f"exactly once: {totals.results == failure_free_answer()}")


if __name__ == "__main__":
    anyio.run(main)
