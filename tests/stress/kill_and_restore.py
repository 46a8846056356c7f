"""Kill a job's process with SIGKILL at a random moment, restore it in a new process, check the output.

Each trial runs a job in a child process: a source (``FileSource`` or ``from_collection``) of
``--records`` lines ``k<key>-<n>`` -> parse -> key_by -> a count per key in keyed state -> a
``FileSink`` that writes ``<line> <count>``, at parallelism 2, checkpointing to files every
``--interval`` seconds. The parent kills the child with SIGKILL at a moment drawn uniformly over the
whole run (up to 10 % past its expected end, so the very end is included), then runs a second child
that restores from the checkpoint directory (or starts afresh when no checkpoint is complete) and runs
to the end. The visible output files must then hold every input line exactly once, and each key's
counts must be exactly 1..n (the state and the output agree).

Configurations cycle over heap and RocksDB, full and incremental, aligned and unaligned checkpoints,
and both sources. One JSON line at the end: trials, kills that landed before the end, and violations
(lost, duplicated, inconsistent), with the first failing trial's details.

    python tests/stress/kill_and_restore.py [--trials 200] [--records 100000] [--interval 0.05] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The configurations, in the order trials cycle through them.
CONFIGS: list[dict[str, Any]] = [
    {"backend": backend, "incremental": incremental, "unaligned": unaligned, "source": source, "job": job}
    for job, backend, incremental, unaligned, source in itertools.product(
        ["count", "windows"], ["heap", "rocksdb"], [False, True], [False, True], ["file", "collection"]
    )
]

#: The event-time windows of the "windows" job, in ms: record n has timestamp n.
WINDOW = 100


@dataclass
class TrialResult:
    """What one trial found."""

    seed: int
    config: dict[str, Any]
    kill_after: float
    killed_before_end: bool
    restored: bool
    lost: int
    duplicated: int
    inconsistent_keys: int
    error: str | None = None  # a run that failed (it must not: the job is correct)

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost == 0 and self.duplicated == 0 and self.inconsistent_keys == 0


def input_lines(records: int) -> list[str]:
    return [f"k{n % 97}-{n}" for n in range(records)]


# ---- the child: one run of the job


def run_job(directory: Path, config: dict[str, Any], records: int, interval: float) -> None:
    """Run the job once in this process, restoring from the checkpoints in ``directory`` if any."""
    import anyio

    import lockgate as lg

    class CountPerKey(lg.KeyedProcessFunction):  # type: ignore[type-arg]
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0))

        def process_element(self, value: tuple[str, str], ctx: lg.RuntimeContext) -> Any:
            count = self.count.value_nowait() + 1
            self.count.update_nowait(count)
            return [f"{value[1]} {count}"]

    class CountWindow(lg.ProcessWindowFunction):  # type: ignore[type-arg]
        def process(self, key: str, context: lg.WindowContext, elements: list[Any]) -> Any:
            return [f"{key} {context.window.start} {len(elements)}"]

    checkpoints = directory / "checkpoints"
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=64)
    if config["backend"] == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend(incremental=config["incremental"]))
    else:
        env.set_state_backend(lg.HeapStateBackend(incremental=config["incremental"]))
    env.set_checkpoint_storage(checkpoints.as_uri())
    env.enable_checkpointing(interval)
    env.checkpoint_config.unaligned = config["unaligned"]
    windows = config.get("job") == "windows"
    # Record n's timestamp is n: each source subtask reads its records in order.
    strategy = (
        lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
            lambda line, previous: int(line.split("-")[1])
        )
        if windows
        else None
    )
    if config["source"] == "file":
        stream = env.from_source(
            lg.FileSource(directory / "input.txt"), uid="src", watermark_strategy=strategy
        )
    else:
        stream = env.from_collection(input_lines(records), uid="src", watermark_strategy=strategy)
    keyed = stream.map(lambda line: (line.split("-")[0], line), uid="parse").key_by(lambda record: record[0])
    if windows:  # a count per key and event-time window: window contents and timers in keyed state
        counted = keyed.window(lg.TumblingEventTimeWindows.of(WINDOW / 1000)).process(
            CountWindow(), uid="count"
        )
    else:
        counted = keyed.process(CountPerKey(), uid="count")
    counted.sink(lg.FileSink(directory / "out"), uid="out")
    complete = any((path / "_metadata").exists() for path in checkpoints.glob("chk-*"))
    restore_from = checkpoints.as_uri() if complete else None

    async def main() -> None:
        await env.execute("kill-and-restore", restore_from=restore_from)

    anyio.run(main)


# ---- the parent: trials


def _child(directory: Path, config: dict[str, Any], records: int, interval: float) -> subprocess.Popen[bytes]:
    arguments = json.dumps(
        {"directory": str(directory), "config": config, "records": records, "interval": interval}
    )
    return subprocess.Popen(
        [sys.executable, __file__, "--child", arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(process: subprocess.Popen[bytes], what: str) -> None:
    _, stderr = process.communicate(timeout=300)
    if process.returncode != 0:
        raise RuntimeError(
            f"{what} exited with {process.returncode}: {stderr.decode(errors='replace')[-2000:]}"
        )


def check_output(directory: Path, records: int, job: str = "count") -> tuple[int, int, int]:
    """(lost, duplicated, inconsistent keys) of the visible output against the input."""
    if job == "windows":
        return _check_windows(directory, records)
    seen: Counter[str] = Counter()
    counts: dict[str, list[int]] = {}
    out = directory / "out"
    for file in out.iterdir() if out.is_dir() else []:
        if file.name.startswith("."):
            continue  # hidden: not committed
        for text in file.read_text().splitlines():
            line, count = text.rsplit(" ", 1)
            seen[line] += 1
            counts.setdefault(line.split("-")[0], []).append(int(count))
    expected = Counter(input_lines(records))
    lost = sum((expected - seen).values())
    duplicated = sum((seen - expected).values())
    inconsistent = sum(sorted(found) != list(range(1, len(found) + 1)) for found in counts.values())
    return lost, duplicated, inconsistent


def _check_windows(directory: Path, records: int) -> tuple[int, int, int]:
    """(lost, duplicated, wrong counts) of the windows job's visible output: one line per key and
    window that holds records, with the number of its records."""
    seen: Counter[tuple[str, int]] = Counter()
    counted: dict[tuple[str, int], int] = {}
    out = directory / "out"
    for file in out.iterdir() if out.is_dir() else []:
        if file.name.startswith("."):
            continue
        for text in file.read_text().splitlines():
            key, start, count = text.split(" ")
            seen[(key, int(start))] += 1
            counted[(key, int(start))] = int(count)
    expected: Counter[tuple[str, int]] = Counter()
    for line in input_lines(records):
        key, n = line.split("-")
        expected[(key, int(n) - int(n) % WINDOW)] += 1
    lost = sum(1 for window in expected if window not in seen)
    duplicated = sum(times - 1 for times in seen.values()) + sum(
        1 for window in seen if window not in expected
    )
    wrong = sum(1 for window, count in counted.items() if expected.get(window) != count)
    return lost, duplicated, wrong


def calibrate(config: dict[str, Any], records: int, interval: float) -> float:
    """Seconds a whole run of the child takes, start-up included."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "input.txt").write_text("".join(f"{line}\n" for line in input_lines(records)))
        started = time.monotonic()
        _finish(_child(directory, config, records, interval), "the calibration run")
        return time.monotonic() - started


