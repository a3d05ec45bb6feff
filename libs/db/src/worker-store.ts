import { and, eq, sql } from "drizzle-orm";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  TrellisError,
  decideRetry,
  effectiveRetryPolicy,
  effectiveTimeoutMs,
  planEdits,
  type RetryDecision,
  type WorkflowLimits,
} from "@trellis/core";
import { ErrorKind, NodeStatus } from "@trellis/proto";
import { applyEditPlan, loadGraph } from "./graph-writes.js";
import {
  errorKindToName,
  retryPolicyFromJson,
  nodeFromRow,
  nodeRowFromRaw,
  valueFromJson,
  valueToJson,
  workflowStatusFromName,
  type NodeRow,
  type WorkflowStatusName,
} from "./mapping.js";
import { queuedNodeOf, retriedJobOf, retriedJobs } from "./queued-node.js";
import { workers } from "./schema.js";
import type {
  HeldLease,
  QueuedNode,
  QueuedRead,
  RecordOptions,
  RecordOutcome,
  RecordedResults,
  ResultToRecord,
  StartRequest,
  StartedNode,
} from "./state-manager.js";
import type { FunctionRow, Transactions, TxContext } from "./transactions.js";
import { WorkflowChanges, flushChanges, lockWorkflows } from "./workflow-changes.js";

/** A failed attempt to record with trellis_record_errors: the node under its lease, and what to do. */
export interface AttemptError {
  workflowId: string;
  nodeId: string;
  lease: string;
  errorKind: ErrorKind;
  message: string;
  decision: RetryDecision;
  /** A retry gets a new job (the node's worker was lost, or the attempt was started locally, with no job). */
  newJob: boolean;
  /** The NodeService answered THROTTLED: `decision` retries after its retry_after, and the attempt does not count. */
  throttled?: boolean;
  /** What the attempt spent. */
  usage?: Readonly<Record<string, number>> | undefined;
}

/** The retry decision of @trellis/core for a failed attempt of a stored RUNNING node. */
export function decideForRow(
  row: Pick<NodeRow, "retryPolicy" | "attempt" | "attemptBase">,
  errorKind: ErrorKind,
): RetryDecision {
  return decideRetry(
    effectiveRetryPolicy(retryPolicyFromJson(row.retryPolicy)),
    row.attempt - row.attemptBase,
    errorKind,
  );
}

/**
 * The attempt of a RUNNING node row that no worker will finish (its worker was lost, or gave it up): an INFRA_ERROR
 * with `message`, retried as its policy says under a new job.
 */
export function lostAttempt(row: NodeRow, message: string): AttemptError {
  return {
    workflowId: row.workflowId,
    nodeId: row.id,
    lease: row.lease!,
    errorKind: ErrorKind.INFRA_ERROR,
    message,
    decision: decideForRow(row, ErrorKind.INFRA_ERROR),
    newJob: true,
  };
}

/** The statement that records failed attempts (trellis_record_errors, libs/db/sql/070_errors.sql). */
export function recordErrorsStatement(errors: readonly AttemptError[]) {
  return sql`
    select kind, body from trellis_record_errors(
      ${sql.param(errors.map((e) => e.workflowId))}::uuid[], ${sql.param(errors.map((e) => e.nodeId))}::text[],
      ${sql.param(errors.map((e) => e.lease))}::uuid[],
      ${sql.param(errors.map((e) => (e.throttled ? "THROTTLED" : errorKindToName(e.errorKind))))}::text[],
      ${sql.param(errors.map((e) => e.message))}::text[],
      ${sql.param(errors.map((e) => (e.decision.retry ? Math.round(e.decision.delayMs) : null)))}::integer[],
      ${sql.param(errors.map((e) => e.newJob))}::boolean[],
      ${sql.param(usagesJson(errors.map((e) => e.usage)))}::jsonb[])`;
}

/**
 * What each attempt spent, as a jsonb[] parameter; null when none spent anything, so the SQL functions skip
 * trellis_record_usage altogether (the common case of the hot path).
 */
