"""Helpers shared by the benchmarks: timing, a counting sink, and the JSON line."""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

import lockgate as lg


class CountSink(lg.Sink):
    """A sink that only counts what it receives, so the sink costs next to nothing; ``reached`` is
    set once ``target`` records have arrived (with a target)."""

    def __init__(self, target: int | None = None) -> None:
        self.count = 0
        self.target = target
        self.reached = anyio.Event()

    def create_writer(self, ctx: lg.RuntimeContext) -> lg.SinkWriter:
        return _CountWriter(self)


class _CountWriter(lg.SinkWriter):
    def __init__(self, sink: CountSink) -> None:
        self._sink = sink

    async def write(self, records: list[Any]) -> None:
        sink = self._sink
        sink.count += len(records)
        if sink.target is not None and sink.count >= sink.target:
            sink.reached.set()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` and its result, after a collection so earlier garbage is not charged."""
    gc.collect()
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def compare(
    repeat: int, baseline: Callable[[], Any], engine: Callable[[], Any]
) -> tuple[float, Any, float, Any]:
    """Median seconds and last result of ``baseline`` and of ``engine``, run alternately ``repeat``
    times each, so both see the same conditions on a shared, noisy machine."""
    baseline_times, engine_times = [], []
    baseline_result = engine_result = None
    for _ in range(repeat):
        seconds, baseline_result = timed(baseline)
        baseline_times.append(seconds)
        seconds, engine_result = timed(engine)
        engine_times.append(seconds)
    return (
        statistics.median(baseline_times),
        baseline_result,
        statistics.median(engine_times),
        engine_result,
    )


def compare_many(repeat: int, runs: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """Median seconds and last result of each of ``runs``, run in turn ``repeat`` times each, so all
    see the same conditions on a shared, noisy machine (``compare`` for more than two)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, Any] = dict.fromkeys(runs)
    for _ in range(repeat):
        for name, run in runs.items():
            seconds, results[name] = timed(run)
            times[name].append(seconds)
    return {name: (statistics.median(times[name]), results[name]) for name in runs}


def report(line: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line."""
    print(json.dumps(line), flush=True)
