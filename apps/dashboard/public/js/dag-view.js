// Draws a workflow's DAG as SVG: ELK (layered) computes the layout, nodes keep their element across re-layouts so
// a graph edit moves them smoothly, and status changes only touch the affected elements. The reader pans, zooms,
// expands collapsed fan-outs, filters by status and searches; a minimap shows a graph larger than its box.
import { fastLayout } from "./fast-layout.js";
import { h, s, statusName } from "./format.js";

const NODE_W = 208;
const NODE_H = 56;
/** Larger graphs are summarised instead of drawn: the layout and the DOM would take seconds. */
export const MAX_DRAWN_NODES = 1500;
const MIN_SCALE = 0.1;
/** "Fit", search and live insertions never shrink below this: labels stay legible (the minimap shows the rest). */
const MIN_FIT_SCALE = 0.6;
/**
 * Above this many drawn items (or edges: an expanded fan-out of hundreds) the graph is laid out by fastLayout: ELK's
 * layered algorithm would block the page for seconds.
 */
const MAX_ELK_ITEMS = 150;
const MAX_ELK_EDGES = 300;
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

/** Siblings with the same parents and capability, at least this many, are drawn as one group node. */
export const FANOUT_MIN = 8;
/** Status order of a group's counts and its bar. */
const GROUP_ORDER = ["FAIL", "RUNNING", "QUEUED", "WAITING", "PENDING", "PASS", "SKIPPED", "CANCELLED"];
/** Panning with the arrow keys moves the graph by this many pixels. */
const PAN_STEP = 60;

/** The key of a fan-out: nodes with the same capability and parents. */
function fanoutKey(node) {
  return `group:${node.capability ?? ""}:${[...(node.parentIds ?? [])].sort().join(",")}`;
}

/** The status a group is drawn with: a failure first, then work in flight, then the most common. */
function groupStatus(counts) {
  for (const status of ["FAIL", "RUNNING", "QUEUED", "WAITING"]) if (counts.get(status)) return status;
  let best = "PENDING";
  for (const [status, n] of counts) if (n > (counts.get(best) ?? 0)) best = status;
  return best;
}

/**
 * The DAG view of one workflow: pan by dragging, zoom with the wheel, a pinch or the buttons; a minimap when the graph
 * is larger than its box; fan-outs collapsed into group nodes; a status filter; search.
 */
export class DagView {
  constructor(host, { onSelect, onScale, onDirection, onGroups }) {
    this.host = host;
    this.onDirection = onDirection;
    this.onSelect = onSelect;
    this.onScale = onScale;
    this.onGroups = onGroups;
    const stored = localStorage.getItem("trellis.dag.direction");
    /** DOWN or RIGHT once chosen (by the user, or by the first layout when nothing is stored). */
    this.direction = stored === "DOWN" || stored === "RIGHT" ? stored : undefined;
    /** Pan and zoom: graph point p is drawn at p * k + (x, y) in the box. */
    this.view = { x: 0, y: 0, k: 1 };
    this.fitted = false;
    this.signature = "";
    this.nodes = new Map();
    this.added = new Set();
    this.selected = null;
    this.found = null;
    /** Statuses shown (empty: all). */
    this.filter = new Set();
    /** Fan-outs the reader expanded (by key). */
    this.expanded = new Set();
    /** Collapsed fan-outs drawn now: key -> member ids; and each member's key. */
    this.groups = new Map();
    this.groupOf = new Map();
    this.itemEls = new Map();
    this.positions = new Map();
    this.edges = [];
    this.generation = 0;
    this.elk = new globalThis.ELK();
    this.svg = s("svg", {
      class: "dag",
      role: "group",
      tabindex: 0,
      "aria-label": "Workflow graph: drag to pan, wheel or pinch to zoom, arrow keys pan, + and − zoom, 0 fits",
    });
    this.defs = s("defs", {}, marker("idle"), marker("done"), marker("active"), marker("blocked"));
    this.viewport = s("g", { class: "dag-viewport" });
    this.edgeLayer = s("g", { class: "edges" });
    this.nodeLayer = s("g", { class: "nodes" });
    this.viewport.append(this.edgeLayer, this.nodeLayer);
    this.svg.append(this.defs, this.viewport);
    this.miniSvg = s("svg", { class: "dag-minimap-svg", preserveAspectRatio: "xMidYMid meet", "aria-hidden": "true" });
    this.miniNodes = s("g", {});
    this.miniView = s("rect", { class: "mini-view" });
    this.miniSvg.append(this.miniNodes, this.miniView);
    this.minimap = h("div", { class: "dag-minimap", title: "Overview: click or drag to move the view" }, this.miniSvg);
    this.minimap.hidden = true;
    this.host.replaceChildren(this.svg, this.minimap);
    this.bindPointer();
    this.bindMinimap();
    this.bindKeys();
    new ResizeObserver(() => this.updateMinimapView()).observe(this.host);
  }

