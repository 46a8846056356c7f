"""The stream environment: where a job graph is built, configured and started."""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import anyio
import sniffio

from lockgate._config import CheckpointConfig, CheckpointingMode, ExecutionConfig, RestartStrategy
from lockgate._errors import ConfigurationError
from lockgate.actors import (
    Job,
    JobExecution,
    JobResult,
    Runner,
    RuntimeOptions,
    warn_about_generated_uids,
)
from lockgate.connectors import AsyncIterableSource, CollectionSource, Source
from lockgate.eventtime import WatermarkStrategy
from lockgate.graph import SourceTransformation, Transformation, build_job_graph
from lockgate.observe import Plan, log_scope, run_with_progress
from lockgate.savepoint import RestoredState
from lockgate.snapshots import CheckpointStorage, load_from_pointer, storage_for
from lockgate.state import MemoryStateBackend, StateBackend, StatePreset, check_parallelism

if TYPE_CHECKING:
    from lockgate.api._datastream import DataStream

T = TypeVar("T")


class StreamEnvironment:
    """Builds a streaming job and runs it in the caller's event loop.

    Args:
        parallelism: The default number of subtasks of each operator.
        max_parallelism: The number of key groups: the most subtasks a keyed operator can ever have.
            It is fixed for the life of the job's state, so choose it with room to grow.
        batch_size: The most records in a batch handed from one actor to another.
        channel_capacity: The most batches queued in one channel before its producer waits; with
            ``batch_size`` it bounds the memory of each channel (between Ray actors too, in frames).
        runner: What runs the subtasks: None (the default), this process's event loop; a
            :class:`~lockgate.ray_runner.RayRunner`, Ray actors in other processes and machines.
    """

    def __init__(
        self,
        parallelism: int = 1,
        max_parallelism: int = 128,
        *,
        batch_size: int = 1000,
        channel_capacity: int = 8,
        runner: Runner | None = None,
    ) -> None:
        check_parallelism(parallelism, max_parallelism)
        if runner is not None and not callable(getattr(runner, "attempt", None)):
            raise ConfigurationError(f"runner is a runner such as lg.RayRunner(), or None, got {runner!r}")
        for name, value in (("batch_size", batch_size), ("channel_capacity", channel_capacity)):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.batch_size = batch_size
        self.channel_capacity = channel_capacity
        #: What runs the subtasks: None, this process's event loop; ``lg.RayRunner()``, Ray actors.
        self.runner = runner
        default = MemoryStateBackend()
        self.state_backend: StateBackend = default
        #: Where checkpoints go; set by :meth:`set_checkpoint_storage` or by a preset state backend.
        self.checkpoint_storage: CheckpointStorage = default.checkpoint_storage
        #: When and how checkpoints are taken; see :meth:`enable_checkpointing`.
        self.checkpoint_config = CheckpointConfig()
        #: How the job runs besides checkpointing: ``auto_watermark_interval``.
        self.config = ExecutionConfig()
        self.restart_strategy = RestartStrategy.no_restart()
        #: Signs every checkpoint and savepoint file, and refuses unsigned or altered ones on restore;
        #: see :meth:`set_checkpoint_signing_key` (default: the environment variable).
        self.checkpoint_signing_key: bytes | None = _key_from_environment()
        self._instrumentation: Any = None
        self._transformations: list[Transformation] = []
        self._uids: set[str] = set()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return (
            f"<StreamEnvironment [parallelism {self.parallelism}, max_parallelism "
            f"{self.max_parallelism}, {len(self._transformations)} transformations, "
            f"{self.state_backend!r}]>"
        )

    # ---- configuration

    def set_state_backend(self, backend: StateBackend) -> StreamEnvironment:
        """Choose where keyed operators keep live state (default: :class:`MemoryStateBackend`, on the heap).

        A preset (:class:`MemoryStateBackend`, :class:`FsStateBackend`, any :class:`StatePreset`) also
        sets :attr:`checkpoint_storage` to its own, when it has one; a plain backend such as
        :class:`HeapStateBackend` leaves the checkpoint storage as it is.
        """
        if not isinstance(backend, StateBackend):
            raise ConfigurationError(
                "set_state_backend() takes a state backend such as lg.HeapStateBackend() or a preset such as "
                f"lg.FsStateBackend('file:///data/ckpts'), got {backend!r}"
            )
        self.state_backend = backend
        if isinstance(backend, StatePreset) and backend.checkpoint_storage is not None:
            self.checkpoint_storage = backend.checkpoint_storage
        return self

    def set_checkpoint_storage(
        self, storage_or_url: CheckpointStorage | str | os.PathLike[str]
    ) -> StreamEnvironment:
        """Choose where checkpoints go (default: :class:`MemoryCheckpointStorage`, in memory).

        Args:
            storage_or_url: A storage such as ``lg.FileCheckpointStorage(url)``, or the URL of one such as
                ``"file:///data/ckpts"`` (a plain path is taken as a directory of the local file system).

        Raises:
            ConfigurationError: An unsupported URL scheme or a bad URL (the message says why), or
                neither a storage nor a URL.
        """
        self.checkpoint_storage = storage_for(storage_or_url)
        return self

    def set_checkpoint_signing_key(self, key: bytes | str | None) -> StreamEnvironment:
        """Sign every checkpoint and savepoint file this job writes with ``key`` (HMAC-SHA256), and
        refuse, on restore, a file that is not signed with it, before anything in it is unpickled:
        checkpoints hold pickles, and loading a pickle runs code. A str is taken as UTF-8; None turns
        signing off. Without a call, the environment variable ``LOCKGATE_CHECKPOINT_SIGNING_KEY``
        gives the key, if it is set.

        Raises:
            ConfigurationError: An empty key, or neither bytes, str nor None.
        """
        self.checkpoint_signing_key = _checked_key(key)
        return self

    def _signed(self, storage: CheckpointStorage) -> CheckpointStorage:
        """``storage``, signing with this environment's key (if it has one)."""
        if self.checkpoint_signing_key is not None:
            storage.signing_key = self.checkpoint_signing_key
        return storage

    def enable_checkpointing(
        self, interval: float, mode: CheckpointingMode = CheckpointingMode.EXACTLY_ONCE
    ) -> StreamEnvironment:
        """Take a checkpoint every ``interval`` seconds, in ``mode`` (exactly-once by default).

        Other settings (timeout, retained checkpoints, ...) are on :attr:`checkpoint_config`.
        """
        config = CheckpointConfig(**{**vars(self.checkpoint_config), "interval": interval, "mode": mode})
        config.validate()
        self.checkpoint_config = config
        return self

    def set_restart_strategy(self, strategy: RestartStrategy) -> StreamEnvironment:
        """Choose whether a failed job restarts (default: :meth:`RestartStrategy.no_restart`)."""
        if not isinstance(strategy, RestartStrategy):
            raise ConfigurationError(
                "set_restart_strategy() takes a strategy such as lg.RestartStrategy.fixed_delay(attempts=3, "
                f"delay=1.0), got {strategy!r}"
            )
        self.restart_strategy = strategy
        return self

    # ---- sources

    def from_collection(
        self,
        items: Iterable[T],
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
        watermark_strategy: WatermarkStrategy | None = None,
    ) -> DataStream:
        """A stream of the items of a collection, in order at parallelism 1 (its default).

        The items are copied into a list when this is called.
        """
        return self.from_source(
            CollectionSource(list(items)),
            uid=uid,
            name=name,
            parallelism=parallelism or 1,
            watermark_strategy=watermark_strategy,
        )

    def from_async_iterable(
        self,
        iterable: AsyncIterable[T],
        *,
        uid: str | None = None,
        name: str | None = None,
        watermark_strategy: WatermarkStrategy | None = None,
    ) -> DataStream:
        """A stream of what an async iterable yields (at parallelism 1; it cannot be replayed)."""
        if not isinstance(iterable, AsyncIterable):
            raise ConfigurationError(
                f"from_async_iterable() takes an async iterable (an async generator, say), got {iterable!r}"
            )
        return self.from_source(
            AsyncIterableSource(iterable), uid=uid, name=name, watermark_strategy=watermark_strategy
        )

    def from_source(
        self,
        source: Source,
        *,
        uid: str | None = None,
        name: str | None = None,
        parallelism: int | None = None,
        watermark_strategy: WatermarkStrategy | None = None,
    ) -> DataStream:
        """A stream read from ``source``, such as a :class:`QueueSource`.

        With a ``watermark_strategy``, each source subtask gives its records timestamps and emits
        watermarks (see :class:`WatermarkStrategy`).
        """
        from lockgate.api._datastream import DataStream

        if not isinstance(source, Source):
            raise ConfigurationError(f"from_source() takes a source such as lg.QueueSource(), got {source!r}")
        fixed = source.fixed_parallelism
        if parallelism is not None and fixed is not None and parallelism != fixed:
            raise ConfigurationError(
                f"{type(source).__name__} runs at parallelism {fixed} only, not {parallelism}"
            )
        parallelism = parallelism or fixed or self.parallelism
        kind = "source"
        if watermark_strategy is not None and not isinstance(watermark_strategy, WatermarkStrategy):
            raise ConfigurationError(
                "watermark_strategy takes an lg.WatermarkStrategy, such as "
                "lg.WatermarkStrategy.for_bounded_out_of_orderness(timedelta(seconds=5))"
                f".with_timestamp_assigner(...), got {watermark_strategy!r}"
            )
        node = SourceTransformation(
            id=self._next_id(),
            parallelism=self._check_parallelism(parallelism, name or kind),
            source=source,
            watermark_strategy=watermark_strategy,
            **self._naming(kind, uid, name),
        )
        return DataStream(self, self._add(node))

    # ---- graph building, used by the stream classes

    def _next_id(self) -> int:
        return next(self._ids)

    def _add(self, node: T) -> T:
        assert isinstance(node, Transformation)
        self._transformations.append(node)
        return node

    def _check_parallelism(self, parallelism: int | None, what: str) -> int:
        if parallelism is None:
            return self.parallelism
        check_parallelism(parallelism, self.max_parallelism, f"the parallelism of {what!r}")
        return parallelism

    def _naming(self, kind: str, uid: str | None, name: str | None) -> dict[str, Any]:
        """The uid and name of a new operator; a uid may be used once per job."""
        if uid is not None:
            if not isinstance(uid, str) or not uid:
                raise ConfigurationError(f"a uid must be a non-empty str, got {uid!r}")
            if uid in self._uids:
                raise ConfigurationError(
                    f"uid {uid!r} is already used by another operator of this job; uids name state "
                    "in checkpoints, so each operator needs its own"
                )
        identifier = self._next_id()
        chosen = uid if uid is not None else f"{kind}-{identifier}"
        # An auto uid could collide with a later explicit one; keep both in one namespace.
        while chosen in self._uids:
            chosen = f"{kind}-{identifier}-{next(self._ids)}"
        self._uids.add(chosen)
        return {"uid": chosen, "uid_is_explicit": uid is not None, "name": name or chosen}

    # ---- running

    def plan(self) -> Plan:
        """What :meth:`execute` would run, built the same way, with nothing run: the operators that
        lead to a sink, how they chain into vertices, and the edges between them. In a notebook it
        draws itself; ``to_dot()`` and ``to_mermaid()`` give it as text.

        Raises:
            ConfigurationError: The graph is invalid (no sink, a forward edge between different
                parallelisms ...), as :meth:`execute` would raise.
        """
        return Plan.from_job_graph(build_job_graph(self._transformations, self.max_parallelism))

    async def _execution(
        self, job_name: str, restore_from: str | os.PathLike[str] | None, allow_non_restored_state: bool
    ) -> JobExecution:
        if not isinstance(job_name, str) or not job_name:
            raise ConfigurationError(f"a job name must be a non-empty str, got {job_name!r}")
        graph = build_job_graph(self._transformations, self.max_parallelism)
        config = self.checkpoint_config
        config.validate()
        self.config.validate()
        if config.mode is CheckpointingMode.EXACTLY_ONCE and config.enabled:
            for node in self._transformations:
                if isinstance(node, SourceTransformation) and isinstance(node.source, AsyncIterableSource):
                    warnings.warn(
                        f"source {node.uid!r} reads an async iterable, which cannot be replayed: the job "
                        "cannot restart after a failure, and its records are not exactly-once; use "
                        "from_collection, FileSource or QueueSource for that",
                        NotReplayableSourceWarning,
                        stacklevel=3,
                    )
        options = RuntimeOptions(
            self.batch_size,
            self.channel_capacity,
            self.state_backend,
            checkpointing=config,
            checkpoint_storage=self._signed(self.checkpoint_storage),
            restart_strategy=self.restart_strategy,
            instrumentation=self._instrumentation,
            auto_watermark_interval=self.config.auto_watermark_interval_millis,
            runner=self.runner,
        )
        restored = None
        if restore_from is not None:
            warn_about_generated_uids(graph)
            fall_back = config.fall_back_past_damaged
            with log_scope(job=job_name):  # what the restore logs names the job
                loaded = await load_from_pointer(
                    os.fspath(restore_from), fall_back=fall_back, signing_key=self.checkpoint_signing_key
                )
            restored = await RestoredState.load(loaded, self.state_backend)
            restored.check_against(graph.max_parallelism, graph.parallelism_of(), allow_non_restored_state)
        return JobExecution(job_name, graph, options, restored)

    async def execute(
        self,
        job_name: str = "lockgate job",
        *,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
        progress: bool | TextIO = False,
    ) -> JobResult:
        """Run the job to its end in the current task and return its result.

        Works inside an already running event loop (a notebook, a service), on asyncio and trio.
        Cancelling the calling task cancels the job.

        Args:
            job_name: The job's name (in errors, logs and checkpoint metadata).
            restore_from: Start from this checkpoint: the URL of a checkpoint directory
                (``file:///ckpts/chk-7``), or of a directory of checkpoints, whose newest intact one
                is taken.
            allow_non_restored_state: Drop restored state of operators this job does not have,
                instead of refusing to start.
            progress: Show a progress bar while the job runs: how far its sources have read, with
                records/s and the completed checkpoints in its postfix. ``from_collection`` counts
                records, ``FileSource`` bytes, each of a known total (several sources: the sum; in
                both units: a bar each); a source of unknown size (``QueueSource``, an async
                iterable, a source whose ``progress()`` says None) makes it a counter. True: on
                standard error, or as a widget in Jupyter (tqdm's auto mode); a text stream: written
                there as text. The bar is closed however the job ends. False (the default) costs
                nothing.

        Raises:
            JobFailedError: An operator raised (and the restart strategy allowed no more restarts);
                the job's tasks have all ended.
            ConfigurationError: The graph or a setting is invalid.
            CheckpointError: ``restore_from`` holds no complete checkpoint.
            CorruptCheckpointError: Every checkpoint at ``restore_from`` is damaged.
        """
        execution = await self._execution(job_name, restore_from, allow_non_restored_state)
        if not progress:
            return await execution.run()
        sources = [
            node.source
            for vertex in execution.graph.vertices
            for node in vertex.operators
            if isinstance(node, SourceTransformation)
        ]
        return await run_with_progress(
            execution.run,
            sources,
            lambda: execution.checkpoint_statistics(last=0).completed,
            job_name=job_name,
            file=None if isinstance(progress, bool) else progress,
        )

    async def start(
        self,
        job_name: str = "lockgate job",
        *,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
    ) -> Job:
        """Start the job in the background of the current event loop and return its handle.

        Takes the arguments of :meth:`execute`.
        """
        return Job(await self._execution(job_name, restore_from, allow_non_restored_state))

    def execute_blocking(
        self,
        job_name: str = "lockgate job",
        *,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
        progress: bool | TextIO = False,
    ) -> JobResult:
        """Run the job from plain, synchronous code: starts an event loop and runs it to the end.

        Takes the arguments of :meth:`execute`.

        Raises:
            ConfigurationError: Called while an event loop is running in this thread; there, use
                ``await env.execute(...)``.
        """
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = None
        if library is not None:
            raise ConfigurationError(
                f"execute_blocking() cannot run inside a running {library} event loop; "
                "use 'await env.execute(...)' there instead"
            )

        async def main() -> JobResult:
            return await self.execute(
                job_name,
                restore_from=restore_from,
                allow_non_restored_state=allow_non_restored_state,
                progress=progress,
            )

        return anyio.run(main)


class NotReplayableSourceWarning(UserWarning):
    """A source that cannot replay its records is used where checkpoints promise exactly-once."""


#: The environment variable that gives the checkpoint signing key when none is set in code.
SIGNING_KEY_VARIABLE = "LOCKGATE_CHECKPOINT_SIGNING_KEY"


def _checked_key(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or not key:
        raise ConfigurationError(f"a checkpoint signing key is non-empty bytes or str (or None), got {key!r}")
    return key


def _key_from_environment() -> bytes | None:
    value = os.environ.get(SIGNING_KEY_VARIABLE)
    return None if not value else value.encode("utf-8")
