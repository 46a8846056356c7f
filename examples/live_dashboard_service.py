"""An asyncio service that runs a job and answers per-user totals over HTTP while the stream runs.

    python examples/live_dashboard_service.py

The service starts a job that sums purchases per user into keyed state marked ``.queryable("totals")``,
and serves it with ``job.serve()`` in its own event loop: no second process, no database. A dashboard
(here the service itself, through ``lg.QueryableStateClient``) asks for users' totals over HTTP while
purchases keep arriving; a user with no purchase yet has no total. The same values are a call away in
process too: ``await job.query_state("spend", "total", user)``.
"""

from typing import Any

import anyio

import lockgate as lg

MORNING = [("ana", 12), ("bo", 3), ("ana", 7), ("cy", 40)]
AFTERNOON = [("bo", 10), ("dee", 5), ("ana", 1)]
USERS = ["ana", "bo", "cy", "dee"]


class Spend(lg.MapFunction[tuple[str, int], tuple[str, int]]):
    """Adds each purchase to its user's total (the fast form: state read and written without await)."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0).queryable("totals"))

    def map(self, purchase: tuple[str, int]) -> tuple[str, int]:
        total = self.total.value_nowait() + purchase[1]
        self.total.update_nowait(total)
        return (purchase[0], total)


async def main() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    purchases: lg.QueueSource[tuple[str, int]] = lg.QueueSource()
    seen = 0
    arrived = anyio.Event()

    def count(row: Any) -> Any:  # how the service knows its purchases went through
        nonlocal seen
        seen += 1
        arrived.set()
        return row

    keyed = env.from_source(purchases, uid="purchases").key_by(lambda purchase: purchase[0])
    keyed.map(Spend(), uid="spend").map(count, uid="count").sink(lg.CollectSink(), uid="out")
    job = await env.start("live-dashboard")
    server = await job.serve(host="127.0.0.1", port=0)  # port 0: a free one, server.url says which

    async def through(batch: list[tuple[str, int]]) -> None:
        nonlocal arrived
        target = seen + len(batch)
        for purchase in batch:
            await purchases.put(purchase)
        while seen < target:
            await arrived.wait()
            arrived = anyio.Event()

    async with lg.QueryableStateClient(server.url) as dashboard:
        for name, batch in (("morning", MORNING), ("afternoon", AFTERNOON)):
            await through(batch)
            totals = await dashboard.get_many("totals", USERS)
            shown = ", ".join(f"{user} {total}" for user, total in zip(USERS, totals, strict=True))
            print(f"After the {name}: {shown}")
    print(f"In process, without HTTP: ana {await job.query_state('spend', 'total', 'ana')}")
    await server.aclose()
    await job.cancel()


if __name__ == "__main__":
    anyio.run(main)
