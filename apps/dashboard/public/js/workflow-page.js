// One workflow, live: header and actions, progress, the DAG, the node panel and the event timeline. It loads the
// event history, then the workflow (at least as new as that history), then follows the event stream (SSE) from
// the last sequence seen; status events are applied in place, edits re-read the workflow and re-layout the graph.
// The graph is searched by node id and filtered by the legend's statuses; the timeline by node. A banner says when a
// node waits for a capability that no live worker serves (GET /api/workers).
import { ApiError, allEvents, getJson, postJson, sendJson } from "./api.js";
import { DagView } from "./dag-view.js";
import {
  NODE_STATUSES,
  between,
  formatAmount,
  formatDateTime,
  formatDuration,
  h,
  labelChips,
  statusBadge,
  statusName,
  toast,
  unitsOf,
} from "./format.js";
import { renderNodePanel, tickNodePanel, updateNodePanelOutput } from "./node-panel.js";
import { Timeline } from "./timeline.js";

const workflowId = decodeURIComponent(location.pathname.split("/")[2] ?? "");
const api = `/workflows/${encodeURIComponent(workflowId)}`;
/** Events that change the graph's structure: the workflow is re-read and re-laid out. */
const STRUCTURAL = new Set(["node.created", "node.deleted", "node.updated", "workflow.edited"]);
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
/** Events after which the workflow's usage may have grown (an attempt ended) or its budget paused it. */
const SPENDING = new Set(["node.status_changed", "node.retry_scheduled", "node.throttled", "workflow.budget_exceeded"]);

const state = {
  workflow: null,
  nodes: new Map(),
  /** Nodes inserted by edits while the workflow ran (they have a node.created event). */
  added: new Set(),
  events: [],
  lastSequence: 0,
  selected: null,
  /** Live output by node id: `{attempt, text, next}` (next: the chunk index expected). */
  live: new Map(),
  selectedNode: null,
  stream: null,
  streamEnded: false,
  /** Statuses the legend filters the graph to (empty: all). */
  filter: new Set(),
  /** Capabilities live workers serve (GET /api/workers), or undefined before the first answer or without access. */
  served: undefined,
};

const el = {
  name: document.getElementById("wf-name"),
  crumb: document.getElementById("crumb-name"),
  status: document.getElementById("wf-status"),
  meta: document.getElementById("wf-meta"),
  usage: document.getElementById("wf-usage"),
  live: document.getElementById("live"),
  liveText: document.getElementById("live-text"),
  progress: document.getElementById("progress"),
  legend: document.getElementById("legend"),
  panel: document.getElementById("node-panel"),
  zoomLevel: document.getElementById("zoom-level"),
  confirm: document.getElementById("confirm"),
};

const dag = new DagView(document.getElementById("dag"), {
  onSelect: (id) => select(id),
  onScale: (scale) => {
    el.zoomLevel.textContent = `${Math.round(scale * 100)}%`;
  },
  onGroups: ({ expanded }) => {
    document.getElementById("dag-collapse").hidden = expanded === 0;
  },
  onDirection: (direction) => {
    const button = document.getElementById("dag-direction");
    button.textContent = direction === "RIGHT" ? "→ Left to right" : "↓ Top down";
    button.dataset.direction = direction;
  },
});
const timeline = new Timeline(document.getElementById("timeline"), document.getElementById("event-count"), {
  onSelectNode: (id) => select(id),
});

// ---------------------------------------------------------------- model

function noteEvent(event) {
  const sequence = Number(event.sequence);
  if (sequence <= state.lastSequence) return false;
  state.lastSequence = sequence;
  state.events.push(event);
  if (event.type === "node.created" && event.nodeId) state.added.add(event.nodeId);
  if (event.type === "node.deleted" && event.nodeId) state.added.delete(event.nodeId);
  return true;
}

