import type { StateManager } from "@trellis/db";
import type { NodeQueues } from "@trellis/queue";
import type { Logger } from "pino";
import { refreshQueueGauges, refreshWorkflowGauges } from "./gauges.js";
import type { SchedulerMetrics } from "./metrics.js";

/** Options of the Reconciler. */
export interface ReconcilerOptions {
  stateManager: StateManager;
  queues: NodeQueues;
  logger: Logger;
  metrics?: SchedulerMetrics;
  /** Period. @default 30000 */
  intervalMs?: number;
  /** QUEUED nodes younger than this are not checked (their job may be on its way). @default 10000 */
  queuedAfterMs?: number;
  /**
   * Heartbeat age after which a worker is dead: it no longer counts as serving its capabilities, and the nodes it
   * was running go back to their queues. Checked every fifth of it (at least every 100 ms). @default 5000
   */
  workerStaleMs?: number;
  /** Nodes examined per round. @default 1000 */
  batchSize?: number;
}

/** What one reconcile round did. */
export interface ReconcileReport {
  /** RUNNING nodes of lost workers put back on their queues. */
  lostNodes: number;
  lostJobs: number;
  unroutable: number;
  /** Jobs removed from the queues of capabilities no live worker serves: their nodes are no longer QUEUED for them. */
  staleJobs: number;
}

