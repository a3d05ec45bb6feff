import { eq, sql } from "drizzle-orm";
import type { JsonObject } from "@bufbuild/protobuf";
import {
  InvalidArgumentError,
  NotFoundError,
  assertWorkflowId,
  quoteForMessage,
  topologicalOrder,
  validateInput,
  validateStorableText,
  type WorkflowLimits,
} from "@trellis/core";
import type { Workflow } from "@trellis/proto";
import { type NodeStatusName, nodeFromRow, workflowFromRow } from "./mapping.js";
import { nodes, workflows } from "./schema.js";
import type { ForkWorkflowInput, ForkWorkflowResult } from "./state-manager.js";
import type { Transactions, Tx } from "./transactions.js";
import { WorkflowChanges } from "./workflow-changes.js";

/** The label a forked workflow carries: the id of the workflow it was forked from. */
export const FORKED_FROM_LABEL = "forked_from";

/** What planFork needs of a source node. */
export interface ForkSourceNode {
  id: string;
  status: NodeStatusName;
  parentIds: readonly string[];
  /** The node whose edits inserted it ('' for the original graph or the api). */
  insertedBy: string;
}

/** A node of the forked workflow that runs again: its parents there and how many of them are not PASS. */
export interface RerunNode {
  parentIds: string[];
  pendingParents: number;
}

/** What a fork keeps, runs again and leaves out, by node id. */
export interface ForkPlan {
  /** PASS nodes copied with their output, in the source's order. */
  kept: string[];
  /** Nodes that start over PENDING from their definitions, in the source's order. */
  rerun: Map<string, RerunNode>;
  /** Nodes inserted at run time by a re-run node (transitively): not in the fork, the new run inserts its own. */
  leftOut: string[];
}

/**
 * Decides a fork of a workflow's graph as it is now. The re-run set is `fromNodeIds`, every node that is not PASS
 * (it has no output to keep), every node depending on a left-out node, and everything downstream of those. Nodes
 * whose inserter chain (`insertedBy`, followed up) reaches a re-run node are left out; a re-run node's left-out
 * parent is replaced by the re-run node that inserted it, so a node rewired to wait for a planner's nodes waits for
 * the planner again. Throws InvalidArgumentError naming the field for an unknown node id or an input of a node that
 * does not run again.
 */
export function planFork(
  source: readonly ForkSourceNode[],
  fromNodeIds: readonly string[],
  inputNodeIds: readonly string[] = [],
): ForkPlan {
  if (fromNodeIds.length === 0) throw new InvalidArgumentError("from_node_ids", "at least one node id is required");
  const byId = new Map(source.map((n) => [n.id, n]));
  fromNodeIds.forEach((id, i) => {
    if (!byId.has(id)) throw new InvalidArgumentError(`from_node_ids[${i}]`, `no node ${quoteForMessage(id)}`);
  });
  const childrenOf = new Map<string, string[]>();
  for (const node of source) {
    for (const parent of node.parentIds) {
      const list = childrenOf.get(parent) ?? [];
      list.push(node.id);
      childrenOf.set(parent, list);
    }
  }
  const seeds = new Set<string>(fromNodeIds);
  for (const node of source) if (node.status !== "PASS") seeds.add(node.id);
  let downstream = new Set<string>();
  let leftOut = new Set<string>();
  for (;;) {
    downstream = closure(seeds, (id) => childrenOf.get(id) ?? []);
    leftOut = new Set(source.filter((n) => inserterChain(byId, n).some((i) => downstream.has(i))).map((n) => n.id));
    // A node that depended on a left-out node loses that parent: it cannot keep an output made from it.
    const before = seeds.size;
    for (const id of leftOut) {
      for (const child of childrenOf.get(id) ?? []) if (!leftOut.has(child)) seeds.add(child);
    }
    if (seeds.size === before) break;
  }
  const rerunIds = new Set([...downstream].filter((id) => !leftOut.has(id)));
  const rerun = new Map<string, RerunNode>();
  for (const node of source) {
    if (!rerunIds.has(node.id)) continue;
    const parentIds: string[] = [];
    for (const parent of node.parentIds) {
      const replaced = leftOut.has(parent)
        ? inserterChain(byId, byId.get(parent)!).find((i) => !leftOut.has(i))
        : parent;
      if (replaced !== undefined && replaced !== node.id && !parentIds.includes(replaced)) parentIds.push(replaced);
    }
    rerun.set(node.id, { parentIds, pendingParents: parentIds.filter((p) => rerunIds.has(p)).length });
  }
  for (const id of inputNodeIds) {
    if (rerun.has(id)) continue;
    const why = !byId.has(id)
      ? `no node ${quoteForMessage(id)}`
      : leftOut.has(id)
        ? `node ${quoteForMessage(id)} was inserted by a node that runs again, and is left out of the fork`
        : `node ${quoteForMessage(id)} keeps its output and does not run again`;
    throw new InvalidArgumentError(`inputs[${JSON.stringify(id)}]`, why);
  }
  return {
    kept: source.filter((n) => !downstream.has(n.id) && !leftOut.has(n.id)).map((n) => n.id),
    rerun,
    leftOut: source.filter((n) => leftOut.has(n.id)).map((n) => n.id),
  };
}

