"""Timing a restore: a job that only loads a keyed ValueState from a checkpoint or savepoint and reads
some keys back. W3 and W5 both measure restores this way."""

from __future__ import annotations

import gc
import time

from keyed_sum import FinalSums

import lockgate as lg

# When each subtask's probe opened (registering the state loads its restored entries).
_opened: list[float] = []


class Probe(lg.MapFunction[str, tuple[str, int]]):
    """Registers the state in open(), which loads all the subtask's restored entries; then reads the
    sampled keys back (-1 for a key that was not restored)."""

    def __init__(self, state_name: str) -> None:
        self.state_name = state_name

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.value = ctx.get_state(lg.ValueStateDescriptor(self.state_name, default=-1))
        _opened.append(time.perf_counter())

    def map(self, key: str) -> tuple[str, int]:
        return (key, self.value.value_nowait())


async def timed_restore(
    url: str,
    backend: lg.StateBackend,
    parallelism: int,
    sample: list[str],
    *,
    state_uid: str,
    state_name: str,
    job_name: str,
) -> tuple[float, float, dict[str, int]]:
    """Restore the state of operator ``state_uid`` from ``url`` at ``parallelism`` and read ``sample``
    back: seconds to the end of the job, seconds until every subtask has loaded its state, and the
    values read."""
    env = lg.StreamEnvironment(parallelism=parallelism)
    env.set_state_backend(backend)
    probes = FinalSums()
    (
        env.from_collection(sample, uid="sample")
        .key_by(lambda key: key)
        .map(Probe(state_name), uid=state_uid)
        .sink(probes, uid="probes")
    )
    _opened.clear()
    gc.collect()
    started = time.perf_counter()
    # The snapshot also holds the writing job's source position, which this job drops.
    await env.execute(job_name, restore_from=url, allow_non_restored_state=True)
    seconds = time.perf_counter() - started
    if len(_opened) != parallelism:
        raise RuntimeError(f"{len(_opened)} subtasks opened, not {parallelism}")
    return seconds, max(_opened) - started, probes.last
