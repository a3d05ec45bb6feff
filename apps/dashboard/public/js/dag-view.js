// Draws a workflow's DAG as SVG: ELK (layered) computes the layout, nodes keep their element across re-layouts so
// a graph edit moves them smoothly, and status changes only touch the affected elements.
import { h, s, statusName } from "./format.js";

const NODE_W = 208;
const NODE_H = 56;
/** Larger graphs are summarised instead of drawn: the layout and the DOM would take seconds. */
export const MAX_DRAWN_NODES = 1500;
const MIN_SCALE = 0.3;
/** "Fit" never shrinks below this: text stays readable, a larger graph scrolls. */
const MIN_FIT_SCALE = 0.5;
/** Up to this size both directions are laid out and the one that fits the box better is kept. */
const MAX_AUTO_DIRECTION_NODES = 400;
const MAX_SCALE = 2;

const LAYOUT_OPTIONS = {
  "elk.algorithm": "layered",
  "elk.edgeRouting": "ORTHOGONAL",
  "elk.layered.spacing.nodeNodeBetweenLayers": "56",
  "elk.spacing.nodeNode": "28",
  "elk.spacing.edgeNode": "16",
  "elk.spacing.edgeEdge": "10",
  "elk.layered.spacing.edgeNodeBetweenLayers": "18",
  "elk.layered.nodePlacement.strategy": "NETWORK_SIMPLEX",
  // Keeps sibling order stable across re-layouts, so an edit does not shuffle the picture.
  "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
  "elk.padding": "[top=28,left=28,bottom=28,right=28]",
};

/** The icon drawn at the left of a node for its status. */
function statusIcon(status) {
  const g = s("g", { class: "node-icon", transform: `translate(22 ${NODE_H / 2})` });
  switch (status) {
    case "PASS":
      g.append(
        s("circle", { r: 10, class: "icon-fill" }),
        s("path", { d: "M-4.5 0.5 L-1.5 3.5 L4.5 -3", class: "icon-glyph" }),
      );
      break;
    case "FAIL":
      g.append(
        s("circle", { r: 10, class: "icon-fill" }),
        s("path", { d: "M-3.5 -3.5 L3.5 3.5 M3.5 -3.5 L-3.5 3.5", class: "icon-glyph" }),
      );
      break;
    case "RUNNING":
      g.append(
        s("circle", { r: 9, class: "icon-track" }),
        s("path", { d: "M0 -9 A9 9 0 0 1 9 0", class: "icon-spin" }),
      );
      break;
    case "QUEUED":
      g.append(s("circle", { r: 9, class: "icon-ring" }), s("path", { d: "M0 -4.5 V0 L3 2.5", class: "icon-hand" }));
      break;
    case "SKIPPED":
      g.append(s("circle", { r: 9, class: "icon-ring" }), s("path", { d: "M-4 0 H4", class: "icon-hand" }));
      break;
    case "CANCELLED":
      g.append(s("circle", { r: 9, class: "icon-ring" }), s("path", { d: "M-4.5 4.5 L4.5 -4.5", class: "icon-hand" }));
      break;
    case "WAITING":
      // A pause mark: ready, and waiting for a signal or its start time.
      g.append(
        s("circle", { r: 10, class: "icon-fill" }),
        s("path", { d: "M-2.5 -4 V4 M2.5 -4 V4", class: "icon-glyph" }),
      );
      break;
    default:
      g.append(s("circle", { r: 8, class: "icon-ring icon-pending" }));
  }
  return g;
}

/** An orthogonal polyline with rounded corners. */
function roundedPath(points, radius = 8) {
  const [first, ...rest] = points;
  let d = `M${first.x} ${first.y}`;
  for (let i = 0; i < rest.length - 1; i++) {
    const prev = points[i];
    const cur = rest[i];
    const next = rest[i + 1];
    const d1 = Math.min(radius, Math.hypot(cur.x - prev.x, cur.y - prev.y) / 2);
    const d2 = Math.min(radius, Math.hypot(next.x - cur.x, next.y - cur.y) / 2);
    const a = towards(cur, prev, d1);
    const b = towards(cur, next, d2);
    d += ` L${a.x} ${a.y} Q${cur.x} ${cur.y} ${b.x} ${b.y}`;
  }
  const last = rest[rest.length - 1] ?? first;
  return `${d} L${last.x} ${last.y}`;
}

