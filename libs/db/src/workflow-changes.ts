import { eq, sql } from "drizzle-orm";
import type { JsonObject } from "@bufbuild/protobuf";
import { assertWorkflowTransition, isTerminalWorkflowStatus } from "@trellis/core";
import { CHANNELS } from "./channels.js";
import { type NodeStatusName, type WorkflowRow, type WorkflowStatusName, workflowStatusFromName } from "./mapping.js";
import type { Database } from "./pool.js";
import { type workflowEvents, workflows } from "./schema.js";

/** An event about to be written. */
export type NewEvent = typeof workflowEvents.$inferInsert;

/** A Drizzle transaction. */
export type Tx = Parameters<Parameters<Database["transaction"]>[0]>[0];

/**
 * Everything one transaction changes about a locked workflow: its status and the events it emits.
 * `commit` writes the events with consecutive sequences, the workflow row and the notifications in one statement.
 */
export class WorkflowChanges {
  /** Status after the changes so far. */
  status: WorkflowStatusName;
  private readonly events: NewEvent[] = [];
  private readyHint = false;

  constructor(readonly row: WorkflowRow) {
    this.status = row.status;
  }

  /** Records a node-level event. */
  node(type: string, nodeId: string, nodeStatus: NodeStatusName | null, data: JsonObject = {}): void {
    this.push({ type, nodeId, nodeStatus, data });
  }

  /** Records a workflow-level event. */
  workflow(type: string, data: JsonObject = {}): void {
    this.push({ type, nodeId: null, nodeStatus: null, data });
  }

  /** Moves the workflow to `next` (checked against the state machine) and records the event. */
  setStatus(next: WorkflowStatusName, data: JsonObject = {}): void {
    if (next === this.status) return;
    assertWorkflowTransition(this.row.id, workflowStatusFromName(this.status), workflowStatusFromName(next));
    const from = this.status;
    this.status = next;
    this.workflow("workflow.status_changed", { from, ...data });
  }

  /** Asks the scheduler to look for ready nodes after commit. */
  markReady(): void {
    this.readyHint = true;
  }

  /** Whether the workflow is in a terminal status now. */
  get finished(): boolean {
    return isTerminalWorkflowStatus(workflowStatusFromName(this.status));
  }

  private push(event: Omit<NewEvent, "workflowId" | "sequence" | "workflowStatus">): void {
    this.events.push({
      ...event,
      workflowId: this.row.id,
      sequence: this.row.eventSeq + this.events.length + 1,
      // Filled at commit with the status in force when the event was recorded.
      workflowStatus: this.status,
    });
  }

  /** The events recorded so far, numbered. */
  get pending(): readonly NewEvent[] {
    return this.events;
  }

  /** Writes events, the workflow row and notifications in one statement; returns the events written. */
  async commit(tx: Tx): Promise<NewEvent[]> {
    await commitChanges(tx, [this]);
    return this.events;
  }

  /** Whether anything needs writing. */
  get dirty(): boolean {
    return this.events.length > 0 || this.status !== this.row.status || this.readyHint;
  }

  /** @internal The ready hint, for commitChanges. */
  get wantsReady(): boolean {
    return this.readyHint && !this.finished;
  }
}

// One statement stays well below PostgreSQL's 65,535 bind parameters: 7 arrays are 7 parameters.
const EVENT_BATCH = 20_000;

/**
 * Writes the changes of several locked workflows in as few statements as possible: every event, every
 * workflow row (sequence, status, finished_at) and the notifications, in one statement per 20,000 events.
 */