  // ------------------------------------------------------------ data

  /**
   * Shows these nodes (topological order). The layout is recomputed only when the structure (ids, parents, the
   * collapsed fan-outs) changed; otherwise statuses are updated in place.
   */
  async setGraph(nodes, added) {
    this.nodes = new Map(nodes.map((n) => [n.id, n]));
    this.added = added;
    await this.relayoutIfChanged();
  }

  async relayoutIfChanged() {
    this.computeGroups();
    const signature =
      [...this.nodes.values()].map((n) => `${n.id}<${(n.parentIds ?? []).join(",")}`).join("|") +
      `#${[...this.groups.keys()].join("|")}`;
    if (signature === this.signature) {
      this.refresh();
      return;
    }
    this.signature = signature;
    await this.relayout();
  }

  /** Which fan-outs are collapsed: FANOUT_MIN or more siblings of one capability under the same parents. */
  computeGroups() {
    const byKey = new Map();
    for (const node of this.nodes.values()) {
      const key = fanoutKey(node);
      if (!byKey.has(key)) byKey.set(key, []);
      byKey.get(key).push(node.id);
    }
    this.groups = new Map();
    this.groupOf = new Map();
    for (const [key, members] of byKey) {
      if (members.length < FANOUT_MIN || this.expanded.has(key)) continue;
      this.groups.set(key, members);
      for (const id of members) this.groupOf.set(id, key);
    }
    this.onGroups?.({ collapsed: this.groups.size, expanded: this.expanded.size });
  }

  /** The drawn item standing for a node: the node, or its collapsed fan-out. */
  itemOf(id) {
    return this.groupOf.get(id) ?? id;
  }

  /** Switches between top-down and left-to-right layouts (remembered in this browser). */
  async toggleDirection() {
    this.direction = this.direction === "RIGHT" ? "DOWN" : "RIGHT";
    localStorage.setItem("trellis.dag.direction", this.direction);
    this.fitted = false;
    await this.relayout();
  }

  /** Expands a collapsed fan-out (by key) into its nodes. */
  async expand(key) {
    this.expanded.add(key);
    await this.relayoutIfChanged();
    this.centerOn(this.groupMembersFirst(key));
  }

  /** Collapses every fan-out again. */
  async collapseAll() {
    this.expanded.clear();
    await this.relayoutIfChanged();
  }

  groupMembersFirst(key) {
    for (const node of this.nodes.values()) if (fanoutKey(node) === key) return node.id;
    return undefined;
  }

