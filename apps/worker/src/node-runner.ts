import type { QueuedRead, RecordOutcome, ResultToRecord, StartedNode } from "@trellis/db";
import { toBinary } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { ErrorKind } from "@trellis/proto";
import { type ChunkPublisher, RetryLaterError, queueGenOfJobId, type NodeJobData } from "@trellis/queue";
import type { Logger } from "pino";
import { AttemptSpans } from "./attempt-span.js";
import type { CallSlots } from "./call-slots.js";
import type { HeldLeases, HeldNode } from "./held-leases.js";
import type { WorkerMetrics } from "./metrics.js";
import { executeNode, type NodeServiceClientFor, type StreamingSupport } from "./node-service-client.js";

/** The reason a call is aborted with when its node is cancelled (NodeWorker's cancellation LISTEN). */
export const CANCELLED_REASON = "node cancelled";

/**
 * The reason a call made before its start was written is aborted with when the node is no longer QUEUED under its
 * job (cancelled, paused, or queued again): NodeWorker's LISTEN on unqueued jobs, or a start that found it so.
 */
export const UNQUEUED_REASON = "node no longer queued";

/** How long a call made before its start was written runs before the start is written (WORKER_START_AFTER_MS). */
export const DEFAULT_START_AFTER_MS = 200;

/** What happened to one job; "recording" means a success whose result is being committed in the background. */
export type JobOutcome = "dropped" | "passed" | "failed" | "stale" | "recording" | "throttled";

/** Dependencies of runNodeJob. */
export interface NodeRunnerDeps {
  /**
   * QUEUED -> RUNNING under a fresh lease (batched by the caller); null when the node is not QUEUED, or was queued
   * again under a newer generation than the job's.
   */
  startNode: (workflowId: string, nodeId: string, queueGen: number | undefined) => Promise<StartedNode | null>;
  /**
   * Reads what calling a QUEUED node needs without starting it (batched by the caller). Without it (or for a job
   * without a queue generation) every start is written before its call.
   */
  readQueued?: (workflowId: string, nodeId: string, queueGen: number) => Promise<QueuedRead>;
  /** How long a call made before its start was written runs before the start is written. @default 200 */
  startAfterMs?: number;

  /**
   * Records a result under its lease (batched by the caller); with `startLocal`, `started` is the child the PASS
   * started for this worker, if any.
   */
  recordResult: (item: ResultToRecord) => Promise<{ outcome: RecordOutcome; started: StartedNode | null }>;
  /** Whether a PASS may start a child for this worker now (not while it shuts down). @default never */
  startsLocally?: () => boolean;
  /** The NodeService client of a capability: each node is sent where its own capability is routed. */
  clientFor: NodeServiceClientFor;
  /** Whether the NodeService streams (ExecuteNodeStream), remembered per client; without it ExecuteNode is called. */
  streaming?: StreamingSupport;
  /** Where output chunks go (a Redis Stream per attempt), off the durable path; without it they are dropped. */
  chunks?: ChunkPublisher;
  held: HeldLeases;
  /**
   * Whether the node was CANCELLED (asked only when a result is refused as stale, so a cancellation is told apart from
   * a lease lost to a lapsed session). Without it only a call aborted by a cancellation counts as one.
   */
  wasCancelled?: (workflowId: string, nodeId: string) => Promise<boolean>;
  logger: Logger;
  metrics?: WorkerMetrics;
  /**
   * Takes over the recording of a success so the job (and its concurrency slot) finishes before the result
   * commits; resolves once there is room for more (backpressure). Without it every result is awaited.
   */
  defer?: (recording: Promise<void>) => Promise<void>;
}

/** A node to run: started (its lease written), or `unstarted`, read before its start was written. */
interface Runnable {
  started: StartedNode;
  /** The job's queue generation, under which the node was read QUEUED; its start is not written yet. */
  unstarted?: { queueGen: number };
}

