import { Worker } from "bullmq";
import {
  CHANNELS,
  PgListener,
  parseUnqueuedJobs,
  type QueuedNode,
  type ResultToRecord,
  type StartRequest,
  type StateManager,
} from "@trellis/db";
import {
  type ChunkPublisher,
  NODE_BACKOFF_TYPE,
  NodeQueues,
  nodeBackoffStrategy,
  type NodeJobData,
  parseJobId,
  type RedisConnection,
} from "@trellis/queue";
import { NodeStatus } from "@trellis/proto";
import type { Logger } from "pino";
import { Batcher } from "./batcher.js";
import { CallSlots } from "./call-slots.js";
import { HeldLeases } from "./held-leases.js";
import type { WorkerMetrics } from "./metrics.js";
import {
  CANCELLED_REASON,
  DEFAULT_START_AFTER_MS,
  type NodeRunnerDeps,
  UNQUEUED_REASON,
  runNodeJob,
} from "./node-runner.js";
import { recordWithRetry } from "./record-retry.js";
import { type NodeServiceClient, type NodeServiceClientFor, StreamingSupport } from "./node-service-client.js";

/** Every this many heartbeats the worker looks for running nodes of its session it no longer holds. */
const SWEEP_EVERY_BEATS = 10;

/** Options of a NodeWorker. */
export interface NodeWorkerOptions {
  stateManager: StateManager;
  /** Where nodes are executed, unless `clientFor` routes their capability. */
  client: NodeServiceClient;
  /** The client of each capability (NODE_SERVICE_ROUTES); without it every node goes to `client`. */
  clientFor?: NodeServiceClientFor;
  /** Redis: one server, or a cluster (the queue names are then hash-tagged: see NodeQueues). */
  connection: RedisConnection;
  queuePrefix: string;
  capabilities: readonly string[];
  concurrency: number;
  /** How long a result's recording is retried while PostgreSQL is unreachable. */
  resultRetryMs: number;
  /** Heartbeat period (the worker's liveness, and the check that its nodes are still its own). */
  heartbeatMs: number;
  /**
   * How long a call runs before its start is written (WORKER_START_AFTER_MS); a result sooner is recorded with its
   * start. 0: every start is written before its call. @default 200
   */
  startAfterMs?: number;
  workerId: string;
  hostname: string;
  logger: Logger;
  /** For LISTEN on cancellations; without it cancellations are seen at the next heartbeat's lease check. */
  databaseUrl?: string;
  metrics?: WorkerMetrics;
  /** Where running nodes' output chunks are published; without it they are dropped. */
  chunks?: ChunkPublisher;
}

/**
 * Pulls node jobs for its capabilities (one BullMQ Worker each) and runs them, a chain's next node often without a
 * queue round trip (eager local start); heartbeats its session (liveness is per worker: nothing is written per
 * running node) and aborts the calls of nodes that are no longer its own (cancelled, or its session was declared
 * dead).
 */
export class NodeWorker {
  private readonly workers: Worker<NodeJobData>[] = [];
  readonly held = new HeldLeases();
  private heartbeat: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;
  private beats = 0;
  /** The session the nodes this worker starts carry; new at each (re-)registration. */
  private session = "";
  private listener: PgListener | null = null;
  private closing = false;
  private readonly queues: NodeQueues;
  private readonly recordings = new Set<Promise<void>>();
  private readonly enqueues = new Set<Promise<void>>();
  /** WORKER_CONCURRENCY NodeService calls at once per capability. */
  private readonly callSlots: Map<string, CallSlots>;

  constructor(private readonly options: NodeWorkerOptions) {
    this.queues = new NodeQueues(options.connection, options.queuePrefix);
    this.callSlots = new Map(options.capabilities.map((c) => [c, new CallSlots(options.concurrency)]));
  }

  /** The worker's current session (empty before start). */
  get workerSession(): string {
    return this.session;
  }