/**
 * What an event says about current state: a node's status (and attempt), the limit holding it back (`node.held`
 * sets it; any other status change of the node ends it), the workflow's status.
 */
function applyStatus(event) {
  if (event.workflowStatus && state.workflow) state.workflow.status = event.workflowStatus;
  const node = event.nodeId ? state.nodes.get(event.nodeId) : undefined;
  if (node && event.nodeStatus) {
    node.status = event.nodeStatus;
    if (event.data?.attempt) node.attempt = Number(event.data.attempt);
    if (event.type === "node.held") node.heldBy = event.data?.key ?? "";
    else if (event.type !== "node.updated") node.heldBy = "";
  }
  return node;
}

function setWorkflow(workflow, replayAfter) {
  state.workflow = workflow;
  state.nodes = new Map((workflow.nodes ?? []).map((n) => [n.id, n]));
  // The snapshot may predate events that arrived while it was read: apply those again, in order.
  for (const event of state.events) if (Number(event.sequence) > replayAfter) applyStatus(event);
}

async function loadWorkflow() {
  const seenBefore = state.lastSequence;
  const { workflow } = await getJson(api);
  setWorkflow(workflow, seenBefore);
  await dag.setGraph([...state.nodes.values()], state.added);
  renderNodeIds();
  renderHeader();
  if (state.selected) void loadSelected();
}

/** The search boxes' suggestions: every node id. */
function renderNodeIds() {
  const list = document.getElementById("dag-node-ids");
  const key = [...state.nodes.keys()].join("|");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(...[...state.nodes.keys()].map((id) => h("option", { value: id })));
}

let reloadTimer;
let reloading = Promise.resolve();
function scheduleReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    reloading = reloading
      .then(loadWorkflow)
      .catch((e) => toast(`Could not refresh the workflow: ${e.message}`, "error"));
  }, 100);
}

/** Re-reads the workflow's usage and budget (no event carries them), at most once a second while attempts end. */
let usageTimer;
function scheduleUsageReload() {
  if (usageTimer) return;
  usageTimer = setTimeout(async () => {
    try {
      const { workflow } = await getJson(api);
      if (state.workflow) {
        state.workflow.usage = workflow.usage;
        state.workflow.budget = workflow.budget;
        renderHeader();
      }
    } catch {
      // The next event or reload tries again.
    } finally {
      usageTimer = undefined;
    }
  }, 1_000);
}

let frame = 0;
function scheduleRender() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    dag.refresh();
    renderHeader();
  });
}

function onLiveEvent(event) {
  if (!noteEvent(event)) return;
  timeline.add(event);
  const node = applyStatus(event);
  if (STRUCTURAL.has(event.type) || (event.nodeId && !node && event.type !== "node.deleted")) scheduleReload();
  if (event.nodeId && event.nodeId === state.selected) scheduleSelectedReload();
  if (SPENDING.has(event.type)) scheduleUsageReload();
  scheduleRender();
}

// ---------------------------------------------------------------- live output

/** Most characters of live output kept per node (the tail). */
const MAX_LIVE_CHARS = 100_000;

/** Output chunks by node: the latest attempt's text (a retry starts it over); chunks seen before are skipped. */
function onChunk(event) {
  const nodeId = event.nodeId;
  const attempt = event.attempt ?? 0;
  const index = Number(event.chunkIndex ?? 0);
  let live = state.live.get(nodeId);
  if (!live || attempt > live.attempt) {
    live = { attempt, text: "", next: 0 };
    state.live.set(nodeId, live);
  }
  // Older attempts' chunks, and chunks seen before (a reconnect sends the running attempts' chunks from the first).
  if (attempt < live.attempt || index < live.next) return;
  live.next = index + 1;
  live.text = (live.text + (event.chunk?.text ?? "")).slice(-MAX_LIVE_CHARS);
  if (nodeId === state.selected && !updateNodePanelOutput(el.panel, nodeId, live)) renderPanel();
}

// ---------------------------------------------------------------- stream

