"""Progress bars for a running job: how far its sources have read, with records per second and the
completed checkpoints (``env.execute(name, progress=True)``).

The bars are tqdm's: in a terminal a text bar, in Jupyter a widget (``tqdm.auto`` chooses). Nothing
here runs on the hot path: the sources keep their positions as they read (once per batch), and a task
in the job's event loop asks them (:meth:`Source.progress`) a few times a second. tqdm is imported only
when a bar is wanted, so a job without one pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

import anyio

from lockgate.connectors import Source, SourceProgress
from lockgate.observe._logging import job_logger

if TYPE_CHECKING:
    from tqdm import tqdm

R = TypeVar("R")

#: How often, in seconds, the bars are brought up to date while the job runs.
TICK = 0.25

#: How much of each new reading the shown records/s takes (an exponential moving average).
_SMOOTHING = 0.3

#: The bars' text: with a known total a bar, without one a counter. tqdm's own rate is left out of the
#: records bar (the postfix says records/s); a bytes bar keeps it (bytes/s).
_BAR = "{desc}: {percentage:3.0f}%|{bar}| "
_FORMATS = {
    ("records", True): _BAR + "{n_fmt}/{total_fmt} records [{elapsed}<{remaining}{postfix}]",
    ("records", False): "{desc}: {n_fmt} records [{elapsed}{postfix}]",
    ("bytes", True): _BAR + "{n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
    ("bytes", False): "{desc}: {n_fmt}B [{elapsed}, {rate_fmt}{postfix}]",
}

Outcome = Literal["finished", "failed", "cancelled"]


@dataclass(frozen=True)
class _Reading:
    """The sources' progress summed per unit at one moment."""

    read: dict[str, int]
    total: dict[str, int | None]  # None: some source of that unit does not know its size
    records: int


def _read(sources: Iterable[Source]) -> _Reading:
    read: dict[str, int] = {}
    total: dict[str, int | None] = {}
    records = 0
    for source in sources:
        progress = source.progress()
        if progress is None:  # a source that does not tell: its records count, unknown in number
            progress = SourceProgress("records", 0, None, 0)
        unit = progress.unit
        read[unit] = read.get(unit, 0) + progress.read
        known = total.get(unit, 0)
        total[unit] = None if known is None or progress.total is None else known + progress.total
        records += progress.records
    return _Reading(read, total, records)


