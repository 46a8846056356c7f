// The lockgate dashboard: polls the job server's JSON routes and draws the job graph, the operators'
// figures and the checkpoint history. Everything from the job (uids, names, errors) goes into the
// page as text (textContent, attribute values), never as markup.
"use strict";

(() => {
  const POLL_MS = 1000;
  const HISTORY_BARS = 40;
  const HISTORY_ROWS = 30;
  const MAX_WATERMARK_FLOOR = 9.2e18; // 2**63 - 1 as a double: the end of the input
  const SVG_NS = document.getElementById("graph").namespaceURI;

  // The page may be opened as /?token=...: its requests then carry the token as a header.
  const token = new URLSearchParams(window.location.search).get("token");
  const requestHeaders = token ? { Authorization: "Bearer " + token } : {};

  const COLOURS = {
    idle: [0x4f, 0x86, 0xc6],
    busy: [0xd4, 0x3f, 0x3a],
    backpressured: [0x2b, 0x2b, 0x2b],
    nodata: [0xc8, 0xcd, 0xd4],
  };
  const STATUSES = ["running", "restarting", "finished", "failed", "cancelled"];
  const CHECKPOINT_STATUSES = ["completed", "failed", "in_progress"];

  const byId = (id) => document.getElementById(id);
  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  // ---- formatting ----------------------------------------------------------------------------

  function count(value) {
    return typeof value === "number" ? integer.format(value) : "\u2013";
  }

  function rate(value) {
    if (typeof value !== "number") return "\u2013";
    return value < 100 ? decimal.format(value) : integer.format(value);
  }

  function percent(msPerSecond) {
    return typeof msPerSecond === "number" ? integer.format(msPerSecond / 10) + " %" : "\u2013";
  }

  function seconds(value) {
    if (typeof value !== "number") return "\u2013";
    if (value < 1) {
      const ms = value * 1000;
      return (ms < 10 ? decimal.format(ms) : integer.format(ms)) + " ms";
    }
    return value.toFixed(2) + " s";
  }

  function bytes(value) {
    if (typeof value !== "number") return "\u2013";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let size = value;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return (unit === 0 ? integer.format(size) : decimal.format(size)) + " " + units[unit];
  }

  function watermark(value) {
    if (typeof value !== "number") return "\u2013";
    if (value >= MAX_WATERMARK_FLOOR) return "end of input";
    if (value > 1e11 && value < 1e14) {
      // Milliseconds since the epoch: a readable UTC time.
      return new Date(value).toISOString().replace("T", " ").replace("Z", "");
    }
    return String(value);
  }

  // ---- figures -------------------------------------------------------------------------------

  // The figures of each operator over its subtasks: counts and rates summed, time shares averaged,
  // watermarks the lowest (none while any subtask has none).
  function perOperator(metrics) {
    const operators = new Map();
    const subtasks = [];
    for (const [key, figures] of Object.entries(metrics)) {
      const match = /^(.*)\[(\d+)\]$/s.exec(key);
      if (!match || figures === null || typeof figures !== "object") continue;
      subtasks.push({ key, uid: match[1], subtask: Number(match[2]), figures });
      let sum = operators.get(match[1]);
      if (!sum) {
        sum = {
          subtasks: 0, numRecordsIn: 0, numRecordsOut: 0, numRecordsInPerSecond: 0,
          numRecordsOutPerSecond: 0, busyTimeMsPerSecond: 0, backPressuredTimeMsPerSecond: 0,
          idleTimeMsPerSecond: 0, currentInputWatermark: undefined, currentOutputWatermark: undefined,
        };
        operators.set(match[1], sum);
      }
      sum.subtasks += 1;
      for (const name of [
        "numRecordsIn", "numRecordsOut", "numRecordsInPerSecond", "numRecordsOutPerSecond",
        "busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond",
      ]) {
        sum[name] += typeof figures[name] === "number" ? figures[name] : 0;
      }
      for (const name of ["currentInputWatermark", "currentOutputWatermark"]) {
        const given = typeof figures[name] === "number" ? figures[name] : null;
        if (sum[name] === undefined) sum[name] = given;
        else if (sum[name] !== null) sum[name] = given === null ? null : Math.min(sum[name], given);
      }
    }
    for (const sum of operators.values()) {
      for (const name of ["busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond"]) {
        sum[name] /= sum.subtasks;
      }
    }
    subtasks.sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : a.subtask - b.subtask));
    return { operators, subtasks };
  }

  // The time shares of an operator, and its colour: the blend of the colours of idle, busy and
  // backpressured, each weighted by its share of the time.
  function shares(figures) {
    const busy = (figures && figures.busyTimeMsPerSecond) || 0;
    const pressured = (figures && figures.backPressuredTimeMsPerSecond) || 0;
    const idle = (figures && figures.idleTimeMsPerSecond) || 0;
    const total = busy + pressured + idle;
    if (total < 1) return { busy: 0, pressured: 0, idle: 0, colour: COLOURS.nodata, known: false };
    const weights = [busy / total, pressured / total, idle / total];
    const colour = [0, 1, 2].map((channel) =>
      Math.round(
        weights[0] * COLOURS.busy[channel] +
          weights[1] * COLOURS.backpressured[channel] +
          weights[2] * COLOURS.idle[channel],
      ),
    );
    return { busy: weights[0], pressured: weights[1], idle: weights[2], colour, known: true };
  }

  function css(colour) {
    return "rgb(" + colour.join(", ") + ")";
  }

  function inkOn(colour) {
    const luminance = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) / 255;
    return luminance > 0.6 ? "#1d232b" : "#ffffff";
  }

  // ---- DOM helpers ---------------------------------------------------------------------------

  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
    if (parent) parent.appendChild(element);
    return element;
  }

  function svgText(parent, x, y, text, className, anchor) {
    const element = svg("text", { x, y, class: className, "text-anchor": anchor || "start" }, parent);
    element.textContent = text;
    return element;
  }

  function cell(row, text, className) {
    const element = document.createElement("td");
    element.textContent = text;
    if (className) element.className = className;
    row.appendChild(element);
    return element;
  }

  function clear(element) {
    while (element.firstChild) element.removeChild(element.firstChild);
  }

  function shorten(text, length) {
    return text.length > length ? text.slice(0, length - 1) + "\u2026" : text;
  }

  // ---- the job graph -------------------------------------------------------------------------

  const BOX_WIDTH = 260;
  const ROW_HEIGHT = 72;
  const LINK = 10;
  const HEADER = 22;
  const PAD = 8;
  const COLUMN_GAP = 120;
  const BOX_GAP = 30;
  const MARGIN = 12;
  const WAYPOINT = 18;

  let graphKey = null;
  let graphRows = new Map(); // uid -> the SVG elements that show its figures

  // A layered layout: each vertex in the column of its longest path from a source; an edge that
  // passes columns by gets a waypoint in each (a slot of its own, so it runs between the boxes).
  // In each column, boxes and waypoints are ordered by where their inputs are (the mean of their
  // rows), so that edges cross little.
  function layOut(job) {
    const height = (vertex) =>
      HEADER + vertex.operators.length * ROW_HEIGHT + (vertex.operators.length - 1) * LINK + PAD;
    const nodes = new Map();
    for (const vertex of job.vertices) {
      nodes.set("v" + vertex.index, { column: 0, height: height(vertex), inputs: [], order: vertex.index });
    }
    const edges = job.edges.filter((edge) => nodes.has("v" + edge.source) && nodes.has("v" + edge.target));
    for (const vertex of job.vertices) {
      const node = nodes.get("v" + vertex.index);
      for (const edge of edges) {
        if (edge.target === vertex.index) {
          node.column = Math.max(node.column, nodes.get("v" + edge.source).column + 1);
        }
      }
    }
    const waypoints = new Map();
    edges.forEach((edge, number) => {
      let previous = "v" + edge.source;
      const passing = [];
      const last = nodes.get("v" + edge.target).column;
      for (let at = nodes.get(previous).column + 1; at < last; at += 1) {
        const id = "w" + number + ":" + at;
        nodes.set(id, { column: at, height: WAYPOINT, inputs: [previous], order: job.vertices.length + number });
        passing.push(id);
        previous = id;
      }
      nodes.get("v" + edge.target).inputs.push(previous);
      waypoints.set(edge, passing);
    });
    const columns = [];
    for (const [id, node] of nodes) {
      while (columns.length <= node.column) columns.push([]);
      columns[node.column].push(id);
    }
    const row = new Map();
    for (const members of columns) {
      const centre = (id) => {
        const from = nodes.get(id).inputs.filter((input) => row.has(input));
        return from.length ? from.reduce((sum, input) => sum + row.get(input), 0) / from.length : nodes.get(id).order;
      };
      const centres = new Map(members.map((id) => [id, centre(id)]));
      members.sort((a, b) => centres.get(a) - centres.get(b) || nodes.get(a).order - nodes.get(b).order);
      members.forEach((id, index) => row.set(id, index));
    }
    const columnHeight = (members) =>
      members.reduce((sum, id) => sum + nodes.get(id).height, 0) + BOX_GAP * Math.max(0, members.length - 1);
    const tallest = Math.max(0, ...columns.map(columnHeight));
    const place = new Map();
    columns.forEach((members, at) => {
      let y = MARGIN + (tallest - columnHeight(members)) / 2;
      for (const id of members) {
        const h = nodes.get(id).height;
        place.set(id, { x: MARGIN + at * (BOX_WIDTH + COLUMN_GAP), y, width: BOX_WIDTH, height: h });
        y += h + BOX_GAP;
      }
    });
    const boxes = new Map(job.vertices.map((vertex) => [vertex.index, place.get("v" + vertex.index)]));
    const routes = new Map();
    for (const [edge, passing] of waypoints) routes.set(edge, passing.map((id) => place.get(id)));
    return {
      boxes,
      edges,
      routes,
      width: MARGIN * 2 + Math.max(1, columns.length) * BOX_WIDTH + Math.max(0, columns.length - 1) * COLUMN_GAP,
      height: MARGIN * 2 + tallest,
    };
  }

  function curve(from, to) {
    const bend = Math.max(30, (to.x - from.x) / 2);
    return ` C ${from.x + bend} ${from.y}, ${to.x - bend} ${to.y}, ${to.x} ${to.y}`;
  }

  // ``text`` in ``element``, shortened with an ellipsis to fit ``width`` (the whole in its title).
  function fitText(element, text, width) {
    element.textContent = text;
    let length = text.length;
    try {
      while (length > 4 && element.getComputedTextLength() > width) {
        length -= 1;
        element.textContent = text.slice(0, length) + "\u2026";
      }
    } catch (error) {
      element.textContent = shorten(text, Math.floor(width / 7.5));
    }
    if (element.textContent !== text) svg("title", {}, element).textContent = text;
  }

  function drawGraph(job) {
    const root = byId("graph");
    clear(root);
    graphRows = new Map();
    const { boxes, edges, routes, width, height } = layOut(job);
    root.setAttribute("width", String(width));
    root.setAttribute("height", String(height + 14));
    root.setAttribute("viewBox", "0 0 " + width + " " + (height + 14));

    const defs = svg("defs", {}, root);
    const marker = svg(
      "marker",
      { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      defs,
    );
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }, marker);

    // Edges first, under the boxes; the edges of a box spread over its side, in the order of where
    // they go (or come from).
    const edgeLayer = svg("g", {}, root);
    const labelLayer = svg("g", {}, root);
    const middle = (place) => place.y + place.height / 2;
    const next = (edge) => (routes.get(edge).length ? middle(routes.get(edge)[0]) : middle(boxes.get(edge.target)));
    const previous = (edge) => {
      const passing = routes.get(edge);
      return passing.length ? middle(passing[passing.length - 1]) : middle(boxes.get(edge.source));
    };
    const leaving = new Map();
    const entering = new Map();
    for (const edge of edges) {
      if (!leaving.has(edge.source)) leaving.set(edge.source, []);
      if (!entering.has(edge.target)) entering.set(edge.target, []);
      leaving.get(edge.source).push(edge);
      entering.get(edge.target).push(edge);
    }
    for (const list of leaving.values()) list.sort((a, b) => next(a) - next(b));
    for (const list of entering.values()) list.sort((a, b) => previous(a) - previous(b));
    const spread = (list, edge) => (list.indexOf(edge) - (list.length - 1) / 2) * 16;
    for (const edge of edges) {
      const from = boxes.get(edge.source);
      const to = boxes.get(edge.target);
      const passing = routes.get(edge);
      const start = { x: from.x + from.width, y: middle(from) + spread(leaving.get(edge.source), edge) };
      const end = { x: to.x - 2, y: middle(to) + spread(entering.get(edge.target), edge) };
      let d = `M ${start.x} ${start.y}`;
      let at = start;
      for (const waypoint of passing) {
        d += curve(at, { x: waypoint.x, y: middle(waypoint) }) + ` L ${waypoint.x + waypoint.width} ${middle(waypoint)}`;
        at = { x: waypoint.x + waypoint.width, y: middle(waypoint) };
      }
      d += curve(at, end);
      const path = svg("path", { d, class: "edge", "marker-end": "url(#arrow)" }, edgeLayer);
      path.setAttribute("data-kind", String(edge.kind));
      const label = String(edge.kind) + (edge.side_output !== null ? " [" + String(edge.side_output) + "]" : "");
      // The label sits where the edge runs straight through a column, else halfway.
      const mx = passing.length ? passing[0].x + passing[0].width / 2 : (start.x + end.x) / 2;
      const my = passing.length ? middle(passing[0]) : (start.y + end.y) / 2;
      const back = svg("rect", { class: "edge-label-back", rx: 3 }, labelLayer);
      const text = svgText(labelLayer, mx, my + 4, "", "edge-label", "middle");
      fitText(text, label, passing.length ? BOX_WIDTH - 20 : COLUMN_GAP - 10);
      let box = { x: mx - label.length * 3.2, y: my - 8, width: label.length * 6.4, height: 16 };
      try {
        const measured = text.getBBox();
        if (measured.width > 0) box = measured;
      } catch (error) {
        // not rendered (a hidden page): keep the estimate
      }
      back.setAttribute("x", String(box.x - 3));
      back.setAttribute("y", String(box.y - 1));
      back.setAttribute("width", String(box.width + 6));
      back.setAttribute("height", String(box.height + 2));
    }

    for (const vertex of job.vertices) {
      const box = boxes.get(vertex.index);
      const group = svg("g", { class: "vertex" }, root);
      group.setAttribute("data-vertex", String(vertex.index));
      svg("rect", { x: box.x, y: box.y, width: box.width, height: box.height, rx: 7, class: "vertex-box" }, group);
      const chained = vertex.operators.length > 1 ? "chain of " + vertex.operators.length + " \u00b7 " : "";
      svgText(group, box.x + PAD, box.y + 15, chained + "parallelism " + vertex.parallelism, "vertex-title");
      vertex.operators.forEach((operator, position) => {
        const x = box.x + PAD;
        const y = box.y + HEADER + position * (ROW_HEIGHT + LINK);
        const width = box.width - 2 * PAD;
        if (position > 0) {
          svg("line", { x1: x + width / 2, y1: y - LINK, x2: x + width / 2, y2: y, class: "chain-link" }, group);
        }
        const row = svg("g", { class: "operator" }, group);
        row.setAttribute("data-uid", String(operator.uid));
        const title = svg("title", {}, row);
        const fill = svg("rect", { x, y, width, height: ROW_HEIGHT, rx: 5 }, row);
        const uid = svgText(row, x + 8, y + 17, "", "op-uid");
        fitText(uid, String(operator.uid), width - 16);
        const figures = svgText(row, x + 8, y + 34, "", "op-figures");
        const watermarks = svgText(row, x + 8, y + 49, "", "op-figures");
        const barY = y + ROW_HEIGHT - 14;
        const barWidth = width - 16;
        svg("rect", { x: x + 8, y: barY, width: barWidth, height: 7, rx: 2, class: "op-bar-track" }, row);
        const bars = ["busy", "backpressured", "idle"].map((kind) =>
          svg("rect", { x: x + 8, y: barY, width: 0, height: 7, fill: css(COLOURS[kind]) }, row),
        );
        // Each bar gets a thin light edge, so that dark ones show on dark rows.
        for (const bar of bars) {
          bar.setAttribute("stroke", "rgba(255,255,255,0.7)");
          bar.setAttribute("stroke-width", "0.5");
        }
        graphRows.set(String(operator.uid), {
          operator, title, fill, uid, figures, watermarks, bars, x: x + 8, barWidth,
        });
      });
    }
  }

  function updateGraph(operators) {
    for (const [uid, row] of graphRows) {
      const figures = operators.get(uid);
      const share = shares(figures);
      const ink = inkOn(share.colour);
      row.fill.setAttribute("fill", css(share.colour));
      row.uid.setAttribute("fill", ink);
      row.figures.setAttribute("fill", ink);
      row.watermarks.setAttribute("fill", ink);
      fitText(
        row.figures,
        figures
          ? "in " + rate(figures.numRecordsInPerSecond) + "/s \u00b7 out " + rate(figures.numRecordsOutPerSecond) + "/s"
          : "no figures yet",
        row.barWidth,
      );
      fitText(row.watermarks, figures ? "watermark " + watermark(figures.currentOutputWatermark) : "", row.barWidth);
      let x = row.x;
      [share.busy, share.pressured, share.idle].forEach((part, index) => {
        const width = part * row.barWidth;
        row.bars[index].setAttribute("x", String(x));
        row.bars[index].setAttribute("width", String(width));
        x += width;
      });
      const name = row.operator.name !== row.operator.uid ? " (" + row.operator.name + ")" : "";
      row.title.textContent =
        row.operator.uid + name + "\n" +
        (share.known
          ? "busy " + percent(share.busy * 1000) + " \u00b7 backpressured " + percent(share.pressured * 1000) +
            " \u00b7 idle " + percent(share.idle * 1000)
          : "no figures yet") +
        (figures
          ? "\nrecords in " + count(figures.numRecordsIn) + ", out " + count(figures.numRecordsOut) +
            "\ninput watermark " + watermark(figures.currentInputWatermark) +
            ", output watermark " + watermark(figures.currentOutputWatermark)
          : "");
    }
  }

  // ---- tables --------------------------------------------------------------------------------

  function figureCells(row, figures) {
    const named = (name, text) => {
      const element = cell(row, text);
      element.setAttribute("data-metric", name);
      const value = figures ? figures[name] : null;
      if (typeof value === "number") element.setAttribute("data-value", String(value));
      return element;
    };
    named("numRecordsIn", count(figures && figures.numRecordsIn));
    named("numRecordsOut", count(figures && figures.numRecordsOut));
    named("numRecordsInPerSecond", rate(figures && figures.numRecordsInPerSecond));
    named("numRecordsOutPerSecond", rate(figures && figures.numRecordsOutPerSecond));
    named("busyTimeMsPerSecond", percent(figures && figures.busyTimeMsPerSecond));
    named("backPressuredTimeMsPerSecond", percent(figures && figures.backPressuredTimeMsPerSecond));
    named("idleTimeMsPerSecond", percent(figures && figures.idleTimeMsPerSecond));
    named("currentInputWatermark", watermark(figures && figures.currentInputWatermark));
    named("currentOutputWatermark", watermark(figures && figures.currentOutputWatermark));
  }

  function updateOperatorTable(job, operators) {
    const body = byId("operators").tBodies[0];
    clear(body);
    for (const vertex of job.vertices) {
      for (const operator of vertex.operators) {
        const figures = operators.get(operator.uid);
        const row = document.createElement("tr");
        row.setAttribute("data-uid", String(operator.uid));
        const name = cell(row, "", "uid");
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.style.backgroundColor = css(shares(figures).colour);
        name.appendChild(chip);
        name.appendChild(document.createTextNode(String(operator.uid)));
        cell(row, String(vertex.parallelism));
        figureCells(row, figures);
        body.appendChild(row);
      }
    }
  }

  function updateSubtaskTable(subtasks) {
    const details = byId("subtasks-details");
    if (!details.open) return;
    const body = byId("subtasks").tBodies[0];
    clear(body);
    for (const subtask of subtasks) {
      const row = document.createElement("tr");
      row.setAttribute("data-subtask", subtask.key);
      cell(row, subtask.key, "uid");
      figureCells(row, subtask.figures);
      body.appendChild(row);
    }
  }

  // ---- checkpoints ---------------------------------------------------------------------------

  function updateCheckpoints(checkpoints) {
    const history = Array.isArray(checkpoints.history) ? checkpoints.history : [];
    const summary =
      count(checkpoints.completed) + " completed, " + count(checkpoints.failed) + " failed, " +
      count(checkpoints.in_progress) + " in progress" +
      (history.length > HISTORY_ROWS ? "; the table shows the last " + HISTORY_ROWS : "") +
      ".";
    byId("checkpoint-summary").textContent = summary;
    drawCheckpointChart(history.slice(-HISTORY_BARS));

    const body = byId("checkpoints").tBodies[0];
    clear(body);
    if (history.length === 0) {
      const row = document.createElement("tr");
      const empty = cell(row, "No checkpoint yet.", "text");
      empty.colSpan = 11;
      body.appendChild(row);
      return;
    }
    for (const stats of history.slice(-HISTORY_ROWS).reverse()) {
      const row = document.createElement("tr");
      row.setAttribute("data-checkpoint", String(stats.id));
      if (stats.status === "failed") row.className = "failed";
      cell(row, String(stats.id));
      cell(row, String(stats.status).replace("_", " ") + (stats.savepoint ? " (savepoint)" : ""));
      cell(row, seconds(stats.duration));
      cell(row, seconds(stats.sync_duration));
      cell(row, seconds(stats.async_duration));
      cell(row, seconds(stats.alignment_duration));
      cell(row, bytes(stats.persisted_bytes));
      cell(row, bytes(stats.full_bytes));
      cell(row, stats.unaligned ? "yes" : "no");
      cell(row, bytes(stats.in_flight_bytes));
      cell(row, stats.failure === null || stats.failure === undefined ? "" : String(stats.failure), "text");
      body.appendChild(row);
    }
  }

  function drawCheckpointChart(history) {
    const root = byId("checkpoint-chart");
    clear(root);
    const width = 760;
    const height = 150;
    const left = 62;
    const bottom = 22;
    const top = 10;
    root.setAttribute("width", String(width));
    root.setAttribute("height", String(height));
    root.setAttribute("viewBox", "0 0 " + width + " " + height);
    root.parentNode.hidden = history.length === 0; // the table says so
    if (history.length === 0) return;
    const longest = Math.max(0.001, ...history.map((stats) => Number(stats.duration) || 0));
    const plot = height - bottom - top;
    svg("line", { x1: left, y1: top + plot, x2: width - 4, y2: top + plot, class: "axis" }, root);
    svg("line", { x1: left, y1: top, x2: width - 4, y2: top, class: "axis" }, root);
    svgText(root, left - 6, top + 4, seconds(longest), "axis-label", "end");
    svgText(root, left - 6, top + plot + 4, "0", "axis-label", "end");
    const slot = (width - left - 8) / HISTORY_BARS;
    history.forEach((stats, index) => {
      const status = CHECKPOINT_STATUSES.includes(stats.status) ? stats.status : "in_progress";
      const kind = stats.savepoint && status === "completed" ? "savepoint" : status;
      const barHeight = Math.max(2, ((Number(stats.duration) || 0) / longest) * plot);
      const x = left + 4 + index * slot;
      const bar = svg(
        "rect",
        { x, y: top + plot - barHeight, width: Math.max(3, slot - 4), height: barHeight, class: "bar-" + kind },
        root,
      );
      bar.setAttribute("data-checkpoint", String(stats.id));
      svg("title", {}, bar).textContent =
        "checkpoint " + stats.id + ": " + String(stats.status).replace("_", " ") + ", " + seconds(stats.duration) +
        ", " + bytes(stats.persisted_bytes) + (stats.failure ? "\n" + String(stats.failure) : "");
      if (history.length <= 20 || index % 5 === 0 || index === history.length - 1) {
        svgText(root, x + Math.max(3, slot - 4) / 2, height - 6, String(stats.id), "axis-label", "middle");
      }
    });
  }

  // ---- the page ------------------------------------------------------------------------------

  function updateHeader(job, metrics) {
    byId("job-name").textContent = String(job.name);
    document.title = String(job.name) + " \u00b7 lockgate";
    const status = byId("job-status");
    status.textContent = String(job.status);
    status.className = "status" + (STATUSES.includes(job.status) ? " " + job.status : "");
    const jobFigures = metrics.job || {};
    byId("card-completed").textContent = count(jobFigures.numberOfCompletedCheckpoints);
    byId("card-failed").textContent = count(jobFigures.numberOfFailedCheckpoints);
    byId("card-restarts").textContent = count(job.restarts);
    byId("card-last").textContent =
      typeof jobFigures.lastCheckpointDuration === "number"
        ? seconds(jobFigures.lastCheckpointDuration / 1000) + " \u00b7 " + bytes(jobFigures.lastCheckpointSize)
        : "\u2013";
  }

  function updateCards(job, operators) {
    const feeding = new Set(job.edges.map((edge) => edge.source));
    const fed = new Set(job.edges.map((edge) => edge.target));
    let sourceRate = 0;
    let sinkCount = 0;
    for (const vertex of job.vertices) {
      if (!fed.has(vertex.index)) {
        const head = operators.get(vertex.operators[0].uid);
        sourceRate += head ? head.numRecordsOutPerSecond : 0;
      }
      if (!feeding.has(vertex.index)) {
        const tail = operators.get(vertex.operators[vertex.operators.length - 1].uid);
        sinkCount += tail ? tail.numRecordsIn : 0;
      }
    }
    byId("card-rate").textContent = rate(sourceRate);
    const out = byId("card-out");
    out.textContent = count(sinkCount);
    out.setAttribute("data-value", String(sinkCount));
  }

  function showProblem(text) {
    const problem = byId("problem");
    problem.textContent = text;
    problem.hidden = !text;
  }

  let lastSubtasks = [];

  function render(job, metrics, checkpoints) {
    const key = JSON.stringify([job.vertices, job.edges]);
    if (key !== graphKey) {
      drawGraph(job);
      graphKey = key;
    }
    const { operators, subtasks } = perOperator(metrics);
    lastSubtasks = subtasks;
    updateHeader(job, metrics);
    updateCards(job, operators);
    updateGraph(operators);
    updateOperatorTable(job, operators);
    updateSubtaskTable(subtasks);
    updateCheckpoints(checkpoints);
  }

  class RequestError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: requestHeaders, cache: "no-store" });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") message = body.error;
      } catch (error) {
        // not JSON: keep the status line
      }
      throw new RequestError(response.status, message);
    }
    return response.json();
  }

  let lastSeen = null;

  function showFailure(error) {
    const connection = byId("connection");
    connection.classList.add("lost");
    if (error instanceof RequestError && error.status === 401) {
      connection.textContent = "not allowed";
      showProblem("This job server needs its token: open the page as /?token=<token>. (" + error.message + ")");
    } else if (error instanceof RequestError) {
      connection.textContent = "error " + error.status;
      showProblem("The job server answered: " + error.message);
    } else {
      connection.textContent =
        "server unreachable" + (lastSeen ? " since " + lastSeen.toLocaleTimeString() : "") + ", retrying";
      showProblem("");
    }
  }

  // One round: the three routes at once, then the page; the next round a second after this one
  // ends. A failed request shows on the page; a failure to draw is a bug and left to the console.
  async function poll() {
    let answers = null;
    try {
      answers = await Promise.all([getJson("api/job"), getJson("api/metrics"), getJson("api/checkpoints?last=40")]);
    } catch (error) {
      showFailure(error);
    }
    try {
      if (answers) {
        const [job, metrics, checkpoints] = answers;
        render(job, metrics, checkpoints);
        lastSeen = new Date();
        const connection = byId("connection");
        connection.textContent = "updated " + lastSeen.toLocaleTimeString();
        connection.classList.remove("lost");
        showProblem(job.status === "restarting" ? "The job is restarting after a failure." : "");
      }
    } finally {
      window.setTimeout(poll, POLL_MS);
    }
  }

  byId("subtasks-details").addEventListener("toggle", () => updateSubtaskTable(lastSubtasks));
  poll();
})();