  /** Lays the graph out; without a chosen direction, tries both and keeps the one needing less shrinking. */
  async layout(children, edges) {
    if (children.length > MAX_ELK_ITEMS || edges.length > MAX_ELK_EDGES) {
      const direction = this.direction ?? "DOWN";
      return { direction, result: fastLayout(children, edges, direction) };
    }
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
    const children = [];
    const edgeIds = new Set();
    const edges = [];
    for (const node of nodes) {
      const item = this.itemOf(node.id);
      if (item === node.id) children.push({ id: node.id, width: NODE_W, height: NODE_H });
      else if (this.groups.get(item)[0] === node.id) children.push({ id: item, width: NODE_W, height: NODE_H });
      for (const parent of node.parentIds ?? []) {
        if (!this.nodes.has(parent)) continue;
        const from = this.itemOf(parent);
        const id = `${from}->${item}`;
        if (from === item || edgeIds.has(id)) continue;
        edgeIds.add(id);
        edges.push({ id, sources: [from], targets: [item] });
      }
    }
    const { direction, result } = await this.layout(children, edges);
    if (generation !== this.generation) return;
    // Later re-layouts (edits) keep the direction, so the picture does not flip under the reader.
    this.direction = direction;
    this.onDirection?.(direction);
    const before = new Set(this.positions.keys());
    this.width = Math.ceil(result.width);
    this.height = Math.ceil(result.height);
    this.positions = new Map(result.children.map((c) => [c.id, { x: c.x, y: c.y }]));
    this.edges = (result.edges ?? []).map((e) => {
      const section = e.sections?.[0];
      const points = section ? [section.startPoint, ...(section.bendPoints ?? []), section.endPoint] : [];
      return { from: e.sources[0], to: e.targets[0], points };
    });
    if (this.host.firstChild !== this.svg) this.host.replaceChildren(this.svg, this.minimap);
    this.render();
    // Nodes inserted live (edits) are brought into view when the reader does not see them.
    if (before.size > 0) {
      const fresh = [...this.positions.keys()].filter((id) => !before.has(id));
      if (fresh.length > 0) this.bringIntoView(fresh);
    }
  }

  render() {
    this.miniSvg.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
    if (!this.fitted) {
      this.fitted = true;
      this.fit();
    } else {
      this.applyView();
    }
    // Edges are redrawn whole; nodes are keyed so they move rather than blink.
    this.edgeLayer.replaceChildren(
      ...this.edges.map((e) => {
        const el = s("path", { class: "edge", d: roundedPath(e.points), dataset: { from: e.from, to: e.to } });
        e.el = el;
        return el;
      }),
    );
    const firstDraw = this.itemEls.size === 0;
    for (const [id, el] of this.itemEls) {
      if (!this.positions.has(id)) {
        el.remove();
        this.itemEls.delete(id);
      }
    }
    for (const [id, pos] of this.positions) {
      let el = this.itemEls.get(id);
      if (!el) {
        el = this.groups.has(id) ? this.createGroup(id) : this.createNode(id, !firstDraw);
        this.itemEls.set(id, el);
        this.nodeLayer.append(el);
      }
      el.style.transform = `translate(${pos.x}px, ${pos.y}px)`;
    }
    this.miniNodes.replaceChildren(
      ...[...this.positions].map(([id, pos]) =>
        s("rect", { class: "mini-node", x: pos.x, y: pos.y, width: NODE_W, height: NODE_H, rx: 8, dataset: { id } }),
      ),
    );
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
        onfocus: () => this.ensureVisible(id),
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

  /** A collapsed fan-out: "240 × web.search", its counts by status and a bar of them; click (or Enter) expands it. */
  createGroup(key) {
    const expand = () => void this.expand(key);
    return s(
      "g",
      {
        class: "node-group",
        tabindex: 0,
        role: "button",
        dataset: { groupId: key },
        onclick: expand,
        onkeydown: (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            expand();
          }
        },
        onfocus: () => this.ensureVisible(key),
      },
      s("rect", { class: "group-shadow", x: 8, y: 8, width: NODE_W, height: NODE_H, rx: 10 }),
      s("rect", { class: "group-shadow", x: 4, y: 4, width: NODE_W, height: NODE_H, rx: 10 }),
      s("rect", { class: "node-halo", x: -5, y: -5, width: NODE_W + 10, height: NODE_H + 10, rx: 14 }),
      s("rect", { class: "group-box", width: NODE_W, height: NODE_H, rx: 10 }),
      s("text", { class: "node-name", x: 12, y: 21 }),
      s("text", { class: "node-meta group-counts", x: 12, y: 37 }),
      s("g", { class: "group-bar", transform: `translate(12 ${NODE_H - 12})` }),
      s("title", {}),
    );
  }

