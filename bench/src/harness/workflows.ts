import type { MessageInitShape } from "@bufbuild/protobuf";
import { DEFAULT_LIMITS, type WorkflowLimits } from "@trellis/core";
import type { NodeSchema } from "@trellis/proto";
import { nowMs } from "./clock.js";
import { type Deadline, waitFor } from "./deadline.js";
import type { EngineStack } from "./stack.js";

/** Capability of the no-op nodes: the NodeService answers SUCCESS at once (or after `input.sleep_ms`, see W7). */
export const NOOP_CAPABILITY = "bench.noop";
/** Capability of the planner node of W4: the NodeService answers with edits. */
export const PLAN_CAPABILITY = "bench.plan";

/** A node as given to CreateWorkflow. */
export type NodeInit = MessageInitShape<typeof NodeSchema>;

/** `count` independent no-op nodes `n-0` .. `n-<count-1>`. */
export function independentNodes(count: number): NodeInit[] {
  return Array.from({ length: count }, (_, i) => ({ id: `n-${i}`, capability: NOOP_CAPABILITY }));
}

/**
 * `count` independent long nodes `n-0` .. `n-<count-1>` (W7): the no-op NodeService holds each call for `holdMs`
 * (`input.sleep_ms`) before answering SUCCESS.
 */
export function holdingNodes(count: number, holdMs: number): NodeInit[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `n-${i}`,
    capability: NOOP_CAPABILITY,
    input: { sleep_ms: holdMs },
  }));
}

/** A chain of `count` no-op nodes, `n-0` -> `n-1` -> ...; each waits for the one before. */
export function chainNodes(count: number): NodeInit[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `n-${i}`,
    capability: NOOP_CAPABILITY,
    parentIds: i === 0 ? [] : [`n-${i - 1}`],
  }));
}

/** The shape of a wide workflow: root -> `middle` nodes -> `joins` intermediate joins (0: none) -> join. */
export interface WideShape {
  middle: number;
  joins: number;
  total: number;
}

/**
 * The widest `root -> middle -> join` the engine's limits accept, aiming at `targetMiddle` middle nodes. A join
 * may have at most `maxParents` parents, so a wider middle goes through intermediate joins of up to
 * `maxParents` parents each; and the whole workflow may have at most `maxNodes` nodes, so the middle shrinks
 * until it fits. With the default limits (10,000 nodes, 1,000 parents) a target of 10,000 gives
 * 1 -> 9,988 -> 10 -> 1 (10,000 nodes), and a target of 1,000 gives exactly 1 -> 1,000 -> 1.
 */
export function wideShape(targetMiddle: number, limits: WorkflowLimits = DEFAULT_LIMITS): WideShape {
  for (let middle = targetMiddle; middle > 0; middle--) {
    const joins = middle <= limits.maxParents ? 0 : Math.ceil(middle / limits.maxParents);
    const total = 2 + middle + joins;
    if (total <= limits.maxNodes && joins <= limits.maxParents) return { middle, joins, total };
  }
  throw new Error(`no wide workflow fits the limits ${JSON.stringify(limits)}`);
}

/** The nodes of a {@link WideShape}: `root`, `m-<i>`, `j-<k>` (when needed) and `join`. */
export function wideNodes(shape: WideShape, maxParents = DEFAULT_LIMITS.maxParents): NodeInit[] {
  const nodes: NodeInit[] = [{ id: "root", capability: NOOP_CAPABILITY }];
  for (let i = 0; i < shape.middle; i++) nodes.push({ id: `m-${i}`, capability: NOOP_CAPABILITY, parentIds: ["root"] });
  const middleIds = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `m-${from + i}`);
  if (shape.joins === 0) {
    nodes.push({ id: "join", capability: NOOP_CAPABILITY, parentIds: middleIds(0, shape.middle) });
    return nodes;
  }
  const joinIds: string[] = [];
  for (let k = 0; k < shape.joins; k++) {
    const from = k * maxParents;
    const to = Math.min(shape.middle, from + maxParents);
    joinIds.push(`j-${k}`);
    nodes.push({ id: `j-${k}`, capability: NOOP_CAPABILITY, parentIds: middleIds(from, to) });
  }
  nodes.push({ id: "join", capability: NOOP_CAPABILITY, parentIds: joinIds });
  return nodes;
}

/** A workflow created by the bench and when (nowMs) its CreateWorkflow call was sent and answered. */
export interface CreatedWorkflow {
  id: string;
  sentAt: number;
  answeredAt: number;
}

