"""A plan drawn as SVG without Graphviz: a simple layered layout, left to right.

Each chain is a box in the column of its depth (the longest path from a source to it), its operators
stacked inside it head first; chains in a column are ordered by where the chains feeding them sit, which
keeps most edges from crossing. Edges are curves from the operator whose output they carry to the head of
the target chain, with an arrowhead and their kind as a label. Text widths are estimated from the
character count in a monospace font, so the layout needs no font metrics.
"""

from __future__ import annotations

import hashlib
import html
import itertools
from dataclasses import dataclass

from lockgate.observe._plan import Plan, PlanChain, PlanOperator, chain_title, operator_lines, visible

_FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
_UID_SIZE = 12
_DETAIL_SIZE = 10
_CHAR_WIDTH = 0.62  # of the font size: a little more than common monospace fonts need
_UID_LINE = 16
_DETAIL_LINE = 13
_PAD = 8
_HEADER = 20
_OPERATOR_GAP = 16  # between operators of a chain: room for the chained arrow
_CHAIN_GAP = 28
_MIN_COLUMN_GAP = 72
_LABEL_LINE = 14
_MARGIN = 12

#: Per edge kind: stroke colour, width and dash pattern (None: solid).
_EDGE_LOOKS: dict[str, tuple[str, float, str | None]] = {
    "forward": ("#5b6b82", 1.4, None),
    "hash": ("#2f6db5", 2.2, None),
    "rebalance": ("#5b6b82", 1.4, "6 4"),
    "broadcast": ("#c07a12", 2.0, "2 3"),
}
_CHAINED_COLOUR = "#8fa3c0"


@dataclass
class _Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @property
    def middle_y(self) -> float:
        return self.y + self.height / 2


def _text_width(text: str, size: int) -> float:
    return len(text) * size * _CHAR_WIDTH


def _operator_size(operator: PlanOperator) -> tuple[float, float]:
    uid, *details = operator_lines(operator)
    width = max([_text_width(uid, _UID_SIZE)] + [_text_width(d, _DETAIL_SIZE) for d in details])
    return width + 2 * _PAD, _UID_LINE + _DETAIL_LINE * len(details) + _PAD


def _depths(plan: Plan) -> dict[int, int]:
    depth: dict[int, int] = {}
    for chain in plan.chains:  # every chain comes after the chains feeding it
        sources = [e.source_chain for e in plan.edges if e.target_chain == chain.index]
        depth[chain.index] = max((depth[s] + 1 for s in sources), default=0)
    return depth


