import { CommitListener } from "../harness/commit-listener.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { firstCallByNode } from "../harness/node-service-client.js";
import { noopStackOptions, withEngineStack } from "../harness/stack.js";
import { mean, percentile } from "../harness/stats.js";
import {
  assertAllPassed,
  chainNodes,
  createWorkflow,
  lastFinishedAtMs,
  waitWorkflowsSucceeded,
} from "../harness/workflows.js";

/** One W2 run. All latencies in milliseconds. */
export interface W2Result {
  hops: number;
  /**
   * The headline hop: parent's ExecuteNode response sent -> child's ExecuteNode received, both stamped at the
   * NodeService (the baseline's definition): the parent's result written, the child started, its call made.
   */
  hop_from_response_p50_ms: number;
  hop_from_response_p99_ms: number;
  hop_from_response_mean_ms: number;
  hop_from_response_max_ms: number;
  /**
   * Parent's result committed -> child's ExecuteNode received. The commit time is the earlier of the bench seeing
   * the PASS transaction's NOTIFY and the child's start transaction beginning (`started_at`: its job is only
   * enqueued after that commit, so it cannot precede it); on a busy machine the notification can reach the bench
   * late.
   */
  hop_from_commit_p50_ms: number;
  hop_from_commit_p99_ms: number;
  hop_from_commit_mean_ms: number;
  hop_from_commit_max_ms: number;
  /** Parent's `nodes.finished_at` (its result transaction's start, to the ms) -> child's ExecuteNode received. */
  hop_from_finished_at_p50_ms: number;
  /**
   * From the parent's response to the child's call in three parts, p50 each: the parent's result written
   * (response sent -> committed); committed -> the child's start transaction began (`started_at`, a transaction
   * start to the ms: enqueue, BullMQ pick-up, and the scheduler's claim when the child was not dispatched in the
   * parent's transaction); -> ExecuteNode received (start transaction, gRPC call).
   */
  part_write_p50_ms: number;
  part_to_start_p50_ms: number;
  part_start_to_call_p50_ms: number;
  /** CreateWorkflow sent -> workflow finished_at. */
  total_ms: number;
  /** Busy CPU of the whole machine (/proc/stat) from just before the create to the workflow seen SUCCEEDED, per node. */
  machine_cpu_ms_per_node: number;
  /** CPU per process and PostgreSQL wait states over the workload. */
  resources: ResourceUsage;
}

/**
 * W2 chain: one workflow of `chainLength` sequential no-op nodes. For every hop, the time from the parent's
 * ExecuteNode response to the child's ExecuteNode reaching the NodeService, p50 and p99 (the baseline chain's
 * hop); with two other readings of the same hop (from the parent's result committed, and from `finished_at`).
 */
export async function runW2(ctx: BenchContext, label: string): Promise<W2Result> {
  const length = ctx.sizes.w2.chainLength;
  return withEngineStack(noopStackOptions(ctx, label), async (stack) => {
    const deadline = new Deadline(Math.max(60_000, length * 200), `${label} (W2)`);
    const listener = await CommitListener.start(stack.databaseUrl);
    try {
      const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
      const created = await createWorkflow(stack, "w2-chain", chainNodes(length), deadline);
      await waitWorkflowsSucceeded(stack, 1, deadline, 20);
      const resources = await monitor.stop();
      await assertAllPassed(stack, length);
      const finishedAt = await lastFinishedAtMs(stack);
      const calls = firstCallByNode(await ctx.nodeService.calls(created.id));
      const passRows = await stack.query<{ node_id: string; sequence: string }>(
        `select node_id, sequence from workflow_events
            where workflow_id = $1 and type = 'node.status_changed' and node_status = 'PASS'`,
        [created.id],
      );
      const passSeq = new Map(passRows.map((r) => [r.node_id, Number(r.sequence)]));
      const stamps = await stack.query<{ id: string; finished: string; started: string }>(
        `select id, extract(epoch from finished_at) * 1000 as finished, extract(epoch from started_at) * 1000 as started
             from nodes where workflow_id = $1`,
        [created.id],
      );
      const stampsOf = new Map(stamps.map((r) => [r.id, { finished: Number(r.finished), started: Number(r.started) }]));
      const fromCommit: number[] = [];
      const fromResponse: number[] = [];
      const fromFinished: number[] = [];
      const write: number[] = [];
      const toStart: number[] = [];
      const startToCall: number[] = [];
      for (let i = 1; i < length; i++) {
        const parent = `n-${i - 1}`;
        const child = `n-${i}`;
        const parentCall = calls.get(parent);
        const childCall = calls.get(child);
        const parentStamps = stampsOf.get(parent);
        const childStamps = stampsOf.get(child);
        if (!parentCall || !childCall) throw new Error(`the NodeService has no call for ${parent} or ${child}`);
        if (!parentStamps || !childStamps) throw new Error(`no row for ${parent} or ${child}`);
        const notified = listener.commitTime(created.id, passSeq.get(parent) ?? Number.NaN);
        if (notified === undefined) throw new Error(`no commit notification was seen for ${parent}'s PASS`);
        const committed = Math.min(notified, childStamps.started);
        fromCommit.push(childCall.receivedAt - committed);
        fromResponse.push(childCall.receivedAt - parentCall.respondedAt);
        fromFinished.push(childCall.receivedAt - parentStamps.finished);
        write.push(committed - parentCall.respondedAt);
        toStart.push(childStamps.started - committed);
        startToCall.push(childCall.receivedAt - childStamps.started);
      }
      return {
        hops: fromResponse.length,
        hop_from_response_p50_ms: percentile(fromResponse, 50),
        hop_from_response_p99_ms: percentile(fromResponse, 99),
        hop_from_response_mean_ms: mean(fromResponse),
        hop_from_response_max_ms: Math.max(...fromResponse),
        hop_from_commit_p50_ms: percentile(fromCommit, 50),
        hop_from_commit_p99_ms: percentile(fromCommit, 99),
        hop_from_commit_mean_ms: mean(fromCommit),
        hop_from_commit_max_ms: Math.max(...fromCommit),
        hop_from_finished_at_p50_ms: percentile(fromFinished, 50),
        part_write_p50_ms: percentile(write, 50),
        part_to_start_p50_ms: percentile(toStart, 50),
        part_start_to_call_p50_ms: percentile(startToCall, 50),
        total_ms: finishedAt - created.sentAt,
        machine_cpu_ms_per_node: (resources.machine_busy_cpu_s * 1000) / length,
        resources,
      };
    } finally {
      await listener.close();
    }
  });
}
