// The side panel of the workflow page: everything about one node.
import {
  between,
  durationMs,
  errorKindName,
  formatAmount,
  formatClock,
  formatDateTime,
  formatDuration,
  h,
  labelChips,
  prettyJson,
  statusBadge,
  statusName,
  unitsOf,
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

/** The node's flow-control keys: its limit keys, then the implicit key of its capability. */
function limitKeys(node) {
  const keys = (node.limitKeys ?? []).map((key) =>
    h("a", { class: "chip chip-link", href: "/limits", title: "See the limits" }, key),
  );
  // A wait node (no capability) runs nowhere: no capability key holds it.
  if (node.capability) {
    keys.push(
      h(
        "span",
        { class: "chip", title: "Every node counts under its capability's key" },
        `capability:${node.capability}`,
      ),
    );
  }
  return keys.length > 0 ? keys : [h("span", { class: "muted" }, "none")];
}

/** `tokens=1,234 cost_usd=0.0025`, or a dash. */
function usageText(usage) {
  const units = unitsOf(usage);
  return units.length === 0 ? "—" : units.map(([unit, amount]) => `${unit} ${formatAmount(amount)}`).join(" · ");
}

/** Every ended attempt, oldest first: its outcome, when and how long, on which worker, what it spent and its error. */
function attemptsSection(attempts) {
  if (attempts === undefined) return null;
  const body =
    attempts.length === 0
      ? h("p", { class: "muted small" }, "No attempt has ended yet.")
      : h(
          "div",
          { class: "attempts-wrap" },
          h(
            "table",
            { class: "attempts" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                h("th", {}, "#"),
                h("th", {}, "Outcome"),
                h("th", {}, "Started"),
                h("th", {}, "Took"),
                h("th", {}, "Worker"),
                h("th", {}, "Usage"),
              ),
            ),
            h(
              "tbody",
              {},
              ...attempts.flatMap((a) => {
                const took = a.startedAt && a.finishedAt ? formatDuration(between(a.startedAt, a.finishedAt)) : "—";
                const error = a.error?.message
                  ? `${errorKindName(a.error.kind) ? `${errorKindName(a.error.kind)}: ` : ""}${a.error.message}`
                  : "";
                return [
                  h(
                    "tr",
                    { dataset: { attempt: String(a.attempt ?? 0), outcome: a.status ?? "" } },
                    h("td", { class: "attempt-cell num" }, String(a.attempt ?? 0)),
                    h(
                      "td",
                      { class: "attempt-cell" },
                      h("span", { class: ["outcome", `outcome-${a.status}`] }, a.status ?? ""),
                    ),
                    h(
                      "td",
                      { class: "attempt-cell num", title: formatDateTime(a.startedAt) },
                      a.startedAt ? formatClock(a.startedAt) : "—",
                    ),
                    h("td", { class: "attempt-cell num" }, took),
                    h(
                      "td",
                      { class: "attempt-cell attempt-worker mono", title: a.workerId ? `worker ${a.workerId}` : "" },
                      a.workerId || "—",
                    ),
                    h("td", { class: "attempt-cell attempt-usage" }, usageText(a.usage)),
                  ),
                  error
                    ? h(
                        "tr",
                        { class: "attempt-error", dataset: { attempt: String(a.attempt ?? 0) } },
                        h("td", {}),
                        h("td", { class: "attempt-error-cell", colspan: 5 }, error),
                      )
                    : null,
                ];
              }),
            ),
          ),
        );
  return h("div", { class: "panel-section" }, h("h4", {}, "Attempts"), body);
}