function towards(from, to, distance) {
  const length = Math.hypot(to.x - from.x, to.y - from.y) || 1;
  return { x: from.x + ((to.x - from.x) * distance) / length, y: from.y + ((to.y - from.y) * distance) / length };
}

/** How an edge looks: done (parent passed), active (its child is running), blocked (parent failed) or idle. */
function edgeState(from, to) {
  const parent = statusName(from?.status);
  const child = statusName(to?.status);
  if (parent === "FAIL" || parent === "SKIPPED" || parent === "CANCELLED") return "blocked";
  if (parent !== "PASS") return "idle";
  if (child === "RUNNING" || child === "QUEUED") return "active";
  return "done";
}

function marker(id) {
  return s(
    "marker",
    {
      id: `arrow-${id}`,
      class: `arrow arrow-${id}`,
      viewBox: "0 0 10 10",
      refX: 9,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      orient: "auto-start-reverse",
    },
    s("path", { d: "M0 1 L9 5 L0 9 z" }),
  );
}

/** The DAG view of one workflow. */
export class DagView {
  constructor(host, { onSelect, onScale, onDirection }) {
    this.host = host;
    this.onDirection = onDirection;
    this.onSelect = onSelect;
    this.onScale = onScale;
    const stored = localStorage.getItem("trellis.dag.direction");
    /** DOWN or RIGHT once chosen (by the user, or by the first layout when nothing is stored). */
    this.direction = stored === "DOWN" || stored === "RIGHT" ? stored : undefined;
    this.scale = 1;
    this.fitted = false;
    this.signature = "";
    this.nodes = new Map();
    this.added = new Set();
    this.selected = null;
    this.nodeEls = new Map();
    this.edges = [];
    this.generation = 0;
    this.elk = new globalThis.ELK();
    this.svg = s("svg", { class: "dag", role: "img", "aria-label": "Workflow graph" });
    this.defs = s("defs", {}, marker("idle"), marker("done"), marker("active"), marker("blocked"));
    this.edgeLayer = s("g", { class: "edges" });
    this.nodeLayer = s("g", { class: "nodes" });
    this.svg.append(this.defs, this.edgeLayer, this.nodeLayer);
    this.host.replaceChildren(this.svg);
  }

  /**
   * Shows these nodes (topological order). The layout is recomputed only when the structure (ids, parents)
   * changed; otherwise statuses are updated in place.
   */
  async setGraph(nodes, added) {
    this.nodes = new Map(nodes.map((n) => [n.id, n]));
    this.added = added;
    const signature = nodes.map((n) => `${n.id}<${(n.parentIds ?? []).join(",")}`).join("|");
    if (signature === this.signature) {
      this.refresh();
      return;
    }
    this.signature = signature;
    await this.relayout();
  }

  /** Switches between top-down and left-to-right layouts (remembered in this browser). */
  async toggleDirection() {
    this.direction = this.direction === "RIGHT" ? "DOWN" : "RIGHT";
    localStorage.setItem("trellis.dag.direction", this.direction);
    this.fitted = false;
    await this.relayout();
  }

  /** Lays the graph out; without a chosen direction, tries both and keeps the one needing less shrinking. */
  async layout(children, edges) {
    const run = (direction) =>
      this.elk
        .layout({ id: "root", layoutOptions: { ...LAYOUT_OPTIONS, "elk.direction": direction }, children, edges })
        .then((result) => ({ direction, result }));
    if (this.direction) return run(this.direction);
    const down = await run("DOWN");
    const available = this.host.clientWidth - 2;
    if (children.length > MAX_AUTO_DIRECTION_NODES || down.result.width <= available) return down;
    const right = await run("RIGHT");
    const fit = ({ result }) => Math.min(1, available / result.width);
    return fit(right) > fit(down) * 1.15 ? right : down;
  }

