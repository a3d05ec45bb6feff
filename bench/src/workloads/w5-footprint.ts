import { nowMs } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { type EngineStack, noopStackOptions, withEngineStack } from "../harness/stack.js";
import { createWorkflow, independentNodes, waitWorkflowsSucceeded } from "../harness/workflows.js";

/** One statement of the engine, as pg_stat_statements counted it over W5's first phase. */
export interface StatementCount {
  calls: number;
  per_node: number;
  query: string;
}

/** One W5 run. */
export interface W5Result {
  first_nodes: number;
  /** Worker VmRSS after the first phase, MiB. */
  rss_first_mb: number;
  first_nodes_per_s: number;
  second_nodes: number | null;
  /** Worker VmRSS after the second phase (cumulative node count `second_nodes`), MiB. */
  rss_second_mb: number | null;
  /** Peak worker RSS (VmHWM) over the whole run, MiB. */
  rss_peak_mb: number | null;
  /** rss_second_mb / rss_first_mb. */
  rss_ratio: number | null;
  second_nodes_per_s: number | null;
  /** Every statement the engine ran on the database during the first phase (BEGIN/COMMIT included), per node. */
  statements_per_node: number | null;
  /** The same without transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...). */
  statements_per_node_excl_tx: number | null;
  /** Why the statement counts are null, if they are. */
  statements_note: string;
  /** The most frequent statements of the first phase. */
  top_statements: StatementCount[];
  /** CPU per process and PostgreSQL wait states over the first phase. */
  resources: ResourceUsage;
}

const MIB = 1024 * 1024;
const TX_CONTROL = "^\\s*(begin|commit|rollback|start transaction|savepoint|release)";

/** Runs `nodes` more nodes as batches of concurrent workflows; returns nodes per second over them. */
async function runNodes(
  ctx: BenchContext,
  stack: EngineStack,
  nodes: number,
  finishedBefore: number,
  deadline: Deadline,
): Promise<{ workflows: number; nodesPerS: number }> {
  const { nodesPerWorkflow, workflowsPerBatch } = ctx.sizes.w5;
  const workflows = Math.ceil(nodes / nodesPerWorkflow);
  const started = nowMs();
  for (let done = 0; done < workflows; done += workflowsPerBatch) {
    const batch = Math.min(workflowsPerBatch, workflows - done);
    await Promise.all(
      Array.from({ length: batch }, (_, i) =>
        createWorkflow(stack, `w5-${finishedBefore + done + i}`, independentNodes(nodesPerWorkflow), deadline),
      ),
    );
    await waitWorkflowsSucceeded(stack, finishedBefore + done + batch, deadline, 50);
    await ctx.nodeService.reset();
  }
  return { workflows, nodesPerS: (workflows * nodesPerWorkflow) / ((nowMs() - started) / 1000) };
}

/** Sums what pg_stat_statements counted on the workload's database, leaving out the bench's own statements. */
async function countStatements(stack: EngineStack, nodes: number) {
  const where = `dbid = (select oid from pg_database where datname = current_database())
                 and query not like '%trellis-bench%'`;
  const [totals] = await stack.query<{ all: string | null; non_tx: string | null }>(
    `select sum(calls) as all, sum(calls) filter (where query !~* $1) as non_tx from pg_stat_statements where ${where}`,
    [TX_CONTROL],
  );
  const top = await stack.query<{ calls: string; query: string }>(
    `select calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 200) as query
       from pg_stat_statements where ${where} order by calls desc limit 15`,
  );
  return {
    all: Number(totals?.all ?? 0) / nodes,
    nonTx: Number(totals?.non_tx ?? 0) / nodes,
    top: top.map((t) => ({ calls: Number(t.calls), per_node: Number(t.calls) / nodes, query: t.query })),
  };
}

/**
 * W5 footprint: on fresh apps, runs `firstNodes` independent no-op nodes (batches of concurrent workflows) and
 * reads the worker's RSS (VmRSS of /proc/<pid>/status) and, when pg_stat_statements is loaded, every statement the
 * engine ran on its database per node; then runs up to `secondNodes` nodes in all and reads the RSS again.
 */
export async function runW5(ctx: BenchContext, label: string): Promise<W5Result> {
  const { firstNodes, secondNodes, nodesPerWorkflow } = ctx.sizes.w5;
  return withEngineStack(noopStackOptions(ctx, label), async (stack) => {
    const deadline = new Deadline(Math.max(180_000, (secondNodes ?? firstNodes) * 20), `${label} (W5)`);
    const statementsOn = ctx.pgStatStatements.loaded;
    if (statementsOn) {
      await stack.query("create extension if not exists pg_stat_statements");
      await stack.query(
        "select pg_stat_statements_reset(0, (select oid from pg_database where datname = current_database()), 0)",
      );
    }
    const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
    const first = await runNodes(ctx, stack, firstNodes, 0, deadline);
    const resources = await monitor.stop();
    const firstCount = first.workflows * nodesPerWorkflow;
    const rssFirst = stack.worker.rssBytes();
    const statements = statementsOn ? await countStatements(stack, firstCount) : null;
    let rssSecond: number | null = null;
    let secondCount: number | null = null;
    let secondRate: number | null = null;
    if (secondNodes !== null && secondNodes > firstCount) {
      const second = await runNodes(ctx, stack, secondNodes - firstCount, first.workflows, deadline);
      secondCount = firstCount + second.workflows * nodesPerWorkflow;
      secondRate = second.nodesPerS;
      rssSecond = stack.worker.rssBytes();
    }
    if (rssFirst === null) throw new Error(`cannot read /proc/${stack.worker.pid}/status`);
    const peak = stack.worker.peakRssBytes();
    return {
      first_nodes: firstCount,
      rss_first_mb: rssFirst / MIB,
      first_nodes_per_s: first.nodesPerS,
      second_nodes: secondCount,
      rss_second_mb: rssSecond === null ? null : rssSecond / MIB,
      rss_peak_mb: peak === null ? null : peak / MIB,
      rss_ratio: rssSecond === null ? null : rssSecond / rssFirst,
      second_nodes_per_s: secondRate,
      statements_per_node: statements?.all ?? null,
      statements_per_node_excl_tx: statements?.nonTx ?? null,
      statements_note: statementsOn ? "" : ctx.pgStatStatements.reason,
      top_statements: statements?.top ?? [],
      resources,
    };
  });
}
