import { NodeQueues, createRedis } from "@trellis/queue";
import { nowMs } from "../harness/clock.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline, waitFor } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { PrivateServers } from "../harness/private-servers.js";
import { type EngineStack, noopStackOptions, withEngineStack } from "../harness/stack.js";
import {
  assertAllPassed,
  createWorkflow,
  independentNodes,
  lastFinishedAtMs,
  waitWorkflowsSucceeded,
} from "../harness/workflows.js";

/** A capability no worker of W9 serves: its nodes wait in Redis, for the memory a queued node takes. */
export const UNSERVED_CAPABILITY = "bench.unserved";

/** One command as Redis counted it over W9's footprint phase. */
export interface RedisCommandCount {
  command: string;
  calls: number;
  per_node: number;
}

/** One statement as pg_stat_statements counted it over W9's footprint phase. */
export interface W9Statement {
  calls: number;
  per_node: number;
  wal_bytes_per_node: number;
  query: string;
}

/** What one no-op node costs the shared services (W9's footprint phase: one worker, one scheduler). */
export interface W9Footprint {
  nodes: number;
  nodes_per_s: number;
  /** Top-level statements the apps ran on PostgreSQL (transaction control included; the bench's own left out). */
  statements_per_node: number;
  /** The same without BEGIN/COMMIT/ROLLBACK/SAVEPOINT. */
  statements_per_node_excl_tx: number;
  /** Transactions committed per node (pg_stat_database.xact_commit of the workload's database). */
  commits_per_node: number;
  /** WAL written by the whole (private) server per node: pg_current_wal_lsn() before and after. */
  wal_bytes_per_node: number;
  /** WAL records and full-page images per node (pg_stat_wal). */
  wal_records_per_node: number;
  wal_fpi_per_node: number;
  /** Rows inserted, updated and deleted per node (pg_stat_database). */
  rows_written_per_node: number;
  /** Growth of the database's size over the phase per node (tables, indexes, TOAST; dead row versions included). */
  database_bytes_per_node: number;
  /** Commands the (private) Redis processed per node (INFO stats, after CONFIG RESETSTAT). */
  redis_commands_per_node: number;
  /** Redis's used_memory after the phase minus before, per node (finished jobs are removed: about 0). */
  redis_bytes_retained_per_node: number;
  /** The most frequent Redis commands. */
  redis_top_commands: RedisCommandCount[];
  /** The most frequent statements, with the WAL each wrote. */
  top_statements: W9Statement[];
  /** CPU per process and PostgreSQL wait states over the phase. */
  resources: ResourceUsage;
  /** Busy CPU of the whole machine per node, milliseconds. */
  machine_cpu_ms_per_node: number;
  /** CPU of the (private) PostgreSQL server per node, milliseconds: its postmaster and every process under it. */
  postgres_cpu_ms_per_node: number;
  /** CPU of the (private) Redis server per node, milliseconds. */
  redis_cpu_ms_per_node: number;
  /** CPU of the worker and of the scheduler processes per node, milliseconds. */
  worker_cpu_ms_per_node: number;
  scheduler_cpu_ms_per_node: number;
}

/** W1's shape on `workers` worker processes and `schedulers` schedulers. */
export interface W9Scaling {
  workers: number;
  schedulers: number;
  nodes: number;
  nodes_per_s: number;
  machine_cpu_ms_per_node: number;
  /** Average cores the (private) PostgreSQL server and Redis used over the run. */
  postgres_cores: number;
  redis_cores: number;
  /** Average cores every worker process together used. */
  worker_cores: number;
  resources: ResourceUsage;
}

/** One W9 run. */
export interface W9Result {
  footprint: W9Footprint;
  /** Redis's used_memory per node waiting in its queue (`queued_nodes` nodes of a capability no worker serves). */
  redis_bytes_per_queued_node: number;
  queued_nodes: number;
  scaling: W9Scaling[];
  /** The PostgreSQL the run used: a private, durable server (fsync, full-page writes and synchronous commit on). */
  postgres_settings: Record<string, string>;
}

/** The process configurations W9 measures throughput on: [workers, schedulers]. */
export const W9_CONFIGS: readonly (readonly [number, number])[] = [
  [1, 1],
  [2, 1],
  [4, 1],
  [2, 2],
];

const TX_CONTROL = "^\\s*(begin|commit|rollback|start transaction|savepoint|release)";