class JobProgress:
    """The progress bars of one job run: one per unit its sources count in (records, bytes), each the
    sum over the sources of that unit; a bar whose total is unknown (an unbounded source, or one that
    does not tell) is a counter. The postfix tells records/s and the completed checkpoints.

    Call :meth:`poll` to bring the bars up to date (:meth:`tick` does, until cancelled), and
    :meth:`close` once, however the job ended.

    Args:
        job_name: Shown before each bar.
        sources: The job's sources.
        completed_checkpoints: How many checkpoints the job has completed so far.
        file: Where the bars are written; None: ``tqdm.auto`` on standard error, or a widget in Jupyter.
        clock: Seconds, monotonic (tests may pass their own).
    """

    def __init__(
        self,
        job_name: str,
        sources: Iterable[Source],
        completed_checkpoints: Callable[[], int],
        *,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_name = job_name
        self._sources = list({id(source): source for source in sources}.values())
        self._checkpoints = completed_checkpoints
        self._file = file
        self._clock = clock
        self._bars: dict[str, tqdm[None]] = {}
        self._first: tuple[float, int] | None = None  # (time, records) of the first poll
        self._last: tuple[float, int] | None = None  # of the previous poll
        self._rate: float | None = None
        self.closed = False

    def __repr__(self) -> str:
        bars = ", ".join(f"{unit} {bar.n}/{bar.total}" for unit, bar in self._bars.items())
        return f"<JobProgress {self.job_name!r} [{bars or 'no bar yet'}{' | closed' if self.closed else ''}]>"

    def poll(self) -> None:
        """Ask the sources how far they are and show it."""
        reading = _read(self._sources)
        self._show(reading, self._postfix(reading.records, final=False), display=True)

    async def tick(self, interval: float = TICK) -> None:
        """Poll every ``interval`` seconds until cancelled, or until a source's ``progress()`` raises:
        then the bars stop (see :meth:`poll_or_stop`)."""
        while True:
            if not self.poll_or_stop():
                return
            await anyio.sleep(interval)

    def poll_or_stop(self) -> bool:
        """:meth:`poll`; should that raise (a source's ``progress()`` does), log it as a warning with
        its traceback and close the bars: a progress bar never fails the job it shows. Returns whether
        the bars go on."""
        if self.closed:
            return False
        try:
            self.poll()
        except Exception:
            self._stop()
            return False
        return True

    def close(self, outcome: Outcome = "finished") -> None:
        """Show the final figures (records/s then averages the whole run) and how the job ended, if it
        did not finish, then close the bars. Does nothing the second time."""
        if self.closed:
            return
        try:
            reading = _read(self._sources)
            postfix = self._postfix(reading.records, final=True)
        except Exception:
            self._stop()
            return
        self.closed = True
        self._show(reading, postfix if outcome == "finished" else f"{postfix}, {outcome}", display=False)
        for bar in self._bars.values():
            bar.close()  # shows the bar a last time, and leaves it

    def _stop(self) -> None:
        job_logger(self.job_name).warning(
            "job %r: the progress bar stopped: telling the progress raised", self.job_name, exc_info=True
        )
        self.closed = True
        for bar in self._bars.values():
            bar.set_postfix_str("progress unknown", refresh=False)
            bar.close()

    def _postfix(self, records: int, *, final: bool) -> str:
        from tqdm import tqdm as text_tqdm

        now = self._clock()
        if self._first is None:
            self._first = (now, records)
        rate: float | None
        if final:
            started, first = self._first
            rate = max(records - first, 0) / (now - started) if now > started else None
        else:
            if self._last is not None:
                then, before = self._last
                if now > then:  # a restart that went back reads as a pause, not a negative rate
                    current = max(records - before, 0) / (now - then)
                    previous = current if self._rate is None else self._rate
                    self._rate = _SMOOTHING * current + (1 - _SMOOTHING) * previous
            rate = self._rate
        self._last = (now, records)
        completed = self._checkpoints()
        plural = "" if completed == 1 else "s"
        shown = "?" if rate is None else text_tqdm.format_sizeof(rate)
        return f"{shown} records/s, {completed} checkpoint{plural}"

    def _show(self, reading: _Reading, postfix: str, *, display: bool) -> None:
        for unit in sorted(reading.read, key=lambda name: name != "records"):  # records first
            total, read = reading.total[unit], reading.read[unit]
            bar = self._bars.get(unit)
            if bar is None:  # shows itself as it opens
                self._bars[unit] = self._open(unit, total, read, postfix)
                continue
            if bar.total != total:
                bar.total = total
            bar.set_postfix_str(postfix, refresh=False)
            # Goes back after a restart from a checkpoint. tqdm shows the change when some time has
            # passed since it last did; a tick shows the new postfix anyway.
            if not bar.update(read - bar.n) and display:
                bar.refresh()

    def _open(self, unit: str, total: int | None, read: int, postfix: str) -> tqdm[None]:
        in_bytes = unit == "bytes"
        options: dict[str, Any] = {
            "desc": self.job_name,
            "total": total,
            "initial": read,
            "postfix": postfix,
            "file": self._file,
            "bar_format": _FORMATS[(unit, total is not None)],
            "unit": "B" if in_bytes else " records",
            "unit_scale": in_bytes,
            "unit_divisor": 1024 if in_bytes else 1000,
            "leave": True,
        }
        if self._file is None:  # a terminal's stderr, or a widget in Jupyter
            from tqdm.auto import tqdm as auto_tqdm

            return auto_tqdm(**options)
        from tqdm import tqdm as text_tqdm

        return text_tqdm(**options)


async def run_with_progress(
    run: Callable[[], Awaitable[R]],
    sources: Iterable[Source],
    completed_checkpoints: Callable[[], int],
    *,
    job_name: str,
    file: TextIO | None = None,
    interval: float = TICK,
) -> R:
    """``await run()`` (a job's run) while :class:`JobProgress` bars show how far ``sources`` have read,
    brought up to date every ``interval`` seconds by a task that ends with the run. The bars are
    closed however the run ends; its result is returned and its error raised as they are.
    """
    progress = JobProgress(job_name, sources, completed_checkpoints, file=file)
    outcome: Outcome = "cancelled"
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(progress.tick, interval, name=f"progress of job {job_name!r}")
            try:
                result = await run()
                outcome = "finished"
            except Exception as exc:  # raised below as it is, not in the task group's exception group
                failure = exc
                outcome = "failed"
            finally:
                group.cancel_scope.cancel()
    finally:
        progress.close(outcome)
    if failure is not None:
        raise failure
    return result