function setLive(mode, text) {
  el.live.dataset.state = mode;
  el.liveText.textContent = text;
}

function openStream() {
  // chunks=1: the running nodes' output chunks too (`event: chunk`), shown in the node panel as they are written.
  const stream = new EventSource(`/api${api}/stream?after=${state.lastSequence}&chunks=1`);
  state.stream = stream;
  stream.onopen = () => setLive("live", "Live");
  stream.onmessage = (message) => onLiveEvent(JSON.parse(message.data));
  stream.addEventListener("chunk", (message) => onChunk(JSON.parse(message.data)));
  stream.addEventListener("end", () => {
    stream.close();
    state.streamEnded = true;
    setLive("ended", "Finished");
    scheduleReload();
  });
  stream.onerror = () => {
    if (state.streamEnded) return;
    if (stream.readyState === EventSource.CLOSED) {
      // The server refused (e.g. it restarted without the database): open a new stream from where we are.
      setLive("reconnecting", "Reconnecting");
      setTimeout(() => {
        if (state.stream === stream) openStream();
      }, 5_000);
    } else {
      setLive("reconnecting", "Reconnecting");
    }
  };
}

// ---------------------------------------------------------------- header, progress, legend

function countByStatus() {
  const counts = new Map(NODE_STATUSES.map((s) => [s, 0]));
  for (const node of state.nodes.values()) {
    const status = statusName(node.status);
    counts.set(status, (counts.get(status) ?? 0) + 1);
  }
  return counts;
}

function renderHeader() {
  const wf = state.workflow;
  if (!wf) return;
  const status = statusName(wf.status);
  const name = wf.name || wf.id;
  document.title = `${name} · Trellis`;
  el.name.textContent = name;
  el.crumb.textContent = name;
  if (el.status.dataset.status !== status) {
    el.status.dataset.status = status;
    el.status.replaceChildren(statusBadge(wf.status, "badge-large"));
  }
  const metaKey = JSON.stringify([status, wf.finishedAt, wf.labels]);
  if (el.meta.dataset.key !== metaKey) {
    el.meta.dataset.key = metaKey;
    renderMeta(wf, status);
  }
  const usageKey = JSON.stringify([status, wf.usage, wf.budget]);
  if (el.usage.dataset.key !== usageKey) {
    el.usage.dataset.key = usageKey;
    renderUsage(wf, status);
  }
  tickElapsed();
  renderActions(status);
  renderProgress();
  renderUnroutable();
}

/**
 * The workflow's usage per unit, against its budget where it has one (a bar each), and what to do when a budget
 * paused it: raise the budget (UpdateWorkflow, update_mask "budget"), then Resume.
 */
function renderUsage(wf, status) {
  const usage = wf.usage ?? {};
  const budget = wf.budget ?? {};
  const units = [...new Set([...unitsOf(usage), ...unitsOf(budget)].map(([unit]) => unit))].sort();
  el.usage.hidden = units.length === 0;
  let reached = false;
  const items = units.map((unit) => {
    const used = Number(usage[unit] ?? 0);
    const limit = budget[unit] === undefined ? undefined : Number(budget[unit]);
    const over = limit !== undefined && used >= limit;
    reached ||= over;
    const parts = [h("span", { class: "usage-unit" }, unit), h("span", { class: "num" }, formatAmount(used))];
    if (limit !== undefined) {
      const fill = h("span", { class: ["meter-fill", over ? "meter-warn" : "meter-ok"] });
      fill.style.width = `${Math.round(Math.min(1, used / limit) * 100)}%`;
      parts.push(
        h("span", { class: "muted num" }, `of ${formatAmount(limit)}`),
        h("span", { class: "meter", title: `${formatAmount(used)} of a budget of ${formatAmount(limit)}` }, fill),
      );
    }
    return h("span", { class: ["usage-item", over && "is-over"], dataset: { unit } }, ...parts);
  });
  const note =
    reached && status === "PAUSED"
      ? [
          h(
            "span",
            { class: "usage-note" },
            "Budget reached: raise it (UpdateWorkflow with update_mask budget), then Resume.",
          ),
        ]
      : [];
  el.usage.replaceChildren(
    h("span", { class: "usage-label" }, Object.keys(budget).length > 0 ? "Usage / budget" : "Usage"),
    ...items,
    ...note,
  );
}