/**
 * Runs W1's shape (`workflows` x `nodesPerWorkflow`, all created at once) on a stack that has run `already` such
 * workflows; nodes/s and resources.
 */
async function runThroughput(
  ctx: BenchContext,
  servers: PrivateServers,
  stack: EngineStack,
  label: string,
  already = 0,
): Promise<{ nodes: number; nodesPerS: number; resources: ResourceUsage; postgresCpuS: number; redisCpuS: number }> {
  const { workflows, nodesPerWorkflow } = ctx.sizes.w1;
  const nodes = workflows * nodesPerWorkflow;
  const deadline = new Deadline(Math.max(120_000, nodes * 30), `${label} (W9)`);
  const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid }, false);
  const cpuBefore = await servers.cpuSeconds();
  const firstSent = nowMs();
  await Promise.all(
    Array.from({ length: workflows }, (_, i) =>
      createWorkflow(stack, `w9-${i}`, independentNodes(nodesPerWorkflow), deadline),
    ),
  );
  await waitWorkflowsSucceeded(stack, already + workflows, deadline, 50);
  const cpuAfter = await servers.cpuSeconds();
  const resources = await monitor.stop();
  const elapsed = (await lastFinishedAtMs(stack)) - firstSent;
  await assertAllPassed(stack, (already + workflows) * nodesPerWorkflow);
  await ctx.nodeService.reset();
  return {
    nodes,
    nodesPerS: nodes / (elapsed / 1000),
    resources,
    postgresCpuS: cpuAfter.postgres - cpuBefore.postgres,
    redisCpuS: cpuAfter.redis - cpuBefore.redis,
  };
}

/** Sums the cores of every process whose name starts with `prefix` (`worker`, `worker-2`, ...). */
function coresOf(resources: ResourceUsage, prefix: string): number {
  return Object.entries(resources.cpu_cores)
    .filter(([name]) => name === prefix || name.startsWith(`${prefix}-`))
    .reduce((sum, [, cores]) => sum + cores, 0);
}

/** The length of a monitor's window, seconds (its machine CPU over its average cores). */
function windowSeconds(resources: ResourceUsage): number {
  return resources.machine_busy_cpu_s / Math.max(resources.machine_busy_cores, 0.001);
}

/** Counters of the workload's database and the whole server. */
async function serverCounters(servers: PrivateServers, stack: EngineStack) {
  const [db] = await servers.admin<{
    lsn: string;
    xact_commit: string;
    written: string;
    size: string;
    wal_records: string;
    wal_fpi: string;
  }>(
    `select pg_current_wal_lsn()::text as lsn, d.xact_commit, d.tup_inserted + d.tup_updated + d.tup_deleted as written,
            pg_database_size($1) as size, w.wal_records, w.wal_fpi
       from pg_stat_database d, pg_stat_wal w where d.datname = $1`,
    [stack.databaseName],
  );
  if (!db) throw new Error(`no statistics for database ${stack.databaseName}`);
  return db;
}

/** Bytes between two LSNs (`X/Y`). */
function lsnBytes(from: string, to: string): number {
  const value = (lsn: string) => {
    const [hi, lo] = lsn.split("/");
    return Number.parseInt(hi!, 16) * 2 ** 32 + Number.parseInt(lo!, 16);
  };
  return value(to) - value(from);
}

/** Redis's used_memory. */
async function redisUsedMemory(servers: PrivateServers): Promise<number> {
  const info = await servers.withRedis((r) => r.info("memory"));
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? Number.NaN);
}

/**
 * The footprint: W1's shape on one worker and one scheduler of a private durable PostgreSQL and a private Redis,
 * with every counter of both servers read before and after.
 */
