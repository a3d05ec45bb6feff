import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import {
  FailedPreconditionError,
  NotFoundError,
  TrellisError,
  planEdits,
  quoteForMessage,
  type WorkflowLimits,
} from "@trellis/core";
import { NodeEditSchema, type Node, type NodeEdit } from "@trellis/proto";
import { sql } from "drizzle-orm";
import { applyEditPlan, loadGraph } from "./graph-writes.js";
import { type NodeRow, nodeFromRow, nodeRowFromRaw, valueToJson } from "./mapping.js";
import type { FunctionRow, Transactions, TxContext } from "./transactions.js";
import { WorkflowChanges, flushChanges, lockWorkflows } from "./workflow-changes.js";

/** A SignalNode request, validated by the caller for its shape (ids, sizes); edits are checked here. */
export interface SignalInput {
  workflowId: string;
  nodeId: string;
  /** The node's output on PASS. */
  output?: Value | undefined;
  /** FAIL the node with TASK_ERROR `message` instead. */
  reject: boolean;
  message: string;
  /** Applied atomically with the PASS, as a NodeService's edits (inserted_by the node). */
  edits: readonly NodeEdit[];
  /** The same request_id again is answered like the first. */
  requestId?: string | undefined;
}

/** A signal as kept on its node (`nodes.signal`) until the node is WAITING: protobuf JSON of the request's parts. */
interface KeptSignal {
  output?: JsonValue;
  reject: boolean;
  message: string;
  edits: JsonValue[];
  requestId?: string;
}

/** The outcome of SignalNode: the node after it; `completed` is false while the signal is kept for later. */
export interface SignalOutcome {
  node: Node;
  completed: boolean;
}

const FINISHED = new Set(["PASS", "FAIL", "SKIPPED", "CANCELLED"]);

/**
 * SignalNode: completes (PASS with the signal's output and edits) or rejects (FAIL, TASK_ERROR) a node with `wait`.
 * A node that is WAITING is completed at once, in the signal's transaction, through the one PASS
 * (trellis_pass_nodes) or the one failure (trellis_record_errors) with a null lease; a node not ready yet keeps the
 * signal (`nodes.signal`) and is completed by the scheduler the moment it is WAITING (completeKept). The kept signal
 * also answers a repeated request_id.
 */
export class SignalStore {
  constructor(
    private readonly transactions: Transactions,
    private readonly limits: WorkflowLimits,
  ) {}