/**
 * Runs one job: the node's call, then its result recorded under its lease. An unlimited node is called before its
 * start is written: a result within `startAfterMs` is recorded with QUEUED -> RUNNING in one transaction; a longer
 * call gets its start written then (the job's queue generation fences it either way). A limited node is
 * started (QUEUED -> RUNNING with a fresh lease) before its call. A node with children asks its PASS to start one of
 * them for this worker (eager local start); that child then runs here, in the same job and concurrency slot, without
 * a queue round trip, and so on down a chain. A retry throws RetryLaterError so BullMQ re-delivers the job after the
 * node's backoff.
 */
export async function runNodeJob(
  deps: NodeRunnerDeps,
  data: NodeJobData,
  jobId?: string,
  slots?: CallSlots,
): Promise<JobOutcome> {
  // A call slot (WORKER_CONCURRENCY of the capability) from before the node is read or started until its call ends,
  // or, when its PASS starts a child here, until that child's call ends, and so on down a chain: a job recording a
  // success holds none (it lends the slot: see CallSlots), so another may call meanwhile.
  const slot = await slots?.acquire();
  const releaseSlot = () => slot?.release();
  try {
    const first = await firstOf(deps, data, queueGenOfJobId(jobId));
    if (!first) {
      deps.logger.debug(
        { workflow_id: data.workflowId, node_id: data.nodeId },
        "job dropped: its node is no longer QUEUED",
      );
      return "dropped";
    }
    // The job's own node's outcome decides the job's (a retry of it throws); a locally started child that fails or
    // retries does so through PostgreSQL and its own new job, not through this one.
    const own = await runStartedNode(deps, first, true, releaseSlot);
    for (let next = own.next; next; ) next = (await runStartedNode(deps, { started: next }, false, releaseSlot)).next;
    return own.outcome;
  } finally {
    slot?.end();
  }
}

/** The job's node read for its call (start not written yet) or started; null when it is no longer QUEUED. */
async function firstOf(
  deps: NodeRunnerDeps,
  data: NodeJobData,
  queueGen: number | undefined,
): Promise<Runnable | null> {
  if (deps.readQueued && queueGen !== undefined) {
    const read = await deps.readQueued(data.workflowId, data.nodeId, queueGen);
    if (read === null) return null;
    if (read.kind === "call") return { started: read.node, unstarted: { queueGen } };
  }
  const started = await deps.startNode(data.workflowId, data.nodeId, queueGen);
  return started ? { started } : null;
}

/**
 * The start of a node called before it was written: written once the call outlasts `startAfterMs` (GetNode and
 * watchers then see it RUNNING, and the worker's liveness covers it); a result that comes sooner carries it instead.
 * A start that finds the node no longer QUEUED under the job aborts the call.
 */
class LateStart {
  readonly startedAt = new Date();
  private written: Promise<StartedNode | null> | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly deps: NodeRunnerDeps,
    private readonly held: HeldNode,
    /** The job's queue generation, under which the node was read QUEUED (the start's fencing). */
    readonly queueGen: number,
    log: Logger,
  ) {
    this.timer = setTimeout(() => {
      this.write().catch((error: unknown) => log.warn({ err: error }, "writing a running call's start failed"));
    }, deps.startAfterMs ?? DEFAULT_START_AFTER_MS);
  }

  /** Whether the start is still unwritten (and not being written): the result may carry it. */
  get pending(): boolean {
    return this.written === null;
  }

  /** Writes the start (once; again after a failure); null when the node was no longer QUEUED under the job. */
  write(): Promise<StartedNode | null> {
    clearTimeout(this.timer);
    this.written ??= this.deps.startNode(this.held.workflowId, this.held.nodeId, this.queueGen).then(
      (started) => {
        if (started) {
          this.held.lease = started.lease;
          this.held.unstarted = undefined;
        } else this.held.controller.abort(new Error(UNQUEUED_REASON));
        return started;
      },
      (error: unknown) => {
        this.written = null;
        throw error;
      },
    );
    return this.written;
  }

  /** Leaves the start unwritten (the result carries it, or there is none to write). */
  cancel(): void {
    clearTimeout(this.timer);
  }
}

