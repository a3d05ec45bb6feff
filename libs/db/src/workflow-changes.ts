import { eq, sql } from "drizzle-orm";
import type { JsonObject } from "@bufbuild/protobuf";
import { assertWorkflowTransition, isTerminalWorkflowStatus } from "@trellis/core";
import { CHANNELS } from "./channels.js";
import {
  type NodeStatusName,
  type WorkflowRow,
  type WorkflowStatusName,
  workflowStatusFromName,
  type EventRow,
} from "./mapping.js";
import type { Database } from "./pool.js";
import { workflowEvents, workflows } from "./schema.js";

/** A Drizzle transaction. */
export type Tx = Parameters<Parameters<Database["transaction"]>[0]>[0];

type NewEvent = typeof workflowEvents.$inferInsert;

// Multi-row inserts stay well below PostgreSQL's 65,535 bind parameters.
const EVENT_CHUNK = 4_000;

/**
 * Everything one transaction changes about a locked workflow: its status and the events it emits.
 * `commit` writes the events with consecutive sequences and the workflow row in two statements.
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

  /** Writes events, the workflow row and notifications; returns the events as stored. */
  async commit(tx: Tx): Promise<EventRow[]> {
    const stored: EventRow[] = [];
    for (let i = 0; i < this.events.length; i += EVENT_CHUNK) {
      const rows = await tx
        .insert(workflowEvents)
        .values(this.events.slice(i, i + EVENT_CHUNK))
        .returning();
      stored.push(...rows);
    }
    const changedStatus = this.status !== this.row.status;
    if (this.events.length > 0 || changedStatus) {
      const lastSeq = this.row.eventSeq + this.events.length;
      await tx.execute(sql`
        update workflows
           set event_seq = ${lastSeq},
               status = ${this.status},
               updated_at = now(),
               finished_at = ${this.finished ? sql`coalesce(finished_at, now())` : sql`null`}
         where id = ${this.row.id}`);
      if (this.events.length > 0) {
        await tx.execute(sql`select pg_notify(${CHANNELS.events}, ${`${this.row.id}:${lastSeq}`})`);
      }
    }
    if (this.readyHint && !this.finished) {
      await tx.execute(sql`select pg_notify(${CHANNELS.ready}, ${this.row.id})`);
    }
    return stored;
  }
}

/** Locks a workflow row for the rest of the transaction; null when it does not exist. */
export async function lockWorkflow(tx: Tx, workflowId: string): Promise<WorkflowRow | null> {
  const rows = await tx.select().from(workflows).where(eq(workflows.id, workflowId)).for("update");
  return rows[0] ?? null;
}
