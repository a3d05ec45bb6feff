// The event timeline of the workflow page, newest first.
import { formatClock, formatDateTime, formatDuration, h, statusBadge } from "./format.js";

/** Rows kept in the DOM; older ones are dropped (the API still has them). */
const MAX_ROWS = 1000;

const KNOWN = new Set([
  "from",
  "attempt",
  "reason",
  "action",
  "delayMs",
  "inserted",
  "updated",
  "deleted",
  "nodeCount",
  "key",
  "keys",
  "retryAfterMs",
  "until",
  "unit",
  "usage",
  "budget",
  "actor",
]);

/** Why a limit holds a node back, from `node.held`'s `reason`. */
const HELD_REASONS = { concurrency: "at its cap", rate: "out of tokens", throttled: "throttled" };

function list(ids) {
  return Array.isArray(ids) && ids.length > 0 ? ids.join(", ") : "";
}

/** One line saying what an event's data holds. */
export function describeEvent(event) {
  const d = event.data ?? {};
  const parts = [];
  if (d.from) parts.push(`from ${String(d.from).toLowerCase()}`);
  if (d.attempt) parts.push(`attempt ${d.attempt}`);
  if (d.action) parts.push(String(d.action).toLowerCase());
  if (d.nodeCount !== undefined) parts.push(`${d.nodeCount} nodes`);
  if (list(d.inserted)) parts.push(`+ ${list(d.inserted)}`);
  if (list(d.updated)) parts.push(`~ ${list(d.updated)}`);
  if (list(d.deleted)) parts.push(`− ${list(d.deleted)}`);
  if (d.delayMs !== undefined) parts.push(`retry in ${formatDuration(Number(d.delayMs))}`);
  if (d.key) parts.push(`held by ${d.key}`);
  if (d.retryAfterMs !== undefined) parts.push(`retry in ${formatDuration(Number(d.retryAfterMs))}`);
  if (list(d.keys)) parts.push(`pauses ${list(d.keys)}`);
  if (d.until) parts.push(`until ${formatClock(d.until, true)}`);
  if (d.unit && d.usage !== undefined && d.budget !== undefined) {
    parts.push(`${d.unit} ${Number(d.usage).toLocaleString()} of budget ${Number(d.budget).toLocaleString()}`);
  } else if (d.unit) parts.push(`unit ${d.unit}`);
  if (d.reason)
    parts.push(event.type === "node.held" ? (HELD_REASONS[d.reason] ?? String(d.reason)) : String(d.reason));
  for (const [key, value] of Object.entries(d)) {
    if (KNOWN.has(key) || value === null || value === undefined || value === "") continue;
    if (key === "parentIds" && Array.isArray(value)) parts.push(`after ${list(value) || "nothing"}`);
    else if (typeof value === "object") parts.push(`${key}: ${value.message ?? JSON.stringify(value)}`);
    else parts.push(`${key}: ${value}`);
  }
  // Who caused it: the api token or dashboard sign-in whose call wrote the event (docs/security.md).
  if (d.actor) parts.push(`by ${d.actor}`);
  return parts.join(" · ");
}

function category(type) {
  if (type.startsWith("workflow.")) return "workflow";
  if (type === "node.created" || type === "node.updated" || type === "node.deleted") return "edit";
  if (
    type === "node.retry_scheduled" ||
    type === "node.unroutable" ||
    type === "node.requeued" ||
    type === "node.held" ||
    type === "node.throttled"
  )
    return "warn";
  return "node";
}

/** The timeline card, filterable by node. */
export class Timeline {
  constructor(host, countEl, { onSelectNode }) {
    this.host = host;
    this.countEl = countEl;
    this.onSelectNode = onSelectNode;
    this.count = 0;
    /** Every event so far (oldest first): a filter picks from all of them, not only the rows drawn. */
    this.events = [];
    /** The node id (or part of one) whose events are shown; "" shows all. */
    this.filter = "";
    this.list = h("ol", { class: "timeline-list" });
    this.empty = h("p", { class: "muted small timeline-empty" }, "No event of this node yet.");
    this.empty.hidden = true;
    this.host.replaceChildren(this.list, this.empty);
  }

  /** Whether an event passes the filter: its node id is the filter, or contains it when no node has that id. */
  matches(event) {
    if (this.filter === "") return true;
    const id = (event.nodeId ?? "").toLowerCase();
    return this.exact ? id === this.filter : id.includes(this.filter);
  }

  /** Shows only the events of the node `text` names (an exact id, else ids containing it); "" shows all. */
  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.exact = this.filter !== "" && this.events.some((e) => (e.nodeId ?? "").toLowerCase() === this.filter);
    this.host.dataset.filter = this.filter;
    this.render();
  }

  render() {
    const shown = this.events.filter((e) => this.matches(e));
    this.list.replaceChildren(
      ...shown
        .slice(-MAX_ROWS)
        .reverse()
        .map((e) => this.row(e)),
    );
    this.shown = shown.length;
    this.empty.hidden = !(this.filter !== "" && shown.length === 0);
    this.updateCount();
  }

  row(event) {
    const type = event.type ?? "";
    const status = event.nodeStatus ?? (type === "workflow.status_changed" ? event.workflowStatus : undefined);
    return h(
      "li",
      {
        class: ["event", `event-kind-${category(type)}`],
        dataset: { sequence: event.sequence, type, nodeId: event.nodeId ?? "" },
      },
      h("span", { class: "event-seq mono" }, `#${event.sequence}`),
      h(
        "time",
        { class: "event-time mono", datetime: event.time, title: formatDateTime(event.time) },
        formatClock(event.time, true),
      ),
      h("span", { class: "event-type mono" }, type),
      event.nodeId
        ? h(
            "button",
            { type: "button", class: "event-node", onclick: () => this.onSelectNode(event.nodeId) },
            event.nodeId,
          )
        : h("span", { class: "event-node muted" }, "workflow"),
      h("span", { class: "event-status" }, status ? statusBadge(status, "badge-small") : null),
      h("span", { class: "event-detail" }, describeEvent(event)),
    );
  }

  /** Replaces the content with these events (oldest first). */
  setAll(events) {
    this.events = [...events];
    this.count = events.length;
    this.render();
  }

  /** Adds a newer event at the top (when it passes the filter). */
  add(event) {
    this.events.push(event);
    this.count++;
    if (this.matches(event)) {
      const el = this.row(event);
      el.classList.add("event-new");
      this.list.prepend(el);
      while (this.list.childElementCount > MAX_ROWS) this.list.lastElementChild.remove();
      this.shown = (this.shown ?? 0) + 1;
      this.empty.hidden = true;
    }
    this.updateCount();
  }

  updateCount() {
    const total = `${this.count.toLocaleString()} event${this.count === 1 ? "" : "s"}`;
    this.countEl.textContent = this.filter === "" ? total : `${(this.shown ?? 0).toLocaleString()} of ${total}`;
  }
}