async function runFootprint(ctx: BenchContext, servers: PrivateServers, label: string): Promise<W9Footprint> {
  const options = { ...noopStackOptions(ctx, label), serverUrl: servers.serverUrl, redisUrl: servers.redisUrl };
  return withEngineStack(options, async (stack) => {
    // A first small run warms the apps (compiled paths, pools' connections, the functions' plans), unmeasured.
    const { nodesPerWorkflow } = ctx.sizes.w1;
    const warmDeadline = new Deadline(120_000, `${label} (W9 warm-up)`);
    const warmWorkflows = 4;
    await Promise.all(
      Array.from({ length: warmWorkflows }, (_, i) =>
        createWorkflow(stack, `w9-warm-${i}`, independentNodes(nodesPerWorkflow), warmDeadline),
      ),
    );
    await waitWorkflowsSucceeded(stack, warmWorkflows, warmDeadline, 50);
    await ctx.nodeService.reset();

    await servers.admin("select pg_stat_statements_reset()");
    await servers.withRedis((r) => r.config("RESETSTAT"));
    const memoryBefore = await redisUsedMemory(servers);
    const before = await serverCounters(servers, stack);
    const run = await runThroughput(ctx, servers, stack, label, warmWorkflows);
    const after = await serverCounters(servers, stack);
    const memoryAfter = await redisUsedMemory(servers);
    const commandStats = await servers.withRedis((r) => r.info("commandstats"));
    const stats = await servers.withRedis((r) => r.info("stats"));
    const nodes = run.nodes;
    const [totals] = await servers.admin<{ all: string | null; non_tx: string | null }>(
      `select sum(calls) as all, sum(calls) filter (where query !~* $1) as non_tx
         from pg_stat_statements where query not like '%trellis-bench%'`,
      [TX_CONTROL],
    );
    const top = await servers.admin<{ calls: string; wal_bytes: string; query: string }>(
      `select calls, wal_bytes, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) as query
         from pg_stat_statements where query not like '%trellis-bench%' order by calls desc limit 12`,
    );
    const commands = [...commandStats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)]
      .map((m) => ({ command: m[1]!, calls: Number(m[2]) }))
      // The bench's own INFO and CONFIG calls.
      .filter((c) => c.command !== "info" && !c.command.startsWith("config"))
      .sort((a, b) => b.calls - a.calls);
    const total = Number(/total_commands_processed:(\d+)/.exec(stats)?.[1] ?? Number.NaN);
    const own = [...commandStats.matchAll(/^cmdstat_(info|config[^:]*):calls=(\d+)/gm)].reduce(
      (sum, m) => sum + Number(m[2]),
      0,
    );
    const seconds = windowSeconds(run.resources);
    return {
      nodes,
      nodes_per_s: run.nodesPerS,
      statements_per_node: Number(totals?.all ?? 0) / nodes,
      statements_per_node_excl_tx: Number(totals?.non_tx ?? 0) / nodes,
      commits_per_node: (Number(after.xact_commit) - Number(before.xact_commit)) / nodes,
      wal_bytes_per_node: lsnBytes(before.lsn, after.lsn) / nodes,
      wal_records_per_node: (Number(after.wal_records) - Number(before.wal_records)) / nodes,
      wal_fpi_per_node: (Number(after.wal_fpi) - Number(before.wal_fpi)) / nodes,
      rows_written_per_node: (Number(after.written) - Number(before.written)) / nodes,
      database_bytes_per_node: (Number(after.size) - Number(before.size)) / nodes,
      redis_commands_per_node: (total - own) / nodes,
      redis_bytes_retained_per_node: (memoryAfter - memoryBefore) / nodes,
      redis_top_commands: commands.slice(0, 10).map((c) => ({ ...c, per_node: c.calls / nodes })),
      top_statements: top.map((t) => ({
        calls: Number(t.calls),
        per_node: Number(t.calls) / nodes,
        wal_bytes_per_node: Number(t.wal_bytes) / nodes,
        query: t.query,
      })),
      resources: run.resources,
      machine_cpu_ms_per_node: (run.resources.machine_busy_cpu_s * 1000) / nodes,
      postgres_cpu_ms_per_node: (run.postgresCpuS * 1000) / nodes,
      redis_cpu_ms_per_node: (run.redisCpuS * 1000) / nodes,
      worker_cpu_ms_per_node: (coresOf(run.resources, "worker") * seconds * 1000) / nodes,
      scheduler_cpu_ms_per_node: (coresOf(run.resources, "scheduler") * seconds * 1000) / nodes,
    };
  });
}

/**
 * Redis memory per queued node: `count` nodes of a capability no worker serves are claimed and enqueued; used_memory
 * with them waiting, minus before, per node.
 */
