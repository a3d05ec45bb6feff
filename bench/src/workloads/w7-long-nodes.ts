import { nowMs, sleep } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { type DatabaseStats, databaseStats } from "../harness/database.js";
import { Deadline, waitFor } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { type EngineStack, noopStackOptions, withEngineStack } from "../harness/stack.js";
import { ratio } from "../harness/stats.js";
import { createWorkflow, holdingNodes, waitWorkflowsSucceeded } from "../harness/workflows.js";

/** One statement of the engine over a W7 window, from pg_stat_statements. */
export interface W7Statement {
  calls_per_s: number;
  /** Whether it counts as a write (INSERT/UPDATE/DELETE/MERGE, a CTE that writes, or a SELECT of a trellis_* function). */
  write: boolean;
  query: string;
}

/** One W7 case: `running_nodes` long nodes RUNNING at once. Rates are per second over the steady window. */
export interface W7Case {
  running_nodes: number;
  workflows: number;
  /** How long the NodeService held each call. */
  hold_ms: number;
  /** First CreateWorkflow sent -> the last one answered. */
  create_all_ms: number;
  /** First CreateWorkflow sent -> the bench saw all `running_nodes` RUNNING in PostgreSQL (polled every 100 ms). */
  ramp_ms: number;
  /** Wait after all RUNNING before the window, for the statistics to settle (see STATS_SETTLE_MS). */
  settle_ms: number;
  /** The steady window measured (all nodes RUNNING throughout, checked at its end). */
  window_s: number;
  /** pg_stat_database of the bench database: transactions committed (read-only ones included), per second. */
  commits_per_s: number;
  rollbacks_per_s: number;
  /** tup_inserted + tup_updated + tup_deleted per second. */
  tuples_written_per_s: number;
  tuples_inserted_per_s: number;
  tuples_updated_per_s: number;
  tuples_deleted_per_s: number;
  /** pg_stat_statements (null when not loaded): statements that write, per second. */
  write_statements_per_s: number | null;
  /** Every statement but transaction control (BEGIN, COMMIT...), per second. */
  statements_per_s: number | null;
  /** The most frequent statements of the window. */
  top_statements: W7Statement[];
  /** Busy cores of the whole machine over the window (/proc/stat). */
  machine_busy_cores: number;
  /** CPU per process over the window (no wait sampling: it would add its own transactions to the counters). */
  resources: ResourceUsage;
}

/** The W7 run: every case on one stack (the same workers), and the largest case against the smallest. */
export interface W7Result {
  /** Worker processes, each of `worker_concurrency` slots, the same for every case. */
  workers: number;
  worker_concurrency: number;
  worker_db_pool_size: string;
  cases: W7Case[];
  /** Largest case's figure / smallest case's. */
  running_nodes_ratio: number;
  commits_ratio: number | null;
  tuples_written_ratio: number | null;
  write_statements_ratio: number | null;
  /** Why the statement figures are null, if they are. */
  statements_note: string;
}

const TX_CONTROL = /^(begin|commit|rollback|start\s+transaction|savepoint|release|end|abort)\b/i;

/** The statement without its leading comments and whitespace. */
function statementBody(query: string): string {
  return query.replace(/^(\s*\/\*[\s\S]*?\*\/)*\s*/, "");
}