function usagesJson(usages: readonly (Readonly<Record<string, number>> | undefined)[]): (string | null)[] | null {
  const json = usages.map(usageJson);
  return json.every((u) => u === null) ? null : json;
}

/** What an attempt spent as the JSON text of a jsonb parameter (null for nothing). */
function usageJson(usage: Readonly<Record<string, number>> | undefined): string | null {
  if (!usage) return null;
  const spent = Object.entries(usage).filter(([, amount]) => Number.isFinite(amount) && amount !== 0);
  return spent.length === 0 ? null : JSON.stringify(Object.fromEntries(spent));
}

/** A started node as trellis_start_locked returns it ('node' rows). */
function startedNodeOf(body: Record<string, unknown>): StartedNode {
  const node = nodeRowFromRaw(body.node as Record<string, unknown>);
  const parentOutputs: StartedNode["parentOutputs"] = {};
  // Every parent is present; one that returned no output maps to a null Value.
  for (const [id, output] of Object.entries((body.parent_outputs ?? {}) as Record<string, unknown>)) {
    parentOutputs[id] = valueFromJson(output) ?? fromJson(ValueSchema, null);
  }
  const proto = nodeFromRow(node);
  return {
    node: proto,
    workflowName: String(body.workflow_name),
    workflowInput: body.workflow_input as JsonObject,
    parentOutputs,
    lease: node.lease!,
    attempt: node.attempt,
    timeoutMs: effectiveTimeoutMs(proto),
    retryPolicy: effectiveRetryPolicy(proto.retryPolicy),
    queuedAt: node.queuedAt,
    traceParent: typeof body.trace_parent === "string" ? body.trace_parent : null,
    hasChildren: body.has_children === true,
  };
}

/**
 * A QUEUED node as trellis_read_queued returns it ('node' rows), as its call sees it once started: RUNNING, the
 * next attempt, started now; no lease until the start is written.
 */
function unstartedNodeOf(body: Record<string, unknown>): StartedNode {
  const started = startedNodeOf({ ...body, node: { ...(body.node as Record<string, unknown>), lease: "" } });
  const now = new Date();
  started.attempt += 1;
  started.node.attempt = started.attempt;
  started.node.status = NodeStatus.RUNNING;
  started.node.startedAt = timestampFromDate(now);
  return started;
}

/** A result's output as the JSON text of a jsonb parameter (null for none). */
function outputJson(item: Pick<ResultToRecord, "result">): string | null {
  const output = item.result.kind === "success" ? valueToJson(item.result.output) : null;
  return output === null ? null : JSON.stringify(output);
}

const keyOf = (i: { workflowId: string; nodeId: string }) => `${i.workflowId}/${i.nodeId}`;

/** A lease no node holds (gen_random_uuid never makes the nil UUID): a result under it is stale. */
const NO_LEASE = "00000000-0000-0000-0000-000000000000";

/**
 * The worker's side of PostgreSQL: its registration and heartbeat (liveness is per worker session), starting nodes,
 * recording results. Every state change goes through the functions of libs/db/sql; this module only decides which.
 */
export class WorkerStore {
  constructor(
    private readonly transactions: Transactions,
    private readonly limits: WorkflowLimits,
  ) {}

  /** Registers (or re-registers) a worker under a new session; returns the session its nodes will carry. */
  async registerWorker(workerId: string, capabilities: readonly string[], hostname: string): Promise<string> {
    const [row] = await this.transactions.db
      .insert(workers)
      .values({ id: workerId, capabilities: [...capabilities], hostname })
      .onConflictDoUpdate({
        target: workers.id,
        set: {
          session: sql`gen_random_uuid()`,
          capabilities: [...capabilities],
          hostname,
          startedAt: sql`now()`,
          heartbeatAt: sql`now()`,
        },
      })
      .returning({ session: workers.session });
    return row!.session;
  }

