"""The plan as a picture: ``env.plan()`` and ``job.plan()``, their DOT, Mermaid and SVG forms, and the
HTML a job, its checkpoint statistics and its plan show in a notebook."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import lockgate as lg
from lockgate.observe import Plan, PlanEdge

pytestmark = pytest.mark.anyio

GUARD = 10
SVG = "{http://www.w3.org/2000/svg}"

#: Uids with characters that mean something in DOT, Mermaid, XML or HTML.
AWKWARD_UIDS = ['say "hi"', "a<b>&c", "back\\slash", "{x}|[y];#1", "zähler → 😀", "it's `tick`"]


class Count(lg.KeyedProcessFunction[Any, Any]):
    """Counts records per key."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

    async def process_element(self, value: Any, ctx: Any) -> AsyncIterator[Any]:
        total = await self.count.value() + 1
        await self.count.update(total)
        yield (ctx.get_current_key(), total)


class SplitOdd(lg.ProcessFunction[Any, Any]):
    """Even numbers go on; odd ones go to the side output ``odd``."""

    odd = lg.OutputTag("odd")

    async def process_element(self, value: Any, ctx: Any) -> AsyncIterator[Any]:
        if value % 2:
            ctx.output(self.odd, value)
        else:
            yield value


class Rules(lg.BroadcastProcessFunction[Any, Any, Any]):
    """Passes records on; broadcast records are ignored."""

    async def process_element(self, value: Any, ctx: Any) -> AsyncIterator[Any]:
        yield value

    async def process_broadcast_element(self, value: Any, ctx: Any) -> AsyncIterator[Any]:
        return  # an async generator that yields nothing: rules change no state here
        yield


def keyed_pipeline(env: lg.StreamEnvironment, source: lg.Source | None = None) -> lg.CollectSink[Any]:
    """src (parallelism 1) -rebalance-> a (2) -hash-> b -> out (2, one chain)."""
    stream = (
        env.from_collection(range(20), uid="src")
        if source is None
        else env.from_source(source, uid="src", parallelism=1)
    )
    return (
        stream.map(lambda x: x * 2, uid="a")
        .key_by(lambda x: x % 3)
        .process(Count(), uid="b")
        .sink(lg.CollectSink(), uid="out")
    )


def branching_pipeline() -> lg.StreamEnvironment:
    """Every kind of edge: forward chains, a forward edge between chains, rebalance, hash, broadcast,
    a side output, a union and the second input of a two-input operator."""
    env = lg.StreamEnvironment(parallelism=2)
    numbers = env.from_collection(range(10), uid="numbers", parallelism=2)
    split = numbers.filter(lambda x: x >= 0, uid="positive").process(SplitOdd(), uid="split")
    odd = split.get_side_output(SplitOdd.odd)
    rules = env.from_collection(["rule"], uid="rules")
    joined = split.union(odd).connect(rules).process(Rules(), uid="join")
    joined.rebalance().map(str, uid="text").sink(lg.CollectSink(), uid="texts")
    joined.key_by(lambda x: x).reduce(lambda a, b: a, uid="dedup").sink(lg.PrintSink(), uid="printed")
    return env


def awkward_pipeline() -> lg.StreamEnvironment:
    env = lg.StreamEnvironment(parallelism=2)
    stream = env.from_collection(range(3), uid=AWKWARD_UIDS[0])
    for number, uid in enumerate(AWKWARD_UIDS[1:-1]):
        stream = stream.map(abs, uid=uid, parallelism=1 + number % 2)
    stream.sink(lg.CollectSink(), uid=AWKWARD_UIDS[-1], name='named "sink"')
    return env


def chain_uids(plan: Plan) -> list[list[str]]:
    return [[op.uid for op in chain.operators] for chain in plan.chains]


def edges_by_uid(plan: Plan) -> dict[tuple[str, str], PlanEdge]:
    return {(edge.source_uid, edge.target_uid): edge for edge in plan.edges}


