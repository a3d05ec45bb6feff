import { sleep } from "./clock.js";

/** Raised when a workload or a wait runs past its deadline. */
export class BenchTimeoutError extends Error {
  override readonly name = "BenchTimeoutError";
}

/**
 * A point in time by which something must be done. Every wait of the bench takes one, so a stuck engine makes
 * the workload fail with a message naming what it was waiting for instead of hanging.
 */
export class Deadline {
  private readonly at: number;

  /** A deadline `ms` from now, for the step described by `label`. */
  constructor(
    ms: number,
    readonly label: string,
  ) {
    this.at = Date.now() + ms;
  }

  /** Milliseconds left (0 once passed). */
  remainingMs(): number {
    return Math.max(0, this.at - Date.now());
  }

  /** The deadline as a Date, for gRPC calls (capped at `maxMs` from now when given). */
  asDate(maxMs?: number): Date {
    const at = maxMs === undefined ? this.at : Math.min(this.at, Date.now() + maxMs);
    return new Date(at);
  }

  /** Throws a BenchTimeoutError naming `what` when the deadline has passed. */
  check(what: string): void {
    if (Date.now() >= this.at) throw new BenchTimeoutError(`${this.label}: timed out waiting for ${what}`);
  }
}

/**
 * Calls `probe` every `intervalMs` until it returns a value other than undefined, and returns that value;
 * throws a BenchTimeoutError naming `what` once `deadline` passes. Errors from `probe` propagate.
 */
export async function waitFor<T>(
  what: string,
  deadline: Deadline,
  probe: () => Promise<T | undefined> | T | undefined,
  intervalMs = 100,
): Promise<T> {
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    deadline.check(what);
    await sleep(Math.min(intervalMs, Math.max(1, deadline.remainingMs())));
  }
}

/** Rejects with a BenchTimeoutError naming `what` when `promise` does not settle within `deadline`. */
export async function within<T>(what: string, deadline: Deadline, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new BenchTimeoutError(`${deadline.label}: timed out waiting for ${what}`)),
      deadline.remainingMs(),
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