/** Whether a statement writes: INSERT/UPDATE/DELETE/MERGE, a CTE that does, or a SELECT calling a trellis_* function. */
export function isWrite(query: string): boolean {
  const body = statementBody(query);
  if (/^(insert|update|delete|merge)\b/i.test(body)) return true;
  if (/^with\b/i.test(body)) return /\b(insert\s+into|update\s+\S+\s+set|delete\s+from)\b/i.test(body);
  return /^select\b/i.test(body) && /\btrellis_\w+\s*\(/i.test(body);
}

interface StatementRow {
  key: string;
  calls: number;
  query: string;
}

/** The engine's statements on the database so far (pg_stat_statements), leaving out the bench's own. */
async function statementCounts(stack: EngineStack): Promise<Map<string, StatementRow>> {
  const rows = await stack.query<{ key: string; calls: string; query: string }>(
    `select userid::text || ':' || queryid::text || ':' || toplevel::text as key, calls, query
       from pg_stat_statements
      where dbid = (select oid from pg_database where datname = current_database())
        and query not like '%trellis-bench%'`,
  );
  return new Map(rows.map((r) => [r.key, { key: r.key, calls: Number(r.calls), query: r.query }]));
}

/** Statement rates over a window from two {@link statementCounts}. */
function statementRates(before: Map<string, StatementRow>, after: Map<string, StatementRow>, seconds: number) {
  let writes = 0;
  let all = 0;
  const top: W7Statement[] = [];
  for (const row of after.values()) {
    const calls = row.calls - (before.get(row.key)?.calls ?? 0);
    if (calls <= 0) continue;
    const body = statementBody(row.query);
    if (TX_CONTROL.test(body)) continue;
    const write = isWrite(body);
    all += calls;
    if (write) writes += calls;
    top.push({ calls_per_s: calls / seconds, write, query: body.replace(/\s+/g, " ").slice(0, 200) });
  }
  top.sort((a, b) => b.calls_per_s - a.calls_per_s);
  return { writes: writes / seconds, all: all / seconds, top: top.slice(0, 12) };
}

/** Per-second rates of the pg_stat_database counters between two readings. */
function databaseRates(before: DatabaseStats, after: DatabaseStats, seconds: number) {
  const rate = (key: keyof DatabaseStats) => (after[key] - before[key]) / seconds;
  return {
    commits_per_s: rate("xact_commit"),
    rollbacks_per_s: rate("xact_rollback"),
    tuples_written_per_s: rate("tup_inserted") + rate("tup_updated") + rate("tup_deleted"),
    tuples_inserted_per_s: rate("tup_inserted"),
    tuples_updated_per_s: rate("tup_updated"),
    tuples_deleted_per_s: rate("tup_deleted"),
  };
}

/** Reads pg_stat_database and returns the reading with the time (nowMs) half way through the read. */
async function timedStats(databaseName: string): Promise<{ stats: DatabaseStats; at: number }> {
  const before = nowMs();
  const stats = await databaseStats(databaseName);
  return { stats, at: (before + nowMs()) / 2 };
}

/** Counts of a case's nodes by status. */
async function caseStatus(stack: EngineStack, ids: string[]): Promise<{ running: number; passed: number }> {
  const [row] = await stack.query<{ running: string; passed: string }>(
    `select count(*) filter (where status = 'RUNNING') as running, count(*) filter (where status = 'PASS') as passed
       from nodes where workflow_id = any($1::uuid[])`,
    [ids],
  );
  return { running: Number(row?.running ?? 0), passed: Number(row?.passed ?? 0) };
}

/** One case: `count` long nodes created at once, measured over the steady window once all are RUNNING. */
async function runCase(
  ctx: BenchContext,
  stack: EngineStack,
  count: number,
  finishedBefore: number,
  deadline: Deadline,
): Promise<{ result: W7Case; workflows: number }> {
  const { nodesPerWorkflow, holdMs, windowMs } = ctx.sizes.w7;
  const workflows = Math.ceil(count / nodesPerWorkflow);
  const sizes = Array.from({ length: workflows }, (_, i) => Math.min(nodesPerWorkflow, count - i * nodesPerWorkflow));
  const firstSent = nowMs();
  const created = await Promise.all(
    sizes.map((n, i) => createWorkflow(stack, `w7-${count}-${i}`, holdingNodes(n, holdMs), deadline)),
  );
  const lastAnswered = Math.max(...created.map((c) => c.answeredAt));
  const ids = created.map((c) => c.id);
  await waitFor(
    `all ${count} nodes RUNNING`,
    deadline,
    async () => {
      stack.assertRunning();
      const { running, passed } = await caseStatus(stack, ids);
      if (passed > 0) {
        throw new Error(
          `${passed} node(s) finished before all ${count} were RUNNING (${running} were): the hold ` +
            `(${holdMs} ms) is too short for the time this machine takes to start them`,
        );
      }
      return running >= count ? true : undefined;
    },
    100,
  );
  const allRunningAt = nowMs();
  // The creates and starts are written by now, but a backend that went idle since (the api's, a worker's pool
  // connection) reports its counters to pg_stat_database up to 10 s later: let them land before the window.
  await sleep(STATS_SETTLE_MS);
  // The window must end before the first node finishes: its call was received after its start transaction
  // began (started_at), and is answered `holdMs` after it was received.
  const [first] = await stack.query<{ ms: string }>(
    "select extract(epoch from min(started_at)) * 1000 as ms from nodes where workflow_id = any($1::uuid[])",
    [ids],
  );
  const firstFinishAt = Number(first?.ms) + holdMs;
  const margin = 1_500;
  const window = Math.min(windowMs, firstFinishAt - margin - nowMs());
  if (window < 2_000) {
    throw new Error(
      `only ${Math.round(window)} ms are left before the first of ${count} nodes finishes (all RUNNING after ` +
        `${Math.round(allRunningAt - firstSent)} ms, then ${STATS_SETTLE_MS} ms for the statistics to settle): ` +
        `the hold (${holdMs} ms) is too short for this machine`,
    );
  }
  if (window < windowMs) ctx.log(`w7: window of ${count} shortened to ${Math.round(window)} ms (slow start)`);

  // Statement counts are read on the bench database (they add transactions there), so outside the window.
  const statementsOn = ctx.pgStatStatements.loaded;
  const statementsBefore = statementsOn ? await statementCounts(stack) : null;
  const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid }, false);
  const start = await timedStats(stack.databaseName);
  await sleep(window);
  const end = await timedStats(stack.databaseName);
  const resources = await monitor.stop();
  const statementsAfter = statementsOn ? await statementCounts(stack) : null;
  const seconds = (end.at - start.at) / 1000;

  const after = await caseStatus(stack, ids);
  if (after.running !== count) {
    throw new Error(
      `${count - after.running} of ${count} nodes stopped RUNNING inside the window (${after.passed} PASS)`,
    );
  }
  const statements =
    statementsBefore && statementsAfter ? statementRates(statementsBefore, statementsAfter, seconds) : null;

  await waitWorkflowsSucceeded(stack, finishedBefore + workflows, deadline, 200);
  const done = await caseStatus(stack, ids);
  if (done.passed !== count) throw new Error(`expected ${count} nodes PASS, found ${done.passed}`);
  await ctx.nodeService.reset();
  return {
    workflows,
    result: {
      running_nodes: count,
      workflows,
      hold_ms: holdMs,
      create_all_ms: lastAnswered - firstSent,
      ramp_ms: allRunningAt - firstSent,
      settle_ms: STATS_SETTLE_MS,
      window_s: seconds,
      ...databaseRates(start.stats, end.stats, seconds),
      write_statements_per_s: statements?.writes ?? null,
      statements_per_s: statements?.all ?? null,
      top_statements: statements?.top ?? [],
      machine_busy_cores: resources.machine_busy_cores,
      resources,
    },
  };
}

