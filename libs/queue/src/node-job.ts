import type { JobsOptions } from "bullmq";
import { retryDelayMs, type EffectiveRetryPolicy } from "@trellis/core";

/** What a node's job carries: just enough to find the node; PostgreSQL holds the rest. */
export interface NodeJobData {
  workflowId: string;
  nodeId: string;
  /** The node's retry policy in force when it was queued, for the backoff strategy. */
  retryPolicy: EffectiveRetryPolicy;
}

/** Name of every node job. */
export const NODE_JOB_NAME = "execute-node";

/** Backoff type whose delay comes from the node's RetryPolicy (see nodeBackoffStrategy). */
export const NODE_BACKOFF_TYPE = "node-retry-policy";

/** Thrown by the worker's processor when the node was put back to QUEUED for a retry after `delayMs`. */
export class RetryLaterError extends Error {
  override readonly name = "RetryLaterError";
  constructor(
    readonly delayMs: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * BullMQ backoff strategy for node jobs: the delay decided with the retry (RetryLaterError), else the
 * node's policy for this attempt.
 */
export function nodeBackoffStrategy(
  attemptsMade: number,
  _type?: string,
  error?: Error,
  job?: { data?: unknown },
): number {
  if (error instanceof RetryLaterError) return error.delayMs;
  const policy = (job?.data as Partial<NodeJobData> | undefined)?.retryPolicy;
  return policy ? retryDelayMs(policy, Math.max(1, attemptsMade)) : 1_000;
}

/** Node priorities: 0..10, higher first. */
export const MAX_NODE_PRIORITY = 10;

/**
 * BullMQ's priority of a node's job: every job has one (BullMQ takes jobs without a priority before all prioritized
 * ones), 1 (first) for node priority 10 down to 11 for priority 0; equal priorities stay in the order added.
 */
export function bullPriorityOf(priority = 0): number {
  return MAX_NODE_PRIORITY + 1 - Math.min(MAX_NODE_PRIORITY, Math.max(0, Math.trunc(priority)));
}

/** BullMQ options of a node's job: deterministic id, attempts and backoff from its retry policy, its priority. */
export function nodeJobOptions(
  jobId: string,
  retryPolicy: EffectiveRetryPolicy,
  delayMs = 0,
  priority = 0,
): JobsOptions {
  return {
    jobId,
    priority: bullPriorityOf(priority),
    attempts: Math.max(1, retryPolicy.maxAttempts),
    backoff: { type: NODE_BACKOFF_TYPE },
    delay: delayMs > 0 ? delayMs : undefined,
    removeOnComplete: true,
    removeOnFail: { age: 24 * 3600 },
  };
}
