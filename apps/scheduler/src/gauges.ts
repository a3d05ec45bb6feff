import type { StateManager } from "@trellis/db";
import type { NodeQueues } from "@trellis/queue";
import type { SchedulerMetrics } from "./metrics.js";

/** The BullMQ job states reported in `trellis_queue_jobs{state}`: a fixed set, so the label stays bounded. */
export const QUEUE_JOB_STATES = [
  "waiting",
  "prioritized",
  "active",
  "delayed",
  "paused",
  "waiting-children",
  "completed",
  "failed",
] as const;

/** The workflow statuses reported in `trellis_workflows_active{status}`. */
export const ACTIVE_WORKFLOW_STATUSES = ["PENDING", "RUNNING", "PAUSED"] as const;

/** Sets `trellis_workflows_active{status}` from PostgreSQL; a status with no workflow reads 0 rather than vanishing. */
export async function refreshWorkflowGauges(
  stateManager: Pick<StateManager, "countWorkflowsByStatus">,
  metrics: Pick<SchedulerMetrics, "workflowsActive">,
): Promise<void> {
  const counts = await stateManager.countWorkflowsByStatus();
  for (const status of ACTIVE_WORKFLOW_STATUSES) metrics.workflowsActive.set({ status }, counts.get(status) ?? 0);
}

/**
 * Sets `trellis_queue_jobs{capability,state}` from BullMQ's job counts of every capability queue under the prefix
 * (`capabilities`: NodeQueues.discover's, found in Redis, so queues only workers or an earlier scheduler used are
 * counted too). Queues that disappeared (e.g. after a Redis flush) drop out.
 */
export async function refreshQueueGauges(
  queues: Pick<NodeQueues, "queue">,
  capabilities: readonly string[],
  metrics: Pick<SchedulerMetrics, "queueJobs">,
): Promise<void> {
  const counts = await Promise.all(
    capabilities.map((capability) => queues.queue(capability).getJobCounts(...QUEUE_JOB_STATES)),
  );
  metrics.queueJobs.reset();
  capabilities.forEach((capability, i) => {
    for (const state of QUEUE_JOB_STATES) metrics.queueJobs.set({ capability, state }, counts[i]?.[state] ?? 0);
  });
}