async function runQueuedMemory(ctx: BenchContext, servers: PrivateServers, label: string, count: number) {
  const options = { ...noopStackOptions(ctx, label), serverUrl: servers.serverUrl, redisUrl: servers.redisUrl };
  return withEngineStack(options, async (stack) => {
    const deadline = new Deadline(120_000, `${label} (W9 queued memory)`);
    const before = await redisUsedMemory(servers);
    const perWorkflow = 1_000;
    const nodes = Array.from({ length: perWorkflow }, (_, i) => ({ id: `u${i}`, capability: UNSERVED_CAPABILITY }));
    for (let i = 0; i < count / perWorkflow; i++) await createWorkflow(stack, `w9-unserved-${i}`, nodes, deadline);
    const redis = createRedis(servers.redisUrl);
    const queues = new NodeQueues(redis, stack.queuePrefix);
    try {
      await waitFor(`${count} jobs waiting in Redis`, deadline, async () => {
        stack.assertRunning();
        const counts = await queues.queue(UNSERVED_CAPABILITY).getJobCounts("wait", "prioritized", "delayed");
        const waiting = Object.values(counts).reduce((a, b) => a + b, 0);
        return waiting >= count ? true : undefined;
      });
    } finally {
      await queues.close();
      redis.disconnect();
    }
    const after = await redisUsedMemory(servers);
    return (after - before) / count;
  });
}

/**
 * W9 capacity: on a private durable PostgreSQL (with pg_stat_statements) and a private Redis, what one node costs
 * each server (statements, commits, WAL, rows, storage, Redis commands and memory) and the machine's CPU, then W1's
 * throughput on 1, 2 and 4 worker processes and on 2 schedulers: the figures of docs/capacity.md.
 */
export async function runW9(ctx: BenchContext, label: string): Promise<W9Result> {
  const servers = await PrivateServers.start();
  try {
    const settings = await servers.admin<{ name: string; setting: string }>(
      `select name, setting from pg_settings where name in
         ('fsync', 'full_page_writes', 'synchronous_commit', 'shared_buffers', 'wal_level', 'max_connections')`,
    );
    const footprint = await runFootprint(ctx, servers, `${label}f`);
    ctx.log(
      `w9: footprint ${fmt(footprint.statements_per_node)} statements, ${fmt(footprint.commits_per_node)} commits, ` +
        `${fmt(footprint.wal_bytes_per_node, 0)} WAL bytes, ${fmt(footprint.redis_commands_per_node)} Redis commands ` +
        `per node (${fmt(footprint.nodes_per_s, 0)} nodes/s)`,
    );
    const queuedNodes = ctx.sizes.w1.workflows * ctx.sizes.w1.nodesPerWorkflow >= 10_000 ? 10_000 : 2_000;
    const perQueued = await runQueuedMemory(ctx, servers, `${label}q`, queuedNodes);
    ctx.log(`w9: ${fmt(perQueued, 0)} bytes of Redis memory per queued node (${queuedNodes} queued)`);
    const scaling: W9Scaling[] = [];
    for (const [workers, schedulers] of W9_CONFIGS) {
      const options = {
        ...noopStackOptions(ctx, `${label}w${workers}s${schedulers}`),
        serverUrl: servers.serverUrl,
        redisUrl: servers.redisUrl,
        workers,
        schedulers,
      };
      const run = await withEngineStack(options, (stack) => runThroughput(ctx, servers, stack, options.label));
      scaling.push({
        workers,
        schedulers,
        nodes: run.nodes,
        nodes_per_s: run.nodesPerS,
        machine_cpu_ms_per_node: (run.resources.machine_busy_cpu_s * 1000) / run.nodes,
        postgres_cores: run.postgresCpuS / windowSeconds(run.resources),
        redis_cores: run.redisCpuS / windowSeconds(run.resources),
        worker_cores: coresOf(run.resources, "worker"),
        resources: run.resources,
      });
      ctx.log(
        `w9: ${workers} worker(s), ${schedulers} scheduler(s): ${fmt(run.nodesPerS, 0)} nodes/s, PostgreSQL ` +
          `${fmt(run.postgresCpuS / windowSeconds(run.resources))} cores, workers ` +
          `${fmt(coresOf(run.resources, "worker"))}, machine ${fmt(run.resources.machine_busy_cores)}`,
      );
    }
    return {
      footprint,
      redis_bytes_per_queued_node: perQueued,
      queued_nodes: queuedNodes,
      scaling,
      postgres_settings: Object.fromEntries(settings.map((s) => [s.name, s.setting])),
    };
  } finally {
    await servers.stop();
  }
}

function fmt(value: number, digits = 2): string {
  return value.toLocaleString("en-US", { maximumFractionDigits: digits });
}
