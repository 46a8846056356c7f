"""W1 keyed-sum (BENCHMARKS.md): a keyed running sum in ValueState, against a plain CPython loop.

Variant a writes the function the PyFlink way (``async def``, awaited state, ``yield``); variant b
uses the fastest documented form, ``map_with_state`` (the function takes the record and its key's
total and returns the output and the new total; the runtime reads and writes the state around it);
variant ``b-map`` the earlier fast form, a ``MapFunction`` on the keyed stream calling
``value_nowait`` and ``update_nowait``. W1a keys by ``lambda r: r[0]``, as PyFlink code does; the fast
forms by ``operator.itemgetter(0)``, the same key from a selector written in C (README, "The fast
forms"), which saves a Python call per record.
The baseline is measured in the same process, interleaved with the engine runs, and the line reports
the ratio of medians.

With ``--backend rocksdb`` the heap engine runs too, interleaved with the RocksDB engine and the
baseline, and the line adds ``heap_rps`` and ``vs_heap``: RocksDB records/s over heap records/s of
the same run.

    python benchmarks/keyed_sum.py --variant a|b|b-map [--backend heap|rocksdb] [--n 2000000] [--keys 100000]
        [--repeat 5] [--memory-budget BYTES]

``--memory-budget`` sets the RocksDB backend's ``memory_budget`` (64 MiB by default); with many keys
(``--keys 10000000 --n 20000000``) and a small one the working set does not fit in memory.
"""

from __future__ import annotations

import argparse
import operator
import sys
from collections.abc import Callable
from typing import Any

from _common import CountSink, compare, compare_many, report

import lockgate as lg
from lockgate.state import RocksDBStateBackend


def expected_sum(j: int, n: int, k: int) -> int:
    """The final sum of key f"k{j}": the values j, j+k, j+2k, ... below n."""
    m = (n - j + k - 1) // k
    return m * j + k * m * (m - 1) // 2


def plain_loop(records: list[tuple[str, int]]) -> dict[str, int]:
    state: dict[str, int] = {}
    get = state.get
    for key, value in records:
        total = get(key, 0) + value
        state[key] = total
        out = (key, total)  # noqa: F841 - built, as the engine builds it
    return state


class AwaitingSum(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int]]):
    """W1a: the PyFlink form."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        total = await self.total.value() + value[1]
        await self.total.update(total)
        yield (value[0], total)


def running_sum(record: tuple[str, int], total: int) -> tuple[tuple[str, int], int]:
    """W1b: the fastest documented form, a function of the record and its key's state."""
    total += record[1]
    return (record[0], total), total


class FastSum(lg.MapFunction[tuple[str, int], tuple[str, int]]):
    """W1b-map: a MapFunction on the keyed stream with non-awaiting state."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))

    def map(self, value: tuple[str, int]) -> tuple[str, int]:
        total = self.total.value_nowait() + value[1]
        self.total.update_nowait(total)
        return (value[0], total)


class FinalSums(lg.Sink):
    """Keeps the last output of every key: the final sums, for the correctness check (untimed)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _FinalWriter(self.last)


class _FinalWriter(lg.SinkWriter):
    def __init__(self, last: dict[str, int]) -> None:
        self._last = last

    async def write(self, records: list[Any]) -> None:
        self._last.update(records)


VARIANTS = ["a", "b", "b-map"]


def key_selector(variant: str) -> Callable[[tuple[str, int]], str]:
    """W1's key, ``r[0]``, as ``variant`` selects it: PyFlink's lambda for W1a, C for the fast forms."""
    return (lambda r: r[0]) if variant == "a" else operator.itemgetter(0)


def key_selector_text(variant: str) -> str:
    """:func:`key_selector` as the JSON line names it."""
    return "lambda r: r[0]" if variant == "a" else "operator.itemgetter(0)"


