import { and, asc, desc, eq, inArray, lt, or, sql, type SQL } from "drizzle-orm";
import { create, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { ValueSchema, type FieldMask } from "@bufbuild/protobuf/wkt";
import {
  DEFAULT_LIMITS,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  TrellisError,
  assertWorkflowId,
  countPendingParents,
  decideRetry,
  effectiveRetryPolicy,
  effectiveTimeoutMs,
  initialStatusForParents,
  planEdits,
  planNodeUpdate,
  topologicalOrder,
  validateLabels,
  validateName,
  validateStorableJson,
  validateStorableText,
  validateWorkflowNodes,
  workflowStatusAfterAction,
  type EditPlan,
  type GraphNode,
  type WorkflowLimits,
} from "@trellis/core";
import {
  EditType,
  ErrorKind,
  NodeEditSchema,
  NodeStatus,
  RetryPolicySchema,
  WorkflowAction,
  type Node,
  type NodeEdit,
  type Workflow,
  type WorkflowEvent,
  type WorkflowStatus,
} from "@trellis/proto";
import { CHANNELS } from "./channels.js";
import {
  durationToMs,
  errorKindToName,
  eventFromRow,
  nodeFromRow,
  nodeRowFromRaw,
  nodeStatusFromName,
  nodeStatusToName,
  retryPolicyToJson,
  valueFromJson,
  valueToJson,
  workflowFromRow,
  workflowStatusFromName,
  workflowStatusToName,
  type NodeRow,
  type NodeStatusName,
  type WorkflowRow,
  type WorkflowStatusName,
} from "./mapping.js";
import type { Database } from "./pool.js";
import { nodeAttempts, nodeEdges, nodes, workers, workflowEvents, workflows } from "./schema.js";
import type {
  ActionEffects,
  CreateWorkflowInput,
  CreateWorkflowResult,
  HeldLease,
  ListWorkflowsQuery,
  NodeResult,
  QueuedNode,
  RecordOptions,
  RecordOutcome,
  RecordedResults,
  ResultToRecord,
  StartedNode,
  StartRequest,
  StateManager,
  UpdateWorkflowInput,
  WorkflowPage,
} from "./state-manager.js";
import {
  WorkflowChanges,
  collectOutbox,
  notifyAfterCommit,
  type TransactionOutbox,
  commitChanges,
  lockWorkflow,
  type NewEvent,
  type Tx,
} from "./workflow-changes.js";

/** Options of the PostgreSQL StateManager. */
export interface PgStateManagerOptions {
  /** Limits on workflows and edits. @default DEFAULT_LIMITS */
  limits?: WorkflowLimits;
  /** Called with the events of each committed transaction (after commit), e.g. to log them. */
  onEvents?: (events: readonly NewEvent[]) => void;
}

type NewNode = typeof nodes.$inferInsert;
type NewEdge = typeof nodeEdges.$inferInsert;

const NODE_CHUNK = 20_000;
const EDGE_CHUNK = 100_000;

/** Deterministic BullMQ job id of a node's queue generation; BullMQ forbids ':' and node ids cannot hold '/'. */
export function jobIdFor(workflowId: string, nodeId: string, queueGen: number): string {
  return `${workflowId}/${nodeId}/${queueGen}`;
}

/** The queue generation in a job id made by {@link jobIdFor}; undefined for any other id. */
export function queueGenOfJobId(jobId: string | undefined): number | undefined {
  const match = jobId === undefined ? null : /\/(\d+)$/.exec(jobId);
  return match ? Number(match[1]) : undefined;
}

/**
 * A status test that cannot use the partial indexes on status: with fresh statistics the planner otherwise
 * picks `nodes_unfinished_idx` and filters a whole workflow's nodes instead of using the primary key.
 */
function statusIs(alias: string, status: NodeStatusName): SQL {
  return sql`${sql.raw(alias)}.status::text = ${status}`;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

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

/**
 * Orders nodes round-robin across their workflows (first node of each, then the second of each, ...), so that
 * the jobs of one claim alternate between workflows: a wide workflow does not hold the queue's head for all the
 * others, and the jobs a worker runs at once seldom wait on one workflow's row lock.
 */
export function interleaveByWorkflow<T extends { workflowId: string }>(items: readonly T[]): T[] {
  const byWorkflow = new Map<string, T[]>();
  for (const item of items) {
    const list = byWorkflow.get(item.workflowId);
    if (list) list.push(item);
    else byWorkflow.set(item.workflowId, [item]);
  }
  if (byWorkflow.size < 2) return [...items];
  const lists = [...byWorkflow.values()];
  const out: T[] = [];
  for (let i = 0; out.length < items.length; i++) {
    for (const list of lists) if (i < list.length) out.push(list[i]!);
  }
  return out;
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
      leaseExpiresAt: null,
      queuedAt: null,
      unroutableAt: null,
      startedAt: null,
      ...node,
      status: node.status!,
      parentIds: node.parentIds ?? [],
      pendingParents: node.pendingParents ?? 0,
      input: node.input ?? {},
      retryPolicy: node.retryPolicy ?? null,
      timeoutMs: node.timeoutMs ?? null,
      labels: node.labels ?? {},
      createdAt: row.createdAt,
      updatedAt: row.createdAt,
      finishedAt: node.finishedAt ?? null,
    });
  });
  return workflowFromRow(row, nodeList);
}

/** A result's output as the JSON text of a jsonb parameter (null for none). */
function outputJson(item: Pick<ResultToRecord, "result">): string | null {
  const output = item.result.kind === "success" ? valueToJson(item.result.output) : null;
  return output === null ? null : JSON.stringify(output);
}

/** A NOTIFY to send after commit. */
type Notification = TransactionOutbox["notifications"][number];

/** A row of a hot-path function: its kind and a JSON body. */
interface HotPathRow extends Record<string, unknown> {
  kind: string;
  body: Record<string, unknown>;
}

