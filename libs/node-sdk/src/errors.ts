/**
 * The task itself failed: bad input, a refusal, an answer that cannot be used. Answered as TASK_ERROR, which ends the
 * node at once unless its retry policy sets `retry_task_errors`. Any other error a handler throws is answered the
 * same way, with its message.
 */
export class TaskError extends Error {
  override name = "TaskError";
}

/**
 * The task could not run this time (a provider down, a timeout of a dependency): answered as INFRA_ERROR, which the
 * engine retries with backoff under the node's retry policy.
 */
export class InfraError extends Error {
  override name = "InfraError";
}

/**
 * The provider said "too many requests": answered as THROTTLED. The node runs again after `retryAfterMs` without
 * spending an attempt, and every limit key of the node pauses until then.
 */
export class Throttled extends Error {
  override name = "Throttled";
  /** How long to wait before the next attempt; undefined leaves the engine's default (1 s). */
  readonly retryAfterMs: number | undefined;

  constructor(retryAfterMs?: number, message = "throttled") {
    super(message);
    if (retryAfterMs !== undefined && (!Number.isFinite(retryAfterMs) || retryAfterMs < 0)) {
      throw new RangeError(`retryAfterMs must be a finite number >= 0, got ${retryAfterMs}`);
    }
    this.retryAfterMs = retryAfterMs;
  }
}
