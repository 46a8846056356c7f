"""The examples run as a user runs them and print what they promise."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from ast import literal_eval
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    """Run an example script with this interpreter; return its standard output."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_wordcount_prints_every_word_with_its_total_most_frequent_first() -> None:
    out = run_example("wordcount.py")
    assert out.startswith("Counted 31 words (19 different) in 3 lines in ")
    rows = re.findall(r"^  (\S+) +(\d+)$", out, flags=re.MULTILINE)
    counts = {word: int(count) for word, count in rows}
    assert len(rows) == len(counts) == 19
    assert sum(counts.values()) == 31
    assert counts["a"] == 4
    assert counts["stream"] == counts["table"] == counts["the"] == 3
    assert counts["has"] == counts["is"] == counts["that"] == 2
    assert counts["arriving"] == counts["itself"] == 1
    # Sorted by count, most frequent first; ties alphabetically.
    assert rows == sorted(rows, key=lambda row: (-int(row[1]), row[0]))


def test_embedded_service_totals_every_order_and_exits_cleanly() -> None:
    out = run_example("embedded_service.py")
    assert "processed 2000 orders" in out
    beats = re.search(r"heartbeat ran (\d+) times meanwhile", out)
    assert beats is not None and int(beats.group(1)) >= 1
    rows = re.findall(r"^  (\w+) +(\d+) +(\d+\.\d\d)$", out, flags=re.MULTILINE)
    assert rows == [
        ("ada", "500", "2745.00"),
        ("bo", "500", "2741.00"),
        ("cyd", "500", "2737.00"),
        ("dee", "500", "2742.00"),
    ]


def _text_of(cell: Any) -> str:
    """What a code cell printed and displayed, as plain text."""
    parts = []
    for output in cell.outputs:
        assert output.output_type != "error", output
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "".join(parts)


@pytest.mark.timeout(180)
def test_state_kinds_gives_the_same_profiles_on_heap_and_rocksdb() -> None:
    out = run_example("state_kinds.py")
    assert out.splitlines()[0] == (
        "ada: {'customer': 'ada', 'last': 'scone', 'recent': [10, 5, 7], "
        "'per_item': {'tea': 2, 'cake': 1, 'scone': 1}, 'largest': 10, 'average': 6.5, "
        "'seen_recently': True}"
    )
    assert "'largest': 12, 'average': 9.0" in out  # bo
    assert out.rstrip().endswith("RocksDB gives the same profiles: True")


def test_crash_and_recover_restarts_once_and_commits_every_total_exactly_once() -> None:
    out = run_example("crash_and_recover.py")
    assert "checkpoint 2 completed" in out
    assert "restart 1 from checkpoint 2" in out
    assert "The job finished after 1 restart(s)" in out
    assert "Committed output: 40 running totals" in out
    assert out.rstrip().endswith("exactly once: True")


def test_savepoint_rescale_restores_at_parallelism_3_on_rocksdb_exactly_once() -> None:
    out = run_example("savepoint_rescale.py")
    assert "First run (parallelism 2, heap): 25 of 60 views counted, then stopped." in out
    assert re.search(r"^Savepoint: file://\S+/savepoint-1$", out, flags=re.MULTILINE)
    assert "  _metadata\n  (state blobs under" in out  # this small state is all inline
    assert "Second run (parallelism 3, RocksDB): restored, counted the other 35 views." in out
    assert "  dee    5 after the first run,  16 in all" in out
    assert out.rstrip().endswith("exactly once: True")


def test_evolve_resumes_version_2_from_the_savepoint_of_version_1_with_migrated_accounts() -> None:
    out = run_example("evolve.py")
    assert "Version 1 read 5 orders and stopped with a savepoint.\n" in out
    assert "  ana  Account(orders=2, balance=19.75)\n" in out
    assert "Version 2 restored the accounts in their new form and read 3 more orders.\n" in out
    # Renamed, retyped to cents by the migration, then counted on; currency added with its default.
    assert "  ana  Account(order_count=3, balance=2075, currency='EUR')\n" in out
    assert "  bo   Account(order_count=3, balance=610, currency='EUR')\n" in out
    assert out.endswith("  dee  Account(order_count=1, balance=999, currency='EUR')\n")


