"""Click sessions per user in event time, late clicks in a side output, a crash, and an exact restore.

    python examples/sessions.py

Clicks come out of order (up to 3 s) through a ``QueueSource``; a session of a user ends after 30 s
without a click of theirs (``EventTimeSessionWindows``: windows that merge as clicks come). A few clicks
arrive 10 minutes late: their sessions are long gone, so they go to a side output instead of being
dropped. Checkpoints are taken after each chunk of clicks; then the parser fails, once. The job restarts
from the latest checkpoint, with its open sessions, their timers and the watermark, and the committed
sessions and late clicks are exactly those of a run without the failure.
"""

import logging
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

import lockgate as lg

USERS = ["ada", "bo", "cyd"]
START = int(datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp() * 1000)
GAP = timedelta(seconds=30)
CHUNK = 50  # clicks fed at a time; a checkpoint after each chunk before the crash
CRASH_AT = 170  # the parser fails on this click, on its first try only
crashed = False


def clicks() -> list[str]:
    """``"number,user,page,timestamp"``: a click every 2 s (a user's every 6 s), a minute's pause
    every 30 clicks, each up to 3 s late; and every 50th click from the 60th once more, 10 minutes late."""
    out = []
    for i in range(300):
        ts = START + i * 2_000 + (i // 30) * 60_000 - (i * 37 % 4) * 1_000
        out.append(f"{i},{USERS[i % 3]},/page/{i % 7},{ts}")
        if i >= 60 and i % 50 == 10:
            out.append(f"{i},{USERS[(i + 1) % 3]},/late,{ts - 600_000}")
    return out


CLICKS = clicks()


def parse(line: str) -> tuple[str, str, int]:
    global crashed
    number, user, page, ts = line.split(",")
    if int(number) == CRASH_AT and not crashed:
        crashed = True  # a flaky failure: it does not happen again after the restart
        raise RuntimeError(f"the parser failed on click #{number}")
    return user, page, int(ts)


class Summary(lg.ProcessWindowFunction[tuple[str, str, int], tuple[str, int, int, int, int]]):
    """(user, start, end, clicks, distinct pages) of one session."""

    def process(self, key: str, context: lg.WindowContext, elements: list[tuple[str, str, int]]) -> Any:
        yield (key, context.window.start, context.window.end, len(elements), len({e[1] for e in elements}))


def failure_free_answer() -> tuple[list[tuple[str, int, int, int, int]], list[tuple[str, str, int]]]:
    """Sessions and late clicks in a plain loop: a click 10 minutes late is late, the others are
    sessionised per user (a session ends 30 s after its last click)."""
    rows = [parse(line) for line in CLICKS]
    late = [row for row in rows if row[1] == "/late"]
    sessions = []
    for user in USERS:
        mine = sorted((row for row in rows if row[0] == user and row[1] != "/late"), key=lambda r: r[2])
        current: list[tuple[str, str, int]] = []
        for row in mine:
            if current and row[2] >= current[-1][2] + GAP // timedelta(milliseconds=1):
                sessions.append(_session(user, current))
                current = []
            current.append(row)
        sessions.append(_session(user, current))
    return sorted(sessions), sorted(late)


def _session(user: str, rows: list[tuple[str, str, int]]) -> tuple[str, int, int, int, int]:
    gap = GAP // timedelta(milliseconds=1)
    return (user, rows[0][2], rows[-1][2] + gap, len(rows), len({row[1] for row in rows}))


async def feed(job: lg.Job, source: lg.QueueSource[str]) -> None:
    for start in range(0, len(CLICKS), CHUNK):
        for click in CLICKS[start : start + CHUNK]:
            await source.put(click)
        if start + CHUNK <= CRASH_AT:
            done = await job.trigger_checkpoint()
            print(f"Fed clicks {start}-{start + CHUNK - 1}; checkpoint {done.checkpoint_id} completed.")
    source.close()


def clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


async def main() -> None:
    logging.basicConfig(stream=sys.stdout, format="  [lockgate] %(message)s")
    late_count = sum(",/late," in click for click in CLICKS)
    print(
        f"{len(CLICKS)} clicks of {len(USERS)} users, {late_count} of them 10 minutes late; "
        f"the parser will fail once, on click #{CRASH_AT}."
    )
    late_tag = lg.OutputTag("late clicks")
    with tempfile.TemporaryDirectory() as checkpoints:
        env = lg.StreamEnvironment(parallelism=2)
        env.set_checkpoint_storage(lg.FileCheckpointStorage(Path(checkpoints).as_uri()))
        env.enable_checkpointing(60.0)  # we trigger them ourselves, so every run tells the same story
        env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1))
        env.config.auto_watermark_interval = 0  # a watermark after every batch, for the same story too
        strategy = lg.WatermarkStrategy.for_bounded_out_of_orderness(
            timedelta(seconds=5)
        ).with_timestamp_assigner(lambda line, previous: int(line.rsplit(",", 1)[1]))
        source: lg.QueueSource[str] = lg.QueueSource()
        sessions = (
            env.from_source(source, uid="clicks", watermark_strategy=strategy, parallelism=1)
            .map(parse, uid="parse")
            .key_by(lambda click: click[0])
            .window(lg.EventTimeSessionWindows.with_gap(GAP))
            .side_output_late_data(late_tag)
            .process(Summary(), uid="sessions")
        )
        summaries = sessions.sink(lg.CollectSink(), uid="summaries")
        late = sessions.get_side_output(late_tag).sink(lg.CollectSink(), uid="late")
        job = await env.start("sessions")
        try:
            await feed(job, source)
            result = await job.wait()
        finally:
            await job.cancel()

    print(f"The job finished after {result.restarts} restart(s), from checkpoint {result.restored_from[0]}.")
    print(f"\n{len(summaries.results)} sessions (30 s without a click ends one); the first of each user:")
    for user in USERS:
        user_, start, end, count, pages = min(row for row in summaries.results if row[0] == user)
        print(f"  {user_:<4} {clock(start)}-{clock(end)}  {count:>2} clicks on {pages} pages")
    print(f"Late clicks in the side output: {len(late.results)}")
    expected_sessions, expected_late = failure_free_answer()
    same = sorted(summaries.results) == expected_sessions and sorted(late.results) == expected_late
    print(f"exactly once: {same}")


if __name__ == "__main__":
    anyio.run(main)