  /**
   * The heartbeat: one row per worker, whatever it runs. False when the session is no longer registered (declared
   * dead after its heartbeat lapsed: its nodes were given to others), so the worker must drop what it holds.
   */
  async heartbeatWorker(workerId: string, session: string): Promise<boolean> {
    const rows = await this.transactions.db
      .update(workers)
      .set({ heartbeatAt: sql`now()` })
      .where(and(eq(workers.id, workerId), eq(workers.session, session)))
      .returning({ id: workers.id });
    return rows.length > 0;
  }

  /** Forgets a worker's session (graceful shutdown): a node it still held is lost at the next liveness check. */
  async removeWorker(workerId: string, session?: string): Promise<void> {
    await this.transactions.db
      .delete(workers)
      .where(session ? and(eq(workers.id, workerId), eq(workers.session, session)) : eq(workers.id, workerId));
  }

  /** Of the leases a worker holds, those no longer held (cancelled, or lost with a lapsed session). Reads only. */
  async lostLeases(leases: readonly HeldLease[]): Promise<HeldLease[]> {
    if (leases.length === 0) return [];
    const rows = await this.transactions.db.execute<{ workflow_id: string; id: string }>(sql`
      select h.workflow_id, h.id
        from unnest(${sql.param(leases.map((l) => l.workflowId))}::uuid[],
                    ${sql.param(leases.map((l) => l.nodeId))}::text[],
                    ${sql.param(leases.map((l) => l.lease))}::uuid[]) as h(workflow_id, id, lease)
       where not exists (select 1 from nodes n
                          where n.workflow_id = h.workflow_id and n.id = h.id and n.lease = h.lease
                            and n.status = 'RUNNING')`);
    const lost = new Set(rows.rows.map((r) => `${r.workflow_id}/${r.id}`));
    return leases.filter((l) => lost.has(keyOf(l)));
  }

  /**
   * The RUNNING nodes of a worker session started more than `olderThanMs` ago: a worker compares them with what it
   * holds to find nodes it lost track of (a result it could not record). Reads only.
   */
  async runningOf(session: string, olderThanMs: number): Promise<HeldLease[]> {
    const { rows } = await this.transactions.db.execute<{ workflow_id: string; id: string; lease: string }>(sql`
      select workflow_id, id, lease from nodes
       where worker_session = ${session}::uuid and status = 'RUNNING'
         and started_at < clock_timestamp() - make_interval(secs => ${olderThanMs / 1000})`);
    return rows.map((r) => ({ workflowId: r.workflow_id, nodeId: r.id, lease: r.lease }));
  }

  /**
   * Gives up nodes a worker holds under these leases without a result (one it could not record, or that it lost
   * track of): each attempt ends as an INFRA_ERROR with `message`, retried as its policy says under a new job
   * (returned, to add), through trellis_record_errors. Leases no longer held change nothing.
   */
  async releaseNodes(leases: readonly HeldLease[], message: string): Promise<QueuedNode[]> {
    if (leases.length === 0) return [];
    return this.transactions.write(async (ctx) => {
      await lockWorkflows(ctx.tx, [...new Set(leases.map((l) => l.workflowId))]);
      const errors: AttemptError[] = [];
      for (const lease of leases) {
        const row = await this.runningRow(ctx, lease);
        if (row) errors.push(lostAttempt(row, message));
      }
      if (errors.length === 0) return [];
      return retriedJobs(await this.transactions.callIn(ctx, recordErrorsStatement(errors)));
    });
  }

  /** QUEUED -> RUNNING for a worker session, in one statement (trellis_start_nodes); null for nodes not started. */
  async startNodes(requests: readonly StartRequest[], workerSession: string | null): Promise<(StartedNode | null)[]> {
    if (requests.length === 0) return [];
    const rows = await this.transactions.call(
      sql`
      select kind, body from trellis_start_nodes(${sql.param(requests.map((r) => r.workflowId))}::uuid[],
                                                 ${sql.param(requests.map((r) => r.nodeId))}::text[],
                                                 ${sql.param(requests.map((r) => r.queueGen ?? null))}::integer[],
                                                 ${workerSession}::uuid)`,
      { notifiesEvents: true },
    );
    const byKey = new Map<string, { started: StartedNode; queueGen: number }>();
    for (const { kind, body } of rows) {
      if (kind !== "node") continue;
      const started = startedNodeOf(body);
      const queueGen = Number((body.node as Record<string, unknown>).queue_gen);
      byKey.set(`${started.node.workflowId}/${started.node.id}`, { started, queueGen });
    }
    // A node asked for twice in one batch is started once, for the request of its queue generation (the other
    // request, of an older job, gets null).
    return requests.map((r) => {
      const found = byKey.get(keyOf(r));
      if (!found || (r.queueGen !== undefined && r.queueGen !== null && r.queueGen !== found.queueGen)) return null;
      byKey.delete(keyOf(r));
      return found.started;
    });
  }