/** Calls CreateWorkflow and times it. */
export async function createWorkflow(
  stack: EngineStack,
  name: string,
  nodes: NodeInit[],
  deadline: Deadline,
): Promise<CreatedWorkflow> {
  const sentAt = nowMs();
  const { workflow } = await stack.api.createWorkflow({ name, nodes }, { deadline: deadline.asDate(300_000) });
  const answeredAt = nowMs();
  if (!workflow?.id) throw new Error(`CreateWorkflow ${name} returned no workflow`);
  return { id: workflow.id, sentAt, answeredAt };
}

/**
 * Waits until `expected` workflows of the database have finished, polling every `intervalMs`; throws when one
 * ended other than SUCCEEDED (naming a failed node and its error) or an app died.
 */
export async function waitWorkflowsSucceeded(
  stack: EngineStack,
  expected: number,
  deadline: Deadline,
  intervalMs = 100,
): Promise<void> {
  await waitFor(
    `${expected} workflows to finish`,
    deadline,
    async () => {
      stack.assertRunning();
      const rows = await stack.query<{ status: string; count: string }>(
        "select status, count(*) from workflows group by status",
      );
      const count = (status: string) => Number(rows.find((r) => r.status === status)?.count ?? 0);
      const bad = count("FAILED") + count("CANCELLED");
      if (bad > 0) {
        const [failed] = await stack.query<{ workflow_id: string; id: string; error_message: string | null }>(
          "select workflow_id, id, error_message from nodes where status = 'FAIL' limit 1",
        );
        throw new Error(
          `${bad} workflow(s) did not succeed; e.g. node ${failed?.workflow_id}/${failed?.id}: ${failed?.error_message}`,
        );
      }
      return count("SUCCEEDED") >= expected ? true : undefined;
    },
    intervalMs,
  );
}

/**
 * Waits until every workflow of `ids` has finished, polling every `intervalMs`; throws when one ended other than
 * SUCCEEDED (naming a failed node and its error) or an app died. For a database that holds other workflows too.
 */
export async function waitTheseWorkflowsSucceeded(
  stack: EngineStack,
  ids: readonly string[],
  deadline: Deadline,
  intervalMs = 100,
): Promise<void> {
  await waitFor(
    `${ids.length} workflows to finish`,
    deadline,
    async () => {
      stack.assertRunning();
      const rows = await stack.query<{ status: string; count: string }>(
        "select status, count(*) from workflows where id = any($1::uuid[]) group by status",
        [ids],
      );
      const count = (status: string) => Number(rows.find((r) => r.status === status)?.count ?? 0);
      const bad = count("FAILED") + count("CANCELLED");
      if (bad > 0) {
        const [failed] = await stack.query<{ workflow_id: string; id: string; error_message: string | null }>(
          "select workflow_id, id, error_message from nodes where workflow_id = any($1::uuid[]) and status = 'FAIL' limit 1",
          [ids],
        );
        throw new Error(
          `${bad} workflow(s) did not succeed; e.g. node ${failed?.workflow_id}/${failed?.id}: ${failed?.error_message}`,
        );
      }
      return count("SUCCEEDED") >= ids.length ? true : undefined;
    },
    intervalMs,
  );
}

/**
 * The latest `workflows.finished_at` (of workflow `workflowIds`, or of those workflows, else of the whole
 * database) as epoch milliseconds. It is the `now()` of the transaction that finished the workflow: its start, to
 * the millisecond.
 */
export async function lastFinishedAtMs(stack: EngineStack, workflowIds?: string | readonly string[]): Promise<number> {
  const ids = workflowIds === undefined ? null : typeof workflowIds === "string" ? [workflowIds] : workflowIds;
  const [row] = await stack.query<{ ms: string | null }>(
    "select extract(epoch from max(finished_at)) * 1000 as ms from workflows where $1::uuid[] is null or id = any($1)",
    [ids],
  );
  if (!row?.ms) throw new Error("no workflow has finished");
  return Number(row.ms);
}

/**
 * Throws unless exactly `expected` nodes of the database (of the workflows `workflowIds` when given) are PASS (and
 * none is anything else).
 */
export async function assertAllPassed(
  stack: EngineStack,
  expected: number,
  workflowIds?: readonly string[],
): Promise<void> {
  const rows = await stack.query<{ status: string; count: string }>(
    "select status, count(*) from nodes where $1::uuid[] is null or workflow_id = any($1) group by status",
    [workflowIds ?? null],
  );
  const summary = rows.map((r) => `${r.status}=${r.count}`).join(", ");
  const passed = Number(rows.find((r) => r.status === "PASS")?.count ?? 0);
  if (passed !== expected || rows.length !== 1) {
    throw new Error(`expected ${expected} nodes PASS in PostgreSQL, found ${summary}`);
  }
}