/** Runs a node to its recorded result; returns the child started locally for this worker, if any. */
async function runStartedNode(
  deps: NodeRunnerDeps,
  runnable: Runnable,
  ownJob: boolean,
  releaseSlot: () => void,
): Promise<{ outcome: JobOutcome; next: StartedNode | null }> {
  const { held, metrics } = deps;
  const { started, unstarted } = runnable;
  const workflowId = started.node.workflowId;
  const nodeId = started.node.id;
  const capability = started.node.capability;
  const log = deps.logger.child({ workflow_id: workflowId, node_id: nodeId, attempt: started.attempt, capability });
  if (started.queuedAt) {
    metrics?.queueWaitSeconds.observe({ capability }, Math.max(0, Date.now() - started.queuedAt.getTime()) / 1000);
  }
  const controller = new AbortController();
  const lease: HeldNode = { workflowId, nodeId, lease: started.lease, controller, unstarted };
  held.add(lease);
  const late = unstarted ? new LateStart(deps, lease, unstarted.queueGen, log) : null;
  // Tracing on: the attempt's spans (queued, the call, the recording) in its workflow's trace; off: nothing.
  const spans = AttemptSpans.start(started);
  const record: NodeRunnerDeps["recordResult"] = spans
    ? (item) => {
        spans.startRecord();
        return deps.recordResult(item).then(
          (recorded) => {
            spans.end({ recorded: recorded.outcome });
            return recorded;
          },
          (error: unknown) => {
            spans.end({ error });
            throw error;
          },
        );
      }
    : deps.recordResult;
  let deferred = false;
  try {
    const endTimer = metrics?.executionSeconds.startTimer({ capability });
    const chunks = deps.chunks?.open({ workflowId, nodeId, attempt: started.attempt });
    let result: ResultToRecord["result"];
    try {
      result = await executeNode(deps.clientFor(capability), started, controller.signal, {
        streaming: deps.streaming,
        onChunk: chunks ? (chunk) => chunks.push(chunk) : undefined,
        traceHeaders: spans?.startCall(),
      });
      spans?.endCall(result);
    } finally {
      // Written after the last chunk: watchers stop waiting for more of this attempt.
      chunks?.end();
    }
    // Drops while Redis is away or slow are logged once per outage by the publisher, not per attempt.
    if (chunks && chunks.overBounds > 0) {
      log.info(
        { chunks: chunks.pushed, dropped: chunks.overBounds },
        "output chunks over CHUNK_MAX_PER_ATTEMPT or CHUNK_MAX_BYTES_PER_ATTEMPT were dropped",
      );
    }
    endTimer?.();
    const startLocal = result.kind === "success" && started.hasChildren && (deps.startsLocally?.() ?? false);
    // A success's slot is free once its call ends (its recording only waits for PostgreSQL). Kept: while a child may
    // be started here next (until the chain ends), and through a failure's recording, so that the next call sees
    // what it records (a THROTTLED answer's pause above all).
    if (result.kind === "success" && !startLocal) releaseSlot();
    const item: ResultToRecord = {
      workflowId,
      nodeId,
      lease: started.lease,
      result,
      startLocal,
      startedLocally: !ownJob,
    };
    if (late) {
      if (late.pending) {
        // The start goes with the result, in one transaction.
        late.cancel();
        item.unstarted = { queueGen: late.queueGen, startedAt: late.startedAt };
      } else {
        const written = await late.write();
        if (!written) {
          await logStale(deps, lease, log);
          return { outcome: "stale", next: null };
        }
        item.lease = written.lease;
      }
    }
    // A result recorded with its start is not deferred: until it commits the node is QUEUED under this job, which
    // must stay active (BullMQ gives a dead worker's active jobs to others; the reconciler re-adds a QUEUED node's
    // completed one).
    if (result.kind === "success" && deps.defer && !startLocal && !item.unstarted) {
      // Safe to finish the job first: until the result commits the node is RUNNING under this worker's session,
      // and if this process dies the session lapses and the node runs again (at-least-once).
      const recording = record(item)
        .then(async ({ outcome }) => {
          countUsage(metrics, capability, outcome, result);
          if (outcome.outcome === "stale") await logStale(deps, lease, log);
          else describeOutcome(outcome, result, log, ownJob);
        })
        .catch((error: unknown) => log.error({ err: error }, "recording a result failed; the node will run again"))
        .finally(() => held.delete(lease));
      deferred = true;
      await deps.defer(recording);
      return { outcome: "recording", next: null };
    }
    const recorded = await record(item);
    countUsage(metrics, capability, recorded.outcome, result);
    if (recorded.outcome.outcome === "stale") {
      // Recorded with its start, stale: the node was no longer QUEUED under the job (cancelled, paused, re-queued).
      if (item.unstarted) controller.abort(new Error(UNQUEUED_REASON));
      await logStale(deps, lease, log);
    }
    return { outcome: describeOutcome(recorded.outcome, result, log, ownJob), next: recorded.started };
  } catch (error) {
    spans?.end({ error });
    throw error;
  } finally {
    late?.cancel();
    if (!deferred) held.delete(lease);
  }
}

