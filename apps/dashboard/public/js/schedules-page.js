// The Schedules page: every cron schedule with its next run and last workflow, refreshed every 5 s; pause, resume and
// delete (asking first) per row, and a form to create one.
import { ApiError, getJson, sendJson } from "./api.js";
import { formatDateTime, formatDuration, h, toast } from "./format.js";

const REFRESH_MS = 5_000;

const rows = document.getElementById("schedule-rows");
const empty = document.getElementById("empty");
const form = document.getElementById("schedule-form");
const confirmDialog = document.getElementById("confirm");

let loading = false;

function button(label, action, onclick, tone = "btn-ghost") {
  return h("button", { type: "button", class: ["btn", tone, "btn-small"], dataset: { action }, onclick }, label);
}

function nextRunCell(schedule) {
  if (schedule.paused) {
    return h("td", { dataset: { field: "next" } }, h("span", { class: "chip chip-warn" }, "paused"));
  }
  return h(
    "td",
    { dataset: { field: "next" }, title: schedule.nextRunAt },
    h("div", {}, formatDateTime(schedule.nextRunAt)),
    h("div", { class: "muted small" }, `in ${formatDuration(Date.parse(schedule.nextRunAt) - Date.now())}`),
  );
}

function row(schedule) {
  const last = schedule.lastWorkflowId;
  return h(
    "tr",
    { dataset: { id: schedule.id } },
    h("td", { class: "cell-name" }, h("span", { class: "mono" }, schedule.id)),
    h("td", { class: "mono", dataset: { field: "cron" } }, schedule.cron),
    h("td", { dataset: { field: "timezone" } }, schedule.timezone || "UTC"),
    nextRunCell(schedule),
    h("td", {}, schedule.workflow?.name || h("span", { class: "muted" }, "—")),
    h(
      "td",
      { dataset: { field: "last" } },
      last
        ? h("a", { class: "mono", href: `/workflows/${encodeURIComponent(last)}` }, last.slice(0, 8))
        : h("span", { class: "muted" }, "—"),
    ),
    h(
      "td",
      { class: "cell-actions" },
      schedule.paused
        ? button("Resume", "resume", () => void act(schedule.id, "resume"))
        : button("Pause", "pause", () => void act(schedule.id, "pause")),
      button("Delete", "delete", () => void remove(schedule.id), "btn-danger"),
    ),
  );
}

async function load() {
  if (loading) return;
  loading = true;
  try {
    const { schedules } = await getJson("/schedules");
    const list = schedules ?? [];
    rows.replaceChildren(...list.map(row));
    empty.hidden = list.length > 0;
    if (list.length === 0) {
      empty.replaceChildren(
        h("strong", {}, "No schedules."),
        h(
          "span",
          { class: "muted" },
          'Create one below or with `npx trellis schedules create ID --cron "0 7 * * *" --file workflow.yaml`.',
        ),
      );
    }
    document.body.dataset.ready = "true";
  } catch (error) {
    rows.replaceChildren();
    empty.hidden = false;
    empty.replaceChildren(
      h("strong", {}, "Could not load the schedules."),
      h("span", { class: "muted" }, error.message),
    );
  } finally {
    loading = false;
  }
}

async function act(id, action) {
  try {
    await sendJson("POST", `/schedules/${encodeURIComponent(id)}/${action}`);
    toast(`Schedule ${id} ${action === "pause" ? "paused" : "resumed"}`);
  } catch (error) {
    toast(error instanceof ApiError ? error.message : `${action} failed: ${error.message}`, "error");
  }
  await load();
}

function confirmDelete(id) {
  return new Promise((resolve) => {
    document.getElementById("confirm-text").textContent =
      `Schedule ${id} creates no more workflows; the workflows it created are kept.`;
    confirmDialog.returnValue = "";
    confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "yes"), { once: true });
    confirmDialog.showModal();
  });
}

async function remove(id) {
  if (!(await confirmDelete(id))) return;
  try {
    await sendJson("DELETE", `/schedules/${encodeURIComponent(id)}`);
    toast(`Schedule ${id} deleted`);
  } catch (error) {
    toast(error instanceof ApiError ? error.message : `Delete failed: ${error.message}`, "error");
  }
  await load();
}

/** The CreateScheduleRequest the form describes (protobuf JSON). */
function requestOfForm() {
  const value = (name) => form.elements[name].value.trim();
  let workflow;
  try {
    workflow = JSON.parse(value("workflow"));
  } catch (error) {
    throw new Error(`Workflow: not JSON (${error.message})`);
  }
  return { schedule: { id: value("id"), cron: value("cron"), timezone: value("timezone"), workflow } };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const save = document.getElementById("schedule-save");
  save.disabled = true;
  try {
    const { schedule } = await sendJson("POST", "/schedules", requestOfForm());
    toast(`Schedule ${schedule.id} created: next run ${formatDateTime(schedule.nextRunAt)}`);
    form.elements.id.value = "";
    await load();
  } catch (error) {
    toast(error.message, "error");
  } finally {
    save.disabled = false;
  }
});

setInterval(() => {
  if (document.visibilityState === "visible") void load();
}, REFRESH_MS);
void load();