  /** Re-applies statuses, texts, the filter and the selection to the drawn elements. */
  refresh() {
    for (const node of this.nodes.values()) {
      const el = this.itemEls.get(node.id);
      if (el) this.updateNode(el, node);
    }
    for (const [key, members] of this.groups) {
      const el = this.itemEls.get(key);
      if (el) this.updateGroup(el, key, members);
    }
    for (const edge of this.edges) {
      if (!edge.el) continue;
      const state = edgeState({ status: this.statusOfItem(edge.from) }, { status: this.statusOfItem(edge.to) });
      const hidden = this.isFilteredOut(edge.from) || this.isFilteredOut(edge.to);
      edge.el.setAttribute("class", `edge edge-${state}${hidden ? " is-filtered" : ""}`);
      edge.el.setAttribute("marker-end", `url(#arrow-${state})`);
    }
    for (const rect of this.miniNodes.children) {
      const id = rect.dataset.id;
      rect.setAttribute(
        "class",
        `mini-node status-${this.statusOfItem(id)}${this.isFilteredOut(id) ? " is-filtered" : ""}`,
      );
    }
  }

  /** The status an item is drawn with (a group's: see groupStatus). */
  statusOfItem(id) {
    const members = this.groups.get(id);
    if (members) return groupStatus(this.countsOf(members));
    return statusName(this.nodes.get(id)?.status);
  }

  countsOf(members) {
    const counts = new Map();
    for (const id of members) {
      const status = statusName(this.nodes.get(id)?.status);
      counts.set(status, (counts.get(status) ?? 0) + 1);
    }
    return counts;
  }

  /** Whether the status filter hides an item (a group stays while any of its nodes matches). */
  isFilteredOut(id) {
    if (this.filter.size === 0) return false;
    const members = this.groups.get(id);
    if (members) return !members.some((m) => this.filter.has(statusName(this.nodes.get(m)?.status)));
    return !this.filter.has(statusName(this.nodes.get(id)?.status));
  }

  updateGroup(el, key, members) {
    const counts = this.countsOf(members);
    const status = groupStatus(counts);
    const capability = this.nodes.get(members[0])?.capability || "wait";
    const hidden = this.isFilteredOut(key);
    el.setAttribute(
      "class",
      ["node-group", `status-${status}`, hidden && "is-filtered", this.found === key && "is-found"]
        .filter(Boolean)
        .join(" "),
    );
    el.dataset.status = status;
    el.dataset.count = String(members.length);
    el.setAttribute("tabindex", hidden ? "-1" : "0");
    const present = GROUP_ORDER.filter((status) => counts.get(status));
    const parts = present.map((status) => `${counts.get(status)} ${status.toLowerCase()}`);
    el.dataset.counts = parts.join(" · ");
    fitText(el.querySelector(".node-name"), `${members.length} × ${capability}`, NODE_W - 24);
    fitText(el.querySelector(".group-counts"), parts.join(" · "), NODE_W - 24);
    const bar = el.querySelector(".group-bar");
    const width = NODE_W - 24;
    let x = 0;
    bar.replaceChildren(
      ...present.map((part) => {
        const w = (counts.get(part) / members.length) * width;
        const rect = barPart(x, w, part);
        x += w;
        return rect;
      }),
    );
    const label = `${members.length} nodes of ${capability} under the same parents: ${parts.join(", ")}. Expand`;
    el.querySelector("title").textContent = `${label} (click)`;
    el.setAttribute("aria-label", label);
  }

