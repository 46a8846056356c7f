"""State kinds: the time of one state operation on heap and RocksDB, for a key holding many entries.

For each kind (value, list, map, reducing, aggregating) and each size (1 k, 10 k, 100 k), one key's
state is filled with ``size`` elements (a list's elements, a map's entries; for the single-value kinds,
``size`` other keys in the same state), then ``--ops`` operations on that key are timed, in batches as
the runtime makes them (``prepare_batch`` ... ``finish_batch``), on each backend. One JSON line per
kind, for each of its operations: microseconds per operation by size and backend, ``ratio``, the heap's
time over RocksDB's (RocksDB's speed as a fraction of the heap's), and ``growth``, RocksDB's time at the
largest size over its time at the smallest (1: the cost does not grow with the size).

First, one more line: a whole job (parallelism 1) that puts ``--job-puts`` records into one key's map,
as a user writes it, on each backend, and the ratio of the times.

    python benchmarks/state_kinds.py [--sizes 1000,10000,100000] [--ops 2000] [--batch 100] [--job-puts N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from _common import report

import lockgate as lg
from lockgate import state as lgs

MAX_P = 128


class Sum(lg.AggregateFunction[int, int, int]):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: int, accumulator: int) -> int:
        return accumulator + value

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


#: kind -> (descriptor, state type); the operations below use them.
KINDS: dict[str, tuple[Callable[[], Any], type[Any]]] = {
    "value": (lambda: lgs.ValueStateDescriptor("s", default=0), lgs.ValueState),
    "list": (lambda: lgs.ListStateDescriptor("s"), lgs.ListState),
    "map": (lambda: lgs.MapStateDescriptor("s"), lgs.MapState),
    "reducing": (lambda: lgs.ReducingStateDescriptor("s", lambda a, b: a + b), lgs.ReducingState),
    "aggregating": (lambda: lgs.AggregatingStateDescriptor("s", Sum()), lgs.AggregatingState),
}

#: kind -> operation -> what one operation number n does to the state of the key under test.
OPERATIONS: dict[str, dict[str, Callable[[Any, int], Any]]] = {
    "value": {"update": lambda state, n: state.update_nowait(state.value_nowait() + n)},
    "list": {"add": lambda state, n: state.add_nowait(n)},
    "map": {
        "put": lambda state, n: state.put_nowait(("new", n), n),
        "get": lambda state, n: state.get_nowait(n),
    },
    "reducing": {"add": lambda state, n: state.add_nowait(n)},
    "aggregating": {"add": lambda state, n: state.add_nowait(n)},
}


async def fill(backend: Any, state: Any, kind: str, size: int, batch: int) -> None:
    """Give the key "k" a state of ``size`` elements (single-value kinds: ``size`` other keys)."""
    for start in range(0, size, batch):
        numbers = range(start, min(size, start + batch))
        if kind in ("list", "map"):
            await backend.prepare_batch(["k"] * len(numbers))
            backend.current_key = "k"
            for n in numbers:
                if kind == "list":
                    state.add_nowait(n)
                else:
                    state.put_nowait(n, n)
        else:
            keys = [f"other-{n}" for n in numbers]
            await backend.prepare_batch(keys)
            for key, n in zip(keys, numbers, strict=True):
                backend.current_key = key
                OPERATIONS[kind][next(iter(OPERATIONS[kind]))](state, n)
        await backend.finish_batch()


async def time_operation(
    backend_name: str, kind: str, operation: str, size: int, ops: int, batch: int
) -> float:
    """Microseconds per operation on a key holding ``size`` elements."""
    factory = lg.HeapStateBackend if backend_name == "heap" else lgs.RocksDBStateBackend
    backend = factory().create_keyed_backend("bench", lgs.KeyGroupRange(0, MAX_P - 1), MAX_P)
    try:
        descriptor, state_type = KINDS[kind]
        state = backend.create_state(descriptor(), state_type)
        await fill(backend, state, kind, size, 1000)
        do = OPERATIONS[kind][operation]
        started = time.perf_counter()
        for start in range(0, ops, batch):
            await backend.prepare_batch(["k"] * batch)
            backend.current_key = "k"
            for n in range(start, start + batch):
                do(state, n)
            await backend.finish_batch()
        return (time.perf_counter() - started) / ops * 1e6
    finally:
        await backend.dispose()


class FillMap(lg.KeyedProcessFunction[tuple[str, int], int]):
    """Puts every record into its key's map; emits nothing."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.entries = ctx.get_map_state(lg.MapStateDescriptor[int]("entries"))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        await self.entries.put(value[1], value[1])
        return
        yield


async def fill_one_map_in_a_job(backend_name: str, puts: int) -> float:
    """Seconds a job takes to put ``puts`` records into one key's map, as a user writes it."""
    env = lg.StreamEnvironment(parallelism=1)
    if backend_name == "rocksdb":
        env.set_state_backend(lgs.RocksDBStateBackend())
    records = [("user", n) for n in range(puts)]
    filled = env.from_collection(records, uid="src").key_by(lambda r: r[0]).process(FillMap(), uid="fill")
    filled.sink(lg.CollectSink(), uid="out")  # a job needs a sink; this one receives nothing
    started = time.perf_counter()
    await env.execute("fill-one-map")
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--job-puts", type=int, default=20_000)
    args = parser.parse_args()
    if args.job_puts:
        heap_s = await fill_one_map_in_a_job("heap", args.job_puts)
        rocksdb_s = await fill_one_map_in_a_job("rocksdb", args.job_puts)
        report(
            {
                "workload": "state_kinds",
                "kind": "map",
                "job_puts_into_one_key": args.job_puts,
                "heap_s": round(heap_s, 4),
                "rocksdb_s": round(rocksdb_s, 4),
                "ratio": round(heap_s / rocksdb_s, 4),
            }
        )
    sizes = [int(size) for size in args.sizes.split(",")]
    for kind in args.kinds.split(","):
        operations: dict[str, Any] = {}
        for operation in OPERATIONS[kind]:
            micros: dict[str, dict[int, float]] = {"heap": {}, "rocksdb": {}}
            for size in sizes:
                for backend_name in micros:
                    micros[backend_name][size] = await time_operation(
                        backend_name, kind, operation, size, args.ops, args.batch
                    )
            heap, rocksdb = micros["heap"], micros["rocksdb"]
            operations[operation] = {
                "heap_us": {size: round(value, 3) for size, value in heap.items()},
                "rocksdb_us": {size: round(value, 3) for size, value in rocksdb.items()},
                "ratio": {size: round(heap[size] / rocksdb[size], 4) for size in sizes},
                "growth": round(rocksdb[sizes[-1]] / rocksdb[sizes[0]], 3),
            }
        report({"workload": "state_kinds", "kind": kind, "ops": args.ops, "operations": operations})


if __name__ == "__main__":
    asyncio.run(main())
