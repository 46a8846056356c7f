"""A job's plan: its operators, how they chain into vertices, the edges between them, and pictures of it
(Graphviz DOT, Mermaid, SVG) for documents and notebooks."""

from __future__ import annotations

import html
import itertools
import shutil
import unicodedata
from dataclasses import dataclass
from typing import Literal

from lockgate._errors import ConfigurationError
from lockgate.graph import JobGraph, OperatorTransformation, SinkSpec, SourceTransformation, Transformation

#: Who draws the SVG: ``"graphviz"`` (the ``graphviz`` package and the ``dot`` program), ``"builtin"``
#: (a layered layout written here, without dependencies), or ``"auto"``: graphviz when both are
#: installed, else the builtin layout.
Renderer = Literal["auto", "graphviz", "builtin"]


@dataclass(frozen=True)
class PlanOperator:
    """One operator of a plan.

    Attributes:
        uid: The operator's uid (what checkpoints and savepoints map its state by).
        name: Its name (the uid unless one was given).
        kind: What it does: ``"source"``, ``"map"``, ``"keyed_process"``, ``"window"``, ``"sink"``, ...
        parallelism: How many subtasks run it.
        keyed: Whether it keeps keyed state (its input is a keyed stream).
        connector: The class of a source's or a sink's connector (``"CollectSink"``); None otherwise.
    """

    uid: str
    name: str
    kind: str
    parallelism: int
    keyed: bool
    connector: str | None = None


@dataclass(frozen=True)
class PlanChain:
    """Operators chained into one vertex: each subtask of the vertex runs all of them in turn, in one
    actor, handing batches on without a channel. ``operators[0]`` is the head, which the chain's
    inputs reach.

    Attributes:
        index: The chain's place in the plan (inputs come before the chains they feed).
        operators: Its operators, head first.
        parallelism: How many subtasks run the chain.
    """

    index: int
    operators: tuple[PlanOperator, ...]
    parallelism: int


@dataclass(frozen=True)
class PlanEdge:
    """Records flowing from one chain to another, through channels.

    Attributes:
        source_chain: The index of the chain the records leave.
        target_chain: The index of the chain they reach (at its head).
        kind: How records are spread over the target's subtasks: ``"forward"`` (subtask i to subtask
            i), ``"hash"`` (by key group: a keyed stream), ``"rebalance"`` (round-robin) or
            ``"broadcast"`` (every subtask gets every record).
        source_uid: The operator whose output the edge carries: the source chain's last operator, or,
            for a side output, the operator that emits it.
        target_uid: The target chain's head.
        input_index: Which input of the target it feeds (1 only for the second input of a two-input
            operator, such as the broadcast side of ``connect``).
        side_output: The side output's tag name, for an edge carrying a side output; None for a main
            output.
    """

    source_chain: int
    target_chain: int
    kind: str
    source_uid: str
    target_uid: str
    input_index: int = 0
    side_output: str | None = None

    @property
    def label(self) -> str:
        """The edge's kind, with its side output and its input when they are not the plain ones."""
        text = self.kind
        if self.side_output is not None:
            text += f" [{visible(self.side_output)}]"
        if self.input_index:
            text += f" (input {self.input_index + 1})"
        return text


