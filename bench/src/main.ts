/**
 * `npm run bench`: runs the workloads of issue 7 against the real apps (api, scheduler, worker as separate
 * processes, a fresh database and queue prefix per workload) and a no-op NodeService, next to raw-BullMQ
 * baselines on the same NodeService; prints a table and writes bench/results/latest.json. See docs/benchmarks.md.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkRedis } from "@trellis/queue";
import { type BenchOptions, USAGE, type WorkloadName, parseBenchArgs } from "./cli.js";
import { cleanup } from "./harness/cleanup.js";
import type { BenchContext } from "./harness/context.js";
import { enablePgStatStatements, pgStatStatementsStatus, postgresInfo } from "./harness/database.js";
import { Deadline } from "./harness/deadline.js";
import { loadAverage, machineInfo } from "./harness/machine.js";
import type { ResourceUsage } from "./harness/monitor.js";
import { NoopNodeService } from "./harness/node-service-client.js";
import { RESULTS_DIR } from "./harness/paths.js";
import { benchRedisUrl } from "./harness/redis.js";
import { type Collected, emptyCollected, renderTable, resultsJson, tableRows } from "./report.js";
import { FULL_SIZES, QUICK_SIZES } from "./sizes.js";
import { runBaselineChain } from "./workloads/baseline-chain.js";
import { runBaselineThroughput } from "./workloads/baseline-throughput.js";
import { runW1 } from "./workloads/w1-throughput.js";
import { runW2 } from "./workloads/w2-chain.js";
import { runW3 } from "./workloads/w3-wide.js";
import { runW4 } from "./workloads/w4-edits.js";
import { runW5 } from "./workloads/w5-footprint.js";
import { runW7 } from "./workloads/w7-long-nodes.js";
import { runW8, runW8Rate } from "./workloads/w8-flow-control.js";
import { runW9 } from "./workloads/w9-capacity.js";

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function fmt(value: number, digits = 1): string {
  return value.toLocaleString("en-US", { maximumFractionDigits: digits });
}

/** One line on what the processes did: CPU cores each, and where PostgreSQL's connections waited. */
function describeResources(r: ResourceUsage): string {
  const cpu = Object.entries(r.cpu_cores)
    .sort((a, b) => b[1] - a[1])
    .map(([name, cores]) => `${name} ${fmt(cores, 2)}`)
    .join(", ");
  return (
    `cpu cores: ${cpu}; machine ${fmt(r.machine_busy_cores, 2)} busy; ` +
    `pg (${fmt(r.pg_busy_connections)} busy): ${r.pg_waits}`
  );
}

/** Runs one workload step; a failure is logged loudly and recorded, and the bench goes on with the next. */
async function step<T>(
  collected: Collected,
  name: string,
  run: number,
  fn: () => Promise<T>,
  into: T[],
  describe: (result: T) => string,
): Promise<void> {
  if (cleanup.stopping) return;
  const started = Date.now();
  try {
    const result = await fn();
    into.push(result);
    log(`run ${run} ${name}: ${describe(result)} (${fmt((Date.now() - started) / 1000)} s)`);
    const resources = (result as { resources?: ResourceUsage }).resources;
    if (resources) log(`    ${describeResources(resources)}`);
    // W8's phase alone (its `resources` are the phase beside the capped backlog).
    const alone = (result as { resources_alone?: ResourceUsage }).resources_alone;
    if (alone) log(`    alone: ${describeResources(alone)}`);
  } catch (error) {
    if (cleanup.stopping) return;
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    collected.errors.push({ workload: name, run, message: error instanceof Error ? error.message : String(error) });
    log(`run ${run} ${name}: FAILED\n${message}`);
  }
}