/** Counts what a recorded attempt spent (a stale result was not recorded, so neither is its usage). */
function countUsage(
  metrics: WorkerMetrics | undefined,
  capability: string,
  outcome: RecordOutcome,
  result: ResultToRecord["result"],
): void {
  if (!metrics || !result.usage || outcome.outcome === "stale") return;
  for (const [unit, amount] of Object.entries(result.usage)) {
    if (amount > 0) metrics.usage.inc({ capability, unit }, amount);
  }
}

/**
 * Logs a result refused because the node's lease was lost: at debug when the node was cancelled or taken off its
 * queue (its event is the line that says so), at warn otherwise (re-queued or taken over: this worker's session
 * lapsed).
 */
async function logStale(
  deps: NodeRunnerDeps,
  lease: { workflowId: string; nodeId: string; controller: AbortController },
  log: Logger,
): Promise<void> {
  const reason: unknown = lease.controller.signal.reason;
  let cancelled =
    reason instanceof Error && (reason.message === CANCELLED_REASON || reason.message === UNQUEUED_REASON);
  if (!cancelled && deps.wasCancelled) {
    cancelled = await deps.wasCancelled(lease.workflowId, lease.nodeId).catch(() => false);
  }
  if (cancelled) log.debug("result not recorded: the node was cancelled");
  else log.warn("result not recorded: the node's lease was lost (re-queued or taken over)");
}

/** Logs how a result was recorded (a stale one by logStale); a retry becomes RetryLaterError for BullMQ's backoff. */
function describeOutcome(
  outcome: RecordOutcome,
  result: ResultToRecord["result"],
  log: Logger,
  ownJob: boolean,
): JobOutcome {
  switch (outcome.outcome) {
    case "passed":
      // Never the output itself (it may carry whatever the NodeService returned): its size and the edits' count.
      if (log.isLevelEnabled("debug") && result.kind === "success") {
        log.debug({ output_bytes: valueBytes(result.output), edits: result.edits.length }, "node passed");
      }
      return "passed";
    case "failed":
      // Finishes and retries are counted from their committed events (eventMetrics), once, wherever committed; their
      // one info (FAIL: warn) line is the event's (eventLogger). These lines add the worker's side, at debug.
      log.debug({ error: outcome.message, error_kind: ErrorKind[outcome.errorKind] }, "node failed");
      return "failed";
    case "retry":
      log.debug(
        { delay_ms: outcome.delayMs, error: result.kind === "error" ? result.message : "" },
        "node retry scheduled",
      );
      // The node's own job is re-delivered after the delay; a node started locally had no job of its own: its
      // retry was given a new one, dispatched with the delay by the recording.
      if (!ownJob) return "failed";
      throw new RetryLaterError(outcome.delayMs, result.kind === "error" ? result.message : "retry");
    case "stale":
      return "stale";
    case "throttled":
      // The node has a new job, delayed by retry_after; this one ends here (no BullMQ attempt is spent either).
      log.debug({ retry_after_ms: outcome.retryAfterMs }, "node throttled by its provider; its keys are paused");
      return "throttled";
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${JSON.stringify(never)}`);
    }
  }
}

/** The encoded size of a node's output, what the logs say of it instead of its content. */
function valueBytes(value: Value | undefined): number {
  return value ? toBinary(ValueSchema, value).length : 0;
}