function renderMeta(wf, status) {
  el.meta.replaceChildren(
    h("span", { class: "mono", title: "Workflow id" }, wf.id),
    h(
      "button",
      {
        type: "button",
        class: "btn btn-ghost btn-small copy",
        title: "Copy id",
        onclick: () => navigator.clipboard?.writeText(wf.id).then(() => toast("Workflow id copied")),
      },
      "Copy",
    ),
    h("span", { class: "sep" }),
    h("span", {}, `Created ${formatDateTime(wf.createdAt)}`),
    h("span", { class: "sep" }),
    h("span", { id: "wf-elapsed", class: "num" }),
    ...(Object.keys(wf.labels ?? {}).length > 0 ? [h("span", { class: "sep" }), ...labelChips(wf.labels, 6)] : []),
  );
  el.meta.dataset.terminal = String(TERMINAL.has(status));
}

function tickElapsed() {
  const wf = state.workflow;
  const target = document.getElementById("wf-elapsed");
  if (!wf || !target) return;
  const done = TERMINAL.has(statusName(wf.status));
  const elapsed = between(wf.createdAt, done ? wf.finishedAt || wf.updatedAt : undefined);
  target.textContent = `${done ? "Took" : "Running for"} ${formatDuration(elapsed)}`;
}

/** Finished work first, then what runs, then what waits. */
const PROGRESS_ORDER = ["PASS", "FAIL", "SKIPPED", "CANCELLED", "RUNNING", "QUEUED", "WAITING", "PENDING"];

function renderProgress() {
  const counts = countByStatus();
  const total = state.nodes.size || 1;
  el.progress.replaceChildren(
    ...PROGRESS_ORDER.filter((s) => counts.get(s) > 0).map((s) =>
      h("span", {
        class: `progress-part status-${s}`,
        title: `${counts.get(s)} ${s.toLowerCase()}`,
        dataset: { width: String(counts.get(s) / total) },
      }),
    ),
  );
  for (const part of el.progress.children) part.style.flexGrow = part.dataset.width;
  renderLegend(counts);
}

/** Legend buttons, kept across renders (a focused one stays focused): a click shows only nodes of that status. */
const legendButtons = new Map();
let legendAdded;

function renderLegend(counts) {
  for (const status of NODE_STATUSES) {
    let button = legendButtons.get(status);
    if (!button) {
      button = h(
        "button",
        {
          type: "button",
          class: `legend-item status-${status}`,
          dataset: { status },
          onclick: () => toggleFilter(status),
        },
        h("span", { class: "badge-dot" }),
        h("span", { class: "legend-text" }),
      );
      legendButtons.set(status, button);
    }
    const n = counts.get(status) ?? 0;
    button.hidden = n === 0 && !state.filter.has(status);
    button.setAttribute("aria-pressed", String(state.filter.has(status)));
    button.title = state.filter.has(status)
      ? `Showing ${status.toLowerCase()} nodes: click to show all`
      : `Show only ${status.toLowerCase()} nodes`;
    button.querySelector(".legend-text").textContent = `${n} ${status.toLowerCase()}`;
  }
  legendAdded ??= h(
    "span",
    { class: "legend-item legend-added" },
    h("span", { class: "legend-added-swatch" }),
    h("span", { class: "legend-text" }),
  );
  legendAdded.querySelector(".legend-text").textContent = `${state.added.size} added`;
  el.legend.dataset.filtering = String(state.filter.size > 0);
  if (el.legend.childElementCount === 0) el.legend.replaceChildren(...legendButtons.values(), legendAdded);
}