  async relayout() {
    const generation = ++this.generation;
    const nodes = [...this.nodes.values()];
    if (nodes.length > MAX_DRAWN_NODES) {
      this.host.replaceChildren(
        h(
          "div",
          { class: "empty" },
          h("strong", {}, `${nodes.length.toLocaleString()} nodes: too many to draw.`),
          h("span", { class: "muted" }, "The counts above stay live; pick nodes from the event timeline."),
        ),
      );
      return;
    }
    const edges = [];
    for (const node of nodes) {
      for (const parent of node.parentIds ?? []) {
        if (this.nodes.has(parent)) edges.push({ id: `${parent}->${node.id}`, sources: [parent], targets: [node.id] });
      }
    }
    const { direction, result } = await this.layout(
      nodes.map((n) => ({ id: n.id, width: NODE_W, height: NODE_H })),
      edges,
    );
    if (generation !== this.generation) return;
    // Later re-layouts (edits) keep the direction, so the picture does not flip under the reader.
    this.direction = direction;
    this.onDirection?.(direction);
    this.width = Math.ceil(result.width);
    this.height = Math.ceil(result.height);
    this.positions = new Map(result.children.map((c) => [c.id, { x: c.x, y: c.y }]));
    this.edges = (result.edges ?? []).map((e) => {
      const section = e.sections?.[0];
      const points = section ? [section.startPoint, ...(section.bendPoints ?? []), section.endPoint] : [];
      return { from: e.sources[0], to: e.targets[0], points };
    });
    if (this.host.firstChild !== this.svg) this.host.replaceChildren(this.svg);
    this.render();
  }

  render() {
    this.svg.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
    if (!this.fitted) {
      this.fitted = true;
      this.fit();
    } else {
      this.applyScale();
    }
    // Edges are redrawn whole; nodes are keyed so they move rather than blink.
    this.edgeLayer.replaceChildren(
      ...this.edges.map((e) => {
        const el = s("path", { class: "edge", d: roundedPath(e.points), dataset: { from: e.from, to: e.to } });
        e.el = el;
        return el;
      }),
    );
    const firstDraw = this.nodeEls.size === 0;
    for (const [id, el] of this.nodeEls) {
      if (!this.nodes.has(id)) {
        el.remove();
        this.nodeEls.delete(id);
      }
    }
    for (const node of this.nodes.values()) {
      const pos = this.positions.get(node.id);
      let el = this.nodeEls.get(node.id);
      if (!el) {
        el = this.createNode(node.id, !firstDraw);
        this.nodeEls.set(node.id, el);
        this.nodeLayer.append(el);
      }
      el.style.transform = `translate(${pos.x}px, ${pos.y}px)`;
    }
    this.refresh();
  }

  createNode(id, entering) {
    const el = s(
      "g",
      {
        class: "node",
        tabindex: 0,
        role: "button",
        dataset: { nodeId: id },
        onclick: () => this.onSelect(id),
        onkeydown: (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            this.onSelect(id);
          }
        },
      },
      s("rect", { class: "node-halo", x: -5, y: -5, width: NODE_W + 10, height: NODE_H + 10, rx: 14 }),
      s("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 10 }),
      s("g", { class: "node-icon" }),
      s("text", { class: "node-name", x: 42, y: 24 }),
      s("text", { class: "node-meta", x: 42, y: 41 }),
      s("title", {}),
    );
    if (entering) {
      el.classList.add("node-enter");
      el.addEventListener("animationend", () => el.classList.remove("node-enter"), { once: true });
    }
    return el;
  }

