import type { StateManager } from "@trellis/db";
import type { NodeQueues } from "@trellis/queue";
import type { Logger } from "pino";
import type { SchedulerMetrics } from "./metrics.js";

/** Options of the Scheduler. */
export interface SchedulerOptions {
  stateManager: StateManager;
  queues: NodeQueues;
  logger: Logger;
  metrics?: SchedulerMetrics;
  /** Nodes claimed per statement. @default 500 */
  batchSize?: number;
  /** Safety-net poll. @default 1000 */
  pollMs?: number;
}

/**
 * Claims ready nodes and puts them on their capability's queue. Woken by `wake()` (wired to LISTEN) and
 * by a poll; passes never overlap, and a wake during a pass runs another pass right after it.
 */
export class Scheduler {
  private running: Promise<void> | null = null;
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly batchSize: number;
  private readonly pollMs: number;

  constructor(private readonly options: SchedulerOptions) {
    this.batchSize = options.batchSize ?? 500;
    this.pollMs = options.pollMs ?? 1_000;
  }

  /** Starts polling and runs a first pass. */
  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.wake(), this.pollMs);
    this.timer.unref();
    this.wake();
  }

  /** Asks for a pass as soon as possible. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.dirty = true;
      return;
    }
    this.running = this.passes().finally(() => {
      this.running = null;
    });
  }

  /** Runs passes until no wake came in meanwhile; resolves when idle. */
  private async passes(): Promise<void> {
    do {
      this.dirty = false;
      try {
        await this.pass();
      } catch (error) {
        this.options.logger.error({ err: error }, "scheduler pass failed; the next wake or poll retries");
      }
    } while (this.dirty && !this.stopped);
  }

  /**
   * One pass: what time did to WAITING nodes (start times reached, waits timed out, signals kept for nodes that are
   * now WAITING), then claim and enqueue batches until fewer than a batch is ready, then the WAITING nodes again (a
   * node the claim just made WAITING may hold a kept signal). Returns how many nodes were queued.
   */
  async pass(): Promise<number> {
    const end = this.options.metrics?.passSeconds.startTimer();
    let total = 0;
    try {
      await this.wakeWaiting();
      for (;;) {
        const claimed = await this.options.stateManager.claimReadyNodes(this.batchSize);
        if (claimed.length === 0) break;
        // Committed before enqueueing: if Redis fails now the reconciler re-adds these jobs.
        await this.options.queues.enqueue(claimed);
        total += claimed.length;
        if (claimed.length < this.batchSize || this.stopped) break;
      }
      await this.wakeWaiting();
    } finally {
      end?.();
    }
    if (total > 0) this.options.logger.debug({ queued: total }, "queued ready nodes");
    return total;
  }

  /** Wakes due WAITING nodes and completes the ones holding a kept signal. */
  private async wakeWaiting(): Promise<void> {
    const signaled = await this.options.stateManager.wakeNodes(this.batchSize);
    if (signaled.length > 0) await this.options.stateManager.completeKeptSignals(signaled);
  }

  /** Resolves once no pass is running. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Stops polling and waits for the pass in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.idle();
  }
}
