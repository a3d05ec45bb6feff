import { setTimeout as sleep } from "node:timers/promises";
import { isDatabaseUnavailable } from "@trellis/db";
import type { Logger } from "pino";

/**
 * Runs `record` (the recording of a node's result), retrying with backoff (100 ms doubling to 2 s) for up to
 * `retryMs` while PostgreSQL is unreachable: a short outage (a restart, a dropped connection) then costs nothing,
 * rather than the attempt. The node stays RUNNING under the worker's session meanwhile. Past `retryMs` (or on any
 * other error) the error is thrown; the worker's sweep then releases the node and it runs again.
 */
export async function recordWithRetry<T>(record: () => Promise<T>, retryMs: number, logger: Logger): Promise<T> {
  const until = Date.now() + retryMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
    try {
      return await record();
    } catch (error) {
      if (!isDatabaseUnavailable(error) || Date.now() + delay > until) throw error;
      logger.warn({ err: error, retry_in_ms: delay }, "PostgreSQL unavailable while recording a result; retrying");
      await sleep(delay);
    }
  }
}