def test_processor_fixes_renames_and_widens_a_savepoint_the_job_then_resumes_from() -> None:
    out = run_example("processor.py")
    assert "Read savepoint 1: max parallelism 8\n" in out
    assert "  views-per-user  parallelism 2  count (value, 4)\n" in out
    assert "Counts saved: {'ana': 4, 'bo': 2, 'bot': 3, 'cy': 1}\n" in out
    assert "Wrote savepoint-2: max parallelism 32, counts {'ana': 2, 'bo': 2, 'cy': 1}\n" in out
    assert out.endswith(
        "Day 2 at parallelism 12 counted on: [('ana', 3), ('bo', 3), ('cy', 2), ('dee', 1)]\n"
    )


def test_live_dashboard_service_answers_totals_over_http_while_the_stream_runs() -> None:
    out = run_example("live_dashboard_service.py")
    assert out == (
        "After the morning: ana 19, bo 3, cy 40, dee None\n"
        "After the afternoon: ana 20, bo 13, cy 40, dee 5\n"
        "In process, without HTTP: ana 20\n"
    )


def test_notebook_runs_top_level_await_and_a_background_job(tmp_path: Path) -> None:
    import nbclient
    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    # The "python3" kernel must be this interpreter (the venv's), whatever kernel specs the machine has
    # and whatever is first on PATH: write a spec that runs sys.executable and look only there.
    write_kernel_spec(tmp_path / "kernels" / "python3")
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    assert specs.get_kernel_spec("python3").argv[0] == sys.executable
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)

    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(not cell.get("outputs") for cell in nb.cells), "store the notebook without outputs"
    # cleanup_kc: shut the kernel down and close its sockets, though the client did not create km.
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", km=km).execute(cleanup_kc=True)

    cells = {cell.id: cell for cell in nb.cells if cell.cell_type == "code"}
    outputs = {cell_id: _text_of(cell) for cell_id, cell in cells.items()}
    assert outputs["running-sum-run"].startswith("JobResult(job_name='running-sum'")
    assert literal_eval(outputs["running-sums"]) == [
        ("figs", 5),
        ("figs", 6),
        ("pears", 3),
        ("pears", 7),
        ("pears", 17),
        ("plums", 2),
    ]
    assert literal_eval(outputs["final-sums"]) == {"pears": 17, "figs": 6, "plums": 2}
    assert outputs["background-start"] == "<Job 'live-sums' [running]>"
    assert outputs["background-feed"] == "<Job 'live-sums' [running]>"
    plan = html.unescape(cells["plan"].outputs[0].data["text/html"])  # graphviz writes - as &#45;
    assert "running-sum" in plan and "<svg" in plan
    shown = [output for output in cells["live-metrics"].outputs if output.output_type == "display_data"]
    assert shown, "the job is displayed"
    page = shown[-1].data["text/html"]  # the last update
    assert 'class="lockgate-metrics"' in page
    assert "running-sum[0]" in page and "running-sum[1]" in page and "queue[0]" in page
    summary, header, row = outputs["checkpoint-stats"].splitlines()
    assert summary == "1 completed, 0 failed, 0 in progress"
    assert header.split() == [
        "id",
        "kind",
        "status",
        "duration",
        "sync",
        "async",
        "align",
        "persisted",
        "full",
        "in-flight",
    ]
    assert row.split()[:3] == ["1", "checkpoint", "completed"]
    printed, final = outputs["background-wait"].split("\n", 1)
    assert printed == "<Job 'live-sums' [finished]>"
    assert literal_eval(final) == {"figs": sum(range(0, 200, 2)), "pears": sum(range(1, 200, 2))}


def test_sessions_restores_open_sessions_and_sends_late_clicks_aside_exactly_once() -> None:
    out = run_example("sessions.py")
    assert "the parser failed on click #170; restart 1 from checkpoint 3" in out
    assert "The job finished after 1 restart(s), from checkpoint 3." in out
    assert "30 sessions (30 s without a click ends one)" in out
    assert "  ada  10:00:00-10:01:21  10 clicks on 7 pages" in out
    assert "Late clicks in the side output: 5" in out
    assert out.rstrip().endswith("exactly once: True")