/**
 * Wait between all nodes RUNNING and the window's start. PostgreSQL 15 backends report their counters to the
 * statistics (pg_stat_database) at the end of a transaction at most once a second, and one that goes idle with
 * counts pending reports them up to PGSTAT_IDLE_INTERVAL (10 s) later: without this wait the window counted the
 * creates' and starts' rows (a few per node) as if written during it.
 */
const STATS_SETTLE_MS = 11_000;

/** Slots of one worker process at most (WORKER_CONCURRENCY's limit in apps/worker/src/config.ts). */
const MAX_WORKER_CONCURRENCY = 1_000;

/**
 * W7 long nodes (the cost of liveness): on a fresh stack with enough worker slots for the largest case, each case
 * creates `count` nodes that the NodeService holds for `holdMs`, waits until all are RUNNING, and measures the
 * database's write load over a steady window (pg_stat_database, and pg_stat_statements when loaded). The cases
 * share the stack, so they run on the same workers: what changes between them is only the number of running nodes.
 */
export async function runW7(ctx: BenchContext, label: string): Promise<W7Result> {
  const { counts, holdMs } = ctx.sizes.w7;
  const largest = Math.max(...counts);
  const workers = Math.ceil(largest / MAX_WORKER_CONCURRENCY);
  const concurrency = Math.ceil(largest / workers);
  // PostgreSQL allows 100 connections in all: small pools (each worker also holds a LISTEN connection).
  const poolSize = process.env.WORKER_DB_POOL_SIZE ?? "8";
  const env: Record<string, string> = { WORKER_DB_POOL_SIZE: poolSize };
  if (!process.env.API_DB_POOL_SIZE) env.API_DB_POOL_SIZE = "4";
  const options = { ...noopStackOptions(ctx, label), workerConcurrency: concurrency, workers, env };
  return withEngineStack(options, async (stack) => {
    const deadline = new Deadline(counts.length * (2 * holdMs + 180_000), `${label} (W7)`);
    if (ctx.pgStatStatements.loaded) await stack.query("create extension if not exists pg_stat_statements");
    const cases: W7Case[] = [];
    let finished = 0;
    for (const count of counts) {
      const { result, workflows } = await runCase(ctx, stack, count, finished, deadline);
      finished += workflows;
      cases.push(result);
      ctx.log(
        `w7: ${count} running: ${result.tuples_written_per_s.toFixed(1)} tuples written/s, ` +
          `${result.commits_per_s.toFixed(1)} commits/s, all running after ${Math.round(result.ramp_ms)} ms; ` +
          `machine ${result.machine_busy_cores.toFixed(2)} cores busy over the window`,
      );
    }
    const small = cases[0]!;
    const large = cases[cases.length - 1]!;
    return {
      workers,
      worker_concurrency: concurrency,
      worker_db_pool_size: poolSize,
      cases,
      running_nodes_ratio: large.running_nodes / small.running_nodes,
      commits_ratio: ratio(large.commits_per_s, small.commits_per_s),
      tuples_written_ratio: ratio(large.tuples_written_per_s, small.tuples_written_per_s),
      write_statements_ratio: ratio(large.write_statements_per_s, small.write_statements_per_s),
      statements_note: ctx.pgStatStatements.loaded ? "" : ctx.pgStatStatements.reason,
    };
  });
}