async function runRun(ctx: BenchContext, options: BenchOptions, run: number, collected: Collected): Promise<void> {
  const has = (w: WorkloadName) => options.only.includes(w);
  const label = (w: string) => `${w}r${run}`;
  if (has("w1")) {
    await step(
      collected,
      "w1-baseline",
      run,
      () => runBaselineThroughput(ctx, label("b1")),
      collected.w1Baseline,
      (r) => `${fmt(r.jobs_per_s, 0)} jobs/s, machine CPU ${fmt(r.machine_cpu_ms_per_job, 2)} ms/job`,
    );
    await step(
      collected,
      "w1",
      run,
      () => runW1(ctx, label("w1")),
      collected.w1,
      (r) => `${fmt(r.nodes_per_s, 0)} nodes/s, machine CPU ${fmt(r.machine_cpu_ms_per_node, 2)} ms/node`,
    );
  }
  if (has("w2")) {
    await step(
      collected,
      "w2-baseline",
      run,
      () => runBaselineChain(ctx, label("b2")),
      collected.w2Baseline,
      (r) => `hop p50 ${fmt(r.hop_p50_ms, 2)} ms, p99 ${fmt(r.hop_p99_ms, 2)} ms`,
    );
    await step(
      collected,
      "w2",
      run,
      () => runW2(ctx, label("w2")),
      collected.w2,
      (r) =>
        `hop (response -> next call) p50 ${fmt(r.hop_from_response_p50_ms, 2)} ms, p99 ` +
        `${fmt(r.hop_from_response_p99_ms, 2)} ms = write ${fmt(r.part_write_p50_ms)} + to start ` +
        `${fmt(r.part_to_start_p50_ms)} + start to call ${fmt(r.part_start_to_call_p50_ms)} ms (p50s); ` +
        `from commit p50 ${fmt(r.hop_from_commit_p50_ms, 2)} ms, p99 ${fmt(r.hop_from_commit_p99_ms, 2)} ms`,
    );
  }
  if (has("w3")) {
    await step(
      collected,
      "w3",
      run,
      () => runW3(ctx, label("w3")),
      collected.w3,
      (r) =>
        `create ${fmt(r.create_ms, 0)} ms, total ${fmt(r.total_ms, 0)} ms, per-node ratio ${fmt(r.per_node_ratio, 2)}`,
    );
  }
  if (has("w4")) {
    await step(
      collected,
      "w4",
      run,
      () => runW4(ctx, label("w4")),
      collected.w4,
      (r) => `apply ${fmt(r.apply_ms, 0)} ms, finish ${fmt(r.finish_ms, 0)} ms`,
    );
  }
  if (has("w8")) {
    await step(
      collected,
      "w8",
      run,
      () => runW8(ctx, label("w8"), run),
      collected.w8,
      (r) =>
        `unlimited ${fmt(r.alone_nodes_per_s, 0)} nodes/s alone, ${fmt(r.backlog_nodes_per_s, 0)} beside the ` +
        `capped backlog (ratio ${fmt(r.ratio ?? Number.NaN, 2)}; ${r.order}; held ${fmt(r.held_at_start, 0)} -> ` +
        `${fmt(r.held_at_end, 0)}); capped ${fmt(r.capped_calls_per_s, 0)} calls/s beside it, ` +
        `${fmt(r.capped_calls_per_s_alone, 0)} alone (cap/hold allows ${fmt(r.capped_calls_per_s_possible, 0)}), ` +
        `at most ${r.capped_max_in_flight} in flight (cap ${r.cap})`,
    );
  }
  if (!cleanup.stopping) await ctx.nodeService.reset();
}

