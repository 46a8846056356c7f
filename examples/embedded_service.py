"""A lockgate job embedded in an asyncio application, fed while the application keeps working.

    python examples/embedded_service.py

The job keeps, per customer, the number of orders and the amount spent. It runs in the background
of the application's event loop (``env.start``). A producer pushes orders into a ``QueueSource``;
when its buffer is full, ``put()`` waits, so a slow job slows the producer down instead of letting
memory grow. Meanwhile a heartbeat coroutine stands in for the rest of the service.
"""

import asyncio
from typing import Any

import lockgate as lg

CUSTOMERS = ["ada", "bo", "cyd", "dee"]
ORDERS = 2_000


def incoming_orders(n: int) -> list[tuple[str, int]]:
    """``n`` made-up orders: (customer, amount in cents)."""
    return [(CUSTOMERS[i % len(CUSTOMERS)], 100 + (i * 37) % 900) for i in range(n)]


class SpendPerCustomer(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int, int]]):
    """Emits (customer, orders so far, cents so far) for each order.

    ``process_element`` is a plain ``def`` using the ``*_nowait`` state methods: the fast form.
    """

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.spend = ctx.get_state(lg.ValueStateDescriptor("spend", default=(0, 0)))

    def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        orders, cents = self.spend.value_nowait()
        orders, cents = orders + 1, cents + value[1]
        self.spend.update_nowait((orders, cents))
        yield (ctx.get_current_key(), orders, cents)


async def main() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    orders = lg.QueueSource(maxsize=100)
    spend = (
        env.from_source(orders, uid="orders")
        .key_by(lambda order: order[0])
        .process(SpendPerCustomer(), uid="spend")
        .sink(lg.CollectSink(), uid="collect")
    )
    job = await env.start("spend-per-customer")

    async def produce() -> None:
        for order in incoming_orders(ORDERS):
            await orders.put(order)  # waits while 100 orders are buffered
        orders.close()  # no more input: the job drains what is buffered, then finishes

    heartbeats = 0

    async def heartbeat() -> None:  # the application's own work, going on while the job runs
        nonlocal heartbeats
        while True:
            heartbeats += 1
            await asyncio.sleep(0.001)

    try:
        async with asyncio.TaskGroup() as tasks:  # if one task fails, the others are cancelled
            tasks.create_task(produce())
            ticker = tasks.create_task(heartbeat())
            result = await job.wait()
            ticker.cancel()
    finally:
        await job.cancel()  # does nothing if the job has ended; stops it if something else failed

    totals = {customer: (n, cents) for customer, n, cents in spend.results}  # the last update wins
    print(f"Job {result.job_name!r} processed {ORDERS} orders in {result.duration:.3f} s.")
    print(f"The application's heartbeat ran {heartbeats} times meanwhile.\n")
    print("  customer  orders     spent")
    for customer, (n, cents) in sorted(totals.items()):
        print(f"  {customer:<8}  {n:>6}  {cents / 100:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