/** Every id reachable from `start` through `next`, `start` included. */
function closure(start: Iterable<string>, next: (id: string) => readonly string[]): Set<string> {
  const seen = new Set<string>(start);
  const stack = [...seen];
  while (stack.length > 0) {
    for (const id of next(stack.pop()!)) {
      if (!seen.has(id)) {
        seen.add(id);
        stack.push(id);
      }
    }
  }
  return seen;
}

/** The nodes that inserted `node`, nearest first: its inserter, the inserter's inserter, ... (existing nodes only). */
function inserterChain(byId: ReadonlyMap<string, ForkSourceNode>, node: ForkSourceNode): string[] {
  const chain: string[] = [];
  let next = byId.get(node.insertedBy);
  while (next && !chain.includes(next.id) && next.id !== node.id) {
    chain.push(next.id);
    next = byId.get(next.insertedBy);
  }
  return chain;
}

/**
 * ForkWorkflow: a new workflow from any workflow, in any state, that keeps the outputs of the nodes not downstream
 * of the chosen ones and runs the rest again. The source is only read (under a share lock of its row, so its graph
 * is one consistent state); the new workflow is written as CreateWorkflow writes one, in one transaction.
 */
export class ForkStore {
  constructor(
    private readonly transactions: Transactions,
    private readonly limits: WorkflowLimits,
    private readonly read: (workflowId: string) => Promise<Workflow>,
  ) {}

  async forkWorkflow(input: ForkWorkflowInput): Promise<ForkWorkflowResult> {
    assertWorkflowId(input.workflowId, "workflow_id");
    if (input.fromNodeIds.length === 0) {
      throw new InvalidArgumentError("from_node_ids", "at least one node id is required");
    }
    const inputs = input.inputs ?? {};
    for (const [id, value] of Object.entries(inputs))
      validateInput(value, `inputs[${JSON.stringify(id)}]`, this.limits);
    if (input.requestId !== undefined && input.requestId.length > 256) {
      throw new InvalidArgumentError("request_id", "must be at most 256 characters");
    }
    validateStorableText(input.requestId ?? "", "request_id");
    const requestId = input.requestId ? input.requestId : null;
    if (requestId) {
      const existing = await this.findByRequestId(requestId);
      if (existing) return { workflow: existing, created: false };
    }
    const workflowId = crypto.randomUUID();
    let created: Workflow | undefined;
    try {
      await this.transactions.write(async (ctx) => {
        const { tx } = ctx;
        const [source] = await tx.select().from(workflows).where(eq(workflows.id, input.workflowId)).for("share");
        if (!source) throw new NotFoundError(`workflow ${input.workflowId} not found`);
        const rows = await tx
          .select({ id: nodes.id, status: nodes.status, parentIds: nodes.parentIds, insertedBy: nodes.insertedBy })
          .from(nodes)
          .where(eq(nodes.workflowId, source.id))
          .orderBy(nodes.createdAt, nodes.id);
        // In getWorkflow's order (topological), so the kept nodes' events come parents first.
        const byId = new Map(rows.map((r) => [r.id, r]));
        const sourceNodes = topologicalOrder(
          rows.map((r) => r.id),
          (id) => byId.get(id)?.parentIds ?? [],
        ).map((id) => byId.get(id)!);
        const plan = planFork(sourceNodes, input.fromNodeIds, Object.keys(inputs));
        const [row] = await tx
          .insert(workflows)
          .values({
            id: workflowId,
            name: source.name,
            status: "PENDING",
            input: source.input,
            labels: { ...source.labels, [FORKED_FROM_LABEL]: source.id },
            budget: source.budget,
            requestId,
            traceParent: input.traceParent ?? null,
          })
          .returning();
        const changes = new WorkflowChanges(row!);
        changes.workflow("workflow.created", {
          nodeCount: plan.kept.length + plan.rerun.size,
          forkedFrom: source.id,
          fromNodeIds: [...new Set(input.fromNodeIds)],
          leftOut: plan.leftOut,
        });
        await this.copyNodes(ctx.tx, source.id, workflowId, plan, inputs);
        for (const id of plan.kept) changes.node("node.copied", id, "PASS", { fromWorkflowId: source.id });
        changes.markReady();
        await changes.flush(this.transactions, ctx);
        created = await readInTx(tx, workflowId);
      });
    } catch (error) {
      if (requestId && isRequestIdTaken(error)) {
        const existing = await this.findByRequestId(requestId);
        if (existing) return { workflow: existing, created: false };
      }
      throw error;
    }
    // The fork as it was committed (a read after commit could see the scheduler's first claims half done).
    return { workflow: created!, created: true };
  }