def svg_text(svg: str) -> str:
    """All the text of an SVG document (it must parse as XML), one element's text a line."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return "\n".join("".join(element.itertext()) for element in root.iter(f"{SVG}text"))


def svg_uid_texts(svg: str) -> set[str]:
    root = ET.fromstring(svg)
    return {"".join(text.itertext()) for text in root.iter(f"{SVG}text") if text.get("class") == "uid"}


def dot_program() -> str:
    path = shutil.which("dot")
    if path is None:
        pytest.skip("Graphviz's dot program is not installed (apt-get install graphviz)")
    return path


# ---- what a plan says


def test_the_environments_plan_describes_operators_chains_and_edges() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    keyed_pipeline(env)
    plan = env.plan()
    assert chain_uids(plan) == [["src"], ["a"], ["b", "out"]]
    assert [chain.parallelism for chain in plan.chains] == [1, 2, 2]
    operators = {op.uid: op for op in plan.operators}
    assert [(op.kind, op.parallelism, op.keyed) for op in operators.values()] == [
        ("source", 1, False),
        ("map", 2, False),
        ("keyed_process", 2, True),
        ("sink", 2, False),
    ]
    assert operators["src"].connector == "CollectionSource"
    assert operators["out"].connector == "CollectSink"
    assert operators["a"].connector is None
    assert [(e.source_chain, e.target_chain, e.kind) for e in plan.edges] == [
        (0, 1, "rebalance"),
        (1, 2, "hash"),
    ]
    assert plan.max_parallelism == env.max_parallelism
    assert repr(plan) == "<Plan [3 chains, 4 operators: src | a | b -> out]>"


def test_forward_operators_at_equal_parallelism_share_a_chain_and_every_edge_kind_is_named() -> None:
    plan = branching_pipeline().plan()
    assert chain_uids(plan) == [
        ["numbers", "positive", "split"],
        ["rules"],
        ["join"],
        ["text", "texts"],
        ["dedup", "printed"],
    ]
    edges = edges_by_uid(plan)
    assert set(edges) == {("split", "join"), ("rules", "join"), ("join", "text"), ("join", "dedup")}
    main, odd = sorted(
        (e for e in plan.edges if e.target_uid == "join" and e.input_index == 0),
        key=lambda e: e.side_output is not None,
    )
    assert (main.kind, main.side_output) == ("forward", None)
    assert (odd.kind, odd.side_output, odd.label) == ("forward", "odd", "forward [odd]")
    assert (edges["rules", "join"].kind, edges["rules", "join"].input_index) == ("broadcast", 1)
    assert edges["rules", "join"].label == "broadcast (input 2)"
    assert edges["join", "text"].kind == "rebalance"
    assert edges["join", "dedup"].kind == "hash"


def test_a_plan_is_built_without_running_anything_and_refuses_a_graph_execute_would_refuse() -> None:
    called: list[int] = []
    env = lg.StreamEnvironment()
    env.from_collection([1, 2]).map(called.append, uid="m").sink(lg.CollectSink(), uid="out")
    assert env.plan() == env.plan()
    assert called == []

    empty = lg.StreamEnvironment()
    empty.from_collection([1]).map(abs)
    with pytest.raises(lg.ConfigurationError, match="no sink"):
        empty.plan()


# ---- text forms


def test_dot_draws_each_chain_as_a_cluster_with_its_parallelism_and_labels_edges() -> None:
    plan = branching_pipeline().plan()
    dot = plan.to_dot()
    assert dot.startswith("digraph plan {") and dot.rstrip().endswith("}")
    clusters = re.findall(r"subgraph cluster_(\d+) \{(.*?)\n  \}", dot, re.S)
    assert [int(number) for number, _ in clusters] == [chain.index for chain in plan.chains]
    for (_, body), chain in zip(clusters, plan.chains, strict=True):
        assert f"parallelism {chain.parallelism}" in body
        assert re.findall(r'label="([^"\\]*)\\n', body)[: len(chain.operators)] == [
            op.uid for op in chain.operators
        ]
    labels = re.findall(r'-> op\d+ \[label="([^"]*)"', dot)
    assert sorted(labels) == sorted(edge.label for edge in plan.edges)


def test_dot_escapes_awkward_uids_and_graphviz_reads_it() -> None:
    dot = awkward_pipeline().plan().to_dot()
    for uid in AWKWARD_UIDS:
        escaped = uid.replace("\\", "\\\\").replace('"', '\\"')
        assert f'label="{escaped}\\n' in dot
    program = dot_program()
    drawn = subprocess.run([program, "-Tsvg"], input=dot, capture_output=True, text=True, check=False)
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stderr == ""
    text = svg_text(drawn.stdout[drawn.stdout.index("<svg") :])
    for uid in AWKWARD_UIDS:
        assert uid in text
    assert 'name: named "sink"' in text


def decode_mermaid(text: str) -> str:
    return re.sub(r"#(\d+);", lambda match: chr(int(match.group(1))), text)


def test_mermaid_draws_each_chain_as_a_subgraph_and_escapes_labels() -> None:
    for env in (branching_pipeline(), awkward_pipeline()):
        plan = env.plan()
        mermaid = plan.to_mermaid()
        lines = mermaid.splitlines()
        assert lines[0] == "flowchart LR"
        subgraphs = [line for line in lines if line.lstrip().startswith("subgraph ")]
        assert len(subgraphs) == len(plan.chains)
        assert lines.count("  end") == len(plan.chains)
        for line, chain in zip(subgraphs, plan.chains, strict=True):
            assert f"parallelism {chain.parallelism}" in line
        labels = re.findall(r'"([^"]*)"', mermaid)
        for line in lines:
            assert line.count('"') % 2 == 0  # no quote inside a label ends it early
        for label in labels:
            assert not set("<>&`") & set(label.replace("<br>", ""))
        decoded = [decode_mermaid(part) for label in labels for part in label.split("<br>")]
        for op in plan.operators:
            assert op.uid in decoded
        edge_labels = re.findall(r'\|"([^"]*)"\|', mermaid)
        assert sorted(map(decode_mermaid, edge_labels)) == sorted(edge.label for edge in plan.edges)
    assert "==>" in branching_pipeline().plan().to_mermaid()  # the hash edge stands out


# ---- pictures


@pytest.mark.parametrize("make", [branching_pipeline, awkward_pipeline])
def test_the_builtin_svg_is_valid_and_names_every_operator(make: Any) -> None:
    plan = make().plan()
    svg = plan.to_svg(renderer="builtin")  # the fallback, whether or not graphviz is installed
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert svg_uid_texts(svg) == {op.uid for op in plan.operators}
    groups = {
        kind: [g for g in root.iter(f"{SVG}g") if kind in g.get("class", "").split()]
        for kind in ("chain", "edge", "operator")
    }
    assert len(groups["chain"]) == len(plan.chains)
    assert len(groups["operator"]) == len(plan.operators)
    assert [g.get("class") for g in groups["edge"]] == [f"edge {edge.kind}" for edge in plan.edges]
    text = svg_text(svg)
    for chain in plan.chains:
        assert f"chain {chain.index} · parallelism {chain.parallelism}" in text
    for edge in plan.edges:
        assert edge.label in text
    # Every arrowhead used is defined, and ids are unique.
    ids = [element.get("id") for element in root.iter() if element.get("id")]
    assert len(ids) == len(set(ids))
    used = set(re.findall(r"url\(#([^)]+)\)", svg))
    assert used and used <= set(ids)


def test_the_builtin_layout_puts_chains_in_columns_by_depth() -> None:
    plan = branching_pipeline().plan()
    root = ET.fromstring(plan.to_svg(renderer="builtin"))
    left = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "chain":
            rect = group.find(f"{SVG}rect")
            assert rect is not None
            left[int(str(group.get("id")).rsplit("chain", 1)[1])] = float(str(rect.get("x")))
    # numbers and rules start; join is fed by both; text and dedup follow join, side by side.
    assert left[0] == left[1] < left[2] < left[3] == left[4]


def test_auto_falls_back_to_the_builtin_layout_without_graphviz(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    plan = branching_pipeline().plan()
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program to be found
    assert plan.to_svg() == plan.to_svg(renderer="builtin")
    with pytest.raises(lg.ConfigurationError, match="renderer='builtin'"):
        plan.to_svg(renderer="graphviz")
    with pytest.raises(lg.ConfigurationError, match="'auto', 'graphviz' or 'builtin'"):
        plan.to_svg(renderer="pretty")  # type: ignore[arg-type]


def test_graphviz_draws_the_svg_when_it_is_installed() -> None:
    pytest.importorskip("graphviz", reason="the graphviz package is not installed (lockgate[graphviz])")
    dot_program()
    plan = awkward_pipeline().plan()
    svg = plan.to_svg(renderer="graphviz")
    assert svg.startswith("<svg")
    text = svg_text(svg)
    for op in plan.operators:
        assert op.uid in text
    assert plan.to_svg() == svg  # auto takes graphviz when it can


def test_control_characters_in_uids_are_shown_escaped_in_every_form() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1], uid="two\nlines").map(abs, uid="bell\x07").sink(lg.CollectSink(), uid="out")
    plan = env.plan()
    svg = plan.to_svg(renderer="builtin")
    assert svg_uid_texts(svg) == {"two\\nlines", "bell\\x07", "out"}
    assert "two\\\\nlines" in plan.to_dot()  # a literal backslash and n, not a line break
    assert "two\\nlines" in plan.to_mermaid()
    assert "\n" not in repr(plan)
    if shutil.which("dot"):
        assert (
            subprocess.run(["dot", "-Tsvg"], input=plan.to_dot(), capture_output=True, text=True).returncode
            == 0
        )


def test_a_plan_shows_itself_in_a_notebook() -> None:
    plan = branching_pipeline().plan()
    assert plan._repr_svg_() == plan.to_svg()
    page = plan._repr_html_()
    assert page.startswith('<div class="lockgate-plan">')
    assert "5 chains, 9 operators" in page
    assert plan.to_svg() in page


# ---- a running and an ended job


async def test_a_running_jobs_plan_equals_what_the_environment_said() -> None:
    queue: lg.QueueSource[int] = lg.QueueSource()
    env = lg.StreamEnvironment(parallelism=2)
    sink = keyed_pipeline(env, source=queue)
    before = env.plan()
    with anyio.fail_after(GUARD):
        job = await env.start("planned")
        try:
            assert job.status is lg.JobStatus.RUNNING
            assert job.plan() == before
            assert '<td style="text-align: left">running</td>' in job._repr_html_()
            await queue.put(1)
        finally:
            queue.close()
            await job.wait()
    assert job.plan() == before == env.plan()
    assert sink.results == [(2, 1)]


async def test_a_finished_job_and_its_checkpoint_stats_show_themselves_as_html() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(60.0)  # only the final checkpoint, at the end of the input
    keyed_pipeline(env)
    name = '<script>alert("job")</script>'
    with anyio.fail_after(GUARD):
        job = await env.start(name)
        await job.wait()
    stats = job.checkpoint_stats
    assert stats.completed >= 1
    page = job._repr_html_()
    assert name not in page and html.escape(name) in page
    assert '<td style="text-align: left">finished</td>' in page
    assert re.search(r"<th[^>]*>restarts</th><td[^>]*>0</td>", page)
    assert f"{stats.completed} completed, {stats.failed} failed, 0 in progress" in page
    assert job.plan().to_svg() in page
    assert stats._repr_html_() in page

    table = stats._repr_html_()
    rows = re.findall(r"<tr><td[^>]*>(\d+)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>", table)
    assert rows == [(str(s.id), "checkpoint", s.status) for s in stats.history]


def test_checkpoint_stats_html_escapes_failures_and_shows_kinds_durations_and_sizes() -> None:
    stats = lg.CheckpointStatsSnapshot(
        completed=1,
        failed=1,
        in_progress=0,
        history=[
            lg.CheckpointStats(
                1,
                "completed",
                0.25,
                persisted_bytes=2048,
                full_bytes=3 << 20,
                unaligned=True,
                in_flight_bytes=10,
            ),
            lg.CheckpointStats(2, "failed", 1.5, failure="<declined> & 'timed out'", savepoint=True),
        ],
    )
    table = stats._repr_html_()
    assert "1 completed, 1 failed, 0 in progress" in table
    assert "<declined>" not in table and html.escape("failed: <declined> & 'timed out'") in table
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", table)
    assert cells[:10] == [
        "1",
        "checkpoint (unaligned)",
        "completed",
        "250.0 ms",
        "0.0 ms",
        "0.0 ms",
        "0.0 ms",
        "2.0 kB",
        "3.0 MB",
        "10 B",
    ]
    assert cells[10:13] == ["2", "savepoint", html.escape("failed: <declined> & 'timed out'")]
    assert len(re.findall(r"<th>", table)) == 10
    many = lg.CheckpointStatsSnapshot(30, 0, 0, [lg.CheckpointStats(n, "completed", 0.1) for n in range(30)])
    assert "(the last 20 of 30 shown)" in many._repr_html_()
