import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus, type WorkflowEvent, WorkflowStatus } from "@trellis/proto";

/** Options of a {@link WorkflowProgress}. */
export interface RenderOptions {
  /** ANSI colours on the status marks. @default false */
  color?: boolean;
}

/** Node statuses a node ends in (until a workflow RETRY reopens it). */
const FINAL_NODE_STATUSES: ReadonlySet<NodeStatus> = new Set([
  NodeStatus.PASS,
  NodeStatus.FAIL,
  NodeStatus.SKIPPED,
  NodeStatus.CANCELLED,
]);

/** Whether a workflow status is SUCCEEDED, FAILED or CANCELLED. */
export function isFinalWorkflowStatus(status: WorkflowStatus): boolean {
  return status === WorkflowStatus.SUCCEEDED || status === WorkflowStatus.FAILED || status === WorkflowStatus.CANCELLED;
}

/** A status's enum name (`PASS`, `RUNNING`), or its number when unknown to this CLI. */
export function nodeStatusName(status: NodeStatus): string {
  return NodeStatus[status] ?? String(status);
}

/** A workflow status's enum name (`SUCCEEDED`), or its number when unknown to this CLI. */
export function workflowStatusName(status: WorkflowStatus): string {
  return WorkflowStatus[status] ?? String(status);
}

/** `12ms`, `1.23s`, `2m03s`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.floor((ms % 60_000) / 1000);
  return `${minutes}m${String(seconds).padStart(2, "0")}s`;
}

/** `1234`, `0.0123`, `1234.57`: whole numbers as they are, others to six significant digits. */
export function formatAmount(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(6)));
}

/** `cost_usd=0.0123 tokens=1234` (units sorted), or "" for none. */
export function formatUsage(usage: Readonly<Record<string, number>>): string {
  return Object.keys(usage)
    .sort()
    .map((unit) => `${unit}=${formatAmount(usage[unit]!)}`)
    .join(" ");
}