  updateNode(el, node) {
    const status = statusName(node.status);
    const added = this.added.has(node.id);
    const hidden = this.isFilteredOut(node.id);
    el.setAttribute(
      "class",
      [
        "node",
        `status-${status}`,
        added && "is-added",
        this.selected === node.id && "is-selected",
        this.found === node.id && "is-found",
        hidden && "is-filtered",
      ]
        .filter(Boolean)
        .join(" ") + (el.classList.contains("node-enter") ? " node-enter" : ""),
    );
    el.setAttribute("tabindex", hidden ? "-1" : "0");
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
    for (const [itemId, el] of this.itemEls) el.classList.toggle("is-selected", itemId === id);
  }

  /** Shows only nodes of these statuses (an empty set shows all). */
  setFilter(statuses) {
    this.filter = new Set(statuses);
    this.refresh();
  }

  // ------------------------------------------------------------ search

  /** The node a query names: its id, else its name, else the first id or name that starts with, then contains it. */
  find(query) {
    const q = query.trim().toLowerCase();
    if (q === "") return undefined;
    const nodes = [...this.nodes.values()];
    const tests = [
      (n) => n.id.toLowerCase() === q,
      (n) => (n.name ?? "").toLowerCase() === q,
      (n) => n.id.toLowerCase().startsWith(q),
      (n) => n.id.toLowerCase().includes(q) || (n.name ?? "").toLowerCase().includes(q),
    ];
    for (const test of tests) {
      const hit = nodes.find(test);
      if (hit) return hit.id;
    }
    return undefined;
  }

  /** Brings a node into the middle of the view, expanding its fan-out, highlighted and focused. */
  async reveal(id) {
    const key = this.groupOf.get(id);
    if (key) {
      this.expanded.add(key);
      await this.relayoutIfChanged();
    }
    this.found = id;
    this.refresh();
    this.centerOn(id);
    this.itemEls.get(id)?.focus({ preventScroll: true });
  }

  // ------------------------------------------------------------ pan and zoom

  applyView() {
    const { x, y, k } = this.view;
    this.viewport.setAttribute("transform", `translate(${round(x)} ${round(y)}) scale(${round(k, 4)})`);
    this.svg.dataset.scale = String(round(k, 4));
    this.onScale?.(k);
    this.updateMinimapView();
  }

  /** Zooms by `factor` keeping the box point (cx, cy) still (default: the box's centre). */
  zoom(factor, cx = this.host.clientWidth / 2, cy = this.host.clientHeight / 2) {
    const { x, y, k } = this.view;
    const next = Math.min(MAX_SCALE, Math.max(MIN_SCALE, k * factor));
    this.view = { x: cx - ((cx - x) * next) / k, y: cy - ((cy - y) * next) / k, k: next };
    this.applyView();
  }

  panBy(dx, dy) {
    this.view = { ...this.view, x: this.view.x + dx, y: this.view.y + dy };
    this.applyView();
  }

  /**
   * Fits the graph in its box, never enlarging it, nor shrinking it below MIN_FIT_SCALE so labels stay legible: a
   * larger graph starts at its top left, and the minimap shows the whole of it.
   */
  fit() {
    if (!this.width) return;
    const w = this.host.clientWidth;
    const hgt = this.host.clientHeight;
    if (w <= 0 || hgt <= 0) {
      this.view = { x: 0, y: 0, k: 1 };
    } else {
      const k = Math.min(1, Math.max(MIN_FIT_SCALE, Math.min(w / this.width, hgt / this.height)));
      const x = this.width * k <= w ? (w - this.width * k) / 2 : 0;
      const y = this.height * k <= hgt ? (hgt - this.height * k) / 2 : 0;
      this.view = { x, y, k };
    }
    this.applyView();
  }

