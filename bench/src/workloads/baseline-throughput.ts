import { withBaselineQueue } from "../harness/baseline-process.js";
import { nowMs } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";

/** One run of the raw-BullMQ throughput baseline. */
export interface BaselineThroughputResult {
  jobs: number;
  /** Jobs over the time from the first addBulk sent to the last job completed. */
  jobs_per_s: number;
  elapsed_ms: number;
  /**
   * Busy CPU of the whole machine (/proc/stat: total - idle - iowait, every process on it) from just before the
   * first addBulk to the last job completed, per job, in milliseconds.
   */
  machine_cpu_ms_per_job: number;
  /** CPU of the baseline worker, the NodeService and Redis over the run. */
  resources: ResourceUsage;
}

/**
 * The W1 baseline: the same number of jobs as W1 has nodes, added with one addBulk per "workflow" (all
 * concurrently) to one queue, and a BullMQ Worker of the engine's concurrency in its own process calling the
 * same no-op NodeService once per job; no PostgreSQL. Jobs per second from the first addBulk to the last job
 * completed.
 */
export async function runBaselineThroughput(ctx: BenchContext, label: string): Promise<BaselineThroughputResult> {
  const { workflows, nodesPerWorkflow } = ctx.sizes.w1;
  const jobs = workflows * nodesPerWorkflow;
  const deadline = new Deadline(Math.max(120_000, jobs * 10), `${label} (W1 baseline)`);
  return withBaselineQueue(ctx, "throughput", label, jobs, deadline, async ({ worker, queue, monitor }) => {
    const firstSent = nowMs();
    await Promise.all(
      Array.from({ length: workflows }, (_, w) =>
        queue.addBulk(
          Array.from({ length: nodesPerWorkflow }, (_, n) => ({
            name: "node",
            data: { index: w * nodesPerWorkflow + n },
            opts: { jobId: `w${w}-n${n}`, removeOnComplete: true },
          })),
        ),
      ),
    );
    const lastCompleted = await worker.done(deadline);
    const resources = await monitor.stop();
    const elapsed = lastCompleted - firstSent;
    return {
      jobs,
      jobs_per_s: jobs / (elapsed / 1000),
      elapsed_ms: elapsed,
      machine_cpu_ms_per_job: (resources.machine_busy_cpu_s * 1000) / jobs,
      resources,
    };
  });
}