def summed(keyed: lg.KeyedStream, variant: str) -> lg.DataStream:
    """W1's running sum on ``keyed`` in the form of ``variant``, as the operator "sum"."""
    if variant == "a":
        return keyed.process(AwaitingSum(), uid="sum")
    if variant == "b":
        state = lg.ValueStateDescriptor("total", default=0)
        return keyed.map_with_state(running_sum, state=state, uid="sum")
    return keyed.map(FastSum(), uid="sum")


def run_engine(
    records: list[tuple[str, int]], variant: str, sink: lg.Sink, backend: lg.StateBackend | None = None
) -> lg.Sink:
    env = lg.StreamEnvironment(parallelism=1)
    if backend is not None:
        env.set_state_backend(backend)
    keyed = env.from_collection(records, uid="source").key_by(key_selector(variant))
    summed(keyed, variant).sink(sink, uid="count")
    env.execute_blocking(f"W1{variant}")
    return sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="a")
    parser.add_argument("--backend", choices=["heap", "rocksdb"], default="heap")
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--memory-budget", type=int, default=64 << 20, help="the RocksDB backend's memory_budget in bytes"
    )
    args = parser.parse_args(argv)
    n, k = args.n, args.keys
    records = [(f"k{i % k}", i) for i in range(n)]
    watch = [j for j in {0, 1, k // 2, k - 1} if j < n]
    if args.backend == "rocksdb":
        return rocksdb_main(records, args.variant, n, k, args.repeat, watch, args.memory_budget)

    # Correctness first, in a run of its own: the timed runs' sink only counts.
    final = FinalSums()
    run_engine(records, args.variant, final)
    baseline_s, state, engine_s, counter = compare(
        args.repeat, lambda: plain_loop(records), lambda: run_engine(records, args.variant, CountSink())
    )
    correct = (
        counter.count == n
        and all(final.last[f"k{j}"] == state[f"k{j}"] == expected_sum(j, n, k) for j in watch)
        and final.last["k0"] == sum(range(0, n, k))
    )
    report(
        {
            "workload": f"W1{args.variant}",
            "backend": args.backend,
            "n": n,
            "keys": k,
            "key_selector": key_selector_text(args.variant),
            "engine_rps": round(n / engine_s),
            "baseline_rps": round(n / baseline_s),
            "ratio": round(baseline_s / engine_s, 4),
            "correct": correct,
        }
    )
    return 0 if correct else 1


def rocksdb_main(
    records: list[tuple[str, int]],
    variant: str,
    n: int,
    k: int,
    repeat: int,
    watch: list[int],
    memory_budget: int,
) -> int:
    """The RocksDB line: the baseline, the heap engine and the RocksDB engine, interleaved."""
    final = FinalSums()
    run_engine(records, variant, final, RocksDBStateBackend(memory_budget=memory_budget))
    timings = compare_many(
        repeat,
        {
            "baseline": lambda: plain_loop(records),
            "heap": lambda: run_engine(records, variant, CountSink()),
            "rocksdb": lambda: run_engine(
                records, variant, CountSink(), RocksDBStateBackend(memory_budget=memory_budget)
            ),
        },
    )
    baseline_s, state = timings["baseline"]
    heap_s, heap_counter = timings["heap"]
    engine_s, counter = timings["rocksdb"]
    correct = (
        counter.count == n
        and heap_counter.count == n
        and all(final.last[f"k{j}"] == state[f"k{j}"] == expected_sum(j, n, k) for j in watch)
        and final.last["k0"] == sum(range(0, n, k))
    )
    report(
        {
            "workload": f"W1{variant}",
            "backend": "rocksdb",
            "n": n,
            "keys": k,
            "key_selector": key_selector_text(variant),
            "memory_budget": memory_budget,
            "engine_rps": round(n / engine_s),
            "baseline_rps": round(n / baseline_s),
            "ratio": round(baseline_s / engine_s, 4),
            "heap_rps": round(n / heap_s),
            "vs_heap": round(heap_s / engine_s, 4),
            "correct": correct,
        }
    )
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