/** Adds a status to the graph's filter, or takes it away (none left: every node shows again). */
function toggleFilter(status) {
  if (state.filter.has(status)) state.filter.delete(status);
  else state.filter.add(status);
  dag.setFilter(state.filter);
  renderLegend(countByStatus());
}

// ---------------------------------------------------------------- unroutable banner

/** How often the live workers are re-read for the banner. */
const WORKERS_REFRESH_MS = 5_000;

/**
 * Nodes that wait for a capability no live worker serves: QUEUED, or PENDING with every parent passed and no limit
 * holding them (ready), with a capability (a wait node runs nowhere).
 */
function unroutableNodes() {
  if (!state.served) return [];
  const waiting = [];
  for (const node of state.nodes.values()) {
    const status = statusName(node.status);
    if (!node.capability || state.served.has(node.capability)) continue;
    const ready =
      status === "PENDING" &&
      !node.heldBy &&
      (node.parentIds ?? []).every((p) => statusName(state.nodes.get(p)?.status) === "PASS");
    if (status === "QUEUED" || ready) waiting.push(node);
  }
  return waiting;
}

function renderUnroutable() {
  const banner = document.getElementById("unroutable");
  const wf = state.workflow;
  const nodes = wf && !TERMINAL.has(statusName(wf.status)) ? unroutableNodes() : [];
  const byCapability = new Map();
  for (const node of nodes) {
    if (!byCapability.has(node.capability)) byCapability.set(node.capability, []);
    byCapability.get(node.capability).push(node.id);
  }
  const key = JSON.stringify([...byCapability]);
  if (banner.dataset.key === key) return;
  banner.dataset.key = key;
  banner.hidden = byCapability.size === 0;
  banner.dataset.capabilities = [...byCapability.keys()].join(",");
  banner.replaceChildren(
    ...[...byCapability].map(([capability, ids]) =>
      h(
        "p",
        { dataset: { capability } },
        h("strong", {}, `${ids.length} node${ids.length === 1 ? "" : "s"} wait${ids.length === 1 ? "s" : ""} for `),
        h("code", {}, capability),
        h("strong", {}, ", which no live worker serves"),
        ` (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ", …" : ""}). Start a worker with `,
        h("code", {}, `WORKER_CAPABILITIES=${capability}`),
        " (or add it to a running worker's list), or route it with NODE_SERVICE_ROUTES. ",
        h("a", { href: "/workers" }, "See the workers"),
      ),
    ),
  );
}

async function loadServed() {
  try {
    const { workers } = await getJson("/workers");
    state.served = new Set(workers.filter((w) => w.live).flatMap((w) => w.capabilities));
  } catch {
    // A token without access to the workers (a tenant): no banner.
    state.served = undefined;
  }
  renderUnroutable();
}

// ---------------------------------------------------------------- actions

const ALLOWED = {
  pause: ["PENDING", "RUNNING"],
  resume: ["PAUSED"],
  retry: ["FAILED"],
  cancel: ["PENDING", "RUNNING", "PAUSED"],
};

function renderActions(status) {
  for (const button of document.querySelectorAll("#wf-actions [data-action]")) {
    const allowed = ALLOWED[button.dataset.action].includes(status);
    button.disabled = !allowed || button.dataset.busy === "true";
    button.title = allowed ? "" : `Not possible while the workflow is ${status.toLowerCase()}`;
  }
}

function confirmCancel() {
  return new Promise((resolve) => {
    document.getElementById("confirm-text").textContent =
      "Unfinished nodes become CANCELLED and running calls are aborted. This cannot be undone.";
    el.confirm.returnValue = "";
    el.confirm.addEventListener("close", () => resolve(el.confirm.returnValue === "yes"), { once: true });
    el.confirm.showModal();
  });
}

