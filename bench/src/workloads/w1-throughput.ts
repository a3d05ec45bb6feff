import { nowMs } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { noopStackOptions, withEngineStack } from "../harness/stack.js";
import {
  assertAllPassed,
  createWorkflow,
  independentNodes,
  lastFinishedAtMs,
  waitWorkflowsSucceeded,
} from "../harness/workflows.js";

/** One W1 run. */
export interface W1Result {
  nodes: number;
  /** Nodes over the time from the first CreateWorkflow sent to the last workflow's `finished_at`. */
  nodes_per_s: number;
  /** That time. */
  elapsed_ms: number;
  /** From the first CreateWorkflow sent to the last one answered. */
  create_all_ms: number;
  /**
   * Busy CPU of the whole machine (/proc/stat: total - idle - iowait, every process on it) from just before the
   * first CreateWorkflow to all workflows seen SUCCEEDED, per node, in milliseconds.
   */
  machine_cpu_ms_per_node: number;
  /** CPU per process and PostgreSQL wait states over the workload. */
  resources: ResourceUsage;
}

/**
 * W1 throughput: `workflows` workflows of `nodesPerWorkflow` independent no-op nodes, all created concurrently;
 * nodes per second from the first create to the last workflow SUCCEEDED (its `finished_at` in PostgreSQL),
 * checking that every node ended PASS in PostgreSQL.
 */
export async function runW1(ctx: BenchContext, label: string): Promise<W1Result> {
  const { workflows, nodesPerWorkflow } = ctx.sizes.w1;
  const nodes = workflows * nodesPerWorkflow;
  return withEngineStack(noopStackOptions(ctx, label), async (stack) => {
    const deadline = new Deadline(Math.max(120_000, nodes * 30), `${label} (W1)`);
    const specs = Array.from({ length: workflows }, () => independentNodes(nodesPerWorkflow));
    const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
    const firstSent = nowMs();
    const created = await Promise.all(specs.map((s, i) => createWorkflow(stack, `w1-${i}`, s, deadline)));
    const lastAnswered = Math.max(...created.map((c) => c.answeredAt));
    await waitWorkflowsSucceeded(stack, workflows, deadline, 50);
    const resources = await monitor.stop();
    const finishedAt = await lastFinishedAtMs(stack);
    await assertAllPassed(stack, nodes);
    const elapsed = finishedAt - firstSent;
    return {
      nodes,
      nodes_per_s: nodes / (elapsed / 1000),
      elapsed_ms: elapsed,
      create_all_ms: lastAnswered - firstSent,
      machine_cpu_ms_per_node: (resources.machine_busy_cpu_s * 1000) / nodes,
      resources,
    };
  });
}
