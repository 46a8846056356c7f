"""Progress bars: ``env.execute(name, progress=...)`` shows how far the sources have read, records/s and
the completed checkpoints, reaches its total exactly, and closes however the job ends."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import lockgate as lg
from lockgate.connectors import CollectionSource, SourceProgress
from lockgate.observe import JobProgress

pytestmark = pytest.mark.anyio


def last_bar(text: str) -> str:
    """The bar as it was last drawn: tqdm redraws a text bar after a carriage return."""
    assert text.endswith("\n"), f"the bar was not closed: {text!r}"
    return text.rstrip("\n").split("\r")[-1]


def figures(text: str, unit: str) -> tuple[float, float]:
    """The last ``read/total`` a bar of ``unit`` (records or B) showed. Bytes are scaled (``1.21k``),
    with three significant digits: exact below 1000."""
    found = re.findall(r"(\d+)/(\d+) records" if unit == "records" else r"([\d.]+)B/([\d.]+)B", text)
    assert found, text
    read, total = found[-1]
    return float(read), float(total)


def checkpoints_shown(line: str) -> int:
    match = re.search(r"(\d+) checkpoints?\b", line)
    assert match is not None, line
    return int(match[1])


async def test_a_collection_bar_reaches_its_record_count_with_rate_and_checkpoints() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(60.0)  # no periodic one in this short job: the final checkpoint only
    out = env.from_collection(range(5003), uid="src", parallelism=3).map(lambda x: x + 1, uid="inc")
    sink: lg.CollectSink[int] = out.sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("count", progress=stream)
    assert sorted(sink.results) == list(range(1, 5004))
    line = last_bar(stream.getvalue())
    assert line.startswith("count: 100%|")
    assert figures(line, "records") == (5003, 5003)
    assert re.search(r"[\d.]+[kMG]? records/s", line), line
    assert checkpoints_shown(line) == 1  # the final checkpoint of a bounded job


async def test_several_sources_of_records_sum() -> None:
    env = lg.StreamEnvironment()
    first = env.from_collection(range(10), uid="a")
    second = env.from_collection(range(20), uid="b", parallelism=2)
    first.union(second).sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("two", progress=stream)
    assert figures(last_bar(stream.getvalue()), "records") == (30, 30)


class HoldsTheEnd(CollectionSource[int]):
    """``from_collection`` whose reader, at the end of its items, waits until two checkpoints have
    completed (a triggered checkpoint cancels the wait, as any read's)."""

    def __init__(self, items: list[int]) -> None:
        super().__init__(items)
        self.completed = 0
        self.enough = anyio.Event()

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        return _HoldingReader(super().create_reader(ctx), self)


class _HoldingReader(lg.SourceReader):
    def __init__(self, inner: lg.SourceReader, owner: HoldsTheEnd) -> None:
        self.inner = inner
        self.owner = owner

    async def read(self, max_records: int) -> list[Any] | None:
        batch = await self.inner.read(max_records)
        if batch is None:
            await self.owner.enough.wait()
        return batch

    def snapshot_state(self, checkpoint_id: int) -> None:
        self.inner.snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.owner.completed += 1
        if self.owner.completed >= 2:
            self.owner.enough.set()


async def test_periodic_checkpoints_are_counted() -> None:
    env = lg.StreamEnvironment()
    env.enable_checkpointing(0.01)
    env.from_source(HoldsTheEnd(list(range(25))), uid="src").sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("periodic", progress=stream)
    line = last_bar(stream.getvalue())
    assert figures(line, "records") == (25, 25)
    assert checkpoints_shown(line) >= 3  # two while it waited, and the final one


async def test_a_file_bar_counts_bytes_to_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    text = "".join(f"line {i}\r\n" if i % 3 else f"line {i}\n" for i in range(60)) + "no newline"
    path.write_text(text, encoding="utf-8", newline="")
    size = path.stat().st_size
    assert size < 1000  # shown unscaled, so exactly
    env = lg.StreamEnvironment()
    lines = env.from_source(lg.FileSource(path, chunk_size=64), uid="file")
    sink: lg.CollectSink[str] = lines.sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("bytes", progress=stream)
    assert len(sink.results) == 61
    line = last_bar(stream.getvalue())
    assert line.startswith("bytes: 100%|")
    assert figures(line, "B") == (size, size)
    assert checkpoints_shown(line) == 0
    assert "records/s" in line


async def test_records_and_bytes_get_a_bar_each(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    env = lg.StreamEnvironment()
    words = env.from_source(lg.FileSource(path), uid="file")
    words.union(env.from_collection(["d", "e"], uid="more")).sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("mixed", progress=stream)
    assert figures(stream.getvalue(), "records") == (2, 2)
    assert figures(stream.getvalue(), "B") == (6, 6)


async def test_a_source_of_unknown_size_makes_a_counter() -> None:
    queue: lg.QueueSource[int] = lg.QueueSource(maxsize=100)
    for i in range(42):
        queue.put_nowait(i)
    queue.close()
    env = lg.StreamEnvironment()
    sink: lg.CollectSink[int] = env.from_source(queue, uid="queue").sink(lg.CollectSink(), uid="out")
    env.from_collection(range(8), uid="known").sink(lg.CollectSink(), uid="out2")
    stream = io.StringIO()
    await env.execute("unbounded", progress=stream)
    assert sink.results == list(range(42))
    line = last_bar(stream.getvalue())
    assert re.match(r"unbounded: 50 records \[", line), line  # a count, no total, no percentage
    assert "%" not in line


async def test_a_source_that_does_not_tell_counts_as_unknown() -> None:
    class Silent(lg.Source):
        fixed_parallelism = 1

        def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
            return _ThreeRecords()

    env = lg.StreamEnvironment()
    env.from_source(Silent(), uid="silent").sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("silent", progress=stream)
    assert re.match(r"silent: 0 records \[", last_bar(stream.getvalue()))


async def test_a_source_whose_progress_raises_stops_the_bar_not_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(lg.Source):
        fixed_parallelism = 1

        def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
            return _ThreeRecords()

        def progress(self) -> SourceProgress:
            raise RuntimeError("no idea")

    env = lg.StreamEnvironment()
    sink: lg.CollectSink[int] = env.from_source(Broken(), uid="broken").sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    await env.execute("broken", progress=stream)
    assert sink.results == [1, 2, 3]
    [warning] = [r for r in caplog.records if "progress bar stopped" in r.getMessage()]
    assert warning.exc_info is not None and isinstance(warning.exc_info[1], RuntimeError)
    assert stream.getvalue() == ""  # it stopped before it drew anything


class _ThreeRecords(lg.SourceReader):
    def __init__(self) -> None:
        self.done = False

    async def read(self, max_records: int) -> list[Any] | None:
        if self.done:
            return None
        self.done = True
        return [1, 2, 3]


async def test_after_a_restart_the_bar_still_ends_at_its_total_exactly() -> None:
    failed: list[int] = []

    def fail_once(x: int) -> int:
        if x == 700 and not failed:
            failed.append(x)
            raise ValueError("once")
        return x

    env = lg.StreamEnvironment(batch_size=50)
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1, delay=0.0))
    env.from_collection(range(1000), uid="src").map(fail_once, uid="flaky").sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    result = await env.execute("restarting", progress=stream)
    assert result.restarts == 1
    assert figures(last_bar(stream.getvalue()), "records") == (1000, 1000)