/** What a WAITING node waits for: a signal (and until when, with its timeout) or its start time. */
function waitingBox(node) {
  const status = statusName(node.status);
  if (node.wait && (status === "WAITING" || status === "PENDING")) {
    const timeoutMs = durationMs(node.wait.timeout) ?? 0;
    const onTimeout = node.wait.failOnTimeout ? "it fails" : "it passes with its timeout output";
    return h(
      "div",
      { class: "waiting-box" },
      h("strong", {}, status === "WAITING" ? "Waiting for a signal" : "Will wait for a signal"),
      h(
        "p",
        {},
        status === "WAITING"
          ? "Ready: completed by Approve or Reject below (or trellis signal, or the API's SignalNode). It holds no worker."
          : "Once its parents pass it waits for Approve or Reject; a signal sent now is kept until then.",
        timeoutMs > 0 ? ` After ${formatDuration(timeoutMs)} of waiting ${onTimeout}.` : " It waits for ever.",
      ),
    );
  }
  if (status === "WAITING" && node.notBefore) {
    return h(
      "div",
      { class: "waiting-box" },
      h("strong", {}, `Waiting until ${formatDateTime(node.notBefore)}`),
      h("p", {}, "Its start time (not_before): it runs then, as any ready node. It holds no worker."),
    );
  }
  return null;
}

/** What was typed in a node's Approve / Reject form, kept across the panel's re-renders (live events redraw it). */
const signalDrafts = new Map();

/**
 * Approve / Reject for a node with `wait` that has not ended: a signal through `onSignal(nodeId, body)` with the
 * SignalNodeRequest's output (the JSON typed here) or its rejection and message.
 */
function signalSection(node, onSignal) {
  const status = statusName(node.status);
  if (!onSignal || !node.wait || (status !== "WAITING" && status !== "PENDING")) return null;
  const output = h("textarea", {
    class: "signal-output mono",
    id: "signal-output",
    rows: 4,
    spellcheck: "false",
    "aria-label": "Output JSON",
  });
  // The page is one workflow: the node id is the key (a snapshot node may lack its workflow id).
  const draftKey = `${location.pathname}#${node.id}`;
  const draft = signalDrafts.get(draftKey) ?? { output: '{\n  "approved": true\n}', message: "" };
  signalDrafts.set(draftKey, draft);
  output.value = draft.output;
  output.addEventListener("input", () => {
    draft.output = output.value;
  });
  const message = h("input", {
    type: "text",
    class: "signal-message",
    id: "signal-message",
    placeholder: "Why (for Reject)",
    "aria-label": "Rejection message",
    maxlength: 16384,
  });
  message.value = draft.message;
  message.addEventListener("input", () => {
    draft.message = message.value;
  });
  const statusLine = h("p", { class: "muted small signal-status", role: "status" });
  const send = async (body, verb) => {
    for (const b of buttons) b.disabled = true;
    statusLine.textContent = `${verb}…`;
    try {
      await onSignal(node.id, body);
    } catch (error) {
      statusLine.textContent = error.message;
      for (const b of buttons) b.disabled = false;
    }
  };
  const approve = h(
    "button",
    {
      type: "button",
      class: "btn btn-primary btn-small",
      id: "signal-approve",
      title: "PASS this node with the output JSON; its children run",
      onclick: () => {
        let parsed;
        try {
          parsed = output.value.trim() === "" ? null : JSON.parse(output.value);
        } catch (error) {
          statusLine.textContent = `The output is not JSON: ${error.message}`;
          return;
        }
        void send({ output: parsed }, "Approving");
      },
    },
    "Approve",
  );
  const reject = h(
    "button",
    {
      type: "button",
      class: "btn btn-danger btn-small",
      id: "signal-reject",
      title: "FAIL this node (TASK_ERROR with the message); its descendants are skipped",
      onclick: () => void send({ reject: true, message: message.value.trim() }, "Rejecting"),
    },
    "Reject",
  );
  const buttons = [approve, reject];
  return h(
    "div",
    { class: "panel-section signal" },
    h("h4", {}, "Signal"),
    h("label", { class: "small", for: "signal-output" }, "Output JSON (on Approve)"),
    output,
    h("label", { class: "small", for: "signal-message" }, "Message (on Reject)"),
    message,
    h("div", { class: "signal-buttons" }, approve, reject),
    statusLine,
  );
}

/** The Re-run box's state per node, kept across the panel's re-renders. */
const rerunDrafts = new Map();

/**
 * "Re-run from here": forks the workflow from this node (it and everything downstream run again in a new workflow,
 * the other nodes keep their outputs), with the node's input as it is or as edited here.
 */
