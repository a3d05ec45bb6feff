import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";

/** Options of {@link waitForDependency}. */
export interface WaitForDependencyOptions {
  /** Each failed attempt is logged here at warn. */
  logger: Logger;
  /** Give up this long after the first attempt started. */
  timeoutMs: number;
  /** Stops waiting (rejecting with the signal's reason), e.g. on shutdown. */
  signal?: AbortSignal;
}

/** First delay between attempts; it doubles after each failure up to {@link MAX_DELAY_MS}. */
const FIRST_DELAY_MS = 100;
/** Longest delay between attempts. */
const MAX_DELAY_MS = 2000;

/** The message of anything thrown. */
function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Calls `attempt` until it resolves, waiting 100 ms, then doubling up to 2 s, between failures, and logging each at
 * warn. After `timeoutMs` it throws `<what> is not reachable after <timeoutMs> ms: <last error>`. An attempt still
 * running at the deadline is abandoned, so it should bound itself (e.g. a connect timeout) to avoid a leak.
 * Apps use it at start to wait for PostgreSQL and Redis.
 */
export async function waitForDependency<T>(
  what: string,
  attempt: () => Promise<T>,
  opts: WaitForDependencyOptions,
): Promise<T> {
  const { logger, timeoutMs, signal } = opts;
  const deadline = performance.now() + timeoutMs;
  let delay = FIRST_DELAY_MS;
  for (let n = 1; ; n++) {
    signal?.throwIfAborted();
    let lastError: unknown;
    try {
      return await withDeadline(attempt(), deadline - performance.now(), signal);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      lastError = error;
    }
    const left = deadline - performance.now();
    if (left <= 0) {
      throw new Error(`${what} is not reachable after ${timeoutMs} ms: ${messageOf(lastError)}`, { cause: lastError });
    }
    const wait = Math.min(delay, left);
    logger.warn(
      { dependency: what, attempt: n, retryInMs: Math.round(wait), err: lastError },
      `${what} is not reachable yet`,
    );
    try {
      await sleep(wait, undefined, { signal });
    } catch {
      throw signal?.reason;
    }
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }
}

/** `promise`, or a rejection once `ms` have passed or `signal` aborts; a late rejection of `promise` is swallowed. */
function withDeadline<T>(promise: Promise<T>, ms: number, signal: AbortSignal | undefined): Promise<T> {
  promise.catch(() => {});
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => {
        cleanup();
        reject(new Error("no answer before the deadline"));
      },
      Math.max(ms, 0),
    );
    const onAbort = (): void => {
      cleanup();
      reject(signal?.reason);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        cleanup();
        resolve(value);
      },
      (error: unknown) => {
        cleanup();
        reject(error);
      },
    );
  });
}