async function runAction(button) {
  const action = button.dataset.action;
  if (action === "cancel" && !(await confirmCancel())) return;
  button.dataset.busy = "true";
  button.disabled = true;
  try {
    const { workflow } = await postJson(`${api}/actions/${action}`);
    setWorkflow(workflow, Number.POSITIVE_INFINITY);
    await dag.setGraph([...state.nodes.values()], state.added);
    toast(`Workflow ${statusName(workflow.status).toLowerCase()}`);
    if (state.streamEnded && action === "retry") {
      state.streamEnded = false;
      openStream();
    }
  } catch (error) {
    toast(error instanceof ApiError ? error.message : `Action failed: ${error.message}`, "error");
  } finally {
    delete button.dataset.busy;
    renderHeader();
  }
}

for (const button of document.querySelectorAll("#wf-actions [data-action]")) {
  button.addEventListener("click", () => void runAction(button));
}

// ---------------------------------------------------------------- node panel

function childrenOf(id) {
  return [...state.nodes.values()].filter((n) => (n.parentIds ?? []).includes(id)).map((n) => n.id);
}

function renderPanel() {
  if (!state.selected) {
    renderNodePanel(el.panel, null);
    return;
  }
  renderNodePanel(el.panel, {
    id: state.selected,
    node: state.selectedNode,
    attempts: state.selectedAttempts,
    error: state.selectedError,
    added: state.added.has(state.selected),
    live: state.live.get(state.selected),
    children: childrenOf(state.selected),
    workflowInput: state.workflow?.input,
    parentOutputs: parentOutputs(state.selectedNode),
    onShowEvents: (id) => filterTimeline(id),
    onSelect: (id) => select(id),
    onClose: () => select(null),
    onRerun: rerunFrom,
    onSignal: signalNode,
  });
}

/** Approves (PASS with an output) or rejects a node with `wait`; the stream then shows what the signal did. */
async function signalNode(nodeId, body) {
  const { node, completed } = await sendJson("POST", `${api}/nodes/${encodeURIComponent(nodeId)}/signal`, body);
  const verb = body.reject ? "rejected" : "approved";
  toast(completed ? `Node ${nodeId} ${verb}` : `Signal kept: node ${nodeId} is ${verb} once it is ready`);
  if (state.selected === nodeId) {
    state.selectedNode = node;
    renderPanel();
    scheduleSelectedReload();
  }
}

/** Forks the workflow from a node (with a new input when given) and opens the new workflow. */
async function rerunFrom(nodeId, input) {
  const body = { fromNodeIds: [nodeId] };
  if (input !== undefined) body.inputs = { [nodeId]: input };
  const { workflow } = await sendJson("POST", `${api}/fork`, body);
  window.location.assign(`/workflows/${encodeURIComponent(workflow.id)}`);
}

/** The parents of a node with their status and output, as last read. */
function parentOutputs(node) {
  if (!node) return [];
  return (node.parentIds ?? []).map((id) => {
    const parent = state.nodes.get(id);
    return { id, status: parent?.status, output: parent?.output, error: parent?.error };
  });
}

/** Re-reads the parents whose output the workflow snapshot predates (they passed since). */
async function refreshParents(node) {
  const stale = (node.parentIds ?? []).filter((id) => {
    const parent = state.nodes.get(id);
    return parent && statusName(parent.status) === "PASS" && parent.output === undefined;
  });
  await Promise.all(
    stale.slice(0, 20).map(async (id) => {
      try {
        const { node: fresh } = await getJson(`${api}/nodes/${encodeURIComponent(id)}`);
        const parent = state.nodes.get(id);
        if (parent) Object.assign(parent, { output: fresh.output, error: fresh.error });
      } catch {
        // Deleted meanwhile: the panel shows what it has.
      }
    }),
  );
}

function filterTimeline(nodeId) {
  const input = document.getElementById("timeline-filter");
  input.value = nodeId;
  timeline.setFilter(nodeId);
  input.scrollIntoView({ block: "nearest" });
}