function rerunSection(node, onRerun) {
  if (!onRerun) return null;
  const input = h("textarea", { class: "rerun-input mono", rows: 6, spellcheck: "false", "aria-label": "New input" });
  // What was typed and whether the box is open survive the panel's re-renders (live events, the node's reload).
  const draftKey = `${location.pathname}#${node.id}`;
  const draft = rerunDrafts.get(draftKey) ?? { open: false, input: prettyJson(node.input ?? {}) };
  rerunDrafts.set(draftKey, draft);
  input.value = draft.input;
  input.addEventListener("input", () => {
    draft.input = input.value;
  });
  const status = h("p", { class: "muted small rerun-status", role: "status" });
  const button = h(
    "button",
    {
      type: "button",
      class: "btn btn-primary btn-small",
      id: "rerun-from-here",
      title: "A new workflow where this node and everything downstream run again; the others keep their outputs",
      onclick: async () => {
        let parsed;
        if (details.open) {
          try {
            parsed = JSON.parse(input.value);
          } catch (error) {
            status.textContent = `The input is not JSON: ${error.message}`;
            return;
          }
        }
        button.disabled = true;
        status.textContent = "Forking…";
        try {
          await onRerun(node.id, parsed);
        } catch (error) {
          status.textContent = error.message;
          button.disabled = false;
        }
      },
    },
    "Re-run from here",
  );
  const details = h(
    "details",
    { class: "rerun-details", open: draft.open },
    h("summary", {}, "with a new input"),
    input,
  );
  details.addEventListener("toggle", () => {
    draft.open = details.open;
  });
  return h(
    "div",
    { class: "panel-section rerun" },
    h("h4", {}, "Re-run"),
    h(
      "p",
      { class: "muted small" },
      "Starts a new workflow: this node and everything downstream run again, the other nodes keep their outputs.",
    ),
    details,
    button,
    status,
  );
}

/**
 * Renders the panel. `view` is `{ node, attempts, loading, error, children, added, workflowInput, parentOutputs,
 * onSelect, onClose, onRerun, onSignal, onShowEvents }`, or null for the placeholder. `parentOutputs` is
 * `[{id, status, output, error}]`; `onShowEvents(nodeId)` filters the timeline to the node. `onRerun(nodeId, input)` forks the workflow from the node (input undefined:
 * unchanged); `onSignal(nodeId, body)` approves or rejects a node with `wait` (body: a SignalNodeRequest's fields).
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
    node.heldBy && statusName(node.status) === "PENDING"
      ? h(
          "div",
          { class: "held-box" },
          h("strong", {}, "Held by ", h("a", { href: "/limits", class: "mono" }, node.heldBy)),
          h(
            "p",
            {},
            "Ready to run: waits for this key's limit (at its cap, out of tokens or throttled). It holds no worker slot.",
          ),
        )
      : null,
    waitingBox(node),
    // A failed node's error is shown where its output would be (below); another status's last error (a retry
    // pending) is shown here.
    node.error && statusName(node.status) !== "FAIL"
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
      ...field(
        "Capability",
        node.capability
          ? h("code", {}, node.capability)
          : h("span", { class: "muted" }, "none (completed by a signal)"),
      ),
      ...field("Attempt", `${node.attempt ?? 0} of ${maxAttempts}`),
      ...field(
        "Priority",
        h("span", { class: "num" }, String(node.priority ?? 0)),
        h("span", { class: "muted" }, " of 10"),
      ),
      ...field("Limit keys", h("div", { class: "chips" }, limitKeys(node))),
      ...timings(node),
      // A wait node never runs: its attempt timeout and retries do not apply (its wait's timeout is shown above).
      ...(node.wait ? [] : field("Timeout", formatDuration(timeoutMs))),
      ...(node.wait
        ? []
        : field(
            "Retries",
            retry.retryTaskErrors ? "infra and task errors" : "infra errors",
            h("span", { class: "muted" }, ` · backoff ${formatDuration(durationMs(retry.initialBackoff) ?? 1000)}`),
          )),
      ...(node.insertedBy
        ? field("Inserted by", h("div", { class: "chips" }, nodeLinks([node.insertedBy], onSelect)))
        : []),
      ...field("Parents", h("div", { class: "chips" }, nodeLinks(node.parentIds ?? [], onSelect))),
      ...field("Children", h("div", { class: "chips" }, nodeLinks(view.children, onSelect))),
      ...(Object.keys(node.labels ?? {}).length > 0
        ? field("Labels", h("div", { class: "chips" }, labelChips(node.labels, 20)))
        : []),
    ),
    signalSection(node, view.onSignal),
    attemptsSection(view.attempts),
    liveOutputSection(view.live),
    jsonBlock("Input", node.input, "No input."),
    outputSection(node),
    parentsSection(view.parentOutputs, onSelect),
    jsonBlock("Workflow input", view.workflowInput, "No workflow input."),
    view.onShowEvents
      ? h(
          "div",
          { class: "panel-section" },
          h(
            "button",
            {
              type: "button",
              class: "btn btn-ghost btn-small",
              id: "show-node-events",
              onclick: () => view.onShowEvents(node.id),
            },
            "Show this node's events",
          ),
        )
      : null,
    rerunSection(node, view.onRerun),
  ];
  host.replaceChildren(...parts.filter(Boolean));
}

/** A node's output; a failed node's error in its place. */
function outputSection(node) {
  const status = statusName(node.status);
  if (status === "FAIL") {
    const kind = errorKindName(node.error?.kind);
    return h(
      "div",
      { class: "panel-section output-section" },
      h("h4", {}, "Output"),
      h(
        "div",
        { class: "error-box output-error" },
        h("strong", {}, kind ? `Failed: ${kind.replace("_", " ").toLowerCase()}` : "Failed"),
        h("p", {}, node.error?.message || "No error message."),
      ),
    );
  }
  return jsonBlock("Output", node.output, status === "PASS" ? "No output." : "Not produced yet.");
}

