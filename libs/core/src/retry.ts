import { ErrorKind, type Node, type RetryPolicy } from "@trellis/proto";
import { durationToMs, isValidDuration } from "./durations.js";

/** A node's retry policy with every default filled in. */
export interface EffectiveRetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** Delay after the first failed attempt; doubled after each further one. */
  initialBackoffMs: number;
  /** Cap on the delay between attempts. */
  maxBackoffMs: number;
  /** Whether a TASK_ERROR is retried like an INFRA_ERROR. */
  retryTaskErrors: boolean;
}

/** The retry policy of a node that sets none (CONTRACT §1 RetryPolicy defaults). */
export const DEFAULT_RETRY_POLICY: EffectiveRetryPolicy = {
  maxAttempts: 3,
  initialBackoffMs: 1000,
  maxBackoffMs: 60_000,
  retryTaskErrors: false,
};

/** Per-attempt timeout of a node that sets none: 5 minutes. */
export const DEFAULT_NODE_TIMEOUT_MS = 300_000;

/** Longest per-attempt timeout a node may set: 24 hours. */
export const MAX_NODE_TIMEOUT_MS = 86_400_000;

/** Longest backoff a retry policy may set: 24 hours. */
export const MAX_RETRY_BACKOFF_MS = 86_400_000;

/** Most attempts a retry policy may set. */
export const MAX_RETRY_ATTEMPTS = 100;

/** A positive duration in whole milliseconds (rounded up), or undefined when unset, zero or malformed. */
function positiveMs(d: RetryPolicy["initialBackoff"]): number | undefined {
  if (d === undefined || !isValidDuration(d)) return undefined;
  const ms = durationToMs(d);
  return ms > 0 ? Math.ceil(ms) : undefined;
}

/**
 * `policy` with defaults for every field left 0 or unset. When only `initial_backoff` is set and it
 * exceeds the default cap, the cap rises to it so the first delay is what the caller asked for.
 */
export function effectiveRetryPolicy(policy: RetryPolicy | undefined): EffectiveRetryPolicy {
  const maxAttempts =
    policy !== undefined && policy.maxAttempts > 0 ? policy.maxAttempts : DEFAULT_RETRY_POLICY.maxAttempts;
  const initialBackoffMs = positiveMs(policy?.initialBackoff) ?? DEFAULT_RETRY_POLICY.initialBackoffMs;
  const maxBackoffMs = positiveMs(policy?.maxBackoff) ?? Math.max(DEFAULT_RETRY_POLICY.maxBackoffMs, initialBackoffMs);
  return { maxAttempts, initialBackoffMs, maxBackoffMs, retryTaskErrors: policy?.retryTaskErrors ?? false };
}

/** A node's per-attempt timeout in milliseconds: its `timeout`, or {@link DEFAULT_NODE_TIMEOUT_MS} when unset. */
export function effectiveTimeoutMs(node: Pick<Node, "timeout">): number {
  return positiveMs(node.timeout) ?? DEFAULT_NODE_TIMEOUT_MS;
}

/**
 * Delay before the attempt after failed attempt `attempt` (1-based): `initialBackoffMs * 2^(attempt-1)`,
 * capped at `maxBackoffMs`, never negative, finite for any `attempt`.
 */
export function retryDelayMs(policy: EffectiveRetryPolicy, attempt: number): number {
  const initial = Math.max(0, policy.initialBackoffMs);
  const cap = Math.max(0, policy.maxBackoffMs);
  const failed = Number.isFinite(attempt) ? Math.max(1, Math.floor(attempt)) : 1;
  // Past 2^60 any finite backoff is over any finite cap; stopping there keeps the product finite.
  const delay = initial * 2 ** Math.min(failed - 1, 60);
  return Math.min(delay, cap);
}

/** What to do after a failed attempt: run it again after `delayMs`, or fail the node. */
export type RetryDecision = { retry: true; delayMs: number } | { retry: false };

/** Whether an error of this kind is retried under `policy`. An unspecified kind counts as TASK_ERROR. */
export function isRetryableErrorKind(policy: EffectiveRetryPolicy, kind: ErrorKind): boolean {
  switch (kind) {
    case ErrorKind.INFRA_ERROR:
      return true;
    case ErrorKind.TASK_ERROR:
    case ErrorKind.UNSPECIFIED:
      return policy.retryTaskErrors;
    default: {
      // A kind from a newer proto is treated like a TASK_ERROR, the conservative reading.
      const _unknown: never = kind;
      return policy.retryTaskErrors;
    }
  }
}

/**
 * Decides the fate of failed attempt `attempt` (1-based): an INFRA_ERROR is retried while
 * `attempt < maxAttempts`; a TASK_ERROR only when `retryTaskErrors` too.
 */
export function decideRetry(policy: EffectiveRetryPolicy, attempt: number, kind: ErrorKind): RetryDecision {
  if (!isRetryableErrorKind(policy, kind) || !(attempt < policy.maxAttempts)) return { retry: false };
  return { retry: true, delayMs: retryDelayMs(policy, attempt) };
}
