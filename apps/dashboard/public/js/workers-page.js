// The Workers page: every registered worker (GET /api/workers) with its capabilities, heartbeat age and running
// nodes, refreshed every 2 s, and the capabilities live workers serve.
import { getJson } from "./api.js";
import { formatDateTime, formatDuration, h, relativeTime } from "./format.js";

const REFRESH_MS = 2_000;

const rows = document.getElementById("worker-rows");
const empty = document.getElementById("empty");
const summary = document.getElementById("capabilities");

function runningCell(running) {
  const entries = Object.entries(running ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  return h(
    "td",
    { dataset: { field: "running" }, class: "num" },
    h("strong", {}, String(total)),
    entries.length > 0
      ? h("div", { class: "muted small" }, entries.map(([capability, n]) => `${capability} ${n}`).join(" · "))
      : null,
  );
}

function row(worker) {
  return h(
    "tr",
    { dataset: { workerId: worker.id, live: String(worker.live) } },
    h(
      "td",
      { class: "cell-name" },
      h("div", { class: "mono" }, worker.id),
      worker.hostname ? h("div", { class: "muted small" }, worker.hostname) : null,
    ),
    h(
      "td",
      { dataset: { field: "state" } },
      h("span", { class: ["chip", worker.live ? "chip-live" : "chip-warn"] }, worker.live ? "live" : "silent"),
    ),
    h(
      "td",
      { dataset: { field: "capabilities" } },
      h("div", { class: "chips" }, ...worker.capabilities.map((c) => h("code", { class: "chip" }, c))),
    ),
    h(
      "td",
      { class: "num", dataset: { field: "heartbeat" }, title: formatDateTime(worker.heartbeatAt) },
      `${formatDuration(worker.heartbeatAgeMs)} ago`,
    ),
    runningCell(worker.running),
    h("td", { title: formatDateTime(worker.startedAt) }, relativeTime(worker.startedAt)),
  );
}

/** Each capability with its live workers; capabilities only silent workers pull are flagged. */
function renderSummary(workers) {
  const live = new Map();
  for (const worker of workers) {
    for (const capability of worker.capabilities) {
      live.set(capability, (live.get(capability) ?? 0) + (worker.live ? 1 : 0));
    }
  }
  const items = [...live].sort(([a], [b]) => a.localeCompare(b));
  summary.replaceChildren(
    ...items.map(([capability, n]) =>
      h(
        "span",
        { class: ["chip", n > 0 ? "chip-live" : "chip-warn"], dataset: { capability, workers: String(n) } },
        `${capability}: ${n} live`,
      ),
    ),
  );
}

async function load() {
  try {
    const { workers, staleAfterMs } = await getJson("/workers");
    document.getElementById("stale-after").textContent = formatDuration(staleAfterMs);
    rows.replaceChildren(...workers.map(row));
    empty.hidden = workers.length > 0;
    renderSummary(workers);
  } catch (error) {
    empty.hidden = false;
    empty.replaceChildren(h("strong", {}, "Could not load the workers."), h("span", { class: "muted" }, error.message));
  }
  document.body.dataset.ready = "true";
}

await load();
setInterval(() => void load(), REFRESH_MS);
