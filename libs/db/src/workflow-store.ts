import { and, asc, eq, inArray, sql, type SQL } from "drizzle-orm";
import { create } from "@bufbuild/protobuf";
import type { FieldMask } from "@bufbuild/protobuf/wkt";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  assertWorkflowId,
  planEdits,
  planNodeUpdate,
  topologicalOrder,
  validateLabels,
  validateName,
  validateStorableJson,
  validateStorableText,
  validateBudget,
  validateWorkflowNodes,
  workflowStatusAfterAction,
  type EditPlan,
  type GraphNode,
  type WorkflowLimits,
} from "@trellis/core";
import {
  EditType,
  NodeEditSchema,
  WorkflowAction,
  type Node,
  type NodeAttempt,
  type NodeEdit,
  type Workflow,
  type WorkflowEvent,
  type WorkflowStatus,
} from "@trellis/proto";
import { jobIdFor } from "@trellis/queue";
import { CHANNELS, unqueuedPayloads } from "./channels.js";
import {
  attemptFromRow,
  eventFromRow,
  nodeFromRow,
  workflowFromRow,
  workflowStatusFromName,
  workflowStatusToName,
  type NodeStatusName,
  type WorkflowRow,
  type WorkflowStatusName,
} from "./mapping.js";
import type { Database } from "./pool.js";
import { nodeAttempts, nodes, workflowEvents, workflows } from "./schema.js";
import type {
  ActionEffects,
  CreateWorkflowInput,
  CreateWorkflowResult,
  ListWorkflowsQuery,
  UpdateWorkflowInput,
  WorkflowPage,
} from "./state-manager.js";
import { applyEditPlan, insertNodes, loadGraph, type NewNode } from "./graph-writes.js";
import { type Transactions, type Tx, type TxContext, notifyAfterCommit } from "./transactions.js";
import { WorkflowChanges, lockWorkflow } from "./workflow-changes.js";

function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: string; constraint?: string; cause?: { code?: string; constraint?: string } };
  const inner = e.cause ?? e;
  return inner.code === "23505" && inner.constraint === constraint;
}

/** How an attempt ended, as stored in `node_attempts.outcome`. */
type AttemptOutcome = (typeof nodeAttempts.$inferInsert)["outcome"];

/**
 * Records that attempts ended; `node_attempts`' primary key refuses a second ending of the same attempt, so a bug
 * that tried to record one twice fails its whole transaction instead of writing a second result.
 */
async function endAttempts(
  tx: Tx,
  ended: readonly { workflowId: string; nodeId: string; attempt: number }[],
  outcome: AttemptOutcome,
): Promise<void> {
  if (ended.length === 0) return;
  await tx.insert(nodeAttempts).values(ended.map((e) => ({ ...e, outcome })));
}

/** Whether a workflow in this status can be paused (by PAUSE or by its budget). */
function isPausable(status: WorkflowStatusName): boolean {
  return status === "PENDING" || status === "RUNNING";
}

/** The first unit, by name, whose usage reached its budget (as trellis_pause_over_budget decides); else undefined. */
function exceededUnit(
  usage: Readonly<Record<string, number>>,
  budget: Readonly<Record<string, number>>,
): string | undefined {
  return Object.keys(budget)
    .sort()
    .find((unit) => (usage[unit] ?? 0) >= budget[unit]!);
}

/**
 * A workflow just inserted, as getWorkflow reads it: its row, and its inserted node rows with the column defaults
 * filled in and the row's timestamps (one transaction), in getWorkflow's order (topological, ties by id).
 */
