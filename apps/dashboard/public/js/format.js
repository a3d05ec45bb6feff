// Small DOM and formatting helpers shared by the dashboard pages (plain ES modules, no build step).

const SVG_NS = "http://www.w3.org/2000/svg";

/** Node statuses in the order the legend shows them. */
export const NODE_STATUSES = ["PENDING", "WAITING", "QUEUED", "RUNNING", "PASS", "FAIL", "SKIPPED", "CANCELLED"];

/** Workflow statuses the list can filter by. */
export const WORKFLOW_STATUSES = ["PENDING", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"];

/** `NODE_STATUS_PASS` -> `PASS`; protobuf JSON leaves the zero value out, so undefined is UNSPECIFIED. */
export function statusName(value) {
  if (!value) return "UNSPECIFIED";
  return String(value).replace(/^(NODE|WORKFLOW)_STATUS_/, "");
}

/** `ERROR_KIND_TASK_ERROR` -> `TASK_ERROR`. */
export function errorKindName(value) {
  return value ? String(value).replace(/^ERROR_KIND_/, "") : "";
}

function applyAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Creates an HTML element: `h("a", { href, class }, "text", otherNode)`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Creates an SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

/** A status pill: coloured dot + label. */
export function statusBadge(status, extraClass) {
  const name = statusName(status);
  return h(
    "span",
    { class: ["badge", `status-${name}`, extraClass], dataset: { status: name } },
    h("span", { class: "badge-dot" }),
    name.charAt(0) + name.slice(1).toLowerCase(),
  );
}

/** Label chips (`key=value`), at most `max` with a `+n` for the rest. */
export function labelChips(labels, max = 4) {
  const entries = Object.entries(labels ?? {});
  const chips = entries.slice(0, max).map(([k, v]) => h("span", { class: "chip", title: `${k}=${v}` }, `${k}=${v}`));
  if (entries.length > max) chips.push(h("span", { class: "chip chip-more" }, `+${entries.length - max}`));
  return chips;
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** `14:03:22`, with milliseconds when asked. */
export function formatClock(iso, millis = false) {
  if (!iso) return "";
  const d = new Date(iso);
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

/** `2025-01-31 14:03:22` in local time. */
export function formatDateTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${formatClock(iso)}`;
}

/** `850 ms`, `12.3 s`, `2m 13s`, `1h 02m`. */
export function formatDuration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return "";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const totalSeconds = Math.floor(ms / 1000);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return `${hours}h ${pad(minutes)}m`;
  return `${minutes}m ${pad(seconds)}s`;
}

/** Milliseconds between two timestamps (`to` defaults to now). */
export function between(fromIso, toIso) {
  if (!fromIso) return undefined;
  const to = toIso ? Date.parse(toIso) : Date.now();
  return to - Date.parse(fromIso);
}

/** `just now`, `4 min ago`, `3 h ago`, else the date. */
export function relativeTime(iso) {
  if (!iso) return "";
  const ms = Date.now() - Date.parse(iso);
  if (ms < 45_000) return "just now";
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min ago`;
  if (ms < 86_400_000) return `${Math.round(ms / 3_600_000)} h ago`;
  return formatDateTime(iso);
}

/** A protobuf JSON Duration (`"1.5s"`) in milliseconds. */
export function durationMs(value) {
  if (!value) return undefined;
  const n = Number.parseFloat(String(value));
  return Number.isNaN(n) ? undefined : n * 1000;
}

/** `100,000`, `0.0123`, `-2,345.5`: an amount of units, at most four decimals. */
export function formatAmount(n) {
  const value = Number(n ?? 0);
  return Number.isFinite(value) ? value.toLocaleString("en-US", { maximumFractionDigits: 4 }) : String(n);
}

/** `500ms`, `1s`, `1m`, `1m30s`, `1h`: a rate's period. */
export function formatPeriod(ms) {
  let rest = Math.max(0, Math.round(ms ?? 0));
  const parts = [];
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
  ]) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest}ms`);
  return parts.join("");
}

/** Usage or a budget (`{tokens: 1234}`) as `[unit, amount]` pairs, units sorted. */
export function unitsOf(map) {
  return Object.entries(map ?? {}).sort(([a], [b]) => a.localeCompare(b));
}

/** Pretty JSON for the panels. */
export function prettyJson(value) {
  return JSON.stringify(value, null, 2);
}

/** Shows a short message in the corner; errors stay a little longer. */
export function toast(message, kind = "info") {
  let host = document.getElementById("toasts");
  if (!host) {
    host = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(host);
  }
  const item = h("div", { class: ["toast", `toast-${kind}`] }, message);
  host.append(item);
  setTimeout(() => item.classList.add("toast-leaving"), kind === "error" ? 6000 : 3000);
  setTimeout(() => item.remove(), kind === "error" ? 6400 : 3400);
}
