import { withBaselineQueue } from "../harness/baseline-process.js";
import { nowMs } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { firstCallByNode } from "../harness/node-service-client.js";
import { percentile } from "../harness/stats.js";

/** One run of the raw-BullMQ chain baseline. */
export interface BaselineChainResult {
  hops: number;
  /** Job k's ExecuteNode response sent -> job k+1's ExecuteNode received, both at the NodeService. */
  hop_p50_ms: number;
  hop_p99_ms: number;
  /** First job added -> last job completed. */
  total_ms: number;
  /** Busy CPU of the whole machine (/proc/stat) from just before job 0 was added to the last job completed, per job. */
  machine_cpu_ms_per_job: number;
  /** CPU of the baseline worker, the NodeService and Redis over the run. */
  resources: ResourceUsage;
}

/**
 * The W2 baseline: a chain of the same length in raw BullMQ. The bench adds job 0; each job's processor calls
 * ExecuteNode and then adds the next job, which the same Worker (concurrency as the engine's) picks up. A hop is
 * measured between the two ExecuteNode calls at the NodeService: job k's response sent to job k+1's request
 * received (it includes the response's trip back, the add, the pick-up and the next request's trip).
 */
export async function runBaselineChain(ctx: BenchContext, label: string): Promise<BaselineChainResult> {
  const length = ctx.sizes.w2.chainLength;
  const deadline = new Deadline(Math.max(60_000, length * 100), `${label} (W2 baseline)`);
  return withBaselineQueue(ctx, "chain", label, length, deadline, async ({ worker, queue, monitor }) => {
    const sent = nowMs();
    await queue.add("chain", { index: 0 }, { jobId: "c-0", removeOnComplete: true });
    const lastCompleted = await worker.done(deadline);
    const resources = await monitor.stop();
    const calls = firstCallByNode(await ctx.nodeService.calls(worker.workflowId));
    const hops: number[] = [];
    for (let i = 1; i < length; i++) {
      const previous = calls.get(`n-${i - 1}`);
      const next = calls.get(`n-${i}`);
      if (!previous || !next) throw new Error(`the NodeService has no call for baseline job ${i - 1} or ${i}`);
      hops.push(next.receivedAt - previous.respondedAt);
    }
    return {
      hops: hops.length,
      hop_p50_ms: percentile(hops, 50),
      hop_p99_ms: percentile(hops, 99),
      total_ms: lastCompleted - sent,
      machine_cpu_ms_per_job: (resources.machine_busy_cpu_s * 1000) / length,
      resources,
    };
  });
}
