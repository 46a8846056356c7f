"""The base of every operator, and what the operators share: call forms, outputs, per-subtask copies.

Every operator turns one input batch into one output batch in a single call, so the per-record work is
a plain loop (or comprehension) and the per-batch overheads are paid once per batch.
"""

from __future__ import annotations

import copy
import enum
import inspect
from collections.abc import Callable
from typing import Any

from lockgate._errors import ConfigurationError
from lockgate.actors._context import SubtaskContext
from lockgate.mailbox import WatermarkStatus
from lockgate.state import OperatorStateSnapshot


class CallForm(enum.Enum):
    """How a user function hands back its result."""

    SYNC = "def"
    ASYNC = "async def"
    SYNC_GEN = "def with yield"
    ASYNC_GEN = "async def with yield"


def call_form(fn: Callable[..., Any]) -> CallForm:
    """The form of ``fn``: a function, method, partial or callable object."""
    for candidate in (fn, getattr(type(fn), "__call__", None)):  # noqa: B004 - the class, not fn
        if candidate is None:
            continue
        if inspect.isasyncgenfunction(candidate):
            return CallForm.ASYNC_GEN
        if inspect.iscoroutinefunction(candidate):
            return CallForm.ASYNC
        if inspect.isgeneratorfunction(candidate):
            return CallForm.SYNC_GEN
        if inspect.isfunction(candidate) or inspect.ismethod(candidate):
            return CallForm.SYNC
    return CallForm.SYNC


def _extend_outputs(out: list[Any], result: Any, what: str) -> None:
    # The slow path of a function that returns (rather than yields): None, or an iterable of outputs
    # that is not a list or tuple (those are extended inline by the callers).
    if result is None:
        return
    if isinstance(result, str | bytes | bytearray):
        raise TypeError(
            f"{what} returned a {type(result).__name__}, which would be split into characters; "
            "yield each output, or return a list of outputs"
        )
    out.extend(result)


async def outputs_of(fn: Callable[..., Any], form: CallForm, args: tuple[Any, ...], what: str) -> list[Any]:
    """The outputs of one call of ``fn(*args)`` of any form, as a list (the per-record path of
    batches with timestamps, and of timers)."""
    if form is CallForm.SYNC_GEN:
        return list(fn(*args))
    if form is CallForm.ASYNC_GEN:
        return [result async for result in fn(*args)]
    result = await fn(*args) if form is CallForm.ASYNC else fn(*args)
    if type(result) is list:
        return result
    out: list[Any] = []
    if type(result) is tuple:
        out.extend(result)
    else:
        _extend_outputs(out, result, what)
    return out


def _copy_per_subtask(function: Any, uid: str) -> Any:
    # Each subtask gets its own copy, as each Flink subtask deserialises its own: attributes set in
    # open() (state objects) then belong to one subtask.
    try:
        return copy.deepcopy(function)
    except Exception as exc:
        raise ConfigurationError(
            f"operator {uid!r}: the function {function!r} cannot be copied for each subtask "
            f"({type(exc).__name__}: {exc}); create resources such as clients in open(), not __init__"
        ) from exc


class StreamOperator:
    """One subtask's instance of an operator.

    Attributes:
        generates_watermarks: Whether the operator makes its own watermarks (:meth:`poll`) in place
            of those from upstream, which stop at it (but the end of input's).
    """

    generates_watermarks: bool = False

    def __init__(self, ctx: SubtaskContext) -> None:
        self.ctx = ctx
        self.uid = ctx.operator_uid

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid!r} [{self.ctx.subtask_index + 1}/{self.ctx.parallelism}]>"

    async def open(self) -> None:
        """Called once before the first batch."""

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        """The outputs of a batch of input records (the batch is not empty)."""
        raise NotImplementedError

    async def process_batch2(self, batch: list[Any]) -> list[Any]:
        """The outputs of a batch of the second input (two-input operators only)."""
        raise TypeError(f"{self!r} has one input")

    async def finish(self) -> list[Any]:
        """The input has ended; return the last outputs."""
        return []

    async def on_watermark(self, watermark: int) -> list[Any]:
        """Event time has reached ``watermark``: fire what is due; return its outputs (they go down
        the chain before the watermark does)."""
        return []

    async def on_processing_time(self, now: int) -> list[Any]:
        """A wake-up this operator asked for (through its context) came: fire the processing-time
        timers due at ``now`` (ms since the epoch); return their outputs."""
        return []

    def restored_watermark(self) -> int | None:
        """A watermark-generating operator's last watermark before the snapshot it was restored
        from, which it emits again before anything else; None for none."""
        return None

    def poll(self, now: int) -> int | WatermarkStatus | None:
        """A watermark-generating operator's watermark or status to emit now (see
        :attr:`generates_watermarks`)."""
        return None

    async def prepare_snapshot(self, checkpoint_id: int) -> None:
        """A barrier has arrived; the snapshot follows at once (transactional sinks pre-commit)."""

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete."""

    async def notify_job_finished(self) -> None:
        """Every subtask of the job has finished its input."""

    def snapshot_operator_state(self) -> OperatorStateSnapshot:
        """The operator state of this subtask now (the function's ``snapshot_state`` runs first)."""
        ctx = self.ctx
        return ctx.operator_backend.snapshot(ctx.subtask_index, ctx.parallelism)

    async def close(self) -> None:
        """Called once when the subtask ends, however it ends."""