  async signalNode(input: SignalInput): Promise<SignalOutcome> {
    const completed = await this.transactions.write(async (ctx) => {
      const [workflow] = await lockWorkflows(ctx.tx, [input.workflowId]);
      if (!workflow) throw new NotFoundError(`workflow ${input.workflowId} not found`);
      const row = await nodeRow(ctx, input.workflowId, input.nodeId);
      if (!row)
        throw new NotFoundError(`node ${quoteForMessage(input.nodeId)} not found in workflow ${input.workflowId}`);
      const name = quoteForMessage(row.id);
      if (!row.wait) throw new FailedPreconditionError(`node ${name} does not wait for a signal (it has no wait)`);
      const kept = row.signal as KeptSignal | null;
      if (kept && input.requestId && kept.requestId === input.requestId) return null;
      if (FINISHED.has(row.status)) throw new FailedPreconditionError(`node ${name} already ended ${row.status}`);
      if (kept)
        throw new FailedPreconditionError(`node ${name} already has a different signal, kept until it is ready`);
      if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(workflow.status)) {
        throw new FailedPreconditionError(`workflow ${workflow.id} has ended (${workflow.status})`);
      }
      const signal: KeptSignal = {
        ...(input.output !== undefined ? { output: toJson(ValueSchema, input.output) } : {}),
        reject: input.reject,
        message: input.message,
        edits: input.edits.map((e) => toJson(NodeEditSchema, e)),
        ...(input.requestId ? { requestId: input.requestId } : {}),
      };
      await ctx.tx.execute(sql`
        update nodes set signal = ${JSON.stringify(signal)}::jsonb, updated_at = now()
         where workflow_id = ${row.workflowId} and id = ${row.id}`);
      const changes = new WorkflowChanges(workflow);
      changes.node("node.signaled", row.id, null, {
        reject: input.reject,
        kept: row.status !== "WAITING",
        ...(input.requestId ? { requestId: input.requestId } : {}),
      });
      await flushChanges(this.transactions, ctx, [changes]);
      if (row.status !== "WAITING") return false;
      // The caller's edits are the caller's error: refused whole, nothing changed.
      await this.complete(ctx, row, input, "refuse");
      return true;
    });
    const { rows } = await this.transactions.db.execute<Record<string, unknown>>(sql`
      select * from nodes where workflow_id = ${input.workflowId} and id = ${input.nodeId}`);
    const node = nodeRowFromRaw(rows[0]!);
    return { node: nodeFromRow(node), completed: completed ?? FINISHED.has(node.status) };
  }

  /**
   * Completes the WAITING nodes of these ids that hold a kept signal (the scheduler, when trellis_wake_nodes names
   * them): edits that no longer apply FAIL the node (TASK_ERROR), as a NodeService's would. Returns how many.
   */
  async completeKept(nodes: readonly { workflowId: string; nodeId: string }[]): Promise<number> {
    let done = 0;
    for (const n of nodes) {
      done += await this.transactions.write(async (ctx) => {
        const [workflow] = await lockWorkflows(ctx.tx, [n.workflowId]);
        if (!workflow) return 0;
        const row = await nodeRow(ctx, n.workflowId, n.nodeId);
        const kept = row?.signal as KeptSignal | null | undefined;
        if (row?.status !== "WAITING" || !row.wait || !kept) return 0;
        await this.complete(
          ctx,
          row,
          {
            workflowId: row.workflowId,
            nodeId: row.id,
            output: kept.output === undefined ? undefined : fromJson(ValueSchema, kept.output),
            reject: kept.reject,
            message: kept.message,
            edits: kept.edits.map((e) => fromJson(NodeEditSchema, e)),
          },
          "fail",
        );
        return 1;
      });
    }
    return done;
  }

  /** WAITING -> PASS (edits first) or FAIL, in the caller's transaction. */
  private async complete(
    ctx: TxContext,
    row: NodeRow,
    signal: SignalInput,
    invalidEdits: "refuse" | "fail",
  ): Promise<FunctionRow[]> {
    let reject = signal.reject;
    let message = signal.message || "rejected by a signal";
    if (!reject && signal.edits.length > 0) {
      const [workflow] = await lockWorkflows(ctx.tx, [row.workflowId]);
      const changes = new WorkflowChanges(workflow!);
      const graph = await loadGraph(ctx.tx, row.workflowId);
      try {
        await applyEditPlan(ctx.tx, changes, graph, planEdits(graph, signal.edits, this.limits, "edits"), row.id);
        await flushChanges(this.transactions, ctx, [changes]);
      } catch (error) {
        if (invalidEdits === "refuse" || !(error instanceof TrellisError)) throw error;
        reject = true;
        message = `invalid edits: ${error.message}`;
      }
    }
    if (reject) {
      return this.transactions.callIn(
        ctx,
        sql`select kind, body from trellis_record_errors(array[${row.workflowId}]::uuid[], array[${row.id}]::text[],
                                                         array[null]::uuid[], array['TASK_ERROR']::text[],
                                                         array[${message}]::text[], array[null]::integer[],
                                                         array[false]::boolean[])`,
      );
    }
    const output = valueToJson(signal.output);
    return this.transactions.callIn(
      ctx,
      sql`select kind, body from trellis_pass_nodes(array[${row.workflowId}]::uuid[], array[${row.id}]::text[],
                                                    array[null]::uuid[],
                                                    array[${output === null ? null : JSON.stringify(output)}]::jsonb[],
                                                    false, array[false]::boolean[], null, '{}'::text[])`,
    );
  }
}

async function nodeRow(ctx: TxContext, workflowId: string, nodeId: string): Promise<NodeRow | null> {
  const { rows } = await ctx.tx.execute<Record<string, unknown>>(sql`
    select * from nodes where workflow_id = ${workflowId} and id = ${nodeId} for update`);
  return rows[0] ? nodeRowFromRaw(rows[0]) : null;
}