def layered_svg(plan: Plan) -> str:
    """The plan as an ``<svg>`` element laid out in columns by depth (see the module's docstring)."""
    depth = _depths(plan)
    columns: list[list[PlanChain]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for chain in plan.chains:
        columns[depth[chain.index]].append(chain)

    # Sizes: every operator of a chain as wide as the chain's widest.
    sizes = {op.uid: _operator_size(op) for op in plan.operators}
    chain_width: dict[int, float] = {}
    chain_height: dict[int, float] = {}
    for chain in plan.chains:
        inner = max(
            [sizes[op.uid][0] for op in chain.operators] + [_text_width(chain_title(chain), _DETAIL_SIZE)]
        )
        chain_width[chain.index] = inner + 2 * _PAD
        chain_height[chain.index] = (
            _HEADER
            + sum(sizes[op.uid][1] for op in chain.operators)
            + _OPERATOR_GAP * (len(chain.operators) - 1)
            + _PAD
        )

    # Columns left to right; the gap after a column fits the labels of the edges leaving it.
    column_x: list[float] = []
    x = float(_MARGIN)
    for column in columns:
        column_x.append(x)
        leaving = {chain.index for chain in column}
        labels = [_text_width(e.label, _DETAIL_SIZE) for e in plan.edges if e.source_chain in leaving]
        gap = max([_MIN_COLUMN_GAP, *(label + 24 for label in labels)])
        x += max(chain_width[chain.index] for chain in column) + gap
    width = x - _MIN_COLUMN_GAP + _MARGIN if columns else 2 * _MARGIN
    column_heights = [
        sum(chain_height[c.index] for c in column) + _CHAIN_GAP * (len(column) - 1) for column in columns
    ]
    height = max(column_heights, default=0) + 2 * _MARGIN

    # Rows: a column's chains ordered by the mean height of the chains that feed them, centred.
    chain_box: dict[int, _Box] = {}
    for number, column in enumerate(columns):

        def feeding_height(chain: PlanChain) -> float:
            fed_by = [chain_box[e.source_chain].middle_y for e in plan.edges if e.target_chain == chain.index]
            return sum(fed_by) / len(fed_by) if fed_by else 0.0

        if number:
            column.sort(key=lambda chain: (feeding_height(chain), chain.index))
        y = _MARGIN + (height - 2 * _MARGIN - column_heights[number]) / 2
        for chain in column:
            size = chain_width[chain.index], chain_height[chain.index]
            chain_box[chain.index] = _Box(column_x[number], y, *size)
            y += size[1] + _CHAIN_GAP

    operator_box: dict[str, _Box] = {}
    for chain in plan.chains:
        box = chain_box[chain.index]
        y = box.y + _HEADER
        for op in chain.operators:
            operator_box[op.uid] = _Box(box.x + _PAD, y, box.width - 2 * _PAD, sizes[op.uid][1])
            y += sizes[op.uid][1] + _OPERATOR_GAP

    return _Drawing(plan, chain_box, operator_box, width, height).svg()


class _Drawing:
    """Writes the SVG of a laid-out plan."""

    def __init__(
        self,
        plan: Plan,
        chain_box: dict[int, _Box],
        operator_box: dict[str, _Box],
        width: float,
        height: float,
    ) -> None:
        self.plan = plan
        self.chain_box = chain_box
        self.operator_box = operator_box
        self.width = width
        self.height = height
        # Ids unique to this plan's picture: a notebook may show several inline in one document.
        digest = hashlib.sha1(plan.to_dot().encode("utf-8", "backslashreplace")).hexdigest()
        self.prefix = f"lgplan-{digest[:10]}"
        self.kinds = sorted({edge.kind for edge in plan.edges} | {"forward"})

    def marker_id(self, kind: str) -> str:
        return f"{self.prefix}-arrow{self.kinds.index(kind)}"

    def svg(self) -> str:
        summary = f"plan: {len(self.plan.chains)} chains, {len(self.plan.operators)} operators"
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(self.width)}" height="{_n(self.height)}" '
            f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" font-family="{html.escape(_FONT)}" '
            f'role="img" aria-label="{summary}">',
            f"<title>{summary}</title>",
            "<defs>",
            *(self.marker(kind) for kind in self.kinds),
            f'<marker id="{self.prefix}-chained" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
            f'markerHeight="6" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{_CHAINED_COLOUR}"/></marker>',
            "</defs>",
        ]
        for chain in self.plan.chains:
            parts.append(self.chain(chain))
        parts += self.edges()
        parts.append("</svg>")
        return "\n".join(parts) + "\n"

    def marker(self, kind: str) -> str:
        colour = _EDGE_LOOKS.get(kind, _EDGE_LOOKS["forward"])[0]
        return (
            f'<marker id="{self.marker_id(kind)}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )

    def chain(self, chain: PlanChain) -> str:
        box = self.chain_box[chain.index]
        parts = [
            f'<g class="chain" id="{self.prefix}-chain{chain.index}">',
            f"<title>{html.escape(chain_title(chain))}</title>",
            f'<rect x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.width)}" height="{_n(box.height)}" '
            f'rx="8" fill="#eef2f8" stroke="{_CHAINED_COLOUR}"/>',
            f'<text x="{_n(box.x + _PAD)}" y="{_n(box.y + 14)}" font-size="{_DETAIL_SIZE}" '
            f'fill="#5b6b82">{html.escape(chain_title(chain))}</text>',
        ]
        for op in chain.operators:
            parts.append(self.operator(op))
        for upstream, downstream in itertools.pairwise(chain.operators):
            above, below = self.operator_box[upstream.uid], self.operator_box[downstream.uid]
            middle = above.x + above.width / 2
            parts.append(
                f'<line class="chained" x1="{_n(middle)}" y1="{_n(above.bottom)}" x2="{_n(middle)}" '
                f'y2="{_n(below.y - 1)}" stroke="{_CHAINED_COLOUR}" stroke-width="1.4" '
                f'marker-end="url(#{self.prefix}-chained)"/>'
            )
        parts.append("</g>")
        return "\n".join(parts)

    def operator(self, op: PlanOperator) -> str:
        box = self.operator_box[op.uid]
        uid, *details = operator_lines(op)
        tooltip = f"{uid}: {' · '.join(details)}, parallelism {op.parallelism}"
        fill = "#fdf1dc" if op.keyed else "#ffffff"
        parts = [
            f'<g class="operator"><title>{html.escape(tooltip)}</title>',
            f'<rect x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.width)}" height="{_n(box.height)}" '
            f'rx="5" fill="{fill}" stroke="#5b6b82"/>',
            f'<text class="uid" x="{_n(box.x + _PAD)}" y="{_n(box.y + _UID_LINE - 2)}" '
            f'font-size="{_UID_SIZE}" font-weight="bold" fill="#1d2633">{html.escape(uid)}</text>',
        ]
        y = box.y + _UID_LINE - 2
        for line in details:
            y += _DETAIL_LINE
            parts.append(
                f'<text x="{_n(box.x + _PAD)}" y="{_n(y)}" font-size="{_DETAIL_SIZE}" '
                f'fill="#5b6b82">{html.escape(line)}</text>'
            )
        parts.append("</g>")
        return "\n".join(parts)

    def edges(self) -> list[str]:
        # Several edges at one operator side leave (or arrive) at points spread along it, in the
        # order of their other ends' heights, so they do not start on top of each other.
        leaving: dict[str, list[int]] = {}
        arriving: dict[str, list[int]] = {}
        for number, edge in enumerate(self.plan.edges):
            leaving.setdefault(edge.source_uid, []).append(number)
            arriving.setdefault(edge.target_uid, []).append(number)
        edges = self.plan.edges
        for numbers in leaving.values():
            numbers.sort(key=lambda n: (self.operator_box[edges[n].target_uid].middle_y, n))
        for numbers in arriving.values():
            numbers.sort(key=lambda n: (self.operator_box[edges[n].source_uid].middle_y, n))

        def port(box: _Box, numbers: list[int], number: int) -> float:
            return box.y + box.height * (numbers.index(number) + 1) / (len(numbers) + 1)

        parts: list[str] = []
        labels: list[str] = []
        placed: list[_Box] = []  # the labels so far: a label that would cover one moves down
        for number, edge in enumerate(self.plan.edges):
            start, end = self.operator_box[edge.source_uid], self.operator_box[edge.target_uid]
            x0, y0 = start.right, port(start, leaving[edge.source_uid], number)
            x1, y1 = end.x - 1, port(end, arriving[edge.target_uid], number)
            bend = max(24.0, (x1 - x0) / 2)
            colour, stroke_width, dash = _EDGE_LOOKS.get(edge.kind, _EDGE_LOOKS["forward"])
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            label = html.escape(visible(edge.label))
            label_width = _text_width(visible(edge.label), _DETAIL_SIZE)
            # Just above the curve's middle; a label's box is a line high, with a little air.
            spot = _Box(
                (x0 + x1 - label_width) / 2, (y0 + y1) / 2 - _LABEL_LINE - 3, label_width, _LABEL_LINE
            )
            while any(_overlap(spot, other) for other in placed):
                spot.y += _LABEL_LINE
            placed.append(spot)
            parts.append(
                f'<g class="edge {html.escape(edge.kind)}"><title>{label}: '
                f"{html.escape(visible(edge.source_uid))} to {html.escape(visible(edge.target_uid))}</title>"
                f'<path d="M{_n(x0)},{_n(y0)} C{_n(x0 + bend)},{_n(y0)} {_n(x1 - bend)},{_n(y1)} '
                f'{_n(x1)},{_n(y1)}" fill="none" stroke="{colour}" stroke-width="{stroke_width}"{dashes} '
                f'marker-end="url(#{self.marker_id(edge.kind)})"/></g>'
            )
            labels.append(
                f'<text x="{_n(spot.x + label_width / 2)}" y="{_n(spot.bottom - 3)}" '
                f'font-size="{_DETAIL_SIZE}" '
                f'text-anchor="middle" fill="{colour}" stroke="#ffffff" stroke-width="3" '
                f'paint-order="stroke">{label}</text>'
            )
        # Labels over every line, so no later line crosses an earlier label.
        parts += ['<g class="edge-labels">', *labels, "</g>"]
        return parts


def _overlap(one: _Box, other: _Box) -> bool:
    return one.x < other.right and other.x < one.right and one.y < other.bottom and other.y < one.bottom


def _n(value: float) -> str:
    """A coordinate, short: no trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