  /**
   * Writes the fork's nodes from the source's rows: kept nodes as they are (PASS, output, attempt, times, and their
   * PASS attempt row), re-run nodes from their definitions (PENDING, attempt 0, new parents and input), and edges.
   */
  private async copyNodes(
    tx: Tx,
    sourceId: string,
    workflowId: string,
    plan: ForkPlan,
    inputs: Readonly<Record<string, JsonObject>>,
  ): Promise<void> {
    const ids = [...plan.kept, ...plan.rerun.keys()];
    const kept = ids.map((id) => !plan.rerun.has(id));
    const parents = ids.map((id) => JSON.stringify(plan.rerun.get(id)?.parentIds ?? null));
    const pending = ids.map((id) => plan.rerun.get(id)?.pendingParents ?? 0);
    const newInputs = ids.map((id) => (inputs[id] !== undefined ? JSON.stringify(inputs[id]) : null));
    await tx.execute(sql`
      insert into nodes (workflow_id, id, name, capability, status, parent_ids, pending_parents, input, output,
                         attempt, attempt_base, retry_policy, timeout_ms, labels, priority, limit_keys, wait,
                         not_before, inserted_by, started_at, finished_at)
      select ${workflowId}::uuid, s.id, s.name, s.capability,
             case when r.kept then 'PASS'::node_status else 'PENDING'::node_status end,
             case when r.kept then s.parent_ids else array(select jsonb_array_elements_text(r.parents)) end,
             r.pending, coalesce(r.input, s.input),
             case when r.kept then s.output end,
             case when r.kept then s.attempt else 0 end, case when r.kept then s.attempt_base else 0 end,
             s.retry_policy, s.timeout_ms, s.labels, s.priority, s.limit_keys, s.wait, s.not_before, s.inserted_by,
             case when r.kept then s.started_at end, case when r.kept then s.finished_at end
        from unnest(${sql.param(ids)}::text[], ${sql.param(kept)}::boolean[], ${sql.param(parents)}::jsonb[],
                    ${sql.param(pending)}::int[], ${sql.param(newInputs)}::jsonb[])
             as r(id, kept, parents, pending, input)
        join nodes s on s.workflow_id = ${sourceId}::uuid and s.id = r.id`);
    await tx.execute(sql`
      insert into node_edges (workflow_id, parent_id, child_id)
      select ${workflowId}::uuid, p.parent_id, n.id
        from nodes n cross join unnest(n.parent_ids) as p(parent_id)
       where n.workflow_id = ${workflowId}::uuid`);
    // The attempt that made a kept output, so GetNode shows where it came from (and a PASS has its attempt row).
    if (plan.kept.length > 0) {
      await tx.execute(sql`
        insert into node_attempts (workflow_id, node_id, attempt, outcome, ended_at, started_at, error_kind,
                                   error_message, worker_id, usage)
        select ${workflowId}::uuid, a.node_id, a.attempt, a.outcome, a.ended_at, a.started_at, a.error_kind,
               a.error_message, a.worker_id, a.usage
          from node_attempts a join nodes s on s.workflow_id = a.workflow_id and s.id = a.node_id
         where a.workflow_id = ${sourceId}::uuid and a.node_id = any(${sql.param(plan.kept)}::text[])
           and a.outcome = 'PASS' and a.attempt = s.attempt`);
    }
  }

  private async findByRequestId(requestId: string): Promise<Workflow | null> {
    const [row] = await this.transactions.db
      .select({ id: workflows.id })
      .from(workflows)
      .where(eq(workflows.requestId, requestId));
    return row ? this.read(row.id) : null;
  }
}

/** A workflow with its nodes in getWorkflow's order, as the transaction sees it. */
async function readInTx(tx: Tx, workflowId: string): Promise<Workflow> {
  const [row] = await tx.select().from(workflows).where(eq(workflows.id, workflowId));
  const rows = await tx.select().from(nodes).where(eq(nodes.workflowId, workflowId)).orderBy(nodes.createdAt, nodes.id);
  const byId = new Map(rows.map((r) => [r.id, r]));
  const order = topologicalOrder(
    rows.map((r) => r.id),
    (id) => byId.get(id)?.parentIds ?? [],
  );
  return workflowFromRow(
    row!,
    order.map((id) => nodeFromRow(byId.get(id)!)),
  );
}

function isRequestIdTaken(error: unknown): boolean {
  const e = error as { code?: string; constraint?: string; cause?: { code?: string; constraint?: string } };
  const inner = e.cause ?? e;
  return inner.code === "23505" && inner.constraint === "workflows_request_id_key";
}