@dataclass(frozen=True)
class Plan:
    """What a job runs: its operators, chained into vertices, and the edges between the chains.

    ``env.plan()`` tells it before a run (built as ``execute`` would build it, without running
    anything) and ``job.plan()`` of a running or ended job; for the same pipeline the two are equal.
    :meth:`to_dot` and :meth:`to_mermaid` give text forms; in a notebook the plan draws itself as an
    SVG (:meth:`to_svg`).

    Attributes:
        chains: The chains (vertices), every chain after the chains that feed it.
        edges: The edges between chains, grouped by target chain.
        max_parallelism: The job's number of key groups.
    """

    chains: tuple[PlanChain, ...]
    edges: tuple[PlanEdge, ...]
    max_parallelism: int

    @classmethod
    def from_job_graph(cls, graph: JobGraph) -> Plan:
        """The plan of a job graph (a record of plain values: it holds none of the user's objects)."""
        chains = tuple(
            PlanChain(
                vertex.index,
                tuple(_operator(node, vertex.parallelism) for node in vertex.operators),
                vertex.parallelism,
            )
            for vertex in graph.vertices
        )
        edges = tuple(
            PlanEdge(
                source_chain=edge.source.index,
                target_chain=edge.target.index,
                kind=edge.partitioner.name,
                source_uid=edge.side_output[0] if edge.side_output else edge.source.operators[-1].uid,
                target_uid=edge.target.operators[0].uid,
                input_index=edge.input_index,
                side_output=edge.side_output[1].name if edge.side_output else None,
            )
            for vertex in graph.vertices
            for edge in vertex.inputs
        )
        return cls(chains, edges, graph.max_parallelism)

    @property
    def operators(self) -> tuple[PlanOperator, ...]:
        """Every operator, chain by chain, head first."""
        return tuple(operator for chain in self.chains for operator in chain.operators)

    def __repr__(self) -> str:
        chains = " | ".join(" -> ".join(visible(op.uid) for op in chain.operators) for chain in self.chains)
        return f"<Plan [{len(self.chains)} chains, {len(self.operators)} operators: {chains}]>"

    # ---- text forms

    def to_dot(self) -> str:
        """The plan in Graphviz's DOT language: one cluster per chain (labelled with its parallelism),
        one box per operator, and edges labelled with their kind. Render it with
        ``dot -Tsvg plan.dot -o plan.svg``, or ``graphviz.Source(plan.to_dot())``."""
        ids = self._node_ids()
        lines = [
            "digraph plan {",
            "  rankdir=LR;",
            '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", color="#5b6b82", '
            'fontname="Helvetica", fontsize=11];',
            '  edge [fontname="Helvetica", fontsize=10, color="#5b6b82"];',
        ]
        for chain in self.chains:
            lines += [
                f"  subgraph cluster_{chain.index} {{",
                f"    label={_dot_string(chain_title(chain))};",
                '    style="rounded,filled"; fillcolor="#eef2f8"; color="#8fa3c0"; fontname="Helvetica"; '
                "fontsize=10;",
            ]
            for operator in chain.operators:
                fill = ', fillcolor="#fdf1dc"' if operator.keyed else ""
                label = "\n".join(operator_lines(operator))
                lines.append(f"    {ids[operator.uid]} [label={_dot_string(label)}{fill}];")
            for upstream, downstream in itertools.pairwise(chain.operators):
                lines.append(f'    {ids[upstream.uid]} -> {ids[downstream.uid]} [color="#8fa3c0"];')
            lines.append("  }")
        for edge in self.edges:
            style = _DOT_EDGE_STYLES.get(edge.kind, "")
            label = _dot_string(edge.label)
            lines.append(f"  {ids[edge.source_uid]} -> {ids[edge.target_uid]} [label={label}{style}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """The plan as a Mermaid flowchart (left to right): one subgraph per chain (titled with its
        parallelism), one node per operator, and edges labelled with their kind. Paste it into a
        Markdown file between ```` ```mermaid ```` fences."""
        ids = self._node_ids()
        lines = ["flowchart LR"]
        for chain in self.chains:
            lines.append(f"  subgraph chain{chain.index}[{_mermaid_string(chain_title(chain))}]")
            lines.append("    direction TB")
            for operator in chain.operators:
                label = "<br>".join(_mermaid_text(line) for line in operator_lines(operator))
                lines.append(f'    {ids[operator.uid]}["{label}"]')
            for upstream, downstream in itertools.pairwise(chain.operators):
                lines.append(f"    {ids[upstream.uid]} --> {ids[downstream.uid]}")
            lines.append("  end")
        for edge in self.edges:
            arrow = _MERMAID_ARROWS.get(edge.kind, "-->")
            lines.append(
                f"  {ids[edge.source_uid]} {arrow}|{_mermaid_string(edge.label)}| {ids[edge.target_uid]}"
            )
        keyed = [ids[operator.uid] for operator in self.operators if operator.keyed]
        if keyed:
            lines.append("  classDef keyed fill:#fdf1dc,stroke:#5b6b82")
            lines.append(f"  class {','.join(keyed)} keyed")
        return "\n".join(lines) + "\n"

    def _node_ids(self) -> dict[str, str]:
        # Generated ids: uids may hold any character, so they appear only in escaped labels.
        return {operator.uid: f"op{number}" for number, operator in enumerate(self.operators)}

    # ---- pictures

    def to_svg(self, renderer: Renderer = "auto") -> str:
        """The plan drawn as an SVG document (the ``<svg>`` element, without an XML prolog).

        Args:
            renderer: ``"graphviz"`` lays it out with Graphviz (the ``graphviz`` package, ``pip
                install lockgate[graphviz]``, and its ``dot`` program); ``"builtin"`` with a simple
                layered layout written here (chains in columns by depth, left to right), which needs
                nothing; ``"auto"`` (the default) takes graphviz when both are installed.

        Raises:
            ConfigurationError: ``renderer="graphviz"`` without the package or the program, or an
                unknown renderer.
        """
        if renderer == "auto":
            renderer = "graphviz" if graphviz_available() else "builtin"
        if renderer == "builtin":
            from lockgate.observe._svg_layout import layered_svg

            return layered_svg(self)
        if renderer == "graphviz":
            return _graphviz_svg(self.to_dot())
        raise ConfigurationError(f"renderer is 'auto', 'graphviz' or 'builtin', got {renderer!r}")

    def to_html(self, renderer: Renderer = "auto") -> str:
        """A summary line and the picture (:meth:`to_svg`), as an HTML fragment."""
        summary = (
            f"{len(self.chains)} chains, {len(self.operators)} operators, "
            f"max parallelism {self.max_parallelism}"
        )
        return (
            '<div class="lockgate-plan">'
            f'<div style="font: 12px sans-serif; color: #5b6b82; margin-bottom: 4px">'
            f"plan: {html.escape(summary)}</div>{self.to_svg(renderer)}</div>"
        )

    def _repr_svg_(self) -> str:
        return self.to_svg()

    def _repr_html_(self) -> str:
        return self.to_html()


def graphviz_available() -> bool:
    """Whether the ``graphviz`` package and Graphviz's ``dot`` program are both installed."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _graphviz_svg(dot: str) -> str:
    try:
        import graphviz
    except ImportError:
        raise ConfigurationError(
            "drawing with graphviz needs the graphviz package: pip install 'lockgate[graphviz]' "
            "(and Graphviz's dot program), or use renderer='builtin'"
        ) from None
    if shutil.which("dot") is None:
        raise ConfigurationError(
            "drawing with graphviz needs Graphviz's dot program on the PATH (apt-get install graphviz, "
            "brew install graphviz), or use renderer='builtin'"
        )
    svg = graphviz.Source(dot).pipe(format="svg", encoding="utf-8")
    assert isinstance(svg, str)
    # Inline in HTML, the XML prolog and doctype before the element are out of place.
    return svg[svg.index("<svg") :]


def _operator(node: Transformation, parallelism: int) -> PlanOperator:
    if isinstance(node, SourceTransformation):
        return PlanOperator(node.uid, node.name, "source", parallelism, False, type(node.source).__name__)
    assert isinstance(node, OperatorTransformation)
    spec = node.spec
    connector = type(spec.sink).__name__ if isinstance(spec, SinkSpec) else None
    return PlanOperator(node.uid, node.name, spec.kind, parallelism, spec.keyed, connector)


def chain_title(chain: PlanChain) -> str:
    return f"chain {chain.index} · parallelism {chain.parallelism}"


def operator_lines(operator: PlanOperator) -> list[str]:
    """What a picture writes in an operator's box: its uid, then what it is."""
    details = [operator.kind]
    if operator.keyed:
        details.append("keyed")
    if operator.connector is not None:
        details.append(operator.connector)
    lines = [visible(operator.uid), " · ".join(details)]
    if operator.name != operator.uid:
        lines.append(f"name: {visible(operator.name)}")
    return lines


def visible(text: str) -> str:
    """``text`` with control characters and lone surrogates written as Python escapes (``\\n``,
    ``\\x01``): every picture shows a uid on one line, and XML cannot hold such characters at all."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff"
        else char
        for char in text
    )


def _dot_string(text: str) -> str:
    # In a DOT label a backslash starts an escape (\n, \N, \G ...), so a literal one is doubled;
    # newlines we put in become \n (centred lines).
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


#: Characters Mermaid would read as syntax or markup inside a quoted label, written as its entity
#: codes (``#34;``), which it turns back into the characters.
_MERMAID_ESCAPES = {char: f"#{ord(char)};" for char in '"#&<>`'}


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(char, char) for char in text)


def _mermaid_string(text: str) -> str:
    return f'"{_mermaid_text(text)}"'


_DOT_EDGE_STYLES = {
    "hash": ', style=bold, color="#2f6db5"',
    "rebalance": ", style=dashed",
    "broadcast": ', style="bold,dotted", color="#c07a12"',
}

_MERMAID_ARROWS = {"hash": "==>", "rebalance": "-.->", "broadcast": "-.->"}
