import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { effectiveRetryPolicy } from "@trellis/core";
import { RetryPolicySchema } from "@trellis/proto";
import { jobIdFor } from "@trellis/queue";
import type { NodeRow } from "./mapping.js";
import type { QueuedNode } from "./state-manager.js";

/** The job to add for a QUEUED node row (its current queue generation). */
export function queuedNodeOf(
  row: Pick<NodeRow, "workflowId" | "id" | "capability" | "queueGen" | "retryPolicy">,
): QueuedNode {
  return {
    workflowId: row.workflowId,
    nodeId: row.id,
    capability: row.capability,
    jobId: jobIdFor(row.workflowId, row.id, row.queueGen),
    retryPolicy: effectiveRetryPolicy(
      row.retryPolicy ? fromJson(RetryPolicySchema, row.retryPolicy as JsonObject) : undefined,
    ),
  };
}
