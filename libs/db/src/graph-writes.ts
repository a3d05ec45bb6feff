import { and, eq, inArray, or, sql } from "drizzle-orm";
import {
  countPendingParents,
  initialStatusForParents,
  topologicalOrder,
  type EditPlan,
  type GraphNode,
} from "@trellis/core";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { NodeStatus, type Node } from "@trellis/proto";
import {
  durationToMs,
  nodeStatusFromName,
  nodeStatusToName,
  retryPolicyToJson,
  waitToJson,
  type NodeStatusName,
} from "./mapping.js";
import { nodeEdges, nodes } from "./schema.js";
import type { Tx } from "./transactions.js";
import type { WorkflowChanges } from "./workflow-changes.js";

/** A node row to insert. */
export type NewNode = typeof nodes.$inferInsert;
type NewEdge = typeof nodeEdges.$inferInsert;

const NODE_CHUNK = 20_000;
const EDGE_CHUNK = 100_000;

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Inserts nodes (already validated) with their edges. `knownStatuses` gives the statuses of parents
 * that already exist; parents among `newNodes` are resolved in topological order. `insertedBy` is the node whose
 * edits insert them ('' for the original graph or the api). Returns the rows inserted.
 */
export async function insertNodes(
  tx: Tx,
  workflowId: string,
  newNodes: readonly Node[],
  knownStatuses: ReadonlyMap<string, NodeStatus>,
  insertedBy = "",
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
      priority: node.priority,
      limitKeys: [...node.limitKeys],
      wait: waitToJson(node.wait),
      notBefore: node.notBefore ? timestampDate(node.notBefore) : null,
      insertedBy,
      finishedAt: status === NodeStatus.PENDING ? null : new Date(),
    });
    for (const parentId of node.parentIds) edges.push({ workflowId, parentId, childId: id });
  }
  // One array per column: a 10,000-node workflow is one statement of a dozen parameters, not 130,000.
  for (const chunk of chunks(rows, NODE_CHUNK)) {
    await tx.execute(sql`
      insert into nodes (workflow_id, id, name, capability, status, parent_ids, pending_parents, input,
                         retry_policy, timeout_ms, labels, priority, limit_keys, wait, not_before, inserted_by,
                         finished_at)
      select ${workflowId}::uuid, r.id, r.name, r.capability, r.status, array(select jsonb_array_elements_text(r.parents)),
             r.pending, r.input, r.retry_policy, r.timeout_ms, r.labels, r.priority,
             array(select jsonb_array_elements_text(r.limit_keys)), r.wait, r.not_before,
             ${insertedBy}::text, case when r.finished then now() end
        from unnest(${sql.param(chunk.map((n) => n.id))}::text[], ${sql.param(chunk.map((n) => n.name))}::text[],
                    ${sql.param(chunk.map((n) => n.capability))}::text[],
                    ${sql.param(chunk.map((n) => n.status))}::node_status[],
                    ${sql.param(chunk.map((n) => JSON.stringify(n.parentIds ?? [])))}::jsonb[],
                    ${sql.param(chunk.map((n) => n.pendingParents ?? 0))}::int[],
                    ${sql.param(chunk.map((n) => JSON.stringify(n.input ?? {})))}::jsonb[],
                    ${sql.param(chunk.map((n) => (n.retryPolicy ? JSON.stringify(n.retryPolicy) : null)))}::jsonb[],
                    ${sql.param(chunk.map((n) => n.timeoutMs ?? null))}::int[],
                    ${sql.param(chunk.map((n) => JSON.stringify(n.labels ?? {})))}::jsonb[],
                    ${sql.param(chunk.map((n) => n.priority ?? 0))}::smallint[],
                    ${sql.param(chunk.map((n) => JSON.stringify(n.limitKeys ?? [])))}::jsonb[],
                    ${sql.param(chunk.map((n) => (n.wait ? JSON.stringify(n.wait) : null)))}::jsonb[],
                    ${sql.param(chunk.map((n) => n.notBefore?.toISOString() ?? null))}::timestamptz[],
                    ${sql.param(chunk.map((n) => n.finishedAt !== null && n.finishedAt !== undefined))}::boolean[])
             as r(id, name, capability, status, parents, pending, input, retry_policy, timeout_ms, labels, priority,
                  limit_keys, wait, not_before, finished)`);
  }
  await insertEdges(tx, workflowId, edges);
  return rows;
}

/** Inserts edges of a workflow (one array per column, however many: not three parameters an edge). */
async function insertEdges(tx: Tx, workflowId: string, edges: readonly Omit<NewEdge, "workflowId">[]): Promise<void> {
  for (const chunk of chunks(edges, EDGE_CHUNK)) {
    await tx.execute(sql`
      insert into node_edges (workflow_id, parent_id, child_id)
      select ${workflowId}::uuid, e.parent_id, e.child_id
        from unnest(${sql.param(chunk.map((e) => e.parentId))}::text[], ${sql.param(chunk.map((e) => e.childId))}::text[])
             as e(parent_id, child_id)
      on conflict do nothing`);
  }
}

/** The graph of a locked workflow: every node's id, status and parents. */
export async function loadGraph(tx: Tx, workflowId: string): Promise<Map<string, GraphNode>> {
  const rows = await tx
    .select({ id: nodes.id, status: nodes.status, parentIds: nodes.parentIds })
    .from(nodes)
    .where(eq(nodes.workflowId, workflowId));
  return new Map(rows.map((r) => [r.id, { id: r.id, status: nodeStatusFromName(r.status), parentIds: r.parentIds }]));
}

/**
 * Writes a validated edit plan: deletes, inserts, updates, then one workflow.edited event. `insertedBy` is the node
 * whose edits these are (a PASS's node, a signalled node), '' for the api's.
 */
export async function applyEditPlan(
  tx: Tx,
  changes: WorkflowChanges,
  graph: ReadonlyMap<string, GraphNode>,
  plan: EditPlan,
  insertedBy = "",
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
      (await insertNodes(tx, workflowId, plan.inserts, statuses, insertedBy)).map((r) => [r.id, r.status!]),
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
    if (fields.priority !== undefined) set.priority = fields.priority;
    if (fields.limitKeys !== undefined) set.limitKeys = fields.limitKeys;
    // A node held back under its old keys (or before its parents changed) is weighed afresh by the next claim: a
    // held_by naming a key it no longer has would keep it out of both the plain claim and the held one.
    if (fields.limitKeys !== undefined || fields.capability !== undefined || fields.parentIds !== undefined) {
      set.heldBy = null;
    }
    let status: NodeStatusName = "PENDING";
    if (fields.parentIds !== undefined) {
      const parentStatuses = fields.parentIds.map((p) => statuses.get(p) ?? NodeStatus.PENDING);
      status = nodeStatusToName(initialStatusForParents(parentStatuses));
      set.parentIds = fields.parentIds;
      set.pendingParents = countPendingParents(parentStatuses);
      set.status = status;
      if (status !== "PENDING") set.finishedAt = new Date();
      await tx.delete(nodeEdges).where(and(eq(nodeEdges.workflowId, workflowId), eq(nodeEdges.childId, id)));
      await insertEdges(
        tx,
        workflowId,
        fields.parentIds.map((parentId) => ({ parentId, childId: id })),
      );
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
