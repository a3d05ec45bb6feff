// The Limits page: every flow-control key with what it holds now (running, waiting, tokens, throttle), refreshed
// every 2 s, and a form to set (create or replace) a limit; delete asks first.
import { ApiError, getJson, sendJson } from "./api.js";
import {
  durationMs,
  formatAmount,
  formatClock,
  formatDateTime,
  formatDuration,
  formatPeriod,
  h,
  toast,
} from "./format.js";

const REFRESH_MS = 2_000;
const PERIOD_UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

const rows = document.getElementById("limit-rows");
const empty = document.getElementById("empty");
const form = document.getElementById("limit-form");
const confirmDialog = document.getElementById("confirm");

let loading = false;

/** `500ms`, `30s`, `1m`, `1m30s` -> milliseconds; undefined for anything else. */
function parsePeriod(text) {
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) return undefined;
  let ms = 0;
  for (const [, amount, , unit] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g))
    ms += Number(amount) * PERIOD_UNIT_MS[unit];
  return Math.round(ms);
}

/** A bar of `fraction` (0..1), filled with `tone`. */
function bar(fraction, tone, title) {
  const fill = h("span", { class: ["meter-fill", `meter-${tone}`] });
  fill.style.width = `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}%`;
  return h("span", { class: "meter", title }, fill);
}

function runningCell(limit) {
  const running = limit.running ?? 0;
  const cap = limit.maxConcurrency ?? 0;
  if (cap === 0) return h("td", { class: "num", dataset: { field: "running" } }, String(running));
  const full = running >= cap;
  return h(
    "td",
    { class: "num", dataset: { field: "running" } },
    h("div", {}, `${running} / ${cap}`, full ? h("span", { class: "chip chip-warn" }, "at cap") : null),
    bar(running / cap, full ? "warn" : "ok", `${running} of ${cap} slots held (QUEUED or RUNNING)`),
  );
}

function rateText(limit) {
  if (!limit.rate) return "—";
  const periodMs = durationMs(limit.period) ?? 1_000;
  return `${formatAmount(limit.rate)} ${limit.unit || "starts"} / ${formatPeriod(periodMs)}`;
}

function availableCell(limit) {
  if (!limit.rate) return h("td", { class: "muted", dataset: { field: "available" } }, "—");
  const burst = limit.burst || limit.rate;
  const available = limit.available ?? 0;
  const used = burst - available;
  const unit = limit.unit || "starts";
  return h(
    "td",
    { dataset: { field: "available" } },
    h(
      "div",
      { class: "num" },
      available < 0
        ? h(
            "span",
            { class: "text-warn", title: "Usage reported after calls went past the bucket: it refills first" },
            `${formatAmount(available)} (owed)`,
          )
        : `${formatAmount(available)} of ${formatAmount(burst)} left`,
    ),
    bar(
      used / burst,
      available <= 0 ? "warn" : "ok",
      `${formatAmount(used)} ${unit} used of a burst of ${formatAmount(burst)}`,
    ),
  );
}

function throttledCell(limit) {
  const until = limit.throttledUntil ? Date.parse(limit.throttledUntil) : undefined;
  const total = Number(limit.throttledTotal ?? 0);
  const parts = [];
  if (until !== undefined && until > Date.now()) {
    parts.push(
      h(
        "span",
        {
          class: "chip chip-warn",
          title: `Paused by a THROTTLED answer until ${formatDateTime(limit.throttledUntil)}`,
        },
        `until ${formatClock(limit.throttledUntil)} (${formatDuration(until - Date.now())})`,
      ),
    );
  }
  if (total > 0) parts.push(h("div", { class: "muted small" }, `${total} THROTTLED so far`));
  return h("td", { dataset: { field: "throttled" } }, parts.length > 0 ? parts : h("span", { class: "muted" }, "—"));
}

