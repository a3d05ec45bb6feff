import { effectiveRetryPolicy } from "@trellis/core";
import { jobIdFor } from "@trellis/queue";
import { type NodeRow, nodeRowFromRaw, retryPolicyFromJson } from "./mapping.js";
import type { QueuedNode } from "./state-manager.js";
import type { FunctionRow } from "./transactions.js";

/** The job to add for a QUEUED node row (its current queue generation). */
export function queuedNodeOf(
  row: Pick<NodeRow, "workflowId" | "id" | "capability" | "queueGen" | "retryPolicy"> & { priority?: number | null },
): QueuedNode {
  return {
    workflowId: row.workflowId,
    nodeId: row.id,
    capability: row.capability,
    jobId: jobIdFor(row.workflowId, row.id, row.queueGen),
    retryPolicy: effectiveRetryPolicy(retryPolicyFromJson(row.retryPolicy)),
    ...(row.priority ? { priority: row.priority } : {}),
  };
}

/** The new job of a node trellis_record_errors put back for a retry (a 'retry' row), run after its delay. */
export function retriedJobOf(body: Record<string, unknown>): QueuedNode {
  return { ...queuedNodeOf(nodeRowFromRaw(body)), delayMs: Number(body.delay_ms) };
}

/** The new jobs of the retries among the rows of trellis_record_errors called with new jobs for all. */
export function retriedJobs(rows: readonly FunctionRow[]): QueuedNode[] {
  return rows.filter((r) => r.kind === "retry").map((r) => retriedJobOf(r.body));
}