async function main(): Promise<number> {
  let parsed: BenchOptions | "help";
  try {
    parsed = parseBenchArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (parsed === "help") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const options = parsed;
  const startedAt = Date.now();
  cleanup.handleSignals();

  try {
    await postgresInfo();
  } catch (error) {
    process.stderr.write(`bench: PostgreSQL is not reachable: ${(error as Error).message}\n`);
    return 1;
  }
  try {
    await checkRedis(benchRedisUrl());
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n`);
    return 1;
  }

  let statements = await pgStatStatementsStatus();
  const countsStatements = options.only.includes("w5") || options.only.includes("w7");
  if (countsStatements && !statements.loaded && options.enablePgStatStatements) {
    log("adding pg_stat_statements to shared_preload_libraries and restarting PostgreSQL");
    await enablePgStatStatements(new Deadline(60_000, "enabling pg_stat_statements"));
    statements = await pgStatStatementsStatus();
  }
  if (countsStatements && !statements.loaded) log(`W5/W7 statement counts unavailable: ${statements.reason}`);

  const base = options.quick ? QUICK_SIZES : FULL_SIZES;
  const sizes =
    options.w8CappedHoldMs === null ? base : { ...base, w8: { ...base.w8, cappedHoldMs: options.w8CappedHoldMs } };
  const workerConcurrency = Number(process.env.WORKER_CONCURRENCY ?? 16);
  const logDir = mkdtempSync(join(tmpdir(), "trellis-bench-"));
  const machine = await machineInfo();
  log(
    `${options.quick ? "quick" : "full"} bench, ${options.runs} run(s) of ${options.only.join(",")}; ` +
      `load average ${fmt(machine.load_average_start, 2)} on ${machine.cpus} CPUs; app logs in ${logDir}`,
  );

  const nodeService = await NoopNodeService.start(logDir, new Deadline(60_000, "starting the no-op NodeService"));
  const ctx: BenchContext = { sizes, nodeService, workerConcurrency, logDir, pgStatStatements: statements, log };
  const collected = emptyCollected();
  try {
    for (let run = 1; run <= options.runs; run++) await runRun(ctx, options, run, collected);
    if (options.only.includes("w5")) {
      // W5 reads sizes and counts, not timings, and takes long at full size: it runs once per invocation.
      await step(
        collected,
        "w5",
        1,
        () => runW5(ctx, "w5"),
        collected.w5,
        (r) =>
          `RSS ${fmt(r.rss_first_mb)} MiB at ${r.first_nodes} nodes` +
          (r.rss_second_mb === null ? "" : `, ${fmt(r.rss_second_mb)} MiB at ${r.second_nodes}`) +
          (r.statements_per_node === null ? "" : `, ${fmt(r.statements_per_node, 2)} statements/node`),
      );
    }
    if (options.only.includes("w7")) {
      // W7 holds its nodes for a fixed time and measures rates, not timings: once per invocation, as W5.
      await step(
        collected,
        "w7",
        1,
        () => runW7(ctx, "w7"),
        collected.w7,
        (r) =>
          r.cases
            .map(
              (c) =>
                `${c.running_nodes} running: ${fmt(c.tuples_written_per_s)} tuples written/s, ` +
                `${fmt(c.commits_per_s)} commits/s` +
                (c.write_statements_per_s === null ? "" : `, ${fmt(c.write_statements_per_s)} write statements/s`) +
                `, all running after ${fmt(c.ramp_ms / 1000)} s`,
            )
            .join("; ") + ` (${r.workers} worker(s) x ${r.worker_concurrency})`,
      );
    }
    if (options.only.includes("w8")) {
      // W8's rate window is a count over a fixed time (a minute at full size): once per invocation, as W5 and W7.
      await step(
        collected,
        "w8-rate",
        1,
        () => runW8Rate(ctx, "w8rate"),
        collected.w8Rate,
        (r) =>
          `${r.starts} starts in ${fmt(r.window_s)} s at ${r.rate_per_s}/s + burst ${r.burst} ` +
          `(allowed ${fmt(r.allowed)}): ratio ${fmt(r.ratio, 3)}; ${fmt(r.rate_after_first_s, 2)}/s after the first second`,
      );
    }
    if (options.only.includes("w9")) {
      // W9 counts what a node costs each server and measures throughput per process layout, on servers of its
      // own: once per invocation.
      await step(
        collected,
        "w9",
        1,
        () => runW9(ctx, "w9"),
        collected.w9,
        (r) =>
          `${fmt(r.footprint.statements_per_node, 2)} statements, ${fmt(r.footprint.wal_bytes_per_node, 0)} WAL bytes, ` +
          `${fmt(r.footprint.redis_commands_per_node, 1)} Redis commands per node; ` +
          r.scaling.map((s) => `${s.workers}w/${s.schedulers}s ${fmt(s.nodes_per_s, 0)} nodes/s`).join(", "),
      );
    }
  } finally {
    await nodeService.stop();
  }

  machine.load_average_end = loadAverage();
  const date = new Date().toISOString();
  const json = resultsJson(collected, {
    date,
    mode: options.quick ? "quick" : "full",
    runs: options.runs,
    sizes,
    workerConcurrency,
    machine,
    durationS: (Date.now() - startedAt) / 1000,
  });
  mkdirSync(RESULTS_DIR, { recursive: true });
  const text = `${JSON.stringify(json, null, 2)}\n`;
  writeFileSync(join(RESULTS_DIR, "latest.json"), text);
  writeFileSync(join(RESULTS_DIR, `${date.replace(/[:.]/g, "-")}.json`), text);

  process.stdout.write(
    `\nTrellis bench, ${date}: ${options.quick ? "--quick (smaller sizes; targets are for the full sizes)" : "full"}, ` +
      `median of ${options.runs} run(s)${onceNote(options.only)}; ` +
      `${machine.cpus} CPUs, load average ${fmt(machine.load_average_start, 2)} -> ${fmt(loadAverage(), 2)}\n\n`,
  );
  process.stdout.write(`${renderTable(tableRows(collected))}\n\n`);
  const w5 = collected.w5[0];
  if (w5?.statements_note) process.stdout.write(`W5 statements: ${w5.statements_note}\n`);
  const w7 = collected.w7[0];
  if (w7?.statements_note) process.stdout.write(`W7 statements: ${w7.statements_note}\n`);
  process.stdout.write(`wrote ${join(RESULTS_DIR, "latest.json")}\n`);
  if (collected.errors.length > 0) {
    process.stdout.write(`\n${collected.errors.length} step(s) FAILED:\n`);
    for (const e of collected.errors)
      process.stdout.write(`  run ${e.run} ${e.workload}: ${e.message.split("\n")[0]}\n`);
    return 1;
  }
  return 0;
}

/** Which of the workloads asked for run once per invocation, for the table's header. */
function onceNote(only: readonly WorkloadName[]): string {
  const once = [
    only.includes("w5") ? "W5" : "",
    only.includes("w7") ? "W7" : "",
    only.includes("w8") ? "W8's rate window" : "",
    only.includes("w9") ? "W9" : "",
  ].filter((w) => w !== "");
  return once.length === 0 ? "" : ` (${once.join(", ")}: one run)`;
}

let code = 1;
try {
  code = await main();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  code = 1;
} finally {
  await cleanup.runAll();
}
process.exit(code);