function row(limit) {
  const configured = limit.configured !== false;
  return h(
    "tr",
    { dataset: { key: limit.key } },
    h(
      "td",
      { class: "cell-name" },
      h("span", { class: "mono" }, limit.key),
      configured
        ? null
        : h(
            "div",
            { class: "muted small", title: "No limit is set on this key: a THROTTLED answer paused it" },
            "throttle only",
          ),
    ),
    runningCell(limit),
    h(
      "td",
      { class: "num", dataset: { field: "waiting" }, title: "Ready nodes held back (PENDING, held by a limit)" },
      String(limit.waiting ?? 0),
    ),
    h(
      "td",
      { dataset: { field: "rate" } },
      rateText(limit),
      limit.rate ? h("div", { class: "muted small" }, `burst ${formatAmount(limit.burst || limit.rate)}`) : null,
    ),
    availableCell(limit),
    throttledCell(limit),
    h(
      "td",
      { class: "cell-actions" },
      configured
        ? [
            h(
              "button",
              {
                type: "button",
                class: "btn btn-ghost btn-small",
                dataset: { action: "edit" },
                onclick: () => edit(limit),
              },
              "Edit",
            ),
            h(
              "button",
              {
                type: "button",
                class: "btn btn-danger btn-small",
                dataset: { action: "delete" },
                onclick: () => void remove(limit.key),
              },
              "Delete",
            ),
          ]
        : null,
    ),
  );
}

async function load() {
  if (loading) return;
  loading = true;
  try {
    const { limits } = await getJson("/limits");
    rows.replaceChildren(...(limits ?? []).map(row));
    empty.hidden = (limits ?? []).length > 0;
    if ((limits ?? []).length === 0) {
      empty.replaceChildren(
        h("strong", {}, "No limits."),
        h(
          "span",
          { class: "muted" },
          "Every key runs without a cap. Set one below or with `npx trellis limits set KEY --max-concurrency N`.",
        ),
      );
    }
    document.body.dataset.ready = "true";
  } catch (error) {
    rows.replaceChildren();
    empty.hidden = false;
    empty.replaceChildren(h("strong", {}, "Could not load the limits."), h("span", { class: "muted" }, error.message));
  } finally {
    loading = false;
  }
}

/** Fills the form with a limit, to change it. */
function edit(limit) {
  form.elements.key.value = limit.key;
  form.elements.maxConcurrency.value = limit.maxConcurrency ? String(limit.maxConcurrency) : "";
  form.elements.rate.value = limit.rate ? String(limit.rate) : "";
  form.elements.period.value = limit.rate ? formatPeriod(durationMs(limit.period) ?? 1_000) : "";
  form.elements.burst.value = limit.rate && limit.burst ? String(limit.burst) : "";
  form.elements.unit.value = limit.unit ?? "";
  document.getElementById("form-title").textContent = `Change ${limit.key}`;
  form.scrollIntoView({ behavior: "smooth", block: "center" });
  form.elements.maxConcurrency.focus();
}

function confirmDelete(key) {
  return new Promise((resolve) => {
    document.getElementById("confirm-text").textContent =
      `The nodes ${key} holds back run as soon as the other keys they hold allow.`;
    confirmDialog.returnValue = "";
    confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "yes"), { once: true });
    confirmDialog.showModal();
  });
}

async function remove(key) {
  if (!(await confirmDelete(key))) return;
  try {
    await sendJson("DELETE", `/limits/${encodeURIComponent(key)}`);
    toast(`Limit ${key} deleted`);
  } catch (error) {
    toast(error instanceof ApiError ? error.message : `Delete failed: ${error.message}`, "error");
  }
  await load();
}

/** The SetLimitRequest the form describes (protobuf JSON); empty fields are left to the defaults. */
function requestOfForm() {
  const value = (name) => form.elements[name].value.trim();
  const limit = { key: value("key") };
  if (value("maxConcurrency") !== "") limit.maxConcurrency = Number(value("maxConcurrency"));
  if (value("rate") !== "") limit.rate = Number(value("rate"));
  if (value("period") !== "") {
    const ms = parsePeriod(value("period"));
    if (ms === undefined) throw new Error(`Period "${value("period")}" is not a duration such as 500ms, 30s, 1m or 1h`);
    limit.period = `${ms / 1000}s`;
  }
  if (value("burst") !== "") limit.burst = Number(value("burst"));
  if (value("unit") !== "") limit.unit = value("unit");
  return { limit };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const save = document.getElementById("limit-save");
  save.disabled = true;
  try {
    const { limit } = await sendJson("POST", "/limits", requestOfForm());
    toast(`Limit ${limit.key} saved`);
    form.reset();
    document.getElementById("form-title").textContent = "Set a limit";
    await load();
  } catch (error) {
    toast(error instanceof ApiError ? error.message : error.message, "error");
  } finally {
    save.disabled = false;
  }
});
form.addEventListener("reset", () => {
  document.getElementById("form-title").textContent = "Set a limit";
});

setInterval(() => {
  if (document.visibilityState === "visible") void load();
}, REFRESH_MS);
void load();
