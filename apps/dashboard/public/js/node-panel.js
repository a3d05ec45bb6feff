// The side panel of the workflow page: everything about one node.
import {
  between,
  durationMs,
  errorKindName,
  formatDateTime,
  formatDuration,
  h,
  labelChips,
  prettyJson,
  statusBadge,
  statusName,
} from "./format.js";

const DEFAULT_MAX_ATTEMPTS = 3;
const DEFAULT_TIMEOUT_MS = 5 * 60_000;

function field(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function nodeLinks(ids, onSelect) {
  if (ids.length === 0) return [h("span", { class: "muted" }, "none")];
  return ids.map((id) => h("button", { type: "button", class: "chip chip-link", onclick: () => onSelect(id) }, id));
}

function jsonBlock(title, value, emptyText) {
  const empty = value === undefined || value === null || (typeof value === "object" && Object.keys(value).length === 0);
  return h(
    "div",
    { class: "panel-section" },
    h("h4", {}, title),
    empty ? h("p", { class: "muted small" }, emptyText) : h("pre", { class: "json" }, prettyJson(value)),
  );
}

function placeholder() {
  return h(
    "div",
    { class: "panel-empty" },
    h("div", { class: "panel-empty-icon", "aria-hidden": "true" }, "◇"),
    h("strong", {}, "Select a node"),
    h("p", { class: "muted" }, "Click a node in the graph to see its input, output, error, attempts and timings."),
  );
}

function timings(node) {
  const status = statusName(node.status);
  const runMs = node.startedAt ? between(node.startedAt, node.finishedAt) : undefined;
  const runLabel = status === "RUNNING" ? "Running for" : "Run time";
  return [
    ...field("Created", formatDateTime(node.createdAt) || "—"),
    ...field("Started", formatDateTime(node.startedAt) || "—"),
    ...field("Finished", formatDateTime(node.finishedAt) || "—"),
    ...field(
      runLabel,
      h(
        "span",
        { class: "num", dataset: { live: status === "RUNNING" ? node.startedAt : "" } },
        runMs === undefined ? "—" : formatDuration(runMs),
      ),
    ),
  ];
}

/**
 * Renders the panel. `view` is `{ node, loading, error, children, added, onSelect, onClose }`, or null for the
 * placeholder.
 */
export function renderNodePanel(host, view) {
  if (!view) {
    host.replaceChildren(placeholder());
    host.dataset.nodeId = "";
    return;
  }
  const { node, onSelect, onClose } = view;
  host.dataset.nodeId = view.id;
  const close = h(
    "button",
    { type: "button", class: "btn btn-icon panel-close", title: "Close (Esc)", onclick: onClose },
    "×",
  );
  if (view.error) {
    host.replaceChildren(
      h("div", { class: "panel-head" }, h("h3", {}, view.id), close),
      h("p", { class: "muted" }, view.error),
    );
    return;
  }
  if (!node) {
    host.replaceChildren(
      h("div", { class: "panel-head" }, h("h3", {}, view.id), close),
      h("p", { class: "muted" }, "Loading…"),
    );
    return;
  }
  const retry = node.retryPolicy ?? {};
  const maxAttempts = retry.maxAttempts || DEFAULT_MAX_ATTEMPTS;
  const timeoutMs = durationMs(node.timeout) ?? DEFAULT_TIMEOUT_MS;
  const name = node.name || node.id;
  const parts = [
    h(
      "div",
      { class: "panel-head" },
      h(
        "div",
        {},
        h("h3", { id: "panel-title" }, name),
        name !== node.id ? h("div", { class: "mono muted small" }, node.id) : null,
      ),
      close,
    ),
    h(
      "div",
      { class: "panel-badges" },
      statusBadge(node.status),
      view.added
        ? h(
            "span",
            { class: "chip chip-added", title: "Inserted by an edit while the workflow ran" },
            "added at run time",
          )
        : null,
    ),
    node.error
      ? h(
          "div",
          { class: "error-box" },
          h("strong", {}, errorKindName(node.error.kind).replace("_", " ").toLowerCase() || "error"),
          h("p", {}, node.error.message ?? ""),
        )
      : null,
    h(
      "dl",
      { class: "facts" },
      ...field("Capability", h("code", {}, node.capability)),
      ...field("Attempt", `${node.attempt ?? 0} of ${maxAttempts}`),
      ...timings(node),
      ...field("Timeout", formatDuration(timeoutMs)),
      ...field(
        "Retries",
        retry.retryTaskErrors ? "infra and task errors" : "infra errors",
        h("span", { class: "muted" }, ` · backoff ${formatDuration(durationMs(retry.initialBackoff) ?? 1000)}`),
      ),
      ...field("Parents", h("div", { class: "chips" }, nodeLinks(node.parentIds ?? [], onSelect))),
      ...field("Children", h("div", { class: "chips" }, nodeLinks(view.children, onSelect))),
      ...(Object.keys(node.labels ?? {}).length > 0
        ? field("Labels", h("div", { class: "chips" }, labelChips(node.labels, 20)))
        : []),
    ),
    jsonBlock("Input", node.input, "No input."),
    jsonBlock("Output", node.output, statusName(node.status) === "PASS" ? "No output." : "Not produced yet."),
  ];
  host.replaceChildren(...parts.filter(Boolean));
}

/** Updates the "running for" figures without re-rendering. */
export function tickNodePanel(host) {
  for (const el of host.querySelectorAll("[data-live]")) {
    if (el.dataset.live) el.textContent = formatDuration(between(el.dataset.live));
  }
}
