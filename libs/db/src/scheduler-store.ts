import { and, asc, eq, sql } from "drizzle-orm";
import { parseJobId, queueGenOfJobId } from "@trellis/queue";
import { interleaveByWorkflow } from "./interleave.js";
import { nodeRowFromRaw } from "./mapping.js";
import { queuedNodeOf, retriedJobs } from "./queued-node.js";
import { nodes } from "./schema.js";
import type { QueuedNode, WorkerInfo } from "./state-manager.js";
import type { Transactions } from "./transactions.js";
import { WorkflowChanges, flushChanges, lockWorkflows } from "./workflow-changes.js";
import { lostAttempt, recordErrorsStatement } from "./worker-store.js";

/**
 * The scheduler's side of PostgreSQL: claiming ready nodes, per-worker liveness (the nodes of a lost worker go back),
 * and the reconciler's repairs (lost jobs, unroutable capabilities).
 */
export class SchedulerStore {
  constructor(private readonly transactions: Transactions) {}

  /** PENDING -> QUEUED for up to `limit` ready nodes, in one statement (trellis_claim_ready_nodes). */
  async claimReadyNodes(limit: number): Promise<QueuedNode[]> {
    if (limit < 1) return [];
    const rows = await this.transactions.call(
      sql`select kind, body from trellis_claim_ready_nodes(${limit}::integer)`,
      { notifiesEvents: true },
    );
    return interleaveByWorkflow(
      rows.filter((r) => r.kind === "queued").map((r) => queuedNodeOf(nodeRowFromRaw(r.body))),
    );
  }

  /**
   * What time does to WAITING nodes (trellis_wake_nodes): start times reached go back to PENDING for the claim,
   * timed-out waits PASS or FAIL; returns the WAITING nodes with a kept signal, for completeKeptSignals.
   */
  async wakeNodes(limit: number): Promise<{ workflowId: string; nodeId: string }[]> {
    const rows = await this.transactions.call(sql`select kind, body from trellis_wake_nodes(${limit}::integer)`);
    return rows
      .filter((r) => r.kind === "signaled")
      .map((r) => ({ workflowId: String(r.body.workflow_id), nodeId: String(r.body.id) }));
  }

  /**
   * Per-worker liveness: forgets the workers whose heartbeat is older than `staleMs` (their sessions are dead for
   * good: a worker that comes back registers anew), then ends the attempt of every RUNNING node whose worker
   * session is not registered (INFRA_ERROR, retried as its policy says, with a new job) through
   * trellis_record_errors. Nodes started before per-worker liveness (no session) count as lost once their lease
   * expired. Two statements when nothing is lost, however many nodes run; returns the jobs to add.
   */
  async requeueLostNodes(staleMs: number, limit: number): Promise<QueuedNode[]> {
    const { db } = this.transactions;
    await db.execute(sql`delete from workers where heartbeat_at < now() - make_interval(secs => ${staleMs / 1000})`);
    const { rows } = await db.execute<Record<string, unknown>>(sql`
      select n.* from nodes n
       where n.status = 'RUNNING'
         and (case when n.worker_session is null then n.lease_expires_at < now()
                   else not exists (select 1 from workers w where w.session = n.worker_session) end)
       limit ${limit}`);
    if (rows.length === 0) return [];
    const errors = rows.map((raw) => {
      const row = nodeRowFromRaw(raw);
      return lostAttempt(row, `worker lost at attempt ${row.attempt}: its heartbeat lapsed`);
    });
    return retriedJobs(await this.transactions.call(recordErrorsStatement(errors)));
  }

  /** QUEUED nodes queued more than `olderThanMs` ago, with their current job ids (for the reconciler). */
  async findQueuedNodes(olderThanMs: number, limit: number): Promise<QueuedNode[]> {
    const rows = await this.transactions.db
      .select()
      .from(nodes)
      .where(
        and(eq(nodes.status, "QUEUED"), sql`${nodes.queuedAt} < now() - make_interval(secs => ${olderThanMs / 1000})`),
      )
      .orderBy(asc(nodes.queuedAt))
      .limit(limit);
    return rows.map((r) => queuedNodeOf(r));
  }

  /**
   * Of these job ids, the ones whose node is still QUEUED at that generation (an id of another form is kept as
   * current: it is not the engine's to judge). One read through the nodes' primary key.
   */
  async currentJobIds(jobIds: readonly string[]): Promise<Set<string>> {
    const current = new Set<string>();
    const parsed: { jobId: string; workflowId: string; nodeId: string; queueGen: number }[] = [];
    for (const jobId of jobIds) {
      const parts = parseJobId(jobId);
      if (parts) parsed.push({ jobId, ...parts });
      else current.add(jobId);
    }
    if (parsed.length === 0) return current;
    const { rows } = await this.transactions.db.execute<{ job_id: string }>(sql`
      select j.job_id
        from unnest(${sql.param(parsed.map((p) => p.jobId))}::text[], ${sql.param(parsed.map((p) => p.workflowId))}::uuid[],
                    ${sql.param(parsed.map((p) => p.nodeId))}::text[], ${sql.param(parsed.map((p) => p.queueGen))}::bigint[])
                           as j(job_id, workflow_id, node_id, queue_gen)
        join nodes n on n.workflow_id = j.workflow_id and n.id = j.node_id
       where n.status = 'QUEUED' and n.queue_gen = j.queue_gen`);
    for (const row of rows) current.add(row.job_id);
    return current;
  }