/** An event row as a hot-path function returns it (to_jsonb of workflow_events). */
function eventFromHotPath(body: Record<string, unknown>): NewEvent {
  return {
    workflowId: String(body.workflow_id),
    sequence: Number(body.sequence),
    type: String(body.type),
    nodeId: (body.node_id as string | null) ?? null,
    workflowStatus: body.workflow_status as WorkflowStatusName,
    nodeStatus: (body.node_status as NodeStatusName | null) ?? null,
    data: (body.data ?? {}) as JsonObject,
    time: new Date(String(body.time)),
  };
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

/** The PostgreSQL StateManager: the only code that writes SQL. */
export class PgStateManager implements StateManager {
  private readonly limits: WorkflowLimits;

  private readonly onEvents: ((events: readonly NewEvent[]) => void) | undefined;
  private readonly unsent: Notification[] = [];
  private notifying: Promise<void> | null = null;

  constructor(
    private readonly db: Database,
    options: PgStateManagerOptions = {},
  ) {
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.onEvents = options.onEvents;
  }

  /** Runs a write transaction; after it commits, sends its notifications and hands its events to onEvents. */
  private async write<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const outbox: TransactionOutbox = { events: [], notifications: [] };
    const result = await this.db.transaction((tx) => collectOutbox(tx, outbox, () => work(tx)));
    this.afterCommit(outbox);
    return result;
  }

  /** Sends a committed transaction's notifications (without waiting for them) and hands its events to onEvents. */
  private afterCommit(outbox: TransactionOutbox): void {
    if (outbox.notifications.length > 0) this.notify(outbox.notifications);
    if (outbox.events.length > 0 && this.onEvents) {
      try {
        this.onEvents(outbox.events);
      } catch {
        // An observer's failure must not turn a committed change into an error.
      }
    }
  }

  /**
   * Runs one of the hot-path functions of migration 0002 (a whole transaction in one autocommit statement), then
   * does what write() does after a commit with the events it returns and the `ready` workflows it names.
   */
  private async callHotPath(statement: SQL, options: { notifiesEvents?: boolean } = {}): Promise<HotPathRow[]> {
    const { rows } = await this.db.execute<HotPathRow>(statement);
    const outbox: TransactionOutbox = { events: [], notifications: [] };
    const lastSequence = new Map<string, number>();
    for (const row of rows) {
      if (row.kind === "event") {
        const event = eventFromHotPath(row.body);
        outbox.events.push(event);
        lastSequence.set(event.workflowId, Math.max(event.sequence, lastSequence.get(event.workflowId) ?? 0));
      } else if (row.kind === "ready") {
        outbox.notifications.push({ channel: CHANNELS.ready, payload: String(row.body.workflow_id) });
      }
    }
    // The claim and the start send these themselves (see migration 0002), the pass leaves them to us.
    for (const [workflowId, sequence] of options.notifiesEvents ? [] : lastSequence) {
      outbox.notifications.push({ channel: CHANNELS.events, payload: `${workflowId}:${sequence}` });
    }
    outbox.events.sort((a, b) =>
      a.workflowId === b.workflowId ? a.sequence - b.sequence : a.workflowId < b.workflowId ? -1 : 1,
    );
    this.afterCommit(outbox);
    return rows;
  }

  /**
   * Queues notifications for sending, without making the committed change wait for them: they go out in one
   * autocommit statement, together with any that queue while one is in flight (one statement per burst, not per
   * transaction). A failure only delays listeners until they poll (scheduler poll, event hub poll, lease renewal).
   */
  private notify(notifications: readonly Notification[]): void {
    this.unsent.push(...notifications);
    if (!this.notifying) this.notifying = this.sendNotifications().finally(() => (this.notifying = null));
  }

  private async sendNotifications(): Promise<void> {
    while (this.unsent.length > 0) {
      const unique = new Map(this.unsent.splice(0, 10_000).map((n) => [`${n.channel}\n${n.payload}`, n]));
      const batch = [...unique.values()];
      try {
        await this.db.execute(sql`
          select count(pg_notify(n.channel, n.payload))
            from unnest(${sql.param(batch.map((n) => n.channel))}::text[],
                        ${sql.param(batch.map((n) => n.payload))}::text[]) as n(channel, payload)`);
      } catch {
        // Listeners fall back to polling.
      }
    }
  }

  /** Resolves once every notification queued so far has been sent (or failed); for shutdown and tests. */
  async flushNotifications(): Promise<void> {
    while (this.notifying) await this.notifying;
  }

  // ---------------------------------------------------------------- workflows

  async createWorkflow(input: CreateWorkflowInput): Promise<CreateWorkflowResult> {
    // Characters are code points, as for node names (an emoji is one): validateName, not String.length.
    validateName(input.name, "name");
    if (input.requestId !== undefined && input.requestId.length > 256) {
      throw new InvalidArgumentError("request_id", "must be at most 256 characters");
    }
    // PostgreSQL cannot store a NUL character, and a hostile nesting must not reach JSON.stringify.
    validateStorableText(input.requestId ?? "", "request_id");
    validateStorableJson(input.input, "input");
    validateLabels(input.labels ?? {}, "labels", this.limits);
    if (jsonBytes(input.input) > this.limits.maxInputBytes) {
      throw new ResourceExhaustedError("input", `exceeds ${this.limits.maxInputBytes} bytes`);
    }
    validateWorkflowNodes(input.nodes, this.limits, "nodes");

    const requestId = input.requestId ? input.requestId : null;
    if (requestId) {
      const existing = await this.findByRequestId(requestId);
      if (existing) return { workflow: existing, created: false };
    }
    const workflowId = crypto.randomUUID();
    let created: Workflow | undefined;
    try {
      await this.write(async (tx) => {
        const [row] = await tx
          .insert(workflows)
          .values({
            id: workflowId,
            name: input.name,
            status: "PENDING",
            input: input.input ?? {},
            labels: input.labels ?? {},
            requestId,
          })
          .returning();
        const changes = new WorkflowChanges(row!);
        changes.workflow("workflow.created", { nodeCount: input.nodes.length });
        const inserted = await this.insertNodes(tx, workflowId, input.nodes, new Map());
        changes.markReady();
        await changes.commit(tx);
        created = createdWorkflow(row!, inserted);
      });
    } catch (error) {
      if (requestId && isUniqueViolation(error, "workflows_request_id_key")) {
        const existing = await this.findByRequestId(requestId);
        if (existing) return { workflow: existing, created: false };
      }
      throw error;
    }
    // The workflow as it was created (what getWorkflow would have read at commit), without reading it back.
    return { workflow: created!, created: true };
  }

  private async findByRequestId(requestId: string): Promise<Workflow | null> {
    const [row] = await this.db.select({ id: workflows.id }).from(workflows).where(eq(workflows.requestId, requestId));
    return row ? this.getWorkflow(row.id) : null;
  }

  /**
   * Inserts nodes (already validated) with their edges. `knownStatuses` gives the statuses of parents
   * that already exist; parents among `newNodes` are resolved in topological order. Returns the rows inserted.
   */
  private async insertNodes(
    tx: Tx,
    workflowId: string,
    newNodes: readonly Node[],
    knownStatuses: ReadonlyMap<string, NodeStatus>,
  ): Promise<NewNode[]> {
    const byId = new Map(newNodes.map((n) => [n.id, n]));
    const order = topologicalOrder(
      newNodes.map((n) => n.id),
      (id) => (byId.get(id)?.parentIds ?? []).filter((p) => byId.has(p)),
    );
    const statuses = new Map<string, NodeStatus>(knownStatuses);
    const rows: NewNode[] = [];
    const edges: NewEdge[] = [];
    for (const id of order) {
      const node = byId.get(id)!;
      const parentStatuses = node.parentIds.map((p) => statuses.get(p) ?? NodeStatus.PENDING);
      const status = initialStatusForParents(parentStatuses);
      statuses.set(id, status);
      rows.push({
        workflowId,
        id,
        name: node.name || node.id,
        capability: node.capability,
        status: nodeStatusToName(status),
        parentIds: [...node.parentIds],
        pendingParents: countPendingParents(parentStatuses),
        input: node.input ?? {},
        retryPolicy: retryPolicyToJson(node.retryPolicy),
        timeoutMs: durationToMs(node.timeout),
        labels: { ...node.labels },
        finishedAt: status === NodeStatus.PENDING ? null : new Date(),
      });
      for (const parentId of node.parentIds) edges.push({ workflowId, parentId, childId: id });
    }
    // One array per column: a 10,000-node workflow is one statement of a dozen parameters, not 130,000.
    for (const chunk of chunks(rows, NODE_CHUNK)) {
      await tx.execute(sql`
        insert into nodes (workflow_id, id, name, capability, status, parent_ids, pending_parents, input,
                           retry_policy, timeout_ms, labels, finished_at)
        select ${workflowId}::uuid, r.id, r.name, r.capability, r.status, array(select jsonb_array_elements_text(r.parents)),
               r.pending, r.input, r.retry_policy, r.timeout_ms, r.labels, case when r.finished then now() end
          from unnest(${sql.param(chunk.map((n) => n.id))}::text[], ${sql.param(chunk.map((n) => n.name))}::text[],
                      ${sql.param(chunk.map((n) => n.capability))}::text[],
                      ${sql.param(chunk.map((n) => n.status))}::node_status[],
                      ${sql.param(chunk.map((n) => JSON.stringify(n.parentIds ?? [])))}::jsonb[],
                      ${sql.param(chunk.map((n) => n.pendingParents ?? 0))}::int[],
                      ${sql.param(chunk.map((n) => JSON.stringify(n.input ?? {})))}::jsonb[],
                      ${sql.param(chunk.map((n) => (n.retryPolicy ? JSON.stringify(n.retryPolicy) : null)))}::jsonb[],
                      ${sql.param(chunk.map((n) => n.timeoutMs ?? null))}::int[],
                      ${sql.param(chunk.map((n) => JSON.stringify(n.labels ?? {})))}::jsonb[],
                      ${sql.param(chunk.map((n) => n.finishedAt !== null && n.finishedAt !== undefined))}::boolean[])
               as r(id, name, capability, status, parents, pending, input, retry_policy, timeout_ms, labels, finished)`);
    }
    for (const chunk of chunks(edges, EDGE_CHUNK)) {
      await tx.execute(sql`
        insert into node_edges (workflow_id, parent_id, child_id)
        select ${workflowId}::uuid, e.parent_id, e.child_id
          from unnest(${sql.param(chunk.map((e) => e.parentId))}::text[], ${sql.param(chunk.map((e) => e.childId))}::text[])
               as e(parent_id, child_id)
        on conflict do nothing`);
    }
    return rows;
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
      conditions.push(
        or(
          lt(workflows.createdAt, after.createdAt),
          and(eq(workflows.createdAt, after.createdAt), lt(workflows.id, after.id)),
        )!,
      );
    }
    const rows = await this.db
      .select()
      .from(workflows)
      .where(conditions.length ? and(...conditions) : undefined)
      .orderBy(desc(workflows.createdAt), desc(workflows.id))
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
    const effects: Omit<ActionEffects, "workflow"> = { cancelledRunning: [], removedJobIds: [] };
    await this.write(async (tx) => {
      const row = await this.lockOrThrow(tx, workflowId);
      const changes = new WorkflowChanges(row);
      if (update.name !== undefined || update.labels !== undefined) {
        await tx
          .update(workflows)
          .set({
            ...(update.name !== undefined ? { name: update.name } : {}),
            ...(update.labels !== undefined ? { labels: update.labels } : {}),
          })
          .where(eq(workflows.id, workflowId));
        changes.workflow("workflow.updated", {
          ...(update.name !== undefined ? { name: update.name } : {}),
          ...(update.labels !== undefined ? { labels: update.labels } : {}),
        });
      }
      if (update.action !== undefined && update.action !== WorkflowAction.UNSPECIFIED) {
        await this.applyAction(tx, changes, update.action, effects);
      }
      await changes.commit(tx);
      if (effects.cancelledRunning.length > 0) {
        notifyAfterCommit(
          tx,
          CHANNELS.cancel,
          JSON.stringify({ workflowId, nodeIds: effects.cancelledRunning.map((n) => n.nodeId) }),
        );
      }
    });
    return { workflow: await this.getWorkflow(workflowId), ...effects };
  }

  private async applyAction(
    tx: Tx,
    changes: WorkflowChanges,
    action: WorkflowAction,
    effects: Omit<ActionEffects, "workflow">,
  ): Promise<void> {
    const workflowId = changes.row.id;
    const next = workflowStatusToName(workflowStatusAfterAction(workflowStatusFromName(changes.status), action));
    switch (action) {
      case WorkflowAction.PAUSE: {
        changes.setStatus(next, { action: "PAUSE" });
        // Queued nodes go back to PENDING; their jobs find them so and are dropped.
        const returned = await tx
          .update(nodes)
          .set({ status: "PENDING", queuedAt: null, updatedAt: sql`now()` })
          .where(and(eq(nodes.workflowId, workflowId), eq(nodes.status, "QUEUED")))
          .returning({ id: nodes.id, capability: nodes.capability, queueGen: nodes.queueGen });
        for (const n of returned) {
          changes.node("node.status_changed", n.id, "PENDING", { from: "QUEUED", reason: "workflow paused" });
          effects.removedJobIds.push({ capability: n.capability, jobId: jobIdFor(workflowId, n.id, n.queueGen) });
        }
        return;
      }
      case WorkflowAction.RESUME: {
        // A workflow is PENDING until its first node is queued, paused or not.
        const [started] = await tx
          .select({ id: nodes.id })
          .from(nodes)
          .where(and(eq(nodes.workflowId, workflowId), sql`${nodes.queueGen} > 0`))
          .limit(1);
        changes.setStatus(started ? next : "PENDING", { action: "RESUME" });
        changes.markReady();
        return;
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
             set status = 'CANCELLED', lease = null, lease_expires_at = null, finished_at = now(), updated_at = now()
            from (select id, status from nodes
                   where workflow_id = ${workflowId} and status in ('PENDING', 'QUEUED', 'RUNNING')
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
        return;
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
        return;
      }
      case WorkflowAction.UNSPECIFIED:
        return;
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
    await this.write(async (tx) => {
      const row = await this.lockOrThrow(tx, workflowId);
      const changes = new WorkflowChanges(row);
      if (changes.finished) {
        throw new FailedPreconditionError(
          `workflow ${workflowId} is ${row.status}; a finished workflow cannot be edited`,
        );
      }
      const graph = await this.loadGraph(tx, workflowId);
      await this.applyPlan(tx, changes, graph, plan(graph));
      await this.settleAll(tx, [changes]);
      await changes.commit(tx);
    });
  }

  private async loadGraph(tx: Tx, workflowId: string): Promise<Map<string, GraphNode>> {
    const rows = await tx
      .select({ id: nodes.id, status: nodes.status, parentIds: nodes.parentIds })
      .from(nodes)
      .where(eq(nodes.workflowId, workflowId));
    return new Map(rows.map((r) => [r.id, { id: r.id, status: nodeStatusFromName(r.status), parentIds: r.parentIds }]));
  }

  /** Writes a validated edit plan: deletes, inserts, updates, then one workflow.edited event. */
  private async applyPlan(
    tx: Tx,
    changes: WorkflowChanges,
    graph: ReadonlyMap<string, GraphNode>,
    plan: EditPlan,
  ): Promise<void> {
    const workflowId = changes.row.id;
    const statuses = new Map<string, NodeStatus>([...graph.values()].map((n) => [n.id, n.status]));
    if (plan.deletes.length > 0) {
      const ids = [...plan.deletes];
      await tx
        .delete(nodeEdges)
        .where(
          and(
            eq(nodeEdges.workflowId, workflowId),
            or(inArray(nodeEdges.childId, ids), inArray(nodeEdges.parentId, ids)),
          ),
        );
      await tx.delete(nodes).where(and(eq(nodes.workflowId, workflowId), inArray(nodes.id, ids)));
      for (const id of ids) {
        statuses.delete(id);
        changes.node("node.deleted", id, null);
      }
    }
    if (plan.inserts.length > 0) {
      const inserted = new Map(
        (await this.insertNodes(tx, workflowId, plan.inserts, statuses)).map((r) => [r.id, r.status!]),
      );
      for (const node of plan.inserts) {
        const status = inserted.get(node.id)!;
        statuses.set(node.id, nodeStatusFromName(status));
        changes.node("node.created", node.id, status, { capability: node.capability, parentIds: [...node.parentIds] });
      }
    }
    for (const { id, changes: fields } of plan.updates) {
      const set: Partial<NewNode> = {};
      if (fields.name !== undefined) set.name = fields.name || id;
      if (fields.capability !== undefined) set.capability = fields.capability;
      if (fields.input !== undefined) set.input = fields.input;
      if (fields.retryPolicy !== undefined) set.retryPolicy = retryPolicyToJson(fields.retryPolicy);
      if (fields.timeout !== undefined) set.timeoutMs = durationToMs(fields.timeout);
      if (fields.labels !== undefined) set.labels = fields.labels;
      let status: NodeStatusName = "PENDING";
      if (fields.parentIds !== undefined) {
        const parentStatuses = fields.parentIds.map((p) => statuses.get(p) ?? NodeStatus.PENDING);
        status = nodeStatusToName(initialStatusForParents(parentStatuses));
        set.parentIds = fields.parentIds;
        set.pendingParents = countPendingParents(parentStatuses);
        set.status = status;
        if (status !== "PENDING") set.finishedAt = new Date();
        await tx.delete(nodeEdges).where(and(eq(nodeEdges.workflowId, workflowId), eq(nodeEdges.childId, id)));
        if (fields.parentIds.length > 0) {
          await tx
            .insert(nodeEdges)
            .values(fields.parentIds.map((parentId) => ({ workflowId, parentId, childId: id })))
            .onConflictDoNothing();
        }
      }
      await tx
        .update(nodes)
        .set({ ...set, updatedAt: sql`now()` })
        .where(and(eq(nodes.workflowId, workflowId), eq(nodes.id, id)));
      changes.node("node.updated", id, status, { fields: Object.keys(fields) });
    }
    changes.workflow("workflow.edited", {
      inserted: plan.inserts.map((n) => n.id),
      updated: plan.updates.map((u) => u.id),
      deleted: [...plan.deletes],
    });
    changes.markReady();
  }

  // ------------------------------------------------------------ orchestration

  async claimReadyNodes(limit: number): Promise<QueuedNode[]> {
    if (limit < 1) return [];
    // One round trip: trellis_claim_ready_nodes (migration 0002) locks the workflows, queues their ready nodes
    // (skipping rows another claimer holds) and writes the events, with async commit (a lost claim is harmless:
    // the nodes are PENDING again and claimed anew; their jobs find them so).
    const rows = await this.callHotPath(sql`select kind, body from trellis_claim_ready_nodes(${limit}::integer)`, {
      notifiesEvents: true,
    });
    return interleaveByWorkflow(
      rows.filter((r) => r.kind === "queued").map((r) => this.queuedNodeOf(nodeRowFromRaw(r.body))),
    );
  }

  async startNode(workflowId: string, nodeId: string, leaseTtlMs: number): Promise<StartedNode | null> {
    const [started] = await this.startNodes([{ workflowId, nodeId }], leaseTtlMs);
    return started ?? null;
  }

  async startNodes(requests: readonly StartRequest[], leaseTtlMs: number): Promise<(StartedNode | null)[]> {
    if (requests.length === 0) return [];
    // One round trip: trellis_start_nodes (migration 0002) locks the workflows, starts the nodes (async commit: a
    // lost start is harmless, the node is QUEUED again and re-delivered) and writes their events.
    const rows = await this.callHotPath(
      sql`
      select kind, body from trellis_start_nodes(${sql.param(requests.map((r) => r.workflowId))}::uuid[],
                                                 ${sql.param(requests.map((r) => r.nodeId))}::text[],
                                                 ${sql.param(requests.map((r) => r.queueGen ?? null))}::integer[],
                                                 ${leaseTtlMs / 1000}::double precision)`,
      { notifiesEvents: true },
    );
    const byKey = new Map<string, StartedNode>();
    for (const { kind, body } of rows) {
      if (kind !== "node") continue;
      const node = nodeRowFromRaw(body.node as Record<string, unknown>);
      const parentOutputs: StartedNode["parentOutputs"] = {};
      // Every parent is present; one that returned no output maps to a null Value.
      for (const [id, output] of Object.entries((body.parent_outputs ?? {}) as Record<string, unknown>)) {
        parentOutputs[id] = valueFromJson(output) ?? fromJson(ValueSchema, null);
      }
      const proto = nodeFromRow(node);
      byKey.set(`${node.workflowId}/${node.id}`, {
        node: proto,
        workflowName: String(body.workflow_name),
        workflowInput: body.workflow_input as JsonObject,
        parentOutputs,
        lease: node.lease!,
        attempt: node.attempt,
        timeoutMs: effectiveTimeoutMs(proto),
        retryPolicy: effectiveRetryPolicy(proto.retryPolicy),
        queuedAt: node.queuedAt,
      });
    }
    // A node asked for twice in one batch is started once; the second request gets null.
    return requests.map((r) => {
      const key = `${r.workflowId}/${r.nodeId}`;
      const started = byKey.get(key) ?? null;
      byKey.delete(key);
      return started;
    });
  }

  async recordResult(workflowId: string, nodeId: string, lease: string, result: NodeResult): Promise<RecordOutcome> {
    const { outcomes } = await this.recordResults([{ workflowId, nodeId, lease, result }]);
    return outcomes[0]!;
  }

  async recordResults(items: readonly ResultToRecord[], options: RecordOptions = {}): Promise<RecordedResults> {
    if (items.length === 0) return { outcomes: [], dispatched: [] };
    if (items.every((i) => i.result.kind === "success" && i.result.edits.length === 0)) {
      return this.passPlain(items, options.dispatch ?? false);
    }
    const dispatched: QueuedNode[] | null = options.dispatch ? [] : null;
    const outcomes = await this.write(async (tx) => {
      const locked = await this.lockWorkflows(tx, [...new Set(items.map((i) => i.workflowId))]);
      const changesOf = new Map(locked.map((w) => [w.id, new WorkflowChanges(w)]));
      const outcomes: RecordOutcome[] = items.map(() => ({ outcome: "stale" }));
      // The common case, vectorised: successes without edits, each node once.
      const fast: number[] = [];
      const slow: number[] = [];
      const seen = new Set<string>();
      items.forEach((item, i) => {
        if (!changesOf.has(item.workflowId)) return;
        const key = `${item.workflowId}/${item.nodeId}`;
        const plain = item.result.kind === "success" && item.result.edits.length === 0;
        (plain && !seen.has(key) ? fast : slow).push(i);
        seen.add(key);
      });
      const passed = await this.passNodes(
        tx,
        changesOf,
        fast.map((i) => items[i]!),
        dispatched,
      );
      for (const i of fast) {
        const item = items[i]!;
        if (passed.has(`${item.workflowId}/${item.nodeId}`)) outcomes[i] = { outcome: "passed", workflowStatus: 0 };
      }
      for (const i of slow) {
        const item = items[i]!;
        outcomes[i] = await this.recordOne(tx, changesOf.get(item.workflowId)!, item, dispatched);
      }
      await this.settleAll(tx, [...changesOf.values()]);
      await commitChanges(tx, [...changesOf.values()]);
      return outcomes.map((outcome, i) =>
        outcome.outcome === "passed" || outcome.outcome === "failed"
          ? { ...outcome, workflowStatus: workflowStatusFromName(changesOf.get(items[i]!.workflowId)!.status) }
          : outcome,
      );
    });
    return { outcomes, dispatched: dispatched ?? [] };
  }

  /**
   * The common case, successes without edits, in one round trip: trellis_pass_nodes (migration 0002) does what
   * passNodes, settleAll and commitChanges do for them.
   */
  private async passPlain(items: readonly ResultToRecord[], dispatch: boolean): Promise<RecordedResults> {
    const rows = await this.callHotPath(sql`
      select kind, body from trellis_pass_nodes(${sql.param(items.map((i) => i.workflowId))}::uuid[],
                                                ${sql.param(items.map((i) => i.nodeId))}::text[],
                                                ${sql.param(items.map((i) => i.lease))}::uuid[],
                                                ${sql.param(items.map(outputJson))}::jsonb[],
                                                ${dispatch})`);
    const passed = new Set<string>();
    const statusOf = new Map<string, WorkflowStatusName>();
    const dispatched: QueuedNode[] = [];
    for (const { kind, body } of rows) {
      if (kind === "pass") passed.add(`${String(body.workflow_id)}/${String(body.id)}`);
      else if (kind === "queued") dispatched.push(this.queuedNodeOf(nodeRowFromRaw(body)));
      else if (kind === "workflow") statusOf.set(String(body.id), body.status as WorkflowStatusName);
    }
    // A node given twice in one batch passes once; the second item is stale.
    const outcomes = items.map((item): RecordOutcome => {
      const key = `${item.workflowId}/${item.nodeId}`;
      if (!passed.delete(key)) return { outcome: "stale" };
      return { outcome: "passed", workflowStatus: workflowStatusFromName(statusOf.get(item.workflowId)!) };
    });
    return { outcomes, dispatched };
  }

  /** One result the slow way: under a row lock, with edits, errors and retries. */
  private async recordOne(
    tx: Tx,
    changes: WorkflowChanges,
    item: ResultToRecord,
    dispatched: QueuedNode[] | null,
  ): Promise<RecordOutcome> {
    const [node] = await tx
      .select()
      .from(nodes)
      .where(
        and(
          eq(nodes.workflowId, item.workflowId),
          eq(nodes.id, item.nodeId),
          eq(nodes.status, "RUNNING"),
          eq(nodes.lease, item.lease),
        ),
      )
      .for("update");
    if (!node) return { outcome: "stale" };
    const { result } = item;
    if (result.kind === "error") return this.recordError(tx, changes, node, result.errorKind, result.message);
    if (result.edits.length > 0) {
      const graph = await this.loadGraph(tx, changes.row.id);
      let plan: EditPlan;
      try {
        plan = planEdits(graph, result.edits, this.limits, "edits");
      } catch (error) {
        if (!(error instanceof TrellisError)) throw error;
        return this.failNode(tx, changes, node, ErrorKind.TASK_ERROR, `invalid edits: ${error.message}`);
      }
      await this.applyPlan(tx, changes, graph, plan);
    }
    const passed = await this.passNodes(tx, new Map([[changes.row.id, changes]]), [item], dispatched);
    return passed.size > 0 ? { outcome: "passed", workflowStatus: 0 } : { outcome: "stale" };
  }

  /**
   * RUNNING -> PASS under their leases for many nodes in one statement, with every child's pending_parents
   * decremented and, with `dispatched`, the children that became ready queued at once (eager dispatch: the worker
   * enqueues their jobs right after commit, saving the NOTIFY -> scheduler -> claim hop); children of a workflow
   * that does not dispatch now (PAUSED), or without `dispatched`, are left to the scheduler. Returns the
   * `<workflow>/<node>` keys that passed (the others were stale).
   */
  private async passNodes(
    tx: Tx,
    changesOf: ReadonlyMap<string, WorkflowChanges>,
    items: readonly Pick<ResultToRecord, "workflowId" | "nodeId" | "lease" | "result">[],
    dispatched: QueuedNode[] | null,
  ): Promise<Set<string>> {
    if (items.length === 0) return new Set();
    const outputs = items.map(outputJson);
    const dispatching = dispatched
      ? [...changesOf.values()].filter((c) => c.status === "RUNNING" || c.status === "PENDING").map((c) => c.row.id)
      : [];
    // A passing node is never a child of another in the batch (a child cannot run before its parent passed).
    const rows = await tx.execute<{
      kind: "pass" | "child";
      workflow_id: string;
      id: string;
      attempt: number;
      capability: string;
      status: NodeStatusName;
      queue_gen: number;
      retry_policy: JsonObject | null;
    }>(sql`
      with passed as (
        update nodes n
           set status = 'PASS', output = r.output, error_kind = null, error_message = null, lease = null,
               lease_expires_at = null, finished_at = now(), updated_at = now()
          from unnest(${sql.param(items.map((i) => i.workflowId))}::uuid[], ${sql.param(items.map((i) => i.nodeId))}::text[],
                      ${sql.param(items.map((i) => i.lease))}::uuid[], ${sql.param(outputs)}::jsonb[])
               as r(workflow_id, id, lease, output)
         where n.workflow_id = r.workflow_id and n.id = r.id and n.lease = r.lease and ${statusIs("n", "RUNNING")}
        returning n.workflow_id, n.id, n.attempt, n.capability),
      ended as (
        insert into node_attempts (workflow_id, node_id, attempt, outcome)
        select workflow_id, id, attempt, 'PASS' from passed),
      decrements as (
        select e.workflow_id, e.child_id, count(*)::int as n,
               e.workflow_id = any(${sql.param(dispatching)}::uuid[]) as dispatch
          from node_edges e join passed p on e.workflow_id = p.workflow_id and e.parent_id = p.id
         group by e.workflow_id, e.child_id),
      children as (
        update nodes c
           set pending_parents = c.pending_parents - d.n,
               status = case when d.dispatch and c.status = 'PENDING' and c.pending_parents = d.n
                             then 'QUEUED'::node_status else c.status end,
               queue_gen = case when d.dispatch and c.status = 'PENDING' and c.pending_parents = d.n
                                then c.queue_gen + 1 else c.queue_gen end,
               queued_at = case when d.dispatch and c.status = 'PENDING' and c.pending_parents = d.n
                                then now() else c.queued_at end,
               updated_at = now()
          from decrements d
         where c.workflow_id = d.workflow_id and c.id = d.child_id
        returning c.workflow_id, c.id, c.pending_parents, c.status, c.capability, c.queue_gen, c.retry_policy)
      select 'pass' as kind, workflow_id, id, attempt, capability, null::node_status as status, 0 as queue_gen,
             null::jsonb as retry_policy
        from passed
      union all
      select 'child', workflow_id, id, 0, capability, status, queue_gen, retry_policy
        from children where pending_parents = 0 and status in ('PENDING', 'QUEUED')`);
    const passed = rows.rows.filter((r) => r.kind === "pass");
    if (passed.length === 0) return new Set();
    for (const row of passed) {
      changesOf.get(row.workflow_id)!.node("node.status_changed", row.id, "PASS", {
        from: "RUNNING",
        attempt: row.attempt,
        capability: row.capability,
      });
    }
    for (const row of rows.rows) {
      if (row.kind !== "child") continue;
      const changes = changesOf.get(row.workflow_id)!;
      // A child QUEUED here was PENDING with this batch's parents as its last pending ones: it was dispatched.
      if (row.status === "PENDING") {
        changes.markReady();
        continue;
      }
      changes.node("node.status_changed", row.id, "QUEUED", { from: "PENDING", capability: row.capability });
      dispatched?.push(this.queuedNodeOf(nodeRowFromRaw(row)));
    }
    return new Set(passed.map((r) => `${r.workflow_id}/${r.id}`));
  }

  /** Sets each workflow's final status when no node of it can run any more, in one statement for all. */
  private async settleAll(tx: Tx, all: readonly WorkflowChanges[]): Promise<void> {
    const open = all.filter((c) => !c.finished && c.dirty);
    if (open.length === 0) return;
    // The FAIL check scans the workflow's nodes, so it runs only once nothing is unfinished (CASE is lazy).
    const result = await tx.execute<{ id: string; unfinished: boolean; failed: boolean }>(sql`
      select u.id, u.unfinished,
             case when u.unfinished then false
                  else exists(select 1 from nodes where workflow_id = u.id and status = 'FAIL') end as failed
        from (select w.id, exists(select 1 from nodes where workflow_id = w.id
                                     and status in ('PENDING', 'QUEUED', 'RUNNING')) as unfinished
                from unnest(${sql.param(open.map((c) => c.row.id))}::uuid[]) as w(id)) u`);
    const byId = new Map(open.map((c) => [c.row.id, c]));
    for (const row of result.rows) {
      if (!row.unfinished) byId.get(row.id)!.setStatus(row.failed ? "FAILED" : "SUCCEEDED");
    }
  }

  private async recordError(
    tx: Tx,
    changes: WorkflowChanges,
    node: NodeRow,
    kind: ErrorKind,
    message: string,
  ): Promise<RecordOutcome> {
    const errorKind = kind === ErrorKind.INFRA_ERROR ? ErrorKind.INFRA_ERROR : ErrorKind.TASK_ERROR;
    const policy = effectiveRetryPolicy(
      node.retryPolicy ? fromJson(RetryPolicySchema, node.retryPolicy as JsonObject) : undefined,
    );
    const decision = decideRetry(policy, node.attempt - node.attemptBase, errorKind);
    if (!decision.retry) return this.failNode(tx, changes, node, errorKind, message);
    await tx
      .update(nodes)
      .set({
        status: "QUEUED",
        errorKind: errorKindToName(errorKind),
        errorMessage: message,
        lease: null,
        leaseExpiresAt: null,
        queuedAt: sql`now()`,
        updatedAt: sql`now()`,
      })
      .where(and(eq(nodes.workflowId, changes.row.id), eq(nodes.id, node.id)));
    await endAttempts(tx, [{ workflowId: changes.row.id, nodeId: node.id, attempt: node.attempt }], "RETRY");
    changes.node("node.retry_scheduled", node.id, "QUEUED", {
      attempt: node.attempt,
      capability: node.capability,
      delayMs: decision.delayMs,
      error: { kind: errorKindToName(errorKind), message },
    });
    return { outcome: "retry", delayMs: decision.delayMs, attempt: node.attempt };
  }

  private async failNode(
    tx: Tx,
    changes: WorkflowChanges,
    node: NodeRow,
    kind: ErrorKind,
    message: string,
  ): Promise<RecordOutcome> {
    const workflowId = changes.row.id;
    await tx
      .update(nodes)
      .set({
        status: "FAIL",
        output: null,
        errorKind: errorKindToName(kind),
        errorMessage: message,
        lease: null,
        leaseExpiresAt: null,
        finishedAt: sql`now()`,
        updatedAt: sql`now()`,
      })
      .where(and(eq(nodes.workflowId, workflowId), eq(nodes.id, node.id)));
    if (node.status === "RUNNING") {
      await endAttempts(tx, [{ workflowId, nodeId: node.id, attempt: node.attempt }], "FAIL");
    }
    changes.node("node.status_changed", node.id, "FAIL", {
      from: node.status,
      attempt: node.attempt,
      capability: node.capability,
      error: { kind: errorKindToName(kind), message },
    });
    const skipped = await tx.execute<{ id: string; capability: string }>(sql`
      with recursive descendants(id) as (
        select child_id from node_edges where workflow_id = ${workflowId} and parent_id = ${node.id}
        union
        select e.child_id from node_edges e join descendants d on e.parent_id = d.id
         where e.workflow_id = ${workflowId}
      )
      update nodes set status = 'SKIPPED', finished_at = now(), updated_at = now()
       where workflow_id = ${workflowId} and id in (select id from descendants) and status in ('PENDING', 'QUEUED')
      returning id, capability`);
    for (const s of skipped.rows) {
      changes.node("node.status_changed", s.id, "SKIPPED", {
        reason: `ancestor "${node.id}" failed`,
        capability: s.capability,
      });
    }
    return { outcome: "failed", errorKind: kind, message, workflowStatus: workflowStatusFromName(changes.status) };
  }

  async renewLeases(leases: readonly HeldLease[], leaseTtlMs: number): Promise<HeldLease[]> {
    if (leases.length === 0) return [];
    const renewed = await this.db.execute<{ workflow_id: string; id: string }>(sql`
      update nodes n
         set lease_expires_at = now() + make_interval(secs => ${leaseTtlMs / 1000})
        from unnest(${sql.param(leases.map((l) => l.workflowId))}::uuid[],
                    ${sql.param(leases.map((l) => l.nodeId))}::text[],
                    ${sql.param(leases.map((l) => l.lease))}::uuid[]) as held(workflow_id, id, lease)
       where n.workflow_id = held.workflow_id and n.id = held.id and n.lease = held.lease and n.status = 'RUNNING'
      returning n.workflow_id, n.id`);
    const kept = new Set(renewed.rows.map((r) => `${r.workflow_id}/${r.id}`));
    return leases.filter((l) => !kept.has(`${l.workflowId}/${l.nodeId}`));
  }

  async requeueExpiredLeases(limit: number): Promise<QueuedNode[]> {
    return this.write(async (tx) => {
      const expired = await tx.execute<{ workflow_id: string }>(sql`
        select distinct workflow_id from nodes
         where status = 'RUNNING' and lease_expires_at < now()
         limit ${limit}`);
      const queued: QueuedNode[] = [];
      for (const row of await this.lockWorkflows(
        tx,
        expired.rows.map((r) => r.workflow_id),
      )) {
        const changes = new WorkflowChanges(row);
        const nodesOf = await tx
          .select()
          .from(nodes)
          .where(and(eq(nodes.workflowId, row.id), eq(nodes.status, "RUNNING"), sql`${nodes.leaseExpiresAt} < now()`))
          .for("update");
        for (const node of nodesOf) {
          const message = `lease expired at attempt ${node.attempt}: the worker running it was lost`;
          const outcome = await this.recordError(tx, changes, node, ErrorKind.INFRA_ERROR, message);
          if (outcome.outcome === "retry") {
            const [bumped] = await tx
              .update(nodes)
              .set({ queueGen: sql`${nodes.queueGen} + 1` })
              .where(and(eq(nodes.workflowId, row.id), eq(nodes.id, node.id)))
              .returning();
            queued.push({ ...this.queuedNodeOf(bumped!), delayMs: outcome.delayMs });
          }
        }
        await this.settleAll(tx, [changes]);
        await changes.commit(tx);
      }
      return queued;
    });
  }

  async findQueuedNodes(olderThanMs: number, limit: number): Promise<QueuedNode[]> {
    const rows = await this.db
      .select()
      .from(nodes)
      .where(
        and(eq(nodes.status, "QUEUED"), sql`${nodes.queuedAt} < now() - make_interval(secs => ${olderThanMs / 1000})`),
      )
      .orderBy(asc(nodes.queuedAt))
      .limit(limit);
    return rows.map((r) => this.queuedNodeOf(r));
  }

  async requeueNodes(lost: readonly Pick<QueuedNode, "workflowId" | "nodeId" | "jobId">[]): Promise<QueuedNode[]> {
    if (lost.length === 0) return [];
    return this.write(async (tx) => {
      const queued: QueuedNode[] = [];
      for (const row of await this.lockWorkflows(tx, [...new Set(lost.map((l) => l.workflowId))])) {
        const changes = new WorkflowChanges(row);
        for (const l of lost.filter((x) => x.workflowId === row.id)) {
          const gen = Number(l.jobId.slice(l.jobId.lastIndexOf("/") + 1));
          const [bumped] = await tx
            .update(nodes)
            .set({ queueGen: sql`${nodes.queueGen} + 1`, queuedAt: sql`now()`, updatedAt: sql`now()` })
            .where(
              and(
                eq(nodes.workflowId, row.id),
                eq(nodes.id, l.nodeId),
                eq(nodes.status, "QUEUED"),
                eq(nodes.queueGen, gen),
              ),
            )
            .returning();
          if (!bumped) continue;
          changes.node("node.requeued", l.nodeId, "QUEUED", {
            reason: "job missing from the queue",
            lostJobId: l.jobId,
          });
          queued.push(this.queuedNodeOf(bumped));
        }
        await changes.commit(tx);
      }
      return queued;
    });
  }

  private queuedNodeOf(row: NodeRow): QueuedNode {
    return {
      workflowId: row.workflowId,
      nodeId: row.id,
      capability: row.capability,
      jobId: jobIdFor(row.workflowId, row.id, row.queueGen),
      retryPolicy: effectiveRetryPolicy(
        row.retryPolicy ? fromJson(RetryPolicySchema, row.retryPolicy as JsonObject) : undefined,
      ),
    };
  }

  /** Locks workflows in id order (the order every multi-workflow writer uses, so none deadlock). */
  private async lockWorkflows(tx: Tx, ids: readonly string[]): Promise<WorkflowRow[]> {
    if (ids.length === 0) return [];
    return tx
      .select()
      .from(workflows)
      .where(inArray(workflows.id, [...ids]))
      .orderBy(asc(workflows.id))
      .for("update");
  }

  async heartbeatWorker(workerId: string, capabilities: readonly string[], hostname: string): Promise<void> {
    await this.db
      .insert(workers)
      .values({ id: workerId, capabilities: [...capabilities], hostname })
      .onConflictDoUpdate({
        target: workers.id,
        set: { capabilities: [...capabilities], heartbeatAt: sql`now()` },
      });
  }

  async removeWorker(workerId: string): Promise<void> {
    await this.db.delete(workers).where(eq(workers.id, workerId));
  }

  async liveCapabilities(maxAgeMs: number): Promise<Map<string, number>> {
    const rows = await this.db.execute<{ capability: string; workers: number }>(sql`
      select c as capability, count(*)::int as workers
        from workers, unnest(capabilities) c
       where heartbeat_at > now() - make_interval(secs => ${maxAgeMs / 1000})
       group by c`);
    return new Map(rows.rows.map((r) => [r.capability, r.workers]));
  }

  async reportUnroutable(served: ReadonlySet<string>): Promise<Map<string, number>> {
    return this.write(async (tx) => {
      const servedList = [...served];
      const fresh = await tx.execute<{ workflow_id: string }>(sql`
        select distinct workflow_id from nodes
         where status = 'QUEUED' and unroutable_at is null
           and not (capability = any(${sql.param(servedList)}::text[]))`);
      for (const row of await this.lockWorkflows(
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
        for (const n of marked) {
          changes.node("node.unroutable", n.id, "QUEUED", {
            capability: n.capability,
            reason: `no live worker serves capability "${n.capability}"`,
          });
        }
        await changes.commit(tx);
      }
      const counts = await tx.execute<{ capability: string; n: number }>(sql`
        select capability, count(*)::int as n from nodes
         where status = 'QUEUED' and not (capability = any(${sql.param(servedList)}::text[]))
         group by capability`);
      return new Map(counts.rows.map((r) => [r.capability, r.n]));
    });
  }

  async countNodesByStatus(): Promise<Map<string, number>> {
    const rows = await this.db.execute<{ status: string; n: number }>(sql`
      select status, count(*)::int as n from nodes where status in ('PENDING', 'QUEUED', 'RUNNING') group by status`);
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