/**
 * Makes Redis rebuildable from PostgreSQL and workers disposable: re-queues the RUNNING nodes of workers whose
 * heartbeat lapsed (checked every fifth of WORKER_STALE_MS), re-adds jobs of QUEUED nodes that have none, removes
 * jobs of nodes no longer queued from the queues no live worker serves, and reports nodes no live worker can take.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | null = null;
  private livenessTimer: NodeJS.Timeout | null = null;
  private running: Promise<ReconcileReport> | null = null;
  private checkingLiveness: Promise<number> | null = null;
  private readonly startedAt = Date.now();
  /** When a liveness check last reached PostgreSQL (see requeueLost). */
  private lastContactAt = Date.now();
  private graceMs = 0;
  private graceUntil = 0;

  constructor(private readonly options: ReconcilerOptions) {}

  /** Runs a round now and then every intervalMs. */
  start(): void {
    void this.runOnce().catch(() => undefined);
    this.timer = setInterval(() => void this.runOnce().catch(() => undefined), this.options.intervalMs ?? 30_000);
    this.timer.unref();
    const livenessMs = Math.max(100, Math.floor(this.staleMs / 5));
    this.livenessTimer = setInterval(() => void this.checkLiveness().catch(() => undefined), livenessMs);
    this.livenessTimer.unref();
  }

  private get staleMs(): number {
    return this.options.workerStaleMs ?? 5_000;
  }

  /**
   * Per-worker liveness: the RUNNING nodes of workers whose heartbeat lapsed go back to their queues (new jobs).
   * Two cheap statements when every worker is alive, whatever the number of running nodes. Never overlaps itself.
   */
  checkLiveness(): Promise<number> {
    this.checkingLiveness ??= this.requeueLost().finally(() => (this.checkingLiveness = null));
    return this.checkingLiveness;
  }

  private async requeueLost(): Promise<number> {
    const { stateManager, queues, logger } = this.options;
    const now = Date.now();
    // Just started: the workers may not have been able to beat until now (this scheduler may be starting after a
    // PostgreSQL outage), so none is declared dead during its first WORKER_STALE_MS.
    if (now - this.startedAt < this.staleMs) {
      this.lastContactAt = now;
      return 0;
    }
    // When this scheduler itself could not reach PostgreSQL for longer than WORKER_STALE_MS, the workers could not
    // write their heartbeats either: for one WORKER_STALE_MS after it is back, a heartbeat may be that much older,
    // so a PostgreSQL restart does not make every running node run again.
    const silentMs = now - this.lastContactAt;
    if (silentMs > this.staleMs) {
      this.graceMs = silentMs;
      this.graceUntil = now + this.staleMs;
    }
    const staleMs = this.staleMs + (now < this.graceUntil ? this.graceMs : 0);
    const lost = await stateManager.requeueLostNodes(staleMs, this.options.batchSize ?? 1_000);
    this.lastContactAt = Date.now();
    if (lost.length > 0) {
      await queues.enqueue(lost);
      logger.warn({ nodes: lost.length }, "re-queued the nodes of lost workers (heartbeat lapsed)");
    }
    return lost.length;
  }

  /** One round (rounds never overlap: a call during a round waits for it). */
  runOnce(): Promise<ReconcileReport> {
    if (!this.running) {
      this.running = this.round()
        .catch((error: unknown) => {
          this.options.logger.error({ err: error }, "reconcile round failed; the next round retries");
          throw error;
        })
        .finally(() => {
          this.running = null;
        });
    }
    return this.running;
  }

  private async round(): Promise<ReconcileReport> {
    const { stateManager, queues, logger } = this.options;
    const batch = this.options.batchSize ?? 1_000;

    const lostNodes = await this.checkLiveness();

    const queued = await stateManager.findQueuedNodes(this.options.queuedAfterMs ?? 10_000, batch);
    const states = await queues.jobStates(queued);
    const lost = queued.filter((_, i) => {
      const state = states[i];
      return state === "unknown" || state === "completed" || state === "failed";
    });
    const requeued = await stateManager.requeueNodes(lost);
    if (requeued.length > 0) {
      await queues.enqueue(requeued);
      logger.warn({ nodes: requeued.length }, "re-added jobs missing from Redis");
    }

    const live = await stateManager.liveCapabilities(this.staleMs);
    const unroutable = await stateManager.reportUnroutable(new Set(live.keys()));
    let unroutableTotal = 0;
    this.options.metrics?.unroutable.reset();
    for (const [capability, count] of unroutable) {
      unroutableTotal += count;
      this.options.metrics?.unroutable.set({ capability }, count);
      logger.warn({ capability, nodes: count }, "nodes queued for a capability no live worker serves");
    }
    this.options.metrics?.workers.reset();
    for (const [capability, count] of live) this.options.metrics?.workers.set({ capability }, count);
    const byStatus = await stateManager.countNodesByStatus();
    // Every unfinished status is reported, 0 included, so a drained queue reads 0 rather than vanishing.
    for (const status of ["PENDING", "QUEUED", "RUNNING", "WAITING"]) {
      this.options.metrics?.nodes.set({ status }, byStatus.get(status) ?? 0);
    }
    // One listing of Redis's queues serves the queue gauges and the stale-job sweep; Redis away fails neither the
    // repairs above nor the PostgreSQL gauges.
    const capabilities = await queues.discover().catch((error: unknown) => {
      logger.warn({ err: error }, "listing the queues in Redis failed");
      return null;
    });
    await this.refreshGauges(capabilities);
    const staleJobs =
      capabilities === null
        ? 0
        : await this.removeStaleJobs(capabilities, new Set(live.keys()), batch).catch((error: unknown) => {
            logger.warn({ err: error }, "removing stale jobs failed");
            return 0;
          });
    return { lostNodes, lostJobs: requeued.length, unroutable: unroutableTotal, staleJobs };
  }

  /**
   * Removes the waiting jobs whose node is no longer QUEUED at their generation (cancelled, paused, deleted, queued
   * anew) from the queues of capabilities no live worker serves: a worker drops such a job when it takes it, but
   * without one it would wait for ever. A cancel removes its jobs itself (trellis_unqueued); this catches the ones
   * it missed (the notification lost, or a job added just after the cancel committed). Up to `limit` per queue.
   */
  private async removeStaleJobs(
    capabilities: readonly string[],
    served: ReadonlySet<string>,
    limit: number,
  ): Promise<number> {
    const { stateManager, queues, logger } = this.options;
    let removed = 0;
    for (const capability of capabilities) {
      if (served.has(capability)) continue;
      const jobIds = await queues.waitingJobIds(capability, limit);
      if (jobIds.length === 0) continue;
      const current = await stateManager.currentJobIds(jobIds);
      const stale = jobIds.filter((jobId) => !current.has(jobId));
      if (stale.length === 0) continue;
      await queues.remove(stale.map((jobId) => ({ capability, jobId })));
      removed += stale.length;
      logger.info({ capability, jobs: stale.length }, "removed jobs whose nodes are no longer queued");
    }
    return removed;
  }

  /** Workflow and queue gauges; a failure here is logged and never fails the round's repairs. */
  private async refreshGauges(capabilities: readonly string[] | null): Promise<void> {
    const { metrics, stateManager, queues, logger } = this.options;
    if (!metrics) return;
    const results = await Promise.allSettled([
      refreshWorkflowGauges(stateManager, metrics),
      // The queues could not be listed: their gauges keep their last values.
      capabilities === null ? Promise.resolve() : refreshQueueGauges(queues, capabilities, metrics),
    ]);
    for (const result of results) {
      if (result.status === "rejected") logger.warn({ err: result.reason }, "refreshing gauges failed");
    }
  }

  /** Stops the timer and waits for a round in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    await this.running?.catch(() => undefined);
    await this.checkingLiveness?.catch(() => undefined);
  }
}