  /** Gives QUEUED nodes whose job was lost a new queue generation (new job id); skips nodes that moved on. */
  async requeueNodes(lost: readonly Pick<QueuedNode, "workflowId" | "nodeId" | "jobId">[]): Promise<QueuedNode[]> {
    if (lost.length === 0) return [];
    return this.transactions.write(async (ctx) => {
      const queued: QueuedNode[] = [];
      const all: WorkflowChanges[] = [];
      for (const row of await lockWorkflows(ctx.tx, [...new Set(lost.map((l) => l.workflowId))])) {
        const changes = new WorkflowChanges(row);
        all.push(changes);
        for (const l of lost.filter((x) => x.workflowId === row.id)) {
          const [bumped] = await ctx.tx
            .update(nodes)
            .set({ queueGen: sql`${nodes.queueGen} + 1`, queuedAt: sql`now()`, updatedAt: sql`now()` })
            .where(
              and(
                eq(nodes.workflowId, row.id),
                eq(nodes.id, l.nodeId),
                eq(nodes.status, "QUEUED"),
                eq(nodes.queueGen, queueGenOfJobId(l.jobId) ?? -1),
              ),
            )
            .returning();
          if (!bumped) continue;
          changes.node("node.requeued", l.nodeId, "QUEUED", {
            reason: "job missing from the queue",
            lostJobId: l.jobId,
          });
          queued.push(queuedNodeOf(bumped));
        }
      }
      await flushChanges(this.transactions, ctx, all);
      return queued;
    });
  }

  /** Live workers per capability: those whose heartbeat is younger than `maxAgeMs`. */
  async liveCapabilities(maxAgeMs: number): Promise<Map<string, number>> {
    const rows = await this.transactions.db.execute<{ capability: string; workers: number }>(sql`
      select c as capability, count(*)::int as workers
        from workers, unnest(capabilities) c
       where heartbeat_at > now() - make_interval(secs => ${maxAgeMs / 1000})
       group by c`);
    return new Map(rows.rows.map((r) => [r.capability, r.workers]));
  }

  /**
   * Every registered worker with its heartbeat's age (PostgreSQL's clock, as liveness uses), whether it is live
   * (heartbeat younger than `maxAgeMs`) and its RUNNING nodes per capability. Reads only.
   */
  async listWorkers(maxAgeMs: number): Promise<WorkerInfo[]> {
    const { rows } = await this.transactions.db.execute<{
      id: string;
      hostname: string;
      capabilities: string[];
      started_at: Date | string;
      heartbeat_at: Date | string;
      heartbeat_age_ms: string | number;
      live: boolean;
      running: Record<string, number> | null;
    }>(sql`
      with running as (
        select worker_session, capability, count(*)::int as n from nodes
         where status = 'RUNNING' and worker_session is not null
         group by worker_session, capability)
      select w.id, w.hostname, w.capabilities, w.started_at, w.heartbeat_at,
             greatest(0, round(extract(epoch from now() - w.heartbeat_at) * 1000))::bigint as heartbeat_age_ms,
             w.heartbeat_at > now() - make_interval(secs => ${maxAgeMs / 1000}) as live,
             (select jsonb_object_agg(r.capability, r.n) from running r where r.worker_session = w.session) as running
        from workers w
       order by w.id`);
    return rows.map((r) => ({
      id: r.id,
      hostname: r.hostname,
      capabilities: r.capabilities,
      startedAt: new Date(r.started_at),
      heartbeatAt: new Date(r.heartbeat_at),
      heartbeatAgeMs: Number(r.heartbeat_age_ms),
      live: r.live,
      running: r.running ?? {},
    }));
  }

  /**
   * Emits `node.unroutable` once for each QUEUED node whose capability no live worker serves; returns how many
   * QUEUED nodes are unroutable now, per capability.
   */
  async reportUnroutable(served: ReadonlySet<string>): Promise<Map<string, number>> {
    return this.transactions.write(async (ctx) => {
      const { tx } = ctx;
      const servedList = [...served];
      const fresh = await tx.execute<{ workflow_id: string }>(sql`
        select distinct workflow_id from nodes
         where status = 'QUEUED' and unroutable_at is null
           and not (capability = any(${sql.param(servedList)}::text[]))`);
      const all: WorkflowChanges[] = [];
      for (const row of await lockWorkflows(
        tx,
        fresh.rows.map((r) => r.workflow_id),
      )) {
        const marked = await tx
          .update(nodes)
          .set({ unroutableAt: sql`now()` })
          .where(
            and(
              eq(nodes.workflowId, row.id),
              eq(nodes.status, "QUEUED"),
              sql`${nodes.unroutableAt} is null`,
              sql`not (${nodes.capability} = any(${sql.param(servedList)}::text[]))`,
            ),
          )
          .returning({ id: nodes.id, capability: nodes.capability });
        const changes = new WorkflowChanges(row);
        all.push(changes);
        for (const n of marked) {
          changes.node("node.unroutable", n.id, "QUEUED", {
            capability: n.capability,
            reason: `no live worker serves capability "${n.capability}"`,
          });
        }
      }
      await flushChanges(this.transactions, ctx, all);
      const counts = await tx.execute<{ capability: string; n: number }>(sql`
        select capability, count(*)::int as n from nodes
         where status = 'QUEUED' and not (capability = any(${sql.param(servedList)}::text[]))
         group by capability`);
      return new Map(counts.rows.map((r) => [r.capability, r.n]));
    });
  }
}