  /** The box of an item in graph coordinates. */
  boxOf(id) {
    const pos = this.positions.get(this.itemOf(id)) ?? this.positions.get(id);
    return pos ? { x: pos.x, y: pos.y, w: NODE_W, h: NODE_H } : undefined;
  }

  /** Centres an item, zooming in to a legible scale if needed. */
  centerOn(id) {
    const box = id === undefined ? undefined : this.boxOf(id);
    if (!box) return;
    const k = Math.max(this.view.k, MIN_FIT_SCALE);
    this.view = {
      k,
      x: this.host.clientWidth / 2 - (box.x + box.w / 2) * k,
      y: this.host.clientHeight / 2 - (box.y + box.h / 2) * k,
    };
    this.applyView();
  }

  /** Whether a graph box is wholly in view. */
  inView(box) {
    const { x, y, k } = this.view;
    const left = box.x * k + x;
    const top = box.y * k + y;
    return (
      left >= 0 && top >= 0 && left + box.w * k <= this.host.clientWidth && top + box.h * k <= this.host.clientHeight
    );
  }

  /** Pans (and zooms out, down to a legible scale) so these items are seen. */
  bringIntoView(ids) {
    const boxes = ids.map((id) => this.boxOf(id)).filter(Boolean);
    if (boxes.length === 0 || boxes.every((b) => this.inView(b))) return;
    const x0 = Math.min(...boxes.map((b) => b.x));
    const y0 = Math.min(...boxes.map((b) => b.y));
    const x1 = Math.max(...boxes.map((b) => b.x + b.w));
    const y1 = Math.max(...boxes.map((b) => b.y + b.h));
    const w = this.host.clientWidth;
    const hgt = this.host.clientHeight;
    const k = Math.max(MIN_FIT_SCALE, Math.min(this.view.k, (w - 40) / (x1 - x0), (hgt - 40) / (y1 - y0)));
    this.view = { k, x: w / 2 - ((x0 + x1) / 2) * k, y: hgt / 2 - ((y0 + y1) / 2) * k };
    this.applyView();
  }

  /** Pans just enough to show an item that got the focus (Tab). */
  ensureVisible(id) {
    const box = this.boxOf(id);
    if (box && !this.inView(box)) this.centerOn(id);
  }

