import { Worker } from "bullmq";
import type { Redis } from "ioredis";
import { CHANNELS, PgListener, type ResultToRecord, type StartRequest, type StateManager } from "@trellis/db";
import { NODE_BACKOFF_TYPE, NodeQueues, nodeBackoffStrategy, type NodeJobData } from "@trellis/queue";
import type { Logger } from "pino";
import { Batcher } from "./batcher.js";
import { HeldLeases } from "./held-leases.js";
import type { WorkerMetrics } from "./metrics.js";
import { runNodeJob } from "./node-runner.js";
import { recordWithRetry } from "./record-retry.js";
import type { NodeServiceClient } from "./node-service-client.js";

/** Options of a NodeWorker. */
export interface NodeWorkerOptions {
  stateManager: StateManager;
  client: NodeServiceClient;
  connection: Redis;
  queuePrefix: string;
  capabilities: readonly string[];
  concurrency: number;
  leaseTtlMs: number;
  heartbeatMs: number;
  workerId: string;
  hostname: string;
  logger: Logger;
  /** For LISTEN on cancellations; without it cancellations are seen at the next lease renewal. */
  databaseUrl?: string;
  metrics?: WorkerMetrics;
}

/**
 * Pulls node jobs for its capabilities (one BullMQ Worker each), runs them, keeps their leases alive,
 * aborts calls of cancelled nodes, and heartbeats the capabilities it serves.
 */
export class NodeWorker {
  private readonly workers: Worker<NodeJobData>[] = [];
  readonly held = new HeldLeases();
  private heartbeat: NodeJS.Timeout | null = null;
  private renewal: NodeJS.Timeout | null = null;
  private listener: PgListener | null = null;
  private closing = false;
  private readonly queues: NodeQueues;
  private readonly recordings = new Set<Promise<void>>();

  constructor(private readonly options: NodeWorkerOptions) {
    this.queues = new NodeQueues(options.connection, options.queuePrefix);
  }

  /** Registers the worker, subscribes to cancellations and starts pulling jobs. */
  async start(): Promise<void> {
    const o = this.options;
    await o.stateManager.heartbeatWorker(o.workerId, o.capabilities, o.hostname);
    if (o.databaseUrl) {
      this.listener = new PgListener({
        databaseUrl: o.databaseUrl,
        channels: [CHANNELS.cancel],
        onError: (e) => o.logger.warn({ err: e }, "cancellation LISTEN lost; reconnecting"),
      });
      this.listener.on("notification", (_channel, payload) => this.onCancel(payload));
      await this.listener.start();
    }
    this.heartbeat = setInterval(() => {
      o.stateManager
        .heartbeatWorker(o.workerId, o.capabilities, o.hostname)
        .catch((e: unknown) => o.logger.warn({ err: e }, "worker heartbeat failed"));
    }, o.heartbeatMs);
    this.renewal = setInterval(() => void this.renewLeases(), Math.max(250, Math.floor(o.leaseTtlMs / 3)));
    // Concurrent jobs share transactions: one commit for every start (or result) that arrives together.
    const starts = new Batcher((items: StartRequest[]) => o.stateManager.startNodes(items, o.leaseTtlMs));
    // Children a PASS makes ready are queued in the result's transaction and enqueued here right after commit
    // (eager dispatch); should this process die in between, the reconciler re-adds their jobs.
    const results = new Batcher(async (items: ResultToRecord[]) => {
      const { outcomes, dispatched } = await o.stateManager.recordResults(items, { dispatch: true });
      if (dispatched.length > 0) {
        await this.queues.enqueue(dispatched).catch((error: unknown) => {
          o.logger.warn(
            { err: error, nodes: dispatched.length },
            "enqueue of dispatched nodes failed; the reconciler re-adds them",
          );
        });
      }
      return outcomes;
    });
    const deps = {
      startNode: (workflowId: string, nodeId: string, queueGen: number | undefined) =>
        starts.run({ workflowId, nodeId, queueGen }),
      // A result waits out a short PostgreSQL outage (up to a lease's time) instead of costing the attempt.
      recordResult: (item: ResultToRecord) => recordWithRetry(() => results.run(item), o.leaseTtlMs, o.logger),
      defer: (recording: Promise<void>) => this.defer(recording),
      client: o.client,
      held: this.held,
      logger: o.logger,
      metrics: o.metrics,
    };
    for (const capability of o.capabilities) {
      const worker = new Worker<NodeJobData>(capability, async (job) => runNodeJob(deps, job.data, job.id), {
        connection: o.connection,
        prefix: o.queuePrefix,
        concurrency: o.concurrency,
        // A dead worker's jobs go back to their queue (and are dropped there: their node has moved on) on the
        // lease's time scale, not BullMQ's default 30 s, so the queue soon agrees with PostgreSQL again.
        lockDuration: o.leaseTtlMs,
        stalledInterval: o.leaseTtlMs,
        settings: {
          backoffStrategy: (attemptsMade, type, err, job) =>
            type === NODE_BACKOFF_TYPE ? nodeBackoffStrategy(attemptsMade, type, err, job) : 1_000,
        },
      });
      worker.on("error", (e) => o.logger.warn({ err: e, capability }, "queue worker error"));
      worker.on("failed", (job, e) => {
        if (e.name !== "RetryLaterError") {
          o.logger.warn(
            { err: e, capability, job_id: job?.id, workflow_id: job?.data.workflowId, node_id: job?.data.nodeId },
            "node job failed",
          );
        }
      });
      this.workers.push(worker);
    }
    o.logger.info(
      { capabilities: o.capabilities, concurrency: o.concurrency, worker_id: o.workerId },
      "worker started",
    );
  }

  /** Tracks a background recording; waits while too many are in flight (twice the concurrency). */
  private async defer(recording: Promise<void>): Promise<void> {
    this.recordings.add(recording);
    void recording.finally(() => this.recordings.delete(recording));
    const limit = this.options.concurrency * this.options.capabilities.length * 2;
    while (this.recordings.size > limit) await Promise.race(this.recordings);
  }

  private onCancel(payload: string): void {
    try {
      const { workflowId, nodeIds } = JSON.parse(payload) as { workflowId: string; nodeIds: string[] };
      const aborted = this.held.abort(workflowId, nodeIds, "node cancelled");
      if (aborted > 0) this.options.logger.info({ workflow_id: workflowId, aborted }, "cancelled running calls");
    } catch (error) {
      this.options.logger.warn({ err: error, payload }, "ignored a malformed cancellation");
    }
  }

  private async renewLeases(): Promise<void> {
    const held = this.held.all();
    if (held.length === 0) return;
    try {
      const lost = await this.options.stateManager.renewLeases(held, this.options.leaseTtlMs);
      for (const l of lost) this.held.abort(l.workflowId, [l.nodeId], "lease lost");
    } catch (error) {
      this.options.logger.warn({ err: error }, "lease renewal failed");
    }
  }

  /** Whether every queue worker is running and Redis is connected (without it no job can arrive). */
  isReady(): boolean {
    return (
      !this.closing &&
      this.options.connection.status === "ready" &&
      this.workers.length > 0 &&
      this.workers.every((w) => w.isRunning())
    );
  }

  /** Stops taking jobs, lets the ones in flight finish (bounded by the caller), unregisters. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    await Promise.all(this.workers.map((w) => w.close()));
    // Results still being committed are part of the work this worker holds: finish them before leaving.
    await Promise.all(this.recordings);
    if (this.renewal) clearInterval(this.renewal);
    await this.listener?.close();
    await this.queues.close();
    await this.options.stateManager.removeWorker(this.options.workerId).catch(() => undefined);
  }
}