  /** What calling QUEUED nodes needs, read without starting them (trellis_read_queued). */
  async readQueued(requests: readonly StartRequest[]): Promise<QueuedRead[]> {
    const read = requests.filter((r) => r.queueGen !== undefined && r.queueGen !== null);
    if (read.length === 0) return requests.map(() => ({ kind: "start" }));
    const { rows } = await this.transactions.db.execute<FunctionRow>(sql`
      select kind, body from trellis_read_queued(${sql.param(read.map((r) => r.workflowId))}::uuid[],
                                                 ${sql.param(read.map((r) => r.nodeId))}::text[],
                                                 ${sql.param(read.map((r) => r.queueGen))}::integer[])`);
    const found = new Map<string, QueuedRead>();
    for (const { kind, body } of rows) {
      if (kind === "start") found.set(`${String(body.workflow_id)}/${String(body.id)}`, { kind: "start" });
      else if (kind === "node") {
        const node = unstartedNodeOf(body);
        found.set(`${node.node.workflowId}/${node.node.id}`, { kind: "call", node });
      }
    }
    return requests.map((r) => {
      if (r.queueGen === undefined || r.queueGen === null) return { kind: "start" };
      const read = found.get(keyOf(r)) ?? null;
      // A node asked for twice is read for the first request only (the other job is a duplicate).
      found.delete(keyOf(r));
      return read;
    });
  }

  /**
   * Records results under their leases, in one transaction (one commit). Successes go through trellis_pass_nodes
   * (after their edits, when they carry any), failed attempts through trellis_record_errors: whatever the mix, each
   * state change has that one implementation. Successes without edits alone (the common case) are one statement.
   */
  async recordResults(items: readonly ResultToRecord[], options: RecordOptions = {}): Promise<RecordedResults> {
    if (items.length === 0) return { outcomes: [], dispatched: [], started: [] };
    if (items.every((i) => i.result.kind === "success" && i.result.edits.length === 0)) {
      const rows = await this.transactions.call(this.passStatement(items, options));
      return this.outcomesOf(items, rows, new Map());
    }
    return this.transactions.write(async (ctx) => {
      const errorsOf = new Map<string, AttemptError>();
      const rows = await this.recordMixed(ctx, items, options, errorsOf);
      return this.outcomesOf(items, rows, errorsOf);
    });
  }