  /** Re-applies statuses, texts and selection to the drawn elements. */
  refresh() {
    for (const node of this.nodes.values()) {
      const el = this.nodeEls.get(node.id);
      if (el) this.updateNode(el, node);
    }
    for (const edge of this.edges) {
      if (!edge.el) continue;
      const state = edgeState(this.nodes.get(edge.from), this.nodes.get(edge.to));
      edge.el.setAttribute("class", `edge edge-${state}`);
      edge.el.setAttribute("marker-end", `url(#arrow-${state})`);
    }
  }

  updateNode(el, node) {
    const status = statusName(node.status);
    const added = this.added.has(node.id);
    el.setAttribute(
      "class",
      ["node", `status-${status}`, added && "is-added", this.selected === node.id && "is-selected"]
        .filter(Boolean)
        .join(" ") + (el.classList.contains("node-enter") ? " node-enter" : ""),
    );
    el.dataset.status = status;
    el.dataset.added = String(added);
    if (el.dataset.icon !== status) {
      el.dataset.icon = status;
      el.querySelector(".node-icon").replaceWith(statusIcon(status));
    }
    const name = node.name || node.id;
    const attempt = node.attempt ?? 0;
    // A ready node a limit holds back says so, instead of a silent "pending".
    const held = status === "PENDING" && node.heldBy ? node.heldBy : "";
    el.dataset.heldBy = held;
    el.classList.toggle("is-held", held !== "");
    const waiting = status === "WAITING" ? (node.wait ? "waiting for a signal" : "waiting for its start time") : "";
    el.dataset.waiting = waiting;
    const meta = held
      ? `held by ${held}`
      : waiting || [node.capability, attempt > 1 ? `attempt ${attempt}` : ""].filter(Boolean).join(" · ");
    fitText(el.querySelector(".node-name"), name, NODE_W - 42 - (added ? 52 : 12));
    fitText(el.querySelector(".node-meta"), meta, NODE_W - 54);
    el.querySelector("title").textContent =
      `${name}${name !== node.id ? ` (${node.id})` : ""}\n${status.toLowerCase()} · ${node.capability}` +
      (held ? `\nheld by ${held}` : "") +
      (waiting ? `\n${waiting}` : "") +
      (added ? "\nadded at run time by an edit" : "");
    el.setAttribute("aria-label", `${name}: ${status.toLowerCase()}`);
    let tag = el.querySelector(".node-tag");
    if (added && !tag) {
      tag = s(
        "g",
        { class: "node-tag", transform: `translate(${NODE_W - 50} 8)` },
        s("rect", { width: 42, height: 17, rx: 8.5 }),
        s("text", { x: 21, y: 12.2 }, "added"),
      );
      el.append(tag);
    } else if (!added && tag) {
      tag.remove();
    }
  }

  /** Marks one node as selected (null clears). */
  select(id) {
    this.selected = id;
    for (const [nodeId, el] of this.nodeEls) el.classList.toggle("is-selected", nodeId === id);
  }

  applyScale() {
    if (!this.width) return;
    this.svg.setAttribute("width", String(Math.round(this.width * this.scale)));
    this.svg.setAttribute("height", String(Math.round(this.height * this.scale)));
    this.onScale?.(this.scale);
  }

  zoom(factor) {
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    this.applyScale();
  }

  /** Fits the graph to the width of its box (never enlarging it). */
  fit() {
    const available = this.host.clientWidth - 2;
    this.scale = available > 0 ? Math.min(1, Math.max(MIN_FIT_SCALE, available / this.width)) : 1;
    this.applyScale();
  }
}

/** Sets an SVG text, cut with an ellipsis to fit `maxWidth` pixels. */
function fitText(el, text, maxWidth) {
  if (el.dataset.full === text && el.dataset.max === String(maxWidth)) return;
  el.dataset.full = text;
  el.dataset.max = String(maxWidth);
  el.textContent = text;
  if (!el.isConnected || el.getComputedTextLength() <= maxWidth) return;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    el.textContent = `${text.slice(0, mid)}…`;
    if (el.getComputedTextLength() <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  el.textContent = `${text.slice(0, lo)}…`;
}