  /** Drag to pan (mouse, pen or one finger), pinch to zoom (two fingers), wheel to zoom. */
  bindPointer() {
    const pointers = new Map();
    let drag = null;
    let pinch = null;
    let suppressClick = false;
    const local = (e) => {
      const r = this.host.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top };
    };
    const pinchState = () => {
      const [a, b] = [...pointers.values()];
      return { dist: Math.hypot(a.x - b.x, a.y - b.y) || 1, mid: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 } };
    };
    this.svg.addEventListener("pointerdown", (e) => {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      pointers.set(e.pointerId, local(e));
      if (pointers.size === 2) {
        pinch = { ...pinchState(), view: { ...this.view } };
        drag = null;
      } else if (pointers.size === 1) {
        drag = { id: e.pointerId, start: local(e), view: { ...this.view }, moving: false };
      }
    });
    this.svg.addEventListener("pointermove", (e) => {
      if (!pointers.has(e.pointerId)) return;
      pointers.set(e.pointerId, local(e));
      if (pinch && pointers.size >= 2) {
        const now = pinchState();
        const { view } = pinch;
        const k = Math.min(MAX_SCALE, Math.max(MIN_SCALE, (view.k * now.dist) / pinch.dist));
        // The graph point under the fingers' first midpoint stays under their midpoint now.
        const gx = (pinch.mid.x - view.x) / view.k;
        const gy = (pinch.mid.y - view.y) / view.k;
        this.view = { k, x: now.mid.x - gx * k, y: now.mid.y - gy * k };
        this.applyView();
        suppressClick = true;
        return;
      }
      if (!drag || drag.id !== e.pointerId) return;
      const p = local(e);
      const dx = p.x - drag.start.x;
      const dy = p.y - drag.start.y;
      if (!drag.moving && Math.hypot(dx, dy) < 4) return;
      if (!drag.moving) {
        drag.moving = true;
        this.svg.classList.add("is-panning");
        try {
          this.svg.setPointerCapture(e.pointerId);
        } catch {
          // A synthetic pointer cannot be captured; panning works without it.
        }
      }
      this.view = { ...drag.view, x: drag.view.x + dx, y: drag.view.y + dy };
      this.applyView();
    });
    const end = (e) => {
      if (!pointers.delete(e.pointerId)) return;
      if (drag?.moving) suppressClick = true;
      if (pointers.size < 2) pinch = null;
      if (pointers.size === 0) {
        drag = null;
        this.svg.classList.remove("is-panning");
      }
    };
    this.svg.addEventListener("pointerup", end);
    this.svg.addEventListener("pointercancel", end);
    // A drag that ends over a node is not a click on it.
    this.svg.addEventListener(
      "click",
      (e) => {
        if (!suppressClick) return;
        suppressClick = false;
        e.stopPropagation();
        e.preventDefault();
      },
      true,
    );
    this.svg.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const p = local(e);
        // A trackpad pinch arrives as a wheel with ctrlKey and small deltas.
        const factor = Math.exp(-e.deltaY * (e.ctrlKey ? 0.01 : 0.0015));
        this.zoom(factor, p.x, p.y);
      },
      { passive: false },
    );
  }

  /** Click or drag on the overview to move the view there. */
  bindMinimap() {
    let dragging = false;
    const moveTo = (e) => {
      const ctm = this.miniSvg.getScreenCTM();
      if (!ctm) return;
      const point = new DOMPoint(e.clientX, e.clientY).matrixTransform(ctm.inverse());
      const { k } = this.view;
      this.view = { k, x: this.host.clientWidth / 2 - point.x * k, y: this.host.clientHeight / 2 - point.y * k };
      this.applyView();
    };
    this.miniSvg.addEventListener("pointerdown", (e) => {
      dragging = true;
      try {
        this.miniSvg.setPointerCapture(e.pointerId);
      } catch {
        // As above.
      }
      moveTo(e);
    });
    this.miniSvg.addEventListener("pointermove", (e) => dragging && moveTo(e));
    this.miniSvg.addEventListener("pointerup", () => {
      dragging = false;
    });
  }

  /** With the graph focused: arrows pan, + and − zoom, 0 fits. */
  bindKeys() {
    this.svg.addEventListener("keydown", (e) => {
      if (e.target !== this.svg) return;
      const moves = {
        ArrowLeft: [PAN_STEP, 0],
        ArrowRight: [-PAN_STEP, 0],
        ArrowUp: [0, PAN_STEP],
        ArrowDown: [0, -PAN_STEP],
      };
      if (moves[e.key]) this.panBy(...moves[e.key]);
      else if (e.key === "+" || e.key === "=") this.zoom(1.2);
      else if (e.key === "-") this.zoom(1 / 1.2);
      else if (e.key === "0") this.fit();
      else return;
      e.preventDefault();
    });
  }

  /** The overview's viewport rectangle; the overview shows only when part of the graph is out of view. */
  updateMinimapView() {
    if (!this.width) return;
    const { x, y, k } = this.view;
    const w = this.host.clientWidth / k;
    const hgt = this.host.clientHeight / k;
    this.miniView.setAttribute("x", String(-x / k));
    this.miniView.setAttribute("y", String(-y / k));
    this.miniView.setAttribute("width", String(w));
    this.miniView.setAttribute("height", String(hgt));
    this.minimap.hidden = this.inView({ x: 0, y: 0, w: this.width, h: this.height });
  }
}

function round(n, digits = 2) {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** One part of a group's status bar. */
function barPart(x, width, status) {
  return s("rect", { class: `bar-part status-${status}`, x, y: 0, width: Math.max(0, width), height: 4 });
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
