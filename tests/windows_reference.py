"""A plain-Python model of event-time windows with Flink's semantics, for one source subtask that
emits its watermark after every batch: what the window tests compare lockgate's jobs against.

Firings are ``(key, start, end, sorted values)``; late records are the records no window took
because they came after every window of theirs was cleaned up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

MIN = -(2**63)
MAX = 2**63 - 1


@dataclass(frozen=True)
class Assigner:
    """``kind`` is tumbling, sliding or session; sizes in ms."""

    kind: str
    size: int
    slide: int = 0

    def windows(self, ts: int) -> list[tuple[int, int]]:
        if self.kind == "tumbling":
            start = ts - ts % self.size
            return [(start, start + self.size)]
        if self.kind == "sliding":
            start = ts - ts % self.slide
            out = []
            while start > ts - self.size:
                out.append((start, start + self.size))
                start -= self.slide
            return out
        return [(ts, ts + self.size)]


@dataclass
class WindowModel:
    assigner: Assigner
    lateness: int
    watermark: int = MIN
    # key -> window -> values; for sessions the windows of a key never overlap or touch.
    contents: dict[Any, dict[tuple[int, int], list[int]]] = field(default_factory=lambda: defaultdict(dict))
    fired: list[tuple[Any, int, int, tuple[int, ...]]] = field(default_factory=list)
    late: list[tuple[Any, int]] = field(default_factory=list)

    def cleanup(self, window: tuple[int, int]) -> int:
        return window[1] - 1 + self.lateness

    def fire(self, key: Any, window: tuple[int, int]) -> None:
        values = self.contents[key].get(window)
        if values:
            self.fired.append((key, window[0], window[1], tuple(sorted(values))))

    def record(self, key: Any, ts: int, value: int) -> None:
        windows = self.contents[key]
        taken = False
        for window in self.assigner.windows(ts):
            if self.assigner.kind == "session":
                merged = [w for w in windows if w[0] <= window[1] and w[1] >= window[0]]
                start = min([window[0], *(w[0] for w in merged)])
                end = max([window[1], *(w[1] for w in merged)])
                values = [v for w in merged for v in windows.pop(w)]
                window = (start, end)
                if self.cleanup(window) <= self.watermark:
                    continue  # merged into a window already cleaned up (cannot happen unmerged)
                windows[window] = values
            elif self.cleanup(window) <= self.watermark:
                continue
            taken = True
            windows.setdefault(window, []).append(value)
            if window[1] - 1 <= self.watermark:
                self.fire(key, window)  # a late firing, within the allowed lateness
        if not taken and ts + self.lateness <= self.watermark:
            self.late.append((key, value))

    def advance(self, watermark: int) -> None:
        if watermark <= self.watermark:
            return
        before, self.watermark = self.watermark, watermark
        for key, windows in self.contents.items():
            for window in list(windows):
                if before < window[1] - 1 <= watermark:
                    self.fire(key, window)
                if self.cleanup(window) <= watermark:
                    del windows[window]


def run_model(
    records: list[tuple[Any, int, int]], assigner: Assigner, lateness: int, bound: int, batch_size: int
) -> WindowModel:
    """Feed ``(key, timestamp, value)`` records in batches, the watermark after each batch being the
    newest timestamp so far minus ``bound`` minus 1; MAX at the end."""
    model = WindowModel(assigner, lateness)
    newest = MIN
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        for key, ts, value in batch:
            model.record(key, ts, value)
        newest = max(newest, *(ts for _, ts, _ in batch))
        model.advance(newest - bound - 1)
    model.advance(MAX)
    return model
