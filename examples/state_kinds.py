"""Every kind of keyed state, on both state backends.

    python examples/state_kinds.py

A stream of purchases ``(customer, item, amount)`` is keyed by customer. One function keeps, per
customer: the last item bought (ValueState), the amounts of the last three purchases (ListState),
how often each item was bought (MapState), the largest amount (ReducingState), the average amount
(AggregatingState), and a one-hour "recently seen" flag that expires (a ValueState with TTL).
The job runs once on the heap backend and once on RocksDB; both give the same answer.
"""

from typing import Any

import lockgate as lg

PURCHASES = [
    ("ada", "tea", 4),
    ("bo", "cake", 12),
    ("ada", "cake", 10),
    ("cyd", "tea", 3),
    ("ada", "tea", 5),
    ("bo", "tea", 4),
    ("ada", "scone", 7),
    ("bo", "cake", 11),
]


class Average(lg.AggregateFunction[int, tuple[int, int], float]):
    """Keeps (sum, count); its result is the mean."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: int, accumulator: tuple[int, int]) -> tuple[int, int]:
        return (accumulator[0] + value, accumulator[1] + 1)

    def get_result(self, accumulator: tuple[int, int]) -> float:
        return accumulator[0] / accumulator[1]

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])


class CustomerProfile(lg.KeyedProcessFunction[tuple[str, str, int], dict[str, Any]]):
    def open(self, ctx: lg.RuntimeContext) -> None:
        self.last_item = ctx.get_state(lg.ValueStateDescriptor("last_item"))
        self.recent = ctx.get_list_state(lg.ListStateDescriptor("recent_amounts"))
        self.per_item = ctx.get_map_state(lg.MapStateDescriptor("count_per_item"))
        self.largest = ctx.get_reducing_state(lg.ReducingStateDescriptor("largest", max))
        self.average = ctx.get_aggregating_state(lg.AggregatingStateDescriptor("average", Average()))
        self.seen = ctx.get_state(lg.ValueStateDescriptor("seen", ttl=lg.StateTtlConfig(3600)))

    async def process_element(self, value: tuple[str, str, int], ctx: lg.RuntimeContext) -> Any:
        _, item, amount = value
        await self.last_item.update(item)
        await self.recent.update((await self.recent.get() + [amount])[-3:])
        await self.per_item.put(item, (await self.per_item.get(item) or 0) + 1)
        await self.largest.add(amount)
        await self.average.add(amount)
        await self.seen.update(True)
        yield {
            "customer": ctx.get_current_key(),
            "last": await self.last_item.value(),
            "recent": await self.recent.get(),
            "per_item": dict([entry async for entry in self.per_item.items()]),
            "largest": await self.largest.get(),
            "average": round(await self.average.get() or 0.0, 2),
            "seen_recently": await self.seen.value(),
        }


def run(backend: lg.StateBackend) -> dict[str, dict[str, Any]]:
    env = lg.StreamEnvironment(parallelism=2)
    env.set_state_backend(backend)
    profiles = (
        env.from_collection(PURCHASES, uid="purchases")
        .key_by(lambda purchase: purchase[0])
        .process(CustomerProfile(), uid="profile")
        .sink(lg.CollectSink(), uid="collect")
    )
    env.execute_blocking("state-kinds")
    return {profile["customer"]: profile for profile in profiles.results}  # the last profile wins


def main() -> None:
    on_heap = run(lg.HeapStateBackend())
    on_rocksdb = run(lg.RocksDBStateBackend())
    for customer, profile in sorted(on_heap.items()):
        print(f"{customer}: {profile}")
    print("\nRocksDB gives the same profiles:", on_rocksdb == on_heap)


if __name__ == "__main__":
    main()