def trial(
    seed: int,
    config: dict[str, Any],
    records: int,
    interval: float,
    duration: float,
    kill_at: float | None = None,
) -> TrialResult:
    """Run, kill at a random moment (or at ``kill_at`` of ``duration``), restore in a new process,
    check the visible output."""
    rng = random.Random(seed)
    kill_after = rng.uniform(0.0, duration * 1.1) if kill_at is None else duration * kill_at
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "input.txt").write_text("".join(f"{line}\n" for line in input_lines(records)))
        first = _child(directory, config, records, interval)
        try:
            first.wait(timeout=kill_after)
            killed = False
        except subprocess.TimeoutExpired:
            os.kill(first.pid, signal.SIGKILL)
            killed = True
        _, stderr = first.communicate()  # reaps it and closes its pipe
        if not killed and first.returncode != 0:
            raise RuntimeError(f"the first run exited with {first.returncode}: {stderr.decode()[-2000:]}")
        restored = any((path / "_metadata").exists() for path in (directory / "checkpoints").glob("chk-*"))
        _finish(_child(directory, config, records, interval), "the restored run")
        lost, duplicated, inconsistent = check_output(directory, records, config.get("job", "count"))
    return TrialResult(seed, config, round(kill_after, 3), killed, restored, lost, duplicated, inconsistent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        spec = json.loads(args.child)
        run_job(Path(spec["directory"]), spec["config"], spec["records"], spec["interval"])
        return
    durations = [calibrate(config, args.records, args.interval) for config in CONFIGS]
    results = []
    for index in range(args.trials):
        slot = index % len(CONFIGS)
        try:
            result = trial(args.seed + index, CONFIGS[slot], args.records, args.interval, durations[slot])
        except RuntimeError as exc:  # a run exited with an error: a violation too, with its message
            result = TrialResult(
                args.seed + index, CONFIGS[slot], -1.0, False, False, 0, 0, 0, str(exc)[-2000:]
            )
        results.append(result)
    failures = [result for result in results if not result.ok]
    print(
        json.dumps(
            {
                "workload": "kill_and_restore",
                "trials": len(results),
                "killed_before_end": sum(result.killed_before_end for result in results),
                "restored_from_checkpoint": sum(result.restored for result in results),
                "violations": len(failures),
                "lost": sum(result.lost for result in results),
                "duplicated": sum(result.duplicated for result in results),
                "inconsistent_keys": sum(result.inconsistent_keys for result in results),
                "errors": sum(result.error is not None for result in results),
                "records": args.records,
                "run_seconds": [round(min(durations), 2), round(max(durations), 2)],
                "first_failure": asdict(failures[0]) if failures else None,
            }
        )
    )


if __name__ == "__main__":
    main()