  /** Registers the worker, subscribes to cancellations and starts pulling jobs. */
  async start(): Promise<void> {
    const o = this.options;
    this.session = await o.stateManager.registerWorker(o.workerId, o.capabilities, o.hostname);
    if (o.databaseUrl) {
      this.listener = new PgListener({
        databaseUrl: o.databaseUrl,
        channels: [CHANNELS.cancel, CHANNELS.unqueued],
        onError: (e) => o.logger.warn({ err: e }, "cancellation LISTEN lost; reconnecting"),
      });
      this.listener.on("notification", (channel, payload) =>
        channel === CHANNELS.unqueued ? this.onUnqueued(payload) : this.onCancel(payload),
      );
      await this.listener.start();
    }
    this.heartbeat = setInterval(() => {
      this.beating ??= this.beat().finally(() => (this.beating = null));
    }, o.heartbeatMs);
    // Concurrent jobs share transactions: one commit for every start (or result) that arrives together.
    const starts = new Batcher((items: StartRequest[]) => o.stateManager.startNodes(items, this.session));
    const reads = new Batcher((items: StartRequest[]) => o.stateManager.readQueued(items));
    const startAfterMs = o.startAfterMs ?? DEFAULT_START_AFTER_MS;
    // Children a PASS makes ready are queued in the result's transaction and enqueued here right after commit
    // (eager dispatch); should this process die in between, the reconciler re-adds their jobs. A result that asks
    // gets one ready child of its own capability started for it in the same transaction instead.
    const results = new Batcher(async (items: ResultToRecord[]) => {
      const recorded = await o.stateManager.recordResults(items, {
        dispatch: true,
        workerSession: this.session,
        capabilities: o.capabilities,
      });
      // Not awaited: the outcomes (and a child started locally) must not wait for Redis, which may be away.
      this.enqueueInBackground(recorded.dispatched);
      return recorded.outcomes.map((outcome, i) => ({ outcome, started: recorded.started[i] ?? null }));
    });
    const deps: NodeRunnerDeps = {
      startNode: (workflowId: string, nodeId: string, queueGen: number | undefined) =>
        starts.run({ workflowId, nodeId, queueGen }),
      readQueued:
        startAfterMs > 0
          ? (workflowId: string, nodeId: string, queueGen: number) => reads.run({ workflowId, nodeId, queueGen })
          : undefined,
      startAfterMs,
      // A result waits out a short PostgreSQL outage instead of costing the attempt.
      recordResult: (item: ResultToRecord) => recordWithRetry(() => results.run(item), o.resultRetryMs, o.logger),
      // A chain goes on in the same job (and slot) unless this worker is shutting down.
      startsLocally: () => !this.closing,
      defer: (recording: Promise<void>) => this.defer(recording),
      clientFor: o.clientFor ?? (() => o.client),
      // Keyed by client, one client per address: an UNIMPLEMENTED ExecuteNodeStream is asked once per NodeService.
      streaming: new StreamingSupport(),
      chunks: o.chunks,
      held: this.held,
      wasCancelled: async (workflowId: string, nodeId: string) =>
        (await o.stateManager.getNode(workflowId, nodeId)).status === NodeStatus.CANCELLED,
      logger: o.logger,
      metrics: o.metrics,
    };
    for (const capability of o.capabilities) {
      const worker = new Worker<NodeJobData>(
        this.queues.nameOf(capability),
        async (job) => runNodeJob(deps, job.data, job.id, this.callSlots.get(capability)),
        {
          connection: o.connection,
          prefix: o.queuePrefix,
          // Raised by one for each job recording a success after lending its call slot (CallSlots.onLend).
          concurrency: o.concurrency,
          // A dead worker's active jobs go back to their queue within a few heartbeats (lock + 2 checks: 8 s at the
          // default 1 s), not BullMQ's default 30 s: a node it was calling before writing its start is QUEUED under
          // that job, which then runs it again; a started node's job is dropped there (the node moved on to a new job
          // once the worker's session lapsed). BullMQ renews the lock in Redis; PostgreSQL sees nothing of it.
          lockDuration: Math.max(1_000, 4 * o.heartbeatMs),
          stalledInterval: Math.max(1_000, 4 * o.heartbeatMs),
          settings: {
            backoffStrategy: (attemptsMade, type, err, job) =>
              type === NODE_BACKOFF_TYPE ? nodeBackoffStrategy(attemptsMade, type, err, job) : 1_000,
          },
        },
      );
      this.callSlots.get(capability)!.onLend = (delta) => {
        // Taken back after BullMQ has completed the job, which fetches the next one in the same call only while it
        // is under its concurrency.
        if (delta > 0) worker.concurrency += delta;
        else setImmediate(() => (worker.concurrency += delta));
      };
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

  /**
   * Adds the jobs of nodes queued in a committed transaction without making anyone wait for Redis (a heartbeat least
   * of all); should that fail or this process die first, the reconciler re-adds them. close() waits for them.
   */
  private enqueueInBackground(nodes: readonly QueuedNode[]): void {
    if (nodes.length === 0) return;
    const adding = this.queues
      .enqueue(nodes)
      .catch((error: unknown) => {
        this.options.logger.warn(
          { err: error, nodes: nodes.length },
          "enqueue of queued nodes failed; the reconciler re-adds them",
        );
      })
      .finally(() => this.enqueues.delete(adding));
    this.enqueues.add(adding);
  }

  /** Tracks a background recording; waits while too many are in flight (twice the concurrency). */
  private async defer(recording: Promise<void>): Promise<void> {
    this.recordings.add(recording);
    void recording.finally(() => this.recordings.delete(recording));
    const limit = this.options.concurrency * this.options.capabilities.length * 2;
    while (this.recordings.size > limit) await Promise.race(this.recordings);
  }

  /**
   * Jobs taken off their queues (the nodes were cancelled or paused while QUEUED): aborts the calls this worker
   * makes of those nodes before writing their starts.
   */
  private onUnqueued(payload: string): void {
    const unqueued = parseUnqueuedJobs(payload);
    if (!unqueued) {
      this.options.logger.warn({ payload }, "ignored a malformed unqueued notification");
      return;
    }
    let aborted = 0;
    for (const job of unqueued.jobs) {
      const id = parseJobId(job.jobId);
      if (id && this.held.abortUnstarted(id.workflowId, id.nodeId, id.queueGen, UNQUEUED_REASON)) aborted++;
    }
    if (aborted > 0) {
      this.options.logger.debug({ workflow_id: unqueued.workflowId, aborted }, "aborted calls of unqueued nodes");
    }
  }

  private onCancel(payload: string): void {
    try {
      const { workflowId, nodeIds } = JSON.parse(payload) as { workflowId: string; nodeIds: string[] };
      const aborted = this.held.abort(workflowId, nodeIds, CANCELLED_REASON);
      // Each node's cancellation has its line already: its CANCELLED event, logged by whoever committed it.
      if (aborted > 0) this.options.logger.debug({ workflow_id: workflowId, aborted }, "cancelled running calls");
    } catch (error) {
      this.options.logger.warn({ err: error, payload }, "ignored a malformed cancellation");
    }
  }

  /**
   * One heartbeat: keeps the session alive (one row, whatever runs), then aborts the calls of held nodes that are no
   * longer this worker's (a cancellation whose notification was missed). A session declared dead (this process was
   * stalled past WORKER_STALE_MS) has had its nodes handed to others: every call is aborted and the worker
   * registers again under a new session.
   */
  private async beat(): Promise<void> {
    const o = this.options;
    try {
      if (!(await o.stateManager.heartbeatWorker(o.workerId, this.session))) {
        o.logger.warn({ worker_id: o.workerId, held: this.held.size }, "worker session lapsed; registering again");
        // Nodes called before their start was written are still QUEUED under their jobs: not the session's.
        for (const h of this.held.started()) h.controller.abort(new Error("worker session lapsed"));
        this.session = await o.stateManager.registerWorker(o.workerId, o.capabilities, o.hostname);
        return;
      }
      const held = this.held.started();
      if (held.length > 0) {
        for (const l of await o.stateManager.lostLeases(held)) this.held.abortLease(l, "lease lost");
      }
      if (++this.beats % SWEEP_EVERY_BEATS === 0) await this.sweep();
    } catch (error) {
      o.logger.warn({ err: error }, "worker heartbeat failed");
    }
  }

  /**
   * Gives up the nodes PostgreSQL says this session runs but this process no longer holds (a result it could not
   * record, for longer than RESULT_RETRY_MS): with liveness per worker nothing else would, while this worker lives.
   * They end as an INFRA_ERROR and run again under new jobs.
   */
  private async sweep(): Promise<void> {
    const o = this.options;
    const running = await o.stateManager.runningOf(this.session, 2 * o.heartbeatMs);
    const orphans = running.filter((r) => !this.held.holds(r));
    if (orphans.length === 0) return;
    const queued = await o.stateManager.releaseNodes(orphans, "the worker could not record the attempt's result");
    this.enqueueInBackground(queued);
    o.logger.warn({ nodes: orphans.length, requeued: queued.length }, "released running nodes this worker lost");
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
    await Promise.all(this.workers.map((w) => w.close()));
    // Results still being committed are part of the work this worker holds: finish them before leaving. The
    // heartbeat goes on meanwhile, or the scheduler would hand the nodes being finished to others.
    await Promise.all(this.recordings);
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.beating;
    await Promise.all(this.enqueues);
    await this.options.chunks?.flush();
    await this.listener?.close();
    await this.queues.close();
    await this.options.stateManager.removeWorker(this.options.workerId, this.session).catch(() => undefined);
  }
}
