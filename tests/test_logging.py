"""The job's logs: every record lockgate logs while a job runs names the job, and from inside a subtask
the operator uid and the subtask; a job logs its start, each restart and its end."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
import pytest

import lockgate as lg
from lockgate.observe import LOG_FIELDS, job_logger, log_scope

pytestmark = pytest.mark.anyio


def lockgate_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.split(".")[0] == "lockgate"]


def fields(record: logging.LogRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in LOG_FIELDS)


async def test_a_job_that_fails_once_logs_start_restart_and_end_each_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lockgate")
    failed: list[int] = []

    def fail_once(x: int) -> int:
        if x == 5 and not failed:
            failed.append(x)
            raise ValueError("once")
        return x

    env = lg.StreamEnvironment(parallelism=2)
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1, delay=0.0))
    source = env.from_collection(range(10), uid="src")
    source.map(fail_once, uid="flaky", parallelism=2).sink(lg.CollectSink(), uid="out", parallelism=2)
    result = await env.execute("fails-once")
    assert result.restarts == 1

    records = lockgate_records(caplog)
    assert records, "nothing logged"
    assert {fields(record)[0] for record in records} == {"fails-once"}

    job_level = [record for record in records if fields(record)[1] is None]
    assert {fields(record) for record in job_level} == {("fails-once", None, None)}
    started = [r for r in job_level if r.levelno == logging.INFO and "started" in r.getMessage()]
    restarts = [r for r in job_level if r.levelno == logging.WARNING and "restart 1 from" in r.getMessage()]
    ended = [r for r in job_level if r.levelno == logging.INFO and "finished" in r.getMessage()]
    assert len(started) == len(restarts) == len(ended) == 1
    assert records.index(started[0]) < records.index(restarts[0]) < records.index(ended[0])
    assert ended[0] is records[-1]
    assert "1 restart(s)" in ended[0].getMessage()

    # The failure itself, logged from inside the subtask that raised, with its traceback.
    [raised] = [r for r in records if fields(r)[1] is not None]
    assert fields(raised) in {("fails-once", "flaky", 0), ("fails-once", "flaky", 1)}
    assert raised.exc_info is not None and isinstance(raised.exc_info[1], ValueError)
    assert "operator 'flaky' subtask" in raised.getMessage()


async def test_records_from_inside_a_subtask_name_its_operator_and_subtask(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What runs in a subtask's task, and in worker threads it starts, logs under the subtask's scope:
    lockgate's own parts below the runtime log on the ``lockgate`` logger directly, like this map."""
    caplog.set_level(logging.INFO, logger="lockgate")
    inside = logging.getLogger("lockgate")

    async def note(x: int) -> int:
        inside.info("in the loop %d", x)
        await anyio.to_thread.run_sync(inside.info, "in a thread")
        return x

    env = lg.StreamEnvironment(parallelism=2)
    numbers = env.from_collection(range(4), uid="src").rebalance()
    numbers.map(note, uid="note", parallelism=2).sink(lg.CollectSink(), uid="out", parallelism=2)
    await env.execute("scoped")

    noted = [r for r in lockgate_records(caplog) if r.getMessage().startswith("in ")]
    assert len(noted) == 8
    assert {fields(record)[:2] for record in noted} == {("scoped", "note")}
    assert {fields(record)[2] for record in noted} == {0, 1}

    # Job-level records (start, end) carry the job only.
    job_level = [r for r in lockgate_records(caplog) if r not in noted]
    assert [fields(record) for record in job_level] == [("scoped", None, None)] * 2


async def test_a_failed_job_logs_its_end_with_the_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lockgate")

    def boom(x: int) -> int:
        raise ValueError("boom")

    env = lg.StreamEnvironment()
    env.from_collection(range(3), uid="src").map(boom, uid="boom").sink(lg.CollectSink(), uid="out")
    with pytest.raises(lg.JobFailedError):
        await env.execute("doomed")
    last = lockgate_records(caplog)[-1]
    assert fields(last) == ("doomed", None, None)
    assert last.levelno == logging.INFO
    assert "job 'doomed' failed after" in last.getMessage()
    assert "ValueError: boom" in last.getMessage()


def test_the_adapter_factory_and_the_scopes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lockgate")
    logging.getLogger("lockgate").info("outside any job")
    with log_scope(job="j"):
        job_logger().info("job level")
        with log_scope(operator_uid="op", subtask=3):
            job_logger().info("in a subtask")
            job_logger(operator_uid="other").info("given fields win")
            logging.getLogger("lockgate.server").info("another lockgate logger")
        job_logger("explicit", "uid", 0, name="lockgate.server").warning("all given")
    logging.getLogger("lockgate").info("outside again")
    assert [(record.getMessage(), fields(record)) for record in lockgate_records(caplog)] == [
        ("outside any job", (None, None, None)),
        ("job level", ("j", None, None)),
        ("in a subtask", ("j", "op", 3)),
        ("given fields win", ("j", "other", 3)),
        ("another lockgate logger", ("j", "op", 3)),
        ("all given", ("explicit", "uid", 0)),
        ("outside again", (None, None, None)),
    ]


def test_a_formatter_may_name_the_fields() -> None:
    stream_records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream_records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(job)s %(operator_uid)s %(subtask)s %(message)s"))
    logger = logging.getLogger("lockgate")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        env = lg.StreamEnvironment()
        env.from_collection(range(3), uid="src").sink(lg.CollectSink(), uid="out")
        env.execute_blocking("formatted")
        logger.info("after")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert stream_records[0].startswith("formatted None None job 'formatted' started")
    assert stream_records[-1] == "None None None after"


async def test_the_job_servers_records_name_the_job(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lockgate")
    queue: lg.QueueSource[int] = lg.QueueSource()
    env = lg.StreamEnvironment()
    env.from_source(queue, uid="queue").sink(lg.CollectSink(), uid="out")
    job = await env.start("served")
    server = await job.serve(port=0)
    await server.aclose()
    queue.close()
    await job.wait()
    served = [record for record in caplog.records if record.name == "lockgate.server"]
    assert served, "hypercorn logged nothing on the server's logger"
    assert {fields(record) for record in served} == {("served", None, None)}