  private async recordMixed(
    ctx: TxContext,
    items: readonly ResultToRecord[],
    options: RecordOptions,
    errorsOf: Map<string, AttemptError>,
  ): Promise<FunctionRow[]> {
    const { tx } = ctx;
    const workflowIds = [...new Set(items.map((i) => i.workflowId))];
    let locked = await lockWorkflows(tx, workflowIds);
    const recording = await this.startUnstarted(ctx, items, options);
    // Read again after starts, which may have made a workflow RUNNING.
    if (recording !== items) locked = await lockWorkflows(tx, workflowIds);
    const changesOf = new Map(locked.map((w) => [w.id, new WorkflowChanges(w)]));
    const successes: ResultToRecord[] = [];
    const seen = new Set<string>();
    for (const item of recording) {
      // A node given twice in one batch is recorded once; the later item is stale.
      if (seen.has(keyOf(item)) || !changesOf.has(item.workflowId)) continue;
      seen.add(keyOf(item));
      const { result } = item;
      if (result.kind === "success" && result.edits.length === 0) {
        successes.push(item);
        continue;
      }
      const row = await this.runningRow(ctx, item);
      if (!row) continue;
      if (result.kind === "error") {
        const errorKind = result.errorKind === ErrorKind.INFRA_ERROR ? ErrorKind.INFRA_ERROR : ErrorKind.TASK_ERROR;
        errorsOf.set(keyOf(item), {
          ...item,
          errorKind,
          message: result.message,
          decision: decideForRow(row, errorKind),
          newJob: item.startedLocally === true,
          usage: result.usage,
        });
        continue;
      }
      if (result.kind === "throttled") {
        errorsOf.set(keyOf(item), {
          ...item,
          errorKind: ErrorKind.INFRA_ERROR,
          message: result.message,
          decision: { retry: true, delayMs: Math.max(0, Math.round(result.retryAfterMs)) },
          newJob: true,
          throttled: true,
          usage: result.usage,
        });
        continue;
      }
      const changes = changesOf.get(item.workflowId)!;
      const graph = await loadGraph(tx, item.workflowId);
      try {
        await applyEditPlan(tx, changes, graph, planEdits(graph, result.edits, this.limits, "edits"), item.nodeId);
      } catch (error) {
        if (!(error instanceof TrellisError)) throw error;
        errorsOf.set(keyOf(item), {
          ...item,
          errorKind: ErrorKind.TASK_ERROR,
          message: `invalid edits: ${error.message}`,
          decision: { retry: false },
          newJob: false,
        });
        continue;
      }
      await flushChanges(this.transactions, ctx, [changes]);
      successes.push(item);
    }
    const rows: FunctionRow[] = [];
    if (errorsOf.size > 0) {
      rows.push(...(await this.transactions.callIn(ctx, recordErrorsStatement([...errorsOf.values()]))));
    }
    if (successes.length > 0) {
      rows.push(...(await this.transactions.callIn(ctx, this.passStatement(successes, options))));
    }
    return rows;
  }

  /**
   * The items with their starts written first, in the result's transaction (trellis_start_locked, the one start), for
   * those called before their start was written: each then carries the lease its start gave, or none when the node
   * was no longer QUEUED under the item's queue generation (its result is then stale).
   */
  private async startUnstarted(
    ctx: TxContext,
    items: readonly ResultToRecord[],
    options: RecordOptions,
  ): Promise<readonly ResultToRecord[]> {
    const unstarted = items.filter((i) => i.unstarted);
    if (unstarted.length === 0) return items;
    const rows = await this.transactions.callIn(
      ctx,
      sql`
      select kind, body from trellis_start_locked(${sql.param(unstarted.map((i) => i.workflowId))}::uuid[],
                                                  ${sql.param(unstarted.map((i) => i.nodeId))}::text[],
                                                  ${sql.param(unstarted.map((i) => i.unstarted!.queueGen))}::integer[],
                                                  ${options.workerSession ?? null}::uuid, false, '[]'::jsonb,
                                                  ${sql.param(unstarted.map((i) => i.unstarted!.startedAt.toISOString()))}::timestamptz[],
                                                  false)`,
    );
    const leaseOf = new Map<string, string>();
    for (const { kind, body } of rows) {
      // A node given twice is started once: the first item of it gets the lease.
      if (kind === "started") leaseOf.set(`${String(body.workflow_id)}/${String(body.id)}`, String(body.lease));
    }
    return items.map((item) => {
      if (!item.unstarted) return item;
      const lease = leaseOf.get(keyOf(item));
      leaseOf.delete(keyOf(item));
      // No lease: the running-row lookup finds nothing, and the result is stale.
      return { ...item, lease: lease ?? NO_LEASE, unstarted: undefined };
    });
  }

  /** A node's row while it is RUNNING under the item's lease (locked), else null: the result is stale. */
  private async runningRow(ctx: TxContext, item: HeldLease): Promise<NodeRow | null> {
    const { rows } = await ctx.tx.execute<Record<string, unknown>>(sql`
      select * from nodes
       where workflow_id = ${item.workflowId} and id = ${item.nodeId} and lease = ${item.lease}::uuid
         and status = 'RUNNING'
         for update`);
    return rows[0] ? nodeRowFromRaw(rows[0]) : null;
  }

