"""FileSource: the lines of a file, in order, resumable at any line from its operator state."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate import state as lgs
from tests.test_source_positions import drain, reader

pytestmark = pytest.mark.anyio

lines = st.lists(
    st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=12),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=lines,
    final_newline=st.booleans(),
    crlf=st.booleans(),
    chunk=st.integers(1, 20),
    batch=st.integers(1, 7),
    stop=st.integers(0, 45),
)
async def test_lines_come_in_order_and_a_restore_resumes_at_the_next_line(
    tmp_path: Path, content: list[str], final_newline: bool, crlf: bool, chunk: int, batch: int, stop: int
) -> None:
    newline = "\r\n" if crlf else "\n"
    text = newline.join(content) + (newline if final_newline and content else "")
    path = tmp_path / "data.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = text.replace("\r\n", "\n").split("\n")
    if expected and expected[-1] == "":
        expected.pop()  # a final newline ends the last line; it starts none
    source = lg.FileSource(path, chunk_size=chunk)
    first, backend = reader(source, 0, 1)
    emitted = await drain(first, batch, limit=stop)
    first.snapshot_state(1)
    await first.close()
    [restored] = lgs.redistribute([backend.snapshot(0, 1)], 1)
    second, _ = reader(source, 0, 1, restored)
    emitted += await drain(second, batch)
    await second.close()
    assert emitted == expected


async def test_a_job_reads_a_file_and_refuses_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("b a\nc\n", encoding="utf-8")
    env = lg.StreamEnvironment()
    out = env.from_source(lg.FileSource(path)).flat_map(str.split).sink(lg.CollectSink())
    await env.execute("file")
    assert out.results == ["b", "a", "c"]
    env = lg.StreamEnvironment()
    env.from_source(lg.FileSource(tmp_path / "missing.txt")).sink(lg.CollectSink())
    with pytest.raises(lg.ConfigurationError, match=r"no file at .*missing\.txt"):
        await env.execute("missing")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(lg.ConfigurationError, match="path"):
        lg.FileSource(42)  # type: ignore[arg-type]
    with pytest.raises(lg.ConfigurationError, match="encoding"):
        lg.FileSource("x.txt", encoding="no-such-codec")
    with pytest.raises(lg.ConfigurationError, match="chunk_size"):
        lg.FileSource("x.txt", chunk_size=0)
