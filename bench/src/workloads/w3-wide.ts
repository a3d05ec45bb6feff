import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { type EngineStack, noopStackOptions, withEngineStack } from "../harness/stack.js";
import {
  type WideShape,
  createWorkflow,
  lastFinishedAtMs,
  waitWorkflowsSucceeded,
  wideNodes,
  wideShape,
} from "../harness/workflows.js";

/** One W3 run. */
export interface W3Result {
  /** The large workflow's shape, e.g. `1 -> 9988 -> 10 -> 1`. */
  shape: string;
  small_nodes: number;
  small_create_ms: number;
  small_total_ms: number;
  small_per_node_ms: number;
  large_nodes: number;
  /** CreateWorkflow's duration for the large workflow, at the client. */
  create_ms: number;
  /** CreateWorkflow sent -> the large workflow's finished_at. */
  total_ms: number;
  per_node_ms: number;
  /** Per-node cost of the large workflow over that of the small one (linear scaling: < 1.3). */
  per_node_ratio: number;
  /** CPU per process and PostgreSQL wait states over the large workflow. */
  resources: ResourceUsage;
}

interface OneWide {
  nodes: number;
  createMs: number;
  totalMs: number;
}

async function runOne(stack: EngineStack, shape: WideShape, finishedBefore: number, deadline: Deadline) {
  const created = await createWorkflow(stack, `w3-${shape.total}`, wideNodes(shape), deadline);
  await waitWorkflowsSucceeded(stack, finishedBefore + 1, deadline, 50);
  const finishedAt = await lastFinishedAtMs(stack, created.id);
  return {
    nodes: shape.total,
    createMs: created.answeredAt - created.sentAt,
    totalMs: finishedAt - created.sentAt,
  } satisfies OneWide;
}

/** Formats a wide shape as `1 -> middle [-> joins] -> 1`. */
export function describeShape(shape: WideShape): string {
  return shape.joins === 0 ? `1 -> ${shape.middle} -> 1` : `1 -> ${shape.middle} -> ${shape.joins} -> 1`;
}

/**
 * W3 wide: a small and then a large `root -> middle -> join` workflow on the same apps (fitted to the engine's
 * node and parent limits, see wideShape). For each: CreateWorkflow's duration, the total time from create to
 * finished, and that time per node; the ratio of the large per-node cost to the small one shows how cost scales.
 */
export async function runW3(ctx: BenchContext, label: string): Promise<W3Result> {
  const small = wideShape(ctx.sizes.w3.smallMiddle);
  const large = wideShape(ctx.sizes.w3.largeMiddle);
  return withEngineStack(noopStackOptions(ctx, label), async (stack) => {
    const deadline = new Deadline(Math.max(120_000, (small.total + large.total) * 40), `${label} (W3)`);
    const a = await runOne(stack, small, 0, deadline);
    const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
    const b = await runOne(stack, large, 1, deadline);
    const resources = await monitor.stop();
    const smallPerNode = a.totalMs / a.nodes;
    const largePerNode = b.totalMs / b.nodes;
    return {
      shape: describeShape(large),
      small_nodes: a.nodes,
      small_create_ms: a.createMs,
      small_total_ms: a.totalMs,
      small_per_node_ms: smallPerNode,
      large_nodes: b.nodes,
      create_ms: b.createMs,
      total_ms: b.totalMs,
      per_node_ms: largePerNode,
      per_node_ratio: largePerNode / smallPerNode,
      resources,
    };
  });
}
