"""FileSink: records become lines of files that are hidden until their transaction commits."""

from __future__ import annotations

import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate._errors import CheckpointError, ConfigurationError
from lockgate.connectors._file_sink import FileSink, FileTransaction

pytestmark = pytest.mark.anyio


def visible(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if not path.name.startswith("."))


def hidden(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def lines_of(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n")
    return text.split("\n")[:-1]


async def test_files_are_hidden_until_commit_then_visible(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    assert txn.name.startswith("part-")
    assert visible(tmp_path) == []
    assert hidden(tmp_path) == [f".{txn.name}.inprogress"]
    await sink.write(txn, [1, "two", 3.5])
    await sink.write(txn, [None])
    assert visible(tmp_path) == []
    await sink.pre_commit(txn)
    assert visible(tmp_path) == []
    assert hidden(tmp_path) == [f".{txn.name}.pending"]
    await sink.commit(txn)
    assert visible(tmp_path) == [txn.name]
    assert hidden(tmp_path) == []
    assert lines_of(tmp_path / txn.name) == ["1", "two", "3.5", "None"]


async def test_commit_is_idempotent(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    await sink.write(txn, ["a", "b"])
    await sink.pre_commit(txn)
    await sink.commit(txn)
    await sink.commit(txn)
    assert visible(tmp_path) == [txn.name]
    assert hidden(tmp_path) == []
    assert lines_of(tmp_path / txn.name) == ["a", "b"]


async def test_abort_removes_hidden_files_and_is_idempotent(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    open_txn = await sink.begin_transaction()
    await sink.write(open_txn, ["x"])
    pending_txn = await sink.begin_transaction()
    await sink.write(pending_txn, ["y"])
    await sink.pre_commit(pending_txn)
    committed = await sink.begin_transaction()
    await sink.write(committed, ["z"])
    await sink.pre_commit(committed)
    await sink.commit(committed)
    for txn in (open_txn, pending_txn, committed, open_txn):
        await sink.abort(txn)
    assert hidden(tmp_path) == []
    assert visible(tmp_path) == [committed.name]  # abort never touches a visible file


async def test_an_empty_transaction_makes_no_file(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    await sink.pre_commit(txn)
    assert txn.size == 0
    await sink.commit(txn)
    await sink.commit(pickle.loads(pickle.dumps(txn)))  # again, after a restore
    assert visible(tmp_path) == hidden(tmp_path) == []


async def test_commit_of_lost_data_names_the_file(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    await sink.write(txn, ["lost"])
    await sink.pre_commit(txn)
    (tmp_path / f".{txn.name}.pending").unlink()
    with pytest.raises(CheckpointError, match=txn.name):
        await sink.commit(txn)


async def test_commit_refuses_a_pending_file_changed_after_pre_commit(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    await sink.write(txn, ["a"])
    await sink.pre_commit(txn)
    with (tmp_path / f".{txn.name}.pending").open("a") as file:
        file.write("b\n")
    with pytest.raises(CheckpointError, match=rf"{txn.name}.*4 bytes.*2 were"):
        await sink.commit(txn)


async def test_write_or_pre_commit_after_pre_commit_is_refused(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    await sink.write(txn, ["a"])
    await sink.pre_commit(txn)
    with pytest.raises(CheckpointError, match="inprogress is gone"):
        await sink.write(txn, ["b"])
    with pytest.raises(CheckpointError, match="inprogress is gone"):
        await sink.pre_commit(txn)


async def test_encoder_text_and_prefix(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, lambda record: f"<{record}>", prefix="out")
    txn = await sink.begin_transaction()
    assert txn.name.startswith("out-")
    await sink.write(txn, [1, "é ü", "two\nlines"])  # a newline in the text is written as it is
    await sink.pre_commit(txn)
    await sink.commit(txn)
    assert (tmp_path / txn.name).read_bytes() == "<1>\n<é ü>\n<two\nlines>\n".encode()
    bad = FileSink(tmp_path, lambda record: record)
    txn = await bad.begin_transaction()
    with pytest.raises(TypeError, match=r"must return a str.*int"):
        await bad.write(txn, [7])


async def test_a_pickled_transaction_commits_after_a_restore(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    txn = await sink.begin_transaction()
    await sink.write(txn, ["kept"])
    await sink.pre_commit(txn)
    open_txn = await sink.begin_transaction()
    await sink.write(open_txn, ["replayed"])
    saved = pickle.dumps([txn, open_txn])
    # The process dies; a new one restores the transactions from the checkpoint.
    restored, restored_open = pickle.loads(saved)
    assert restored == txn
    assert isinstance(restored, FileTransaction)
    again = FileSink(tmp_path)
    await again.commit(restored)
    await again.abort(restored_open)
    assert visible(tmp_path) == [txn.name]
    assert hidden(tmp_path) == []
    assert lines_of(tmp_path / txn.name) == ["kept"]


async def test_the_directory_is_made_when_missing(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    sink = FileSink(directory.as_uri())
    assert sink.directory == directory
    txn = await sink.begin_transaction()
    await sink.write(txn, ["x"])
    await sink.pre_commit(txn)
    await sink.commit(txn)
    assert visible(directory) == [txn.name]


async def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for directory in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(ConfigurationError, match=re.escape(f"{tmp_path / 'file'} is not a directory")):
            await FileSink(directory).begin_transaction()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="directory"):
        FileSink(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="directory"):
        FileSink("")
    with pytest.raises(ConfigurationError, match="scheme 's3' is not supported"):
        FileSink("s3://bucket/out")
    with pytest.raises(ConfigurationError, match=r"names the host .elsewhere."):
        FileSink("file://elsewhere/out")
    with pytest.raises(ConfigurationError, match="callable"):
        FileSink(tmp_path, "str")  # type: ignore[arg-type]
    for prefix in ("", ".part", "a/b"):
        with pytest.raises(ConfigurationError, match="prefix"):
            FileSink(tmp_path, prefix=prefix)
    assert repr(FileSink(tmp_path, prefix="p")) == f"FileSink({str(tmp_path)!r}, prefix='p')"


records = st.one_of(
    st.integers(),
    st.text(alphabet=st.characters(exclude_characters="\n", exclude_categories=["Cs"]), max_size=8),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.lists(records, min_size=1, max_size=4)),
        st.tuples(st.sampled_from(["checkpoint", "complete", "crash"]), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
async def test_committed_files_hold_exactly_the_committed_records(
    tmp_path: Path, steps: list[tuple[str, Any]]
) -> None:
    """Drive the sink as the transactional writer does: a checkpoint pre-commits the open transaction,
    its completion commits what it covers, a crash restores the last completed checkpoint (committing
    its pending transactions again, aborting the open one) and loses everything after it."""
    directory = tmp_path / uuid.uuid4().hex
    sink = FileSink(directory)
    open_txn = await sink.begin_transaction()
    open_records: list[Any] = []
    pending: list[tuple[FileTransaction, list[Any]]] = []
    checkpoint: bytes | None = None  # the last completed checkpoint: pending and open transactions
    committed: list[tuple[str, list[Any]]] = []
    for kind, batch in steps:
        if kind == "write":
            await sink.write(open_txn, batch)
            open_records += batch
        elif kind == "checkpoint":
            await sink.pre_commit(open_txn)
            pending.append((open_txn, open_records))
            open_txn, open_records = await sink.begin_transaction(), []
        elif kind == "complete":
            checkpoint = pickle.dumps((pending, open_txn))
            for txn, written in pending:
                await sink.commit(txn)
                committed.append((txn.name, written))
            pending = []
        else:
            sink = FileSink(directory)
            if checkpoint is not None:
                restored, aborted = pickle.loads(checkpoint)
                for txn, _ in restored:
                    await sink.commit(txn)  # already committed: idempotent
                await sink.abort(aborted)
            pending = []
            open_txn, open_records = await sink.begin_transaction(), []
    await sink.pre_commit(open_txn)  # the end of a bounded job
    await sink.commit(open_txn)
    committed.append((open_txn.name, open_records))

    output: list[str] = []
    for name, _ in committed:
        path = directory / name
        if path.exists():
            output += lines_of(path)
    assert output == [str(record) for _, written in committed for record in written]
    assert set(visible(directory)) == {name for name, written in committed if written}
    # Left behind by crashes: only hidden files of transactions never committed.
    left = {name.removeprefix(".").rsplit(".", 1)[0] for name in hidden(directory)}
    assert left.isdisjoint(name for name, _ in committed)


@pytest.mark.anyio
async def test_a_full_disk_fails_the_job_with_an_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from lockgate.connectors import _file_sink

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_file_sink, "_write", full)
    env = lg.StreamEnvironment()
    env.from_collection(["a", "b"], uid="src").sink(lg.FileSink(tmp_path / "out"), uid="out")
    with pytest.raises(lg.JobFailedError) as failed:
        await env.execute("full")
    cause = failed.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    assert cause.filename is not None and str(tmp_path / "out") in cause.filename
    assert "No space left" in str(cause)