function createdWorkflow(row: WorkflowRow, inserted: readonly NewNode[]): Workflow {
  const byId = new Map(inserted.map((n) => [n.id, n]));
  const order = topologicalOrder([...byId.keys()].sort(), (id) => byId.get(id)?.parentIds ?? []);
  const nodeList = order.map((id) => {
    const node = byId.get(id)!;
    return nodeFromRow({
      output: null,
      errorKind: null,
      errorMessage: null,
      attempt: 0,
      attemptBase: 0,
      queueGen: 0,
      lease: null,
      workerSession: null,
      leaseExpiresAt: null,
      queuedAt: null,
      unroutableAt: null,
      startedAt: null,
      heldBy: null,
      ...node,
      status: node.status!,
      parentIds: node.parentIds ?? [],
      pendingParents: node.pendingParents ?? 0,
      input: node.input ?? {},
      retryPolicy: node.retryPolicy ?? null,
      timeoutMs: node.timeoutMs ?? null,
      labels: node.labels ?? {},
      priority: node.priority ?? 0,
      limitKeys: node.limitKeys ?? [],
      wait: node.wait ?? null,
      notBefore: node.notBefore ?? null,
      wakeAt: null,
      insertedBy: node.insertedBy ?? "",
      signal: null,
      createdAt: row.createdAt,
      updatedAt: row.createdAt,
      finishedAt: node.finishedAt ?? null,
    });
  });
  return workflowFromRow(row, nodeList);
}

function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value ?? {}), "utf8");
}

function encodePageToken(row: Pick<WorkflowRow, "createdAt" | "id">): string {
  return Buffer.from(JSON.stringify([row.createdAt.toISOString(), row.id])).toString("base64url");
}

function decodePageToken(token: string): { createdAt: Date; id: string } {
  try {
    const [iso, id] = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as [string, string];
    const createdAt = new Date(iso);
    if (typeof id !== "string" || Number.isNaN(createdAt.getTime())) throw new Error("bad token");
    assertWorkflowId(id, "page_token");
    return { createdAt, id };
  } catch {
    throw new InvalidArgumentError("page_token", "is not a token returned by ListWorkflows");
  }
}

/**
 * The api's side of PostgreSQL: workflows (create, read, list, actions), nodes and edit batches, events. Status
 * changes of the hot path are not here (WorkerStore, SchedulerStore); a settle after edits goes through the same SQL
 * function as every other.
 */
export class WorkflowStore {
  private readonly db: Database;

  constructor(
    private readonly transactions: Transactions,
    private readonly limits: WorkflowLimits,
  ) {
    this.db = transactions.db;
  }

  private write<T>(work: (ctx: TxContext) => Promise<T>): Promise<T> {
    return this.transactions.write(work);
  }

  // ---------------------------------------------------------------- workflows

  /**
   * Validates and creates a workflow; `within`: inside the caller's transaction (a schedule's tick), whose commit
   * then sends the notifications. Idempotent on requestId either way.
   */
  async createWorkflow(input: CreateWorkflowInput, within?: TxContext): Promise<CreateWorkflowResult> {
    // Characters are code points, as for node names (an emoji is one): validateName, not String.length.
    validateName(input.name, "name");
    if (input.requestId !== undefined && input.requestId.length > 256) {
      throw new InvalidArgumentError("request_id", "must be at most 256 characters");
    }
    // PostgreSQL cannot store a NUL character, and a hostile nesting must not reach JSON.stringify.
    validateStorableText(input.requestId ?? "", "request_id");
    validateStorableJson(input.input, "input");
    validateLabels(input.labels ?? {}, "labels", this.limits);
    validateBudget(input.budget ?? {}, "budget");
    if (jsonBytes(input.input) > this.limits.maxInputBytes) {
      throw new ResourceExhaustedError("input", `exceeds ${this.limits.maxInputBytes} bytes`);
    }
    validateWorkflowNodes(input.nodes, this.limits, "nodes");

    const requestId = input.requestId ? input.requestId : null;
    if (requestId) {
      const existing = await this.findByRequestId(requestId, within?.tx);
      if (existing) return { workflow: existing, created: false };
    }
    const workflowId = crypto.randomUUID();
    let created: Workflow | undefined;
    try {
      const insert = async (ctx: TxContext) => {
        const { tx } = ctx;
        const [row] = await tx
          .insert(workflows)
          .values({
            id: workflowId,
            name: input.name,
            status: "PENDING",
            input: input.input ?? {},
            labels: input.labels ?? {},
            budget: input.budget ?? {},
            requestId,
            traceParent: input.traceParent ?? null,
          })
          .returning();
        const changes = new WorkflowChanges(row!);
        changes.workflow("workflow.created", { nodeCount: input.nodes.length });
        const inserted = await insertNodes(tx, workflowId, input.nodes, new Map());
        changes.markReady();
        await changes.flush(this.transactions, ctx);
        created = createdWorkflow(row!, inserted);
      };
      await (within ? insert(within) : this.write(insert));
    } catch (error) {
      // Inside a caller's transaction a unique violation has aborted it: the caller runs it again.
      if (requestId && !within && isUniqueViolation(error, "workflows_request_id_key")) {
        const existing = await this.findByRequestId(requestId);
        if (existing) return { workflow: existing, created: false };
      }
      throw error;
    }
    // The workflow as it was created (what getWorkflow would have read at commit), without reading it back.
    return { workflow: created!, created: true };
  }