async function loadSelected() {
  const id = state.selected;
  try {
    const { node, attempts } = await getJson(`${api}/nodes/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;
    await refreshParents(node);
    if (state.selected !== id) return;
    state.selectedNode = node;
    state.selectedAttempts = attempts ?? [];
    state.selectedError = undefined;
  } catch (error) {
    if (state.selected !== id) return;
    state.selectedNode = null;
    state.selectedAttempts = undefined;
    state.selectedError = error.status === 404 ? "This node no longer exists (deleted by an edit)." : error.message;
  }
  renderPanel();
}

let selectedTimer;
function scheduleSelectedReload() {
  clearTimeout(selectedTimer);
  selectedTimer = setTimeout(() => void loadSelected(), 150);
}

function select(id) {
  state.selected = id;
  state.selectedNode = id ? (state.nodes.get(id) ?? null) : null;
  state.selectedAttempts = undefined;
  state.selectedError = undefined;
  dag.select(id);
  history.replaceState(null, "", id ? `#node=${encodeURIComponent(id)}` : location.pathname);
  renderPanel();
  if (id) void loadSelected();
}

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && state.selected && !el.confirm.open) select(null);
});

// ---------------------------------------------------------------- zoom

document.getElementById("zoom-in").addEventListener("click", () => dag.zoom(1.2));
document.getElementById("zoom-out").addEventListener("click", () => dag.zoom(1 / 1.2));
document.getElementById("zoom-fit").addEventListener("click", () => dag.fit());
document.getElementById("dag-direction").addEventListener("click", () => void dag.toggleDirection());
document.getElementById("dag-collapse").addEventListener("click", () => void dag.collapseAll());

// ---------------------------------------------------------------- search and timeline filter

document.getElementById("dag-search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("dag-search");
  const id = dag.find(input.value);
  if (id === undefined) {
    input.setCustomValidity("No node has this id or name");
    input.reportValidity();
    return;
  }
  input.setCustomValidity("");
  await dag.reveal(id);
  select(id);
});
document.getElementById("dag-search").addEventListener("input", (e) => e.target.setCustomValidity(""));
document.getElementById("timeline-filter").addEventListener("input", (e) => timeline.setFilter(e.target.value));

// ---------------------------------------------------------------- start

function fatal(error) {
  setLive("ended", "Offline");
  const notFound = error instanceof ApiError && (error.status === 404 || error.status === 400);
  el.name.textContent = notFound ? "Workflow not found" : "Could not load the workflow";
  el.crumb.textContent = workflowId;
  el.meta.replaceChildren(h("span", { class: "muted" }, error.message));
  document
    .getElementById("dag")
    .replaceChildren(
      h(
        "div",
        { class: "empty" },
        h("strong", {}, notFound ? "No such workflow." : "Loading failed."),
        h("a", { href: "/" }, "Back to all workflows"),
      ),
    );
}

async function start() {
  renderPanel();
  try {
    const history = await allEvents(workflowId);
    for (const event of history) noteEvent(event);
    timeline.setAll(state.events);
    await loadWorkflow();
  } catch (error) {
    fatal(error);
    return;
  }
  document.body.dataset.ready = "true";
  const fromHash = /^#node=(.+)$/.exec(location.hash);
  if (fromHash) {
    const id = decodeURIComponent(fromHash[1]);
    select(id);
    if (state.nodes.has(id)) void dag.reveal(id);
  }
  // A finished workflow's stream replays nothing and ends at once; a retried one carries on.
  openStream();
  void loadServed();
  setInterval(() => {
    if (state.workflow && !TERMINAL.has(statusName(state.workflow.status))) void loadServed();
  }, WORKERS_REFRESH_MS);
  setInterval(() => {
    tickElapsed();
    tickNodePanel(el.panel);
  }, 1_000);
}

await start();
