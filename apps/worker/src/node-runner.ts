import { type RecordOutcome, type ResultToRecord, type StartedNode, queueGenOfJobId } from "@trellis/db";
import { ErrorKind } from "@trellis/proto";
import { RetryLaterError, type NodeJobData } from "@trellis/queue";
import type { Logger } from "pino";
import type { HeldLeases } from "./held-leases.js";
import type { WorkerMetrics } from "./metrics.js";
import { executeNode, type NodeServiceClient } from "./node-service-client.js";

/** What happened to one job; "recording" means a success whose result is being committed in the background. */
export type JobOutcome = "dropped" | "passed" | "failed" | "stale" | "recording";

/** Dependencies of runNodeJob. */
export interface NodeRunnerDeps {
  /**
   * QUEUED -> RUNNING under a fresh lease (batched by the caller); null when the node is not QUEUED, or was queued
   * again under a newer generation than the job's.
   */
  startNode: (workflowId: string, nodeId: string, queueGen: number | undefined) => Promise<StartedNode | null>;
  /** Records a result under its lease (batched by the caller). */
  recordResult: (item: ResultToRecord) => Promise<RecordOutcome>;
  client: NodeServiceClient;
  held: HeldLeases;
  logger: Logger;
  metrics?: WorkerMetrics;
  /**
   * Takes over the recording of a success so the job (and its concurrency slot) finishes before the result
   * commits; resolves once there is room for more (backpressure). Without it every result is awaited.
   */
  defer?: (recording: Promise<void>) => Promise<void>;
}

/**
 * Runs one job: QUEUED -> RUNNING with a fresh lease, ExecuteNode, then the result recorded under the lease.
 * A retry throws RetryLaterError so BullMQ re-delivers the job after the node's backoff.
 */
export async function runNodeJob(deps: NodeRunnerDeps, data: NodeJobData, jobId?: string): Promise<JobOutcome> {
  const { held, metrics } = deps;
  const started = await deps.startNode(data.workflowId, data.nodeId, queueGenOfJobId(jobId));
  const logger = deps.logger.child({ workflow_id: data.workflowId, node_id: data.nodeId });
  if (!started) {
    logger.debug("job dropped: its node is no longer QUEUED");
    return "dropped";
  }
  const capability = started.node.capability;
  const log = logger.child({ attempt: started.attempt, capability });
  if (started.queuedAt) {
    metrics?.queueWaitSeconds.observe({ capability }, Math.max(0, Date.now() - started.queuedAt.getTime()) / 1000);
  }
  const controller = new AbortController();
  const lease = { workflowId: data.workflowId, nodeId: data.nodeId, lease: started.lease, controller };
  held.add(lease);
  let deferred = false;
  try {
    const endTimer = metrics?.executionSeconds.startTimer({ capability });
    const result = await executeNode(deps.client, started, controller.signal);
    endTimer?.();
    const item = { workflowId: data.workflowId, nodeId: data.nodeId, lease: started.lease, result };
    if (result.kind === "success" && deps.defer) {
      // Safe to finish the job first: until the result commits the node is RUNNING under a renewed lease,
      // and if this process dies the lease expires and the node runs again (at-least-once).
      const recording = deps
        .recordResult(item)
        .then((outcome) => void describeOutcome(outcome, result, log))
        .catch((error: unknown) => log.error({ err: error }, "recording a result failed; the lease will expire"))
        .finally(() => held.delete(lease));
      deferred = true;
      await deps.defer(recording);
      return "recording";
    }
    return describeOutcome(await deps.recordResult(item), result, log);
  } finally {
    if (!deferred) held.delete(lease);
  }
}

/** Logs how a result was recorded; a retry becomes RetryLaterError for BullMQ's backoff. */
function describeOutcome(outcome: RecordOutcome, result: ResultToRecord["result"], log: Logger): JobOutcome {
  switch (outcome.outcome) {
    case "passed":
      log.debug("node passed");
      return "passed";
    case "failed":
      // Finishes and retries are counted from their committed events (eventMetrics), once, wherever committed.
      log.info({ error: outcome.message, error_kind: ErrorKind[outcome.errorKind] }, "node failed");
      return "failed";
    case "retry":
      log.info(
        { delay_ms: outcome.delayMs, error: result.kind === "error" ? result.message : "" },
        "node retry scheduled",
      );
      throw new RetryLaterError(outcome.delayMs, result.kind === "error" ? result.message : "retry");
    case "stale":
      log.warn("result not recorded: the node's lease was lost (cancelled, re-queued or taken over)");
      return "stale";
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${JSON.stringify(never)}`);
    }
  }
}