  private async findByRequestId(requestId: string, tx?: Tx): Promise<Workflow | null> {
    const [row] = await (tx ?? this.db)
      .select({ id: workflows.id })
      .from(workflows)
      .where(eq(workflows.requestId, requestId));
    return row ? this.getWorkflow(row.id) : null;
  }

  async getWorkflowStatus(workflowId: string): Promise<WorkflowStatus> {
    assertWorkflowId(workflowId);
    const [row] = await this.db
      .select({ status: workflows.status })
      .from(workflows)
      .where(eq(workflows.id, workflowId));
    if (!row) throw new NotFoundError(`workflow ${workflowId} not found`);
    return workflowStatusFromName(row.status);
  }

  async getWorkflow(workflowId: string): Promise<Workflow> {
    assertWorkflowId(workflowId);
    const [row] = await this.db.select().from(workflows).where(eq(workflows.id, workflowId));
    if (!row) throw new NotFoundError(`workflow ${workflowId} not found`);
    const rows = await this.db
      .select()
      .from(nodes)
      .where(eq(nodes.workflowId, workflowId))
      .orderBy(asc(nodes.createdAt), asc(nodes.id));
    const byId = new Map(rows.map((r) => [r.id, r]));
    const order = topologicalOrder(
      rows.map((r) => r.id),
      (id) => byId.get(id)?.parentIds ?? [],
    );
    return workflowFromRow(
      row,
      order.map((id) => nodeFromRow(byId.get(id)!)),
    );
  }