/** What the node's parents gave it: each parent's output (or why there is none), folded. */
function parentsSection(parents, onSelect) {
  if (!parents || parents.length === 0) return null;
  return h(
    "div",
    { class: "panel-section parent-outputs" },
    h("h4", {}, "Parents' outputs"),
    ...parents.map((p) => {
      const status = statusName(p.status);
      const empty = p.output === undefined || p.output === null;
      let body;
      if (status === "FAIL") body = h("p", { class: "muted small" }, `Failed: ${p.error?.message ?? "no message"}`);
      else if (status !== "PASS")
        body = h("p", { class: "muted small" }, `Not produced yet (${status.toLowerCase()}).`);
      else
        body = empty
          ? h("p", { class: "muted small" }, "No output.")
          : h("pre", { class: "json" }, prettyJson(p.output));
      return h(
        "details",
        { class: "parent-output", dataset: { parentId: p.id }, open: parents.length <= 3 },
        h(
          "summary",
          {},
          h("span", { class: "mono" }, p.id),
          h("span", { class: `parent-status status-${status}` }, status.toLowerCase()),
        ),
        body,
        h("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => onSelect(p.id) }, "Open"),
      );
    }),
  );
}

/** The text a node's current attempt has written so far (its output chunks), when it streams. */
function liveOutputSection(live) {
  if (!live) return null;
  return h(
    "div",
    { class: "panel-section" },
    h(
      "h4",
      {},
      "Live output ",
      h("span", { class: "muted small", "data-live-attempt": "" }, `attempt ${live.attempt}`),
    ),
    h("pre", { class: "json live-output", "data-live-output": "" }, live.text),
  );
}

/**
 * Shows a node's latest output text in place, as it is written, without re-rendering the panel; false when the panel
 * shows another node or has no live output section yet (then render it).
 */
export function updateNodePanelOutput(host, nodeId, live) {
  if (host.dataset.nodeId !== nodeId) return false;
  const pre = host.querySelector("[data-live-output]");
  if (!pre) return false;
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = live.text;
  const label = host.querySelector("[data-live-attempt]");
  if (label) label.textContent = `attempt ${live.attempt}`;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
  return true;
}

/** Updates the "running for" figures without re-rendering. */
export function tickNodePanel(host) {
  for (const el of host.querySelectorAll("[data-live]")) {
    if (el.dataset.live) el.textContent = formatDuration(between(el.dataset.live));
  }
}
