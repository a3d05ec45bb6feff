/**
 * Wall-clock milliseconds with sub-millisecond resolution. Every bench process (the bench itself, the no-op
 * NodeService, the BullMQ baseline worker) stamps events with this, so stamps taken in different processes on
 * the same machine can be subtracted from each other and from PostgreSQL's `now()`.
 */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