  async listWorkflows(query: ListWorkflowsQuery): Promise<WorkflowPage> {
    const pageSize = query.pageSize;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 500) {
      throw new InvalidArgumentError("page_size", "must be between 1 and 500");
    }
    const conditions: SQL[] = [];
    if (query.status !== undefined && query.status !== 0) {
      conditions.push(eq(workflows.status, workflowStatusToName(query.status)));
    }
    if (query.labelSelector && Object.keys(query.labelSelector).length > 0) {
      for (const [key, value] of Object.entries(query.labelSelector)) {
        validateStorableText(key, "label_selector");
        validateStorableText(value, `label_selector[${JSON.stringify(key)}]`);
      }
      conditions.push(sql`${workflows.labels} @> ${JSON.stringify(query.labelSelector)}::jsonb`);
    }
    if (query.pageToken) {
      const after = decodePageToken(query.pageToken);
      // A row comparison, which a btree scan starts at; `a < x or (a = x and b < y)` would be a filter on every row
      // from the first page on.
      conditions.push(
        sql`(${workflows.createdAt}, ${workflows.id}) < (${after.createdAt.toISOString()}::timestamptz, ${after.id}::uuid)`,
      );
    }
    // NULLS LAST as the indexes are built (drizzle's .desc()): a plain DESC means NULLS FIRST, which no index of
    // workflows serves, and every list sorted all the rows matching its filters (docs/reads-at-volume.md).
    const rows = await this.db
      .select()
      .from(workflows)
      .where(conditions.length ? and(...conditions) : undefined)
      .orderBy(sql`${workflows.createdAt} desc nulls last`, sql`${workflows.id} desc nulls last`)
      .limit(pageSize + 1);
    const page = rows.slice(0, pageSize);
    const last = page[page.length - 1];
    return {
      workflows: page.map((r) => workflowFromRow(r)),
      nextPageToken: rows.length > pageSize && last ? encodePageToken(last) : "",
    };
  }

  async updateWorkflow(workflowId: string, update: UpdateWorkflowInput): Promise<ActionEffects> {
    assertWorkflowId(workflowId);
    if (update.name !== undefined) validateName(update.name, "name");
    if (update.labels !== undefined) validateLabels(update.labels, "labels", this.limits);
    if (update.budget !== undefined) validateBudget(update.budget, "budget");
    const effects: Omit<ActionEffects, "workflow"> = { cancelledRunning: [], removedJobIds: [] };
    await this.write(async (ctx) => {
      const { tx } = ctx;
      let changes = new WorkflowChanges(await this.lockOrThrow(tx, workflowId));
      const fields = {
        ...(update.name !== undefined ? { name: update.name } : {}),
        ...(update.labels !== undefined ? { labels: update.labels } : {}),
        ...(update.budget !== undefined ? { budget: update.budget } : {}),
      };
      if (Object.keys(fields).length > 0) {
        await tx.update(workflows).set(fields).where(eq(workflows.id, workflowId));
        changes.workflow("workflow.updated", fields);
      }
      const budget = update.budget ?? changes.row.budget;
      let pausedByBudget = false;
      if (
        update.budget !== undefined &&
        isPausable(changes.status) &&
        exceededUnit(changes.row.usage, update.budget) !== undefined
      ) {
        changes = await this.pauseInSql(
          ctx,
          changes,
          sql`select kind, body from trellis_pause_over_budget(array[${workflowId}]::uuid[])`,
          effects,
        );
        pausedByBudget = true;
      }
      // A PAUSE asked with a budget that already paused the workflow is done, not refused.
      const action = pausedByBudget && update.action === WorkflowAction.PAUSE ? undefined : update.action;
      if (action !== undefined && action !== WorkflowAction.UNSPECIFIED) {
        changes = await this.applyAction(ctx, changes, action, effects, budget);
      }
      await changes.flush(this.transactions, ctx);
      if (effects.cancelledRunning.length > 0) {
        notifyAfterCommit(
          ctx,
          CHANNELS.cancel,
          JSON.stringify({ workflowId, nodeIds: effects.cancelledRunning.map((n) => n.nodeId) }),
        );
      }
      // After commit the schedulers remove the jobs of the nodes taken off their queues (a worker would only drop
      // them once it took them, and none ever does for a capability no worker serves). An active job stays: its
      // worker finds the node changed.
      for (const payload of unqueuedPayloads(workflowId, effects.removedJobIds)) {
        notifyAfterCommit(ctx, CHANNELS.unqueued, payload);
      }
    });
    return { workflow: await this.getWorkflow(workflowId), ...effects };
  }

  /**
   * Pauses the locked workflow through a SQL function of libs/db/sql (the one implementation of PAUSED), after the
   * events recorded so far so the sequence keeps their order; the jobs of the nodes it took off their queues go to
   * `effects.removedJobIds`. Returns the changes to go on with, from the workflow row as the function left it.
   */
  private async pauseInSql(
    ctx: TxContext,
    changes: WorkflowChanges,
    statement: SQL,
    effects: Omit<ActionEffects, "workflow">,
  ): Promise<WorkflowChanges> {
    await changes.flush(this.transactions, ctx);
    for (const row of await this.transactions.callIn(ctx, statement)) {
      if (row.kind !== "unqueued") continue;
      const node = row.body as { workflow_id: string; id: string; capability: string; queue_gen: number };
      effects.removedJobIds.push({
        capability: node.capability,
        jobId: jobIdFor(node.workflow_id, node.id, node.queue_gen),
      });
    }
    return new WorkflowChanges(await this.lockOrThrow(ctx.tx, changes.row.id));
  }

  /** Applies a workflow action; returns the changes to go on with (new ones when SQL changed the workflow row). */
  private async applyAction(
    ctx: TxContext,
    changes: WorkflowChanges,
    action: WorkflowAction,
    effects: Omit<ActionEffects, "workflow">,
    budget: Readonly<Record<string, number>>,
  ): Promise<WorkflowChanges> {
    const { tx } = ctx;
    const workflowId = changes.row.id;
    const next = workflowStatusToName(workflowStatusAfterAction(workflowStatusFromName(changes.status), action));
    switch (action) {
      case WorkflowAction.PAUSE:
        // QUEUED nodes go back to PENDING; their jobs find them so and are dropped.
        return this.pauseInSql(
          ctx,
          changes,
          sql`select kind, body from trellis_pause_workflows(array[${workflowId}]::uuid[], ${JSON.stringify({ action: "PAUSE" })}::jsonb)`,
          effects,
        );
      case WorkflowAction.RESUME: {
        const unit = exceededUnit(changes.row.usage, budget);
        if (unit !== undefined) {
          throw new FailedPreconditionError(`budget exceeded for ${unit}: raise it with update_mask budget first`);
        }
        // A workflow is PENDING until its first node is queued, paused or not.
        const [started] = await tx
          .select({ id: nodes.id })
          .from(nodes)
          .where(and(eq(nodes.workflowId, workflowId), sql`${nodes.queueGen} > 0`))
          .limit(1);
        changes.setStatus(started ? next : "PENDING", { action: "RESUME" });
        changes.markReady();
        return changes;
      }
      case WorkflowAction.CANCEL: {
        changes.setStatus(next, { action: "CANCEL" });
        const cancelled = await tx.execute<{
          id: string;
          capability: string;
          queue_gen: number;
          attempt: number;
          old_status: NodeStatusName;
        }>(sql`
          update nodes n
             set status = 'CANCELLED', lease = null, worker_session = null, lease_expires_at = null, held_by = null,
                 finished_at = now(), updated_at = now()
            from (select id, status from nodes
                   where workflow_id = ${workflowId} and trellis_node_unfinished(status)
                     for update) old
           where n.workflow_id = ${workflowId} and n.id = old.id
          returning n.id, n.capability, n.queue_gen, n.attempt, old.status as old_status`);
        for (const n of cancelled.rows) {
          changes.node("node.status_changed", n.id, "CANCELLED", {
            from: n.old_status,
            reason: "workflow cancelled",
            capability: n.capability,
          });
          if (n.old_status === "RUNNING") effects.cancelledRunning.push({ nodeId: n.id });
          if (n.old_status === "QUEUED") {
            effects.removedJobIds.push({ capability: n.capability, jobId: jobIdFor(workflowId, n.id, n.queue_gen) });
          }
        }
        await endAttempts(
          tx,
          cancelled.rows
            .filter((n) => n.old_status === "RUNNING")
            .map((n) => ({ workflowId, nodeId: n.id, attempt: n.attempt })),
          "CANCELLED",
        );
        return changes;
      }
      case WorkflowAction.RETRY: {
        changes.setStatus(next, { action: "RETRY" });
        const reopened = await tx
          .update(nodes)
          .set({
            status: "PENDING",
            errorKind: null,
            errorMessage: null,
            output: null,
            finishedAt: null,
            attemptBase: sql`${nodes.attempt}`,
            // A wait node asks anew: the signal that failed it is spent.
            signal: null,
            wakeAt: null,
            updatedAt: sql`now()`,
          })
          .where(and(eq(nodes.workflowId, workflowId), inArray(nodes.status, ["FAIL", "SKIPPED"])))
          .returning({ id: nodes.id });
        await this.recountPendingParents(
          tx,
          workflowId,
          reopened.map((n) => n.id),
        );
        for (const n of reopened) changes.node("node.status_changed", n.id, "PENDING", { reason: "workflow retried" });
        changes.markReady();
        return changes;
      }
      case WorkflowAction.UNSPECIFIED:
        return changes;
      default: {
        const never: never = action;
        throw new InvalidArgumentError("action", `unknown action ${String(never)}`);
      }
    }
  }

  private async recountPendingParents(tx: Tx, workflowId: string, nodeIds: readonly string[]): Promise<void> {
    if (nodeIds.length === 0) return;
    await tx.execute(sql`
      update nodes n
         set pending_parents = (
               select count(*) from nodes p
                where p.workflow_id = n.workflow_id and p.id = any(n.parent_ids) and p.status <> 'PASS')
       where n.workflow_id = ${workflowId} and n.id = any(${sql.param([...nodeIds])}::text[])`);
  }

  private async lockOrThrow(tx: Tx, workflowId: string): Promise<WorkflowRow> {
    const row = await lockWorkflow(tx, workflowId);
    if (!row) throw new NotFoundError(`workflow ${workflowId} not found`);
    return row;
  }

  // -------------------------------------------------------------------- nodes

  async getNode(workflowId: string, nodeId: string): Promise<Node> {
    assertWorkflowId(workflowId);
    const [row] = await this.db
      .select()
      .from(nodes)
      .where(and(eq(nodes.workflowId, workflowId), eq(nodes.id, nodeId)));
    if (row) return nodeFromRow(row);
    await this.getWorkflowRowOrThrow(workflowId);
    throw new NotFoundError(`node "${nodeId}" not found in workflow ${workflowId}`);
  }

  async listNodeAttempts(workflowId: string, nodeId: string): Promise<NodeAttempt[]> {
    assertWorkflowId(workflowId);
    const rows = await this.db
      .select()
      .from(nodeAttempts)
      .where(and(eq(nodeAttempts.workflowId, workflowId), eq(nodeAttempts.nodeId, nodeId)))
      .orderBy(asc(nodeAttempts.attempt), asc(nodeAttempts.endedAt));
    // No attempt yet: an unknown node (or workflow) is NOT_FOUND, a known one has none.
    if (rows.length === 0) await this.getNode(workflowId, nodeId);
    return rows.map(attemptFromRow);
  }

  private async getWorkflowRowOrThrow(workflowId: string): Promise<WorkflowRow> {
    const [row] = await this.db.select().from(workflows).where(eq(workflows.id, workflowId));
    if (!row) throw new NotFoundError(`workflow ${workflowId} not found`);
    return row;
  }

  async createNode(workflowId: string, node: Node): Promise<Node> {
    await this.applyNodeEdits(workflowId, [create(NodeEditSchema, { type: EditType.INSERT, node })]);
    return this.getNode(workflowId, node.id);
  }

  async updateNode(workflowId: string, node: Node, updateMask: FieldMask | undefined): Promise<Node> {
    assertWorkflowId(workflowId);
    await this.editInTransaction(workflowId, (graph) => planNodeUpdate(graph, node, updateMask, this.limits, "node"));
    return this.getNode(workflowId, node.id);
  }

  async applyNodeEdits(workflowId: string, edits: readonly NodeEdit[]): Promise<Workflow> {
    assertWorkflowId(workflowId);
    await this.editInTransaction(workflowId, (graph) => planEdits(graph, edits, this.limits, "edits"));
    return this.getWorkflow(workflowId);
  }

  private async editInTransaction(
    workflowId: string,
    plan: (graph: ReadonlyMap<string, GraphNode>) => EditPlan,
  ): Promise<void> {
    await this.write(async (ctx) => {
      const { tx } = ctx;
      const row = await this.lockOrThrow(tx, workflowId);
      const changes = new WorkflowChanges(row);
      if (changes.finished) {
        throw new FailedPreconditionError(
          `workflow ${workflowId} is ${row.status}; a finished workflow cannot be edited`,
        );
      }
      const graph = await loadGraph(tx, workflowId);
      await applyEditPlan(tx, changes, graph, plan(graph));
      await changes.flush(this.transactions, ctx);
      // Deleting the last unfinished nodes finishes the workflow.
      await this.transactions.callIn(
        ctx,
        sql`select kind, body from trellis_settle_workflows(array[${workflowId}]::uuid[])`,
      );
    });
  }

  async countNodesByStatus(): Promise<Map<string, number>> {
    const rows = await this.db.execute<{ status: string; n: number }>(sql`
      select status, count(*)::int as n from nodes where trellis_node_unfinished(status) group by status`);
    return new Map(rows.rows.map((r) => [r.status, r.n]));
  }

  async countWorkflowsByStatus(): Promise<Map<string, number>> {
    const rows = await this.db.execute<{ status: string; n: number }>(sql`
      select status, count(*)::int as n from workflows where status in ('PENDING', 'RUNNING', 'PAUSED') group by status`);
    return new Map(rows.rows.map((r) => [r.status, r.n]));
  }

  async listEvents(workflowId: string, afterSequence: number, limit = 1_000): Promise<WorkflowEvent[]> {
    assertWorkflowId(workflowId);
    const rows = await this.db
      .select()
      .from(workflowEvents)
      .where(and(eq(workflowEvents.workflowId, workflowId), sql`${workflowEvents.sequence} > ${afterSequence}`))
      .orderBy(asc(workflowEvents.sequence))
      .limit(limit);
    return rows.map(eventFromRow);
  }
}