export async function commitChanges(tx: Tx, all: readonly WorkflowChanges[]): Promise<void> {
  const dirty = all.filter((c) => c.dirty);
  if (dirty.length === 0) return;
  const events = dirty.flatMap((c) => c.pending);
  const collected = transactionOutbox.get(tx);
  collected?.events.push(...events);
  // Large batches (10,000-node edits) go in slices; the last slice carries the workflow updates.
  for (let i = EVENT_BATCH; i < events.length; i += EVENT_BATCH) {
    await insertEvents(tx, events.slice(i - EVENT_BATCH, i));
  }
  const tail = events.slice(Math.floor(Math.max(0, events.length - 1) / EVENT_BATCH) * EVENT_BATCH);
  const ids = dirty.map((c) => c.row.id);
  const seqs = dirty.map((c) => c.row.eventSeq + c.pending.length);
  const statuses = dirty.map((c) => c.status);
  const finished = dirty.map((c) => c.finished);
  const eventPayloads = dirty
    .filter((c) => c.pending.length > 0)
    .map((c) => `${c.row.id}:${c.row.eventSeq + c.pending.length}`);
  const ready = dirty.filter((c) => c.wantsReady).map((c) => c.row.id);
  await tx.execute(sql`
    with ev as (${eventsInsert(tail)}),
    wf as (
      update workflows w
         set event_seq = u.seq, status = u.status, updated_at = now(),
             finished_at = case when u.finished then coalesce(w.finished_at, now()) else null end
        from unnest(${sql.param(ids)}::uuid[], ${sql.param(seqs)}::bigint[],
                    ${sql.param(statuses)}::workflow_status[], ${sql.param(finished)}::boolean[])
             as u(id, seq, status, finished)
       where w.id = u.id
      returning w.id)
    select (select count(*) from ev) as events, (select count(*) from wf) as workflows`);
  for (const payload of eventPayloads) notifyAfterCommit(tx, CHANNELS.events, payload);
  for (const workflowId of ready) notifyAfterCommit(tx, CHANNELS.ready, workflowId);
}

function eventsInsert(events: readonly NewEvent[]) {
  return sql`
    insert into workflow_events (workflow_id, sequence, type, node_id, workflow_status, node_status, data)
    select * from unnest(${sql.param(events.map((e) => e.workflowId))}::uuid[],
                         ${sql.param(events.map((e) => e.sequence))}::bigint[],
                         ${sql.param(events.map((e) => e.type))}::text[],
                         ${sql.param(events.map((e) => e.nodeId ?? null))}::text[],
                         ${sql.param(events.map((e) => e.workflowStatus))}::workflow_status[],
                         ${sql.param(events.map((e) => e.nodeStatus ?? null))}::node_status[],
                         ${sql.param(events.map((e) => JSON.stringify(e.data ?? {})))}::jsonb[])
    returning 1`;
}

async function insertEvents(tx: Tx, events: readonly NewEvent[]): Promise<void> {
  await tx.execute(sql`with ev as (${eventsInsert(events)}) select count(*) from ev`);
}

/** Locks a workflow row for the rest of the transaction; null when it does not exist. */
export async function lockWorkflow(tx: Tx, workflowId: string): Promise<WorkflowRow | null> {
  const rows = await tx.select().from(workflows).where(eq(workflows.id, workflowId)).for("update");
  return rows[0] ?? null;
}

/** What a transaction hands over once it has committed: its events and the notifications to send. */
export interface TransactionOutbox {
  events: NewEvent[];
  notifications: { channel: string; payload: string }[];
}

const transactionOutbox = new WeakMap<Tx, TransactionOutbox>();

/**
 * Runs `work` collecting into `outbox` every event that commitChanges writes on `tx` and every notification
 * queued with notifyAfterCommit.
 */
export async function collectOutbox<T>(tx: Tx, outbox: TransactionOutbox, work: () => Promise<T>): Promise<T> {
  transactionOutbox.set(tx, outbox);
  try {
    return await work();
  } finally {
    transactionOutbox.delete(tx);
  }
}

/**
 * Queues a NOTIFY to send after the transaction commits. NOTIFY inside a writing transaction would hold
 * PostgreSQL's database-wide notify lock through the commit's WAL flush, serialising every commit of every
 * app; sent after commit it costs a round trip and no flush. A crash in between loses only the wake-up:
 * listeners poll as a safety net.
 */
export function notifyAfterCommit(tx: Tx, channel: string, payload: string): void {
  const outbox = transactionOutbox.get(tx);
  if (!outbox) throw new Error("notifyAfterCommit outside a collected transaction");
  outbox.notifications.push({ channel, payload });
}
