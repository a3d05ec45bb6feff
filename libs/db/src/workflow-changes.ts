import { asc, eq, inArray, sql } from "drizzle-orm";
import type { JsonObject } from "@bufbuild/protobuf";
import { assertWorkflowTransition, isTerminalWorkflowStatus } from "@trellis/core";
import { CHANNELS } from "./channels.js";
import { type NodeStatusName, type WorkflowRow, type WorkflowStatusName, workflowStatusFromName } from "./mapping.js";
import { workflows } from "./schema.js";
import { type Transactions, type Tx, type TxContext, notifyAfterCommit } from "./transactions.js";

/** An event recorded by TypeScript code, numbered when written. */
interface RecordedEvent {
  workflow_id: string;
  type: string;
  node_id: string | null;
  workflow_status: WorkflowStatusName;
  node_status: NodeStatusName | null;
  data: JsonObject;
}

/**
 * What the TypeScript side of one transaction changes about a locked workflow (creates, edits, actions): its status
 * and the events it emits. `flush` hands them to `trellis_write_events`, the one writer (and numberer) of events,
 * so TypeScript and the SQL functions of the same transaction interleave their events in the order they happen.
 */
export class WorkflowChanges {
  /** Status after the changes so far. */
  status: WorkflowStatusName;
  private events: RecordedEvent[] = [];
  private written: WorkflowStatusName;
  private readyHint = false;

  constructor(readonly row: WorkflowRow) {
    this.status = row.status;
    this.written = row.status;
  }

  /** Records a node-level event. */
  node(type: string, nodeId: string, nodeStatus: NodeStatusName | null, data: JsonObject = {}): void {
    this.push(type, nodeId, nodeStatus, data);
  }

  /** Records a workflow-level event. */
  workflow(type: string, data: JsonObject = {}): void {
    this.push(type, null, null, data);
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

  private push(type: string, nodeId: string | null, nodeStatus: NodeStatusName | null, data: JsonObject): void {
    this.events.push({
      workflow_id: this.row.id,
      type,
      node_id: nodeId,
      workflow_status: this.status,
      node_status: nodeStatus,
      data,
    });
  }

  /**
   * Writes the events recorded so far and the workflow's status through `trellis_write_events`, in the transaction;
   * the ready hint becomes a notification after commit. Can be called again after more changes.
   */
  async flush(transactions: Transactions, ctx: TxContext): Promise<void> {
    await flushChanges(transactions, ctx, [this]);
  }

  /** @internal Takes what flushChanges writes. */
  take(): { events: RecordedEvent[]; status: WorkflowStatusName | null; ready: boolean } {
    const events = this.events;
    const status = this.status !== this.written ? this.status : null;
    const ready = this.readyHint && !this.finished;
    this.events = [];
    this.written = this.status;
    this.readyHint = false;
    return { events, status, ready };
  }
}

/** Writes the changes of several locked workflows in one statement (events, workflow rows), notifications after. */
export async function flushChanges(
  transactions: Transactions,
  ctx: TxContext,
  all: readonly WorkflowChanges[],
): Promise<void> {
  const events: RecordedEvent[] = [];
  const statuses: Record<string, WorkflowStatusName> = {};
  for (const changes of all) {
    const taken = changes.take();
    events.push(...taken.events);
    if (taken.status) statuses[changes.row.id] = taken.status;
    if (taken.ready) notifyAfterCommit(ctx, CHANNELS.ready, changes.row.id);
  }
  if (events.length === 0 && Object.keys(statuses).length === 0) return;
  await transactions.callIn(
    ctx,
    sql`select kind, body from trellis_write_events(${JSON.stringify(events)}::jsonb, ${JSON.stringify(statuses)}::jsonb, false)`,
  );
}

/** Locks a workflow row for the rest of the transaction; null when it does not exist. */
export async function lockWorkflow(tx: Tx, workflowId: string): Promise<WorkflowRow | null> {
  const rows = await tx.select().from(workflows).where(eq(workflows.id, workflowId)).for("update");
  return rows[0] ?? null;
}

/** Locks workflows in id order (the order every multi-workflow writer uses, so none deadlock). */
export async function lockWorkflows(tx: Tx, ids: readonly string[]): Promise<WorkflowRow[]> {
  if (ids.length === 0) return [];
  return tx
    .select()
    .from(workflows)
    .where(inArray(workflows.id, [...ids]))
    .orderBy(asc(workflows.id))
    .for("update");
}