  private passStatement(items: readonly ResultToRecord[], options: RecordOptions) {
    // Null unless a result records its start too: the function then skips that part.
    const unstarted = items.some((i) => i.unstarted);
    return sql`
      select kind, body from trellis_pass_nodes(${sql.param(items.map((i) => i.workflowId))}::uuid[],
                                                ${sql.param(items.map((i) => i.nodeId))}::text[],
                                                ${sql.param(items.map((i) => (i.unstarted ? null : i.lease)))}::uuid[],
                                                ${sql.param(items.map(outputJson))}::jsonb[],
                                                ${options.dispatch ?? false},
                                                ${sql.param(items.map((i) => i.startLocal === true))}::boolean[],
                                                ${options.workerSession ?? null}::uuid,
                                                ${sql.param([...(options.capabilities ?? [])])}::text[],
                                                ${sql.param(usagesJson(items.map((i) => i.result.usage)))}::jsonb[],
                                                ${sql.param(unstarted ? items.map((i) => i.unstarted?.queueGen ?? null) : null)}::integer[],
                                                ${sql.param(unstarted ? items.map((i) => i.unstarted?.startedAt.toISOString() ?? null) : null)}::timestamptz[])`;
  }

  /** One outcome per item from the rows of the functions, plus the nodes dispatched and started locally. */
  private outcomesOf(
    items: readonly ResultToRecord[],
    rows: readonly FunctionRow[],
    errorsOf: ReadonlyMap<string, AttemptError>,
  ): RecordedResults {
    const passed = new Set<string>();
    const retried = new Map<string, { delayMs: number; attempt: number; throttled: boolean }>();
    const failed = new Set<string>();
    const statusOf = new Map<string, WorkflowStatusName>();
    const dispatched: QueuedNode[] = [];
    const startedLocally = new Map<string, StartedNode>();
    const localChildOf = new Map<string, string>();
    for (const { kind, body } of rows) {
      const key = `${String(body.workflow_id)}/${String(body.id)}`;
      if (kind === "pass") passed.add(key);
      else if (kind === "retry") {
        retried.set(key, {
          delayMs: Number(body.delay_ms),
          attempt: Number(body.attempt),
          throttled: body.throttled === true,
        });
        if (body.new_job === true) dispatched.push(retriedJobOf(body));
      } else if (kind === "fail") failed.add(key);
      else if (kind === "queued") dispatched.push(queuedNodeOf(nodeRowFromRaw(body)));
      else if (kind === "node") {
        const started = startedNodeOf(body);
        startedLocally.set(`${started.node.workflowId}/${started.node.id}`, started);
      } else if (kind === "local") localChildOf.set(`${String(body.workflow_id)}/${String(body.parent_id)}`, key);
      else if (kind === "workflow") statusOf.set(String(body.id), body.status as WorkflowStatusName);
    }
    const started: (StartedNode | null)[] = items.map(() => null);
    const outcomes = items.map((item, i): RecordOutcome => {
      const key = keyOf(item);
      const workflowStatus = workflowStatusFromName(statusOf.get(item.workflowId) ?? "RUNNING");
      if (passed.delete(key)) {
        const child = localChildOf.get(key);
        if (child) started[i] = startedLocally.get(child) ?? null;
        return { outcome: "passed", workflowStatus };
      }
      const retry = retried.get(key);
      if (retry) {
        retried.delete(key);
        if (retry.throttled) return { outcome: "throttled", retryAfterMs: retry.delayMs };
        return { outcome: "retry", delayMs: retry.delayMs, attempt: retry.attempt };
      }
      if (failed.delete(key)) {
        const error = errorsOf.get(key)!;
        return { outcome: "failed", errorKind: error.errorKind, message: error.message, workflowStatus };
      }
      return { outcome: "stale" };
    });
    return { outcomes, dispatched, started };
  }
}