async def test_the_bar_closes_when_the_job_fails() -> None:
    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("boom")
        return x

    env = lg.StreamEnvironment()
    env.from_collection(range(10), uid="src").map(boom, uid="boom").sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    with pytest.raises(lg.JobFailedError, match="boom") as failure:
        await env.execute("failing", progress=stream)
    assert isinstance(failure.value.__cause__, ValueError)  # raised as it is, not in a group
    line = last_bar(stream.getvalue())
    assert line.endswith(", failed]")


async def test_the_bar_closes_when_the_job_is_cancelled() -> None:
    queue: lg.QueueSource[int] = lg.QueueSource()
    queue.put_nowait(1)  # never closed: the job would run for ever
    env = lg.StreamEnvironment()
    stream = io.StringIO()
    with anyio.CancelScope() as scope:

        def cancel(x: int) -> int:
            scope.cancel()
            return x

        env.from_source(queue, uid="queue").map(cancel, uid="cancel").sink(lg.CollectSink(), uid="out")
        await env.execute("cancelled", progress=stream)
    assert scope.cancelled_caught
    line = last_bar(stream.getvalue())
    assert line.endswith(", cancelled]")


async def test_progress_true_draws_on_standard_error(capsys: pytest.CaptureFixture[str]) -> None:
    env = lg.StreamEnvironment()
    env.from_collection(range(7), uid="src").sink(lg.CollectSink(), uid="out")
    await env.execute("stderr", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "7/7 records" in last_bar(captured.err)


def test_execute_blocking_takes_the_option_too() -> None:
    env = lg.StreamEnvironment()
    env.from_collection(range(12), uid="src").sink(lg.CollectSink(), uid="out")
    stream = io.StringIO()
    env.execute_blocking("blocking", progress=stream)
    assert figures(last_bar(stream.getvalue()), "records") == (12, 12)


def test_without_progress_tqdm_is_not_even_imported() -> None:
    script = (
        "import sys, lockgate as lg\n"
        "env = lg.StreamEnvironment()\n"
        "env.from_collection(range(3), uid='src').sink(lg.CollectSink(), uid='out')\n"
        "env.execute_blocking('quiet')\n"
        "assert 'tqdm' not in sys.modules, 'tqdm imported'\n"
    )
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


class _Stepped(lg.Source):
    """A source of records whose progress a test sets."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.read = 0
        self.records = 0

    def create_reader(self, ctx: lg.RuntimeContext) -> lg.SourceReader:
        raise AssertionError("not run")

    def progress(self) -> SourceProgress:
        return SourceProgress("records", self.read, self.total, self.records)


def test_the_rate_is_smoothed_and_a_step_back_is_no_negative_rate() -> None:
    now = [0.0]
    checkpoints = [0]
    source = _Stepped(1000)
    stream = io.StringIO()
    progress = JobProgress("steps", [source], lambda: checkpoints[0], file=stream, clock=lambda: now[0])
    progress.poll()
    assert "? records/s, 0 checkpoints" in stream.getvalue()
    now[0], source.read, source.records = 1.0, 100, 100
    progress.poll()
    assert "100 records/s, 0 checkpoints" in stream.getvalue()
    now[0], source.read, source.records, checkpoints[0] = 2.0, 200, 200, 1
    progress.poll()
    assert "100 records/s, 1 checkpoint]" in stream.getvalue()
    now[0], source.read, source.records = 3.0, 50, 50  # restarted from a checkpoint behind
    progress.poll()
    assert "70.0 records/s" in stream.getvalue()  # 0.3 * 0 + 0.7 * 100
    now[0], source.read, source.records = 4.0, 1000, 1000
    progress.close()
    line = last_bar(stream.getvalue())
    assert figures(line, "records") == (1000, 1000)
    assert "250 records/s" in line  # the final figure: the whole run's average
    assert "JobProgress 'steps' [records 1000/1000 | closed]" in repr(progress)
    progress.close()  # a second close does nothing
    assert last_bar(stream.getvalue()) == line