/** A rate's period: `500ms`, `1s`, `1m`, `1m30s`, `1h`. */
export function formatPeriod(ms: number): string {
  const parts: string[] = [];
  let rest = Math.max(0, Math.round(ms));
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest}ms`);
  return parts.join("");
}

type Tone = "green" | "red" | "yellow" | "cyan" | "dim" | "plain";

const ANSI: Record<Tone, string> = {
  green: "\x1b[32m",
  red: "\x1b[31m",
  yellow: "\x1b[33m",
  cyan: "\x1b[36m",
  dim: "\x1b[2m",
  plain: "",
};

/** How a line about a node or the workflow starts: a one-character mark and a label. */
interface Look {
  mark: string;
  label: string;
  tone: Tone;
}

function lookOfStatus(status: NodeStatus): Look {
  switch (status) {
    case NodeStatus.PENDING:
      return { mark: "·", label: "PENDING", tone: "dim" };
    case NodeStatus.QUEUED:
      return { mark: "…", label: "QUEUED", tone: "dim" };
    case NodeStatus.RUNNING:
      return { mark: "▶", label: "RUNNING", tone: "cyan" };
    case NodeStatus.PASS:
      return { mark: "✔", label: "PASS", tone: "green" };
    case NodeStatus.FAIL:
      return { mark: "✘", label: "FAIL", tone: "red" };
    case NodeStatus.SKIPPED:
      return { mark: "↷", label: "SKIPPED", tone: "dim" };
    case NodeStatus.CANCELLED:
      return { mark: "■", label: "CANCELLED", tone: "yellow" };
    case NodeStatus.WAITING:
      return { mark: "⏸", label: "WAITING", tone: "yellow" };
    case NodeStatus.UNSPECIFIED:
      return { mark: "?", label: "UNSPECIFIED", tone: "plain" };
    default: {
      const unknown: never = status;
      return { mark: "?", label: String(unknown), tone: "plain" };
    }
  }
}

/** Why a limit holds a node back, from `node.held`'s `reason`. */
const HELD_REASONS: Readonly<Record<string, string>> = {
  concurrency: "at its cap",
  rate: "out of tokens",
  throttled: "throttled",
};

function field(data: JsonObject | undefined, key: string): JsonValue | undefined {
  return data?.[key];
}

function text(value: JsonValue | undefined): string {
  return typeof value === "string" ? value : value === undefined || value === null ? "" : JSON.stringify(value);
}

function numberOf(value: JsonValue | undefined): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

/** `2026-12-04T07:00:00Z` from an event's timestamp (`2026-12-04T07:00:00.123+00:00`); the text itself if unparsable. */
function instantText(value: JsonValue | undefined): string {
  const raw = text(value);
  const ms = Date.parse(raw);
  return Number.isNaN(ms) ? raw : new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

/**
 * Why a node is WAITING, from its `node.status_changed` data: `waiting for a signal (times out at ...)`, `waiting for
 * its start time (2026-12-04T07:00:00Z)`.
 */
function waitingText(data: JsonObject | undefined): string {
  const reason = text(field(data, "reason"));
  const until = field(data, "until");
  if (until === undefined || until === null) return reason;
  const at = instantText(until);
  return reason === "waiting for a signal" ? `${reason} (times out at ${at})` : `${reason} (${at})`;
}

/** `INFRA_ERROR: connection refused` from an event's `data.error`. */
function errorText(data: JsonObject | undefined): string {
  const error = field(data, "error");
  if (typeof error !== "object" || error === null || Array.isArray(error)) return "";
  const kind = text(error.kind);
  const message = text(error.message);
  return kind && message ? `${kind}: ${message}` : kind || message;
}

/**
 * What a watcher knows about a workflow, built from its events alone (replayed from the first one): every node's
 * status, how many nodes there are (`workflow.created`'s `nodeCount`, plus nodes created, minus nodes deleted by
 * edits), how many have finished, and the workflow's status. Turns each event into the line `watch` prints.
 */
export class WorkflowProgress {
  /** The workflow's status after the last event applied. */
  status: WorkflowStatus = WorkflowStatus.UNSPECIFIED;
  /** The last sequence applied (0 before the first event). */
  lastSequence = 0n;

  readonly #color: boolean;
  readonly #nodes = new Map<string, NodeStatus>();
  readonly #runningSince = new Map<string, number>();
  readonly #waitingSince = new Map<string, number>();
  readonly #attempts = new Map<string, number>();
  #declared: number | undefined;
  #firstMs: number | undefined;
  #lastMs: number | undefined;

  constructor(opts: RenderOptions = {}) {
    this.#color = opts.color ?? false;
  }

  /** Nodes in the workflow now. */
  get total(): number {
    return Math.max(this.#declared ?? 0, this.#nodes.size);
  }

  /** Nodes in PASS, FAIL, SKIPPED or CANCELLED now. */
  get done(): number {
    let n = 0;
    for (const status of this.#nodes.values()) if (FINAL_NODE_STATUSES.has(status)) n++;
    return n;
  }

  /** Nodes per status name, e.g. `{ PASS: 3, FAIL: 1 }`, statuses in enum order. */
  counts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const status of [...this.#nodes.values()].sort((a, b) => a - b)) {
      const name = nodeStatusName(status);
      counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  }

  /** Server time of the first event (the workflow's creation when replayed from the start), in ms since the epoch. */
  get startedAtMs(): number | undefined {
    return this.#firstMs;
  }

  /** Server time from the first event to the last one applied, in ms. */
  get elapsedMs(): number {
    return this.#firstMs === undefined || this.#lastMs === undefined ? 0 : this.#lastMs - this.#firstMs;
  }

  /** Applies one event (events at or below the last sequence are ignored); returns the line to print, if any. */
  apply(event: WorkflowEvent): string | undefined {
    if (event.sequence <= this.lastSequence) return undefined;
    this.lastSequence = event.sequence;
    this.status = event.workflowStatus;
    const ms = event.time ? timestampMs(event.time) : undefined;
    if (ms !== undefined) {
      this.#firstMs ??= ms;
      this.#lastMs = ms;
    }
    const data = event.data;
    const id = event.nodeId;
    switch (event.type) {
      case "workflow.created":
        this.#declared = numberOf(field(data, "nodeCount")) ?? 0;
        return undefined;
      case "workflow.status_changed": {
        // An action (PAUSE, RETRY, ...) says who changed it; a reason says why when nobody did (a budget).
        const action = text(field(data, "action")) || text(field(data, "reason"));
        const tone: Tone =
          event.workflowStatus === WorkflowStatus.SUCCEEDED
            ? "green"
            : event.workflowStatus === WorkflowStatus.FAILED
              ? "red"
              : "plain";
        return this.#line(
          { mark: "●", label: workflowStatusName(event.workflowStatus), tone },
          "workflow",
          action ? `(${action.toLowerCase()})` : "",
        );
      }
      case "node.status_changed":
        return this.#nodeStatusChanged(event, ms);
      case "node.retry_scheduled": {
        this.#nodes.set(id, event.nodeStatus);
        const attempt = numberOf(field(data, "attempt"));
        const delay = numberOf(field(data, "delayMs"));
        const detail = [
          attempt === undefined ? "" : `attempt ${attempt} failed`,
          errorText(data),
          delay === undefined ? "" : `→ retry in ${formatDuration(delay)}`,
        ];
        return this.#line({ mark: "↻", label: "RETRY", tone: "yellow" }, id, detail.filter(Boolean).join("  "));
      }
      case "node.created": {
        if (!this.#nodes.has(id)) this.#declared = (this.#declared ?? 0) + 1;
        this.#nodes.set(id, event.nodeStatus);
        const parents = field(data, "parentIds");
        const after = Array.isArray(parents) && parents.length > 0 ? ` after ${parents.map(text).join(", ")}` : "";
        const status = event.nodeStatus === NodeStatus.PENDING ? "" : ` (${nodeStatusName(event.nodeStatus)})`;
        return this.#line(
          { mark: "+", label: "ADDED", tone: "cyan" },
          id,
          // A node without a capability is a wait node: a signal completes it.
          `${text(field(data, "capability")) || "wait node"}${after}${status}`,
        );
      }
      case "node.deleted":
        this.#nodes.delete(id);
        this.#declared = Math.max(0, (this.#declared ?? 0) - 1);
        return this.#line({ mark: "-", label: "DELETED", tone: "dim" }, id, "");
      case "node.updated": {
        this.#nodes.set(id, event.nodeStatus);
        const fields = field(data, "fields");
        return this.#line(
          { mark: "~", label: "UPDATED", tone: "plain" },
          id,
          Array.isArray(fields) ? fields.map(text).join(", ") : "",
        );
      }
      case "node.copied":
        // A fork's node that keeps the output it had in the workflow forked from.
        this.#nodes.set(id, event.nodeStatus);
        return this.#line(
          { mark: "=", label: "KEPT", tone: "green" },
          id,
          `output of ${text(field(data, "fromWorkflowId"))}`,
        );
      case "node.signaled": {
        // SignalNode's answer to a wait node: done at once, or kept until the node is WAITING.
        const reject = field(data, "reject") === true;
        const kept = field(data, "kept") === true;
        const requestId = text(field(data, "requestId"));
        const detail = [
          reject ? "reject" : "pass",
          kept ? "(kept until the node is ready)" : "",
          requestId ? `request ${requestId}` : "",
        ];
        return this.#line({ mark: "✉", label: "SIGNALED", tone: "cyan" }, id, detail.filter(Boolean).join(" "));
      }
      case "node.requeued":
        this.#nodes.set(id, event.nodeStatus);
        return this.#line({ mark: "↺", label: "REQUEUED", tone: "yellow" }, id, text(field(data, "reason")));
      case "node.unroutable": {
        // The reason and what to do about it: a worker for the capability (or a route to a NodeService serving it).
        const capability = text(field(data, "capability"));
        const hint = capability ? ` (start a worker with WORKER_CAPABILITIES=${capability})` : "";
        return this.#line(
          { mark: "!", label: "UNROUTABLE", tone: "yellow" },
          id,
          `${text(field(data, "reason"))}${hint}`,
        );
      }
      case "node.held": {
        // Ready, and left PENDING by a limit at its cap, out of tokens or throttled: said once, not a silent wait.
        this.#nodes.set(id, event.nodeStatus);
        const key = text(field(data, "key"));
        const why = HELD_REASONS[text(field(data, "reason"))];
        return this.#line(
          { mark: "◌", label: "HELD", tone: "dim" },
          id,
          [key ? `by ${key}` : "", why ? `(${why})` : ""].filter(Boolean).join(" "),
        );
      }
      case "node.throttled": {
        this.#nodes.set(id, event.nodeStatus);
        const after = numberOf(field(data, "retryAfterMs"));
        const keys = field(data, "keys") ?? field(data, "limitKeys");
        const detail = [
          after === undefined ? "" : `retry in ${formatDuration(after)}`,
          Array.isArray(keys) && keys.length > 0 ? `pauses ${keys.map(text).join(", ")}` : "",
        ];
        return this.#line({ mark: "⧖", label: "THROTTLED", tone: "yellow" }, id, detail.filter(Boolean).join("  "));
      }
      case "workflow.budget_exceeded": {
        const unit = text(field(data, "unit"));
        const used = numberOf(field(data, "usage"));
        const budget = numberOf(field(data, "budget"));
        const detail =
          used === undefined || budget === undefined
            ? unit
            : `${unit} ${formatAmount(used)} of budget ${formatAmount(budget)}`;
        return this.#line({ mark: "$", label: "BUDGET", tone: "red" }, "workflow", detail);
      }
      default:
        // workflow.updated, workflow.edited (its nodes have lines of their own) and types newer than this CLI.
        if (id !== "" && event.nodeStatus !== NodeStatus.UNSPECIFIED) this.#nodes.set(id, event.nodeStatus);
        return undefined;
    }
  }

  #nodeStatusChanged(event: WorkflowEvent, ms: number | undefined): string | undefined {
    const id = event.nodeId;
    const status = event.nodeStatus;
    this.#nodes.set(id, status);
    const data = event.data;
    const attempt = numberOf(field(data, "attempt"));
    if (attempt !== undefined) this.#attempts.set(id, attempt);
    const look = lookOfStatus(status);
    switch (status) {
      case NodeStatus.QUEUED:
        // Every node is queued before it runs: a line each would only double the output.
        return undefined;
      case NodeStatus.RUNNING:
        if (ms !== undefined) this.#runningSince.set(id, ms);
        return this.#line(look, id, attempt === undefined ? "" : `attempt ${attempt}`);
      case NodeStatus.WAITING:
        if (ms !== undefined) this.#waitingSince.set(id, ms);
        return this.#line(look, id, waitingText(data));
      case NodeStatus.PASS: {
        if (text(field(data, "from")) === "WAITING") {
          // A wait node completed by its signal or its timeout: it never ran.
          const since = this.#waitingSince.get(id);
          return this.#line(
            look,
            id,
            since !== undefined && ms !== undefined ? `after waiting ${formatDuration(ms - since)}` : "",
          );
        }
        const since = this.#runningSince.get(id);
        const took = since !== undefined && ms !== undefined ? `in ${formatDuration(ms - since)}` : "";
        const n = this.#attempts.get(id) ?? 1;
        return this.#line(look, id, [took, n > 1 ? `(attempt ${n})` : ""].filter(Boolean).join(" "));
      }
      case NodeStatus.FAIL:
        return this.#line(look, id, errorText(data));
      default:
        return this.#line(look, id, text(field(data, "reason")));
    }
  }

  #paint(tone: Tone, s: string): string {
    return this.#color && tone !== "plain" ? `${ANSI[tone]}${s}\x1b[0m` : s;
  }

  #line(look: Look, subject: string, detail: string): string {
    const counter = `[${this.done}/${this.total}]`;
    const head = `${this.#paint(look.tone, look.mark)} ${subject.padEnd(16)} ${this.#paint(look.tone, look.label.padEnd(10))}`;
    return `  ${this.#paint("dim", counter)} ${head} ${detail}`.trimEnd();
  }

  /** `[##########..........] 2/4 nodes done · RUNNING · 1.20s`, `elapsedMs` defaulting to the events' span. */
  bar(width = 30, elapsedMs = this.elapsedMs): string {
    const total = this.total;
    const done = this.done;
    const filled = total === 0 ? 0 : Math.min(width, Math.round((done / total) * width));
    const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
    return `  ${bar} ${done}/${total} nodes done · ${workflowStatusName(this.status)} · ${formatDuration(elapsedMs)}`;
  }

  /** `workflow <id> SUCCEEDED (4 PASS)`. */
  summary(workflowId: string): string {
    const counts = Object.entries(this.counts())
      .map(([name, n]) => `${n} ${name}`)
      .join(", ");
    const tone: Tone =
      this.status === WorkflowStatus.SUCCEEDED ? "green" : isFinalWorkflowStatus(this.status) ? "red" : "plain";
    return `workflow ${workflowId} ${this.#paint(tone, workflowStatusName(this.status))}${counts ? ` (${counts})` : ""}`;
  }
}
