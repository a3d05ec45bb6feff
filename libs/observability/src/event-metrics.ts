import { Counter, type Registry } from "prom-client";
import type { EventHook } from "./event-hooks.js";

/**
 * The fields of a committed workflow event that the metrics read. `NewEvent` of `@trellis/db` (what `onEvents`
 * receives) has them; statuses are the enum names without prefix (`PASS`, `SUCCEEDED`).
 */
export interface ObservedEvent {
  /** `node.status_changed`, `workflow.status_changed`, `node.retry_scheduled`, ... */
  type: string;
  /** The workflow's status once the event's transaction committed. */
  workflowStatus: string;
  /** The node's status after the event; null for workflow-level events. */
  nodeStatus?: string | null | undefined;
  /** Type-specific detail: `error.kind` of a failure, `capability` of the node when the event carries it. */
  data?: unknown;
}

/** The statuses that end a node (it runs no more unless its workflow is retried). */
export const FINAL_NODE_STATUSES = ["PASS", "FAIL", "SKIPPED", "CANCELLED"] as const;

/** The statuses that end a workflow (until a RETRY reopens a FAILED one). */
export const FINAL_WORKFLOW_STATUSES = ["SUCCEEDED", "FAILED", "CANCELLED"] as const;

type FinalNodeStatus = (typeof FINAL_NODE_STATUSES)[number];
type FinalWorkflowStatus = (typeof FINAL_WORKFLOW_STATUSES)[number];

const ERROR_KINDS: ReadonlySet<string> = new Set(["TASK_ERROR", "INFRA_ERROR"]);

/** A well-formed capability (CAPABILITY_PATTERN of @trellis/core, kept here so logging and metrics stay light). */
const CAPABILITY = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** The counters derived from committed events. */
export interface EventMetrics {
  /** `trellis_nodes_finished_total{capability,status,error_kind}`. */
  nodesFinished: Counter<"capability" | "status" | "error_kind">;
  /** `trellis_node_retries_total{capability}`. */
  nodeRetries: Counter<"capability">;
  /** `trellis_workflows_finished_total{status}`. */
  workflowsFinished: Counter<"status">;
}

/** The counter named `name` on `registry`, registered by the first caller. */
function counterOn<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as Counter<L>;
  return new Counter<L>({ name, help, labelNames, registers: [registry] });
}

/**
 * Registers (or finds, when the registry already has them) the event-derived counters on `registry`. Workflow
 * statuses start at 0 so `rate()` sees the first finish.
 */
export function createEventMetrics(registry: Registry): EventMetrics {
  const metrics: EventMetrics = {
    nodesFinished: counterOn(
      registry,
      "trellis_nodes_finished_total",
      "Nodes that reached a final status (PASS, FAIL, SKIPPED, CANCELLED), counted by the process that committed it.",
      ["capability", "status", "error_kind"],
    ),
    nodeRetries: counterOn(
      registry,
      "trellis_node_retries_total",
      "Failed node attempts that were scheduled for another attempt.",
      ["capability"],
    ),
    workflowsFinished: counterOn(
      registry,
      "trellis_workflows_finished_total",
      "Workflows that reached a final status (SUCCEEDED, FAILED, CANCELLED), counted by the process that committed it.",
      ["status"],
    ),
  };
  for (const status of FINAL_WORKFLOW_STATUSES) metrics.workflowsFinished.inc({ status }, 0);
  return metrics;
}

function isFinalNodeStatus(status: string | null | undefined): status is FinalNodeStatus {
  return (FINAL_NODE_STATUSES as readonly (string | null | undefined)[]).includes(status);
}

function isFinalWorkflowStatus(status: string): status is FinalWorkflowStatus {
  return (FINAL_WORKFLOW_STATUSES as readonly string[]).includes(status);
}

function field(data: unknown, key: string): unknown {
  return typeof data === "object" && data !== null ? (data as Record<string, unknown>)[key] : undefined;
}

/** The node's capability when the event carries a well-formed one, else "" (labels stay bounded either way). */
function capabilityOf(data: unknown): string {
  const capability = field(data, "capability");
  return typeof capability === "string" && CAPABILITY.test(capability) ? capability : "";
}

/** `TASK_ERROR` or `INFRA_ERROR` from a failure's `data.error.kind`, else "". */
function errorKindOf(data: unknown): string {
  const kind = field(field(data, "error"), "kind");
  return typeof kind === "string" && ERROR_KINDS.has(kind) ? kind : "";
}

/**
 * Counts one committed batch of events:
 * - a node entering PASS, FAIL, SKIPPED or CANCELLED (`node.status_changed`, or `node.created`/`node.updated` of a
 *   node born SKIPPED or CANCELLED under a finished parent) in `trellis_nodes_finished_total`;
 * - `node.retry_scheduled` in `trellis_node_retries_total`;
 * - a workflow entering SUCCEEDED, FAILED or CANCELLED in `trellis_workflows_finished_total`.
 */
export function countEvents(metrics: EventMetrics, events: readonly ObservedEvent[]): void {
  for (const event of events) {
    switch (event.type) {
      case "node.status_changed":
      case "node.created":
      case "node.updated": {
        const status = event.nodeStatus;
        if (!isFinalNodeStatus(status)) break;
        metrics.nodesFinished.inc({
          capability: capabilityOf(event.data),
          status,
          error_kind: status === "FAIL" ? errorKindOf(event.data) : "",
        });
        break;
      }
      case "node.retry_scheduled":
        metrics.nodeRetries.inc({ capability: capabilityOf(event.data) });
        break;
      case "workflow.status_changed":
        if (isFinalWorkflowStatus(event.workflowStatus))
          metrics.workflowsFinished.inc({ status: event.workflowStatus });
        break;
      default:
        break;
    }
  }
}

/**
 * An `onEvents` hook counting committed events on `registry` (see {@link countEvents}). Every event is committed by
 * exactly one process and handed to that process's hook once, after commit, so wiring this hook into every
 * StateManager that writes counts each transition exactly once across the deployment: sum the series over `app`.
 */
export function eventMetrics(registry: Registry): EventHook<ObservedEvent> {
  const metrics = createEventMetrics(registry);
  return (events) => countEvents(metrics, events);
}
