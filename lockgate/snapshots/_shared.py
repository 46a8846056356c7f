"""Reference counts of shared blobs: which retained checkpoints still need each one.

Incremental checkpoints write state once and reference it from later checkpoints (an SST file that
did not change, the base of a heap chain). Such a blob lives in the storage's shared area and may only
be deleted once no checkpoint that can still be restored references it. The coordinator keeps one
registry per job: a checkpoint's references count from the moment one of its subtasks acknowledges
them (so a blob a checkpoint in progress relies on is not deleted under it) until the checkpoint is
aborted or discarded by retention. References from checkpoints the job does not own (those already in
the storage when it started, rebuilt from their metadata) are pinned: they are never released.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class SharedStateRegistry:
    """How many checkpoints reference each shared blob, by name."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._held: dict[int, set[str]] = {}  # checkpoint id -> the names it references
        self._pinned: set[str] = set()

    def __repr__(self) -> str:
        return f"<SharedStateRegistry {len(self._counts)} blobs, {len(self._pinned)} pinned>"

    def is_live(self, name: str) -> bool:
        """Whether a checkpoint references ``name``: only then may a new checkpoint reuse it."""
        return name in self._pinned or self._counts[name] > 0

    def referenced(self) -> set[str]:
        """Every name some checkpoint references."""
        return self._pinned | {name for name, count in self._counts.items() if count > 0}

    def register(self, checkpoint_id: int, names: Iterable[str]) -> None:
        """Checkpoint ``checkpoint_id`` references ``names`` (each counted once per checkpoint)."""
        held = self._held.setdefault(checkpoint_id, set())
        for name in names:
            if name not in held:
                held.add(name)
                self._counts[name] += 1

    def release(self, checkpoint_id: int) -> list[str]:
        """Checkpoint ``checkpoint_id`` is gone: drop its references; the names no one references now,
        which the caller deletes."""
        unreferenced = []
        for name in sorted(self._held.pop(checkpoint_id, ())):
            self._counts[name] -= 1
            if self._counts[name] == 0:
                del self._counts[name]
                if name not in self._pinned:
                    unreferenced.append(name)
        return unreferenced

    def pin(self, names: Iterable[str]) -> None:
        """References from checkpoints this job does not own: kept for good."""
        self._pinned.update(names)
