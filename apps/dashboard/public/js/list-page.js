// The workflow list: status filter, search (name, id or label key=value), keyset paging, auto-refresh.
import { getJson } from "./api.js";
import {
  WORKFLOW_STATUSES,
  between,
  formatDateTime,
  formatDuration,
  h,
  labelChips,
  relativeTime,
  statusBadge,
  statusName,
} from "./format.js";

const REFRESH_MS = 5_000;
const PAGE_SIZE = 25;

const params = new URLSearchParams(location.search);
const view = {
  status: (params.get("status") ?? "").toUpperCase(),
  q: params.get("q") ?? "",
  /** Tokens of the pages before this one (the first page has token ""). */
  tokens: [],
  token: params.get("page_token") ?? "",
  next: "",
  loading: false,
};

const rows = document.getElementById("workflow-rows");
const empty = document.getElementById("empty");
const newer = document.getElementById("newer");
const older = document.getElementById("older");
const pageInfo = document.getElementById("page-info");
const search = document.getElementById("search");
const autoRefresh = document.getElementById("auto-refresh");

function syncUrl() {
  const next = new URLSearchParams();
  if (view.status) next.set("status", view.status.toLowerCase());
  if (view.q) next.set("q", view.q);
  if (view.token) next.set("page_token", view.token);
  const query = next.toString();
  history.replaceState(null, "", query ? `/?${query}` : "/");
}

function renderFilter() {
  const host = document.getElementById("status-filter");
  host.replaceChildren(
    ...["", ...WORKFLOW_STATUSES].map((status) =>
      h(
        "button",
        {
          type: "button",
          role: "tab",
          class: "segment",
          "aria-selected": String(view.status === status),
          dataset: { status: status || "ALL" },
          onclick: () => {
            view.status = status;
            restart();
          },
        },
        status ? status.charAt(0) + status.slice(1).toLowerCase() : "All",
      ),
    ),
  );
}

function row(workflow) {
  const status = statusName(workflow.status);
  const finished = workflow.finishedAt;
  const duration = between(workflow.createdAt, finished);
  const href = `/workflows/${encodeURIComponent(workflow.id)}`;
  return h(
    "tr",
    { dataset: { workflowId: workflow.id, status } },
    h(
      "td",
      { class: "cell-name" },
      h("a", { href, class: "wf-link" }, workflow.name || workflow.id),
      h("div", { class: "mono muted small" }, workflow.id),
    ),
    h("td", {}, statusBadge(workflow.status)),
    h("td", { class: "cell-labels" }, labelChips(workflow.labels, 3)),
    h("td", { title: formatDateTime(workflow.createdAt) }, relativeTime(workflow.createdAt)),
    h("td", { class: "num" }, finished || status === "RUNNING" || status === "PAUSED" ? formatDuration(duration) : "—"),
    h("td", { title: formatDateTime(workflow.updatedAt) }, relativeTime(workflow.updatedAt)),
  );
}

async function load({ quiet = false } = {}) {
  if (view.loading) return;
  view.loading = true;
  if (!quiet) document.body.classList.add("is-loading");
  try {
    const page = await getJson("/workflows", {
      status: view.status,
      q: view.q,
      page_token: view.token,
      page_size: PAGE_SIZE,
    });
    const workflows = page.workflows ?? [];
    view.next = page.nextPageToken ?? "";
    rows.replaceChildren(...workflows.map(row));
    empty.hidden = workflows.length > 0;
    if (workflows.length === 0) {
      empty.replaceChildren(
        h("strong", {}, view.q || view.status ? "No workflows match these filters." : "No workflows yet."),
        h(
          "span",
          { class: "muted" },
          view.q || view.status
            ? "Try another status or search term."
            : "Create one with the API or `npx trellis run docs/examples/diamond.json`.",
        ),
      );
    }
    newer.disabled = view.tokens.length === 0;
    older.disabled = view.next === "";
    pageInfo.textContent = `Page ${view.tokens.length + 1} · ${workflows.length} workflow${workflows.length === 1 ? "" : "s"}`;
  } catch (error) {
    empty.hidden = false;
    rows.replaceChildren();
    empty.replaceChildren(h("strong", {}, "Could not load workflows."), h("span", { class: "muted" }, error.message));
  } finally {
    view.loading = false;
    document.body.classList.remove("is-loading");
    document.body.dataset.ready = "true";
  }
}

function restart() {
  view.tokens = [];
  view.token = "";
  syncUrl();
  renderFilter();
  void load();
}

newer.addEventListener("click", () => {
  view.token = view.tokens.pop() ?? "";
  syncUrl();
  void load();
});
older.addEventListener("click", () => {
  if (!view.next) return;
  view.tokens.push(view.token);
  view.token = view.next;
  syncUrl();
  void load();
});

let typing;
search.value = view.q;
search.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    view.q = search.value.trim();
    restart();
  }, 250);
});
document.getElementById("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  clearTimeout(typing);
  view.q = search.value.trim();
  restart();
});

setInterval(() => {
  if (autoRefresh.checked && document.visibilityState === "visible") void load({ quiet: true });
}, REFRESH_MS);

renderFilter();
void load();
