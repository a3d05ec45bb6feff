/**
 * Hot-path latency with and without retention deleting: fills a fresh database with finished workflows spread over
 * the last `--days` days (half of them past a 30-day retention at the default 60), then runs the hot path
 * (CreateWorkflow, the scheduler's claim, the worker's start and result) in `--loops` concurrent loops for
 * `--seconds` in all, in `--rounds` pairs of windows: alone, then while retention (the scheduler's Retention, 500
 * workflows a batch, its default pause) deletes the old half. Prints the latency percentiles of each phase and retention's rate. docs/reads-at-volume.md has a run.
 *
 *   npx tsx bench/src/retention-hot-path.ts [--workflows 100000] [--days 60] [--seconds 60] [--rounds 6] [--loops 4]
 */
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import {
  PgStateManager,
  createDatabase,
  createPool,
  deleteFinishedWorkflows,
  runMigrations,
  withDatabaseName,
} from "@trellis/db";
import { NodeSchema } from "@trellis/proto";
import { parseArgs } from "node:util";
import pg from "pg";
import pino from "pino";
import { Retention } from "../../apps/scheduler/src/retention.js";
import { fillWorkflows } from "./fill-workflows.js";

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Runs the hot path in `loops` loops until `until`; returns each node's claim-to-recorded time in ms. */
async function hotPath(sm: PgStateManager, loops: number, until: () => boolean): Promise<number[]> {
  const times: number[] = [];
  const loop = async () => {
    while (!until()) {
      const t = performance.now();
      await sm.createWorkflow({
        name: "hot",
        nodes: [create(NodeSchema, { id: "a", name: "a", capability: "echo" })],
      });
      for (const q of await sm.claimReadyNodes(100)) {
        const started = await sm.startNode(q.workflowId, q.nodeId);
        if (!started) continue;
        await sm.recordResult(q.workflowId, q.nodeId, started.lease, {
          kind: "success",
          output: fromJson(ValueSchema, { ok: true }),
          edits: [],
        });
      }
      times.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: loops }, loop));
  return times.sort((a, b) => a - b);
}

function describe(name: string, times: number[], seconds: number): string {
  const f = (x: number) => x.toFixed(1);
  return `| ${name} | ${times.length} | ${f(times.length / seconds)} | ${f(pct(times, 0.5))} | ${f(pct(times, 0.95))} | ${f(pct(times, 0.99))} |`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workflows: { type: "string", default: "100000" },
      days: { type: "string", default: "60" },
      seconds: { type: "string", default: "60" },
      rounds: { type: "string", default: "6" },
      loops: { type: "string", default: "4" },
    },
  });
  const server = process.env.BENCH_DATABASE_URL ?? "postgres://postgres:postgres@127.0.0.1:5432/postgres";
  const name = `trellis_retention_bench_${Date.now().toString(36)}`;
  const url = withDatabaseName(server, name);
  await runMigrations(url);
  const pool = createPool(url, { max: 10 });
  try {
    const fill = await fillWorkflows(url, { workflows: Number(values.workflows), days: Number(values.days) });
    const due = (
      await pool.query<{ n: number }>(
        "select count(*)::int as n from workflows where finished_at < now() - interval '30 days'",
      )
    ).rows[0]!.n;
    console.log(
      `filled ${values.workflows} workflows in ${fill.totalSeconds.toFixed(0)} s; ${due} finished over 30 days ago`,
    );
    const sm = new PgStateManager(createDatabase(pool));
    const seconds = Number(values.seconds);
    const loops = Number(values.loops);
    const rounds = Number(values.rounds);
    const window = (seconds * 1_000) / (2 * rounds);
    const until = (end: number) => () => Date.now() > end;
    await hotPath(sm, loops, until(Date.now() + 3_000)); // warm-up
    // Windows alone and with retention alternate, so the machine's other load weighs on both alike.
    const alone: number[] = [];
    const during: number[] = [];
    const batchMs: number[] = [];
    let deleted = 0;
    let deletingMs = 0;
    for (let round = 0; round < rounds; round++) {
      alone.push(...(await hotPath(sm, loops, until(Date.now() + window))));
      const retention = new Retention({
        days: 30,
        intervalMs: 3_600_000,
        batchSize: 500,
        pool,
        logger: pino({ level: "warn" }),
        deleteBatch: async (p, options) => {
          const t = performance.now();
          const batch = await deleteFinishedWorkflows(p, options);
          batchMs.push(performance.now() - t);
          return batch;
        },
      });
      const t = performance.now();
      const passing = retention.pass();
      during.push(...(await hotPath(sm, loops, until(Date.now() + window))));
      await retention.stop();
      deleted += (await passing).workflows;
      deletingMs += performance.now() - t;
    }
    alone.sort((a, b) => a - b);
    during.sort((a, b) => a - b);
    batchMs.sort((a, b) => a - b);
    console.log(
      `retention deleted ${deleted} workflows in ${(deletingMs / 1_000).toFixed(1)} s (${((deleted * 1_000) / deletingMs).toFixed(0)}/s), ` +
        `${batchMs.length} batches of 500: p50 ${pct(batchMs, 0.5).toFixed(0)} ms, max ${pct(batchMs, 1).toFixed(0)} ms`,
    );
    console.log("| phase | workflows | per s | p50 ms | p95 ms | p99 ms |");
    console.log("| --- | --- | --- | --- | --- | --- |");
    console.log(describe("hot path alone", alone, seconds / 2));
    console.log(describe("hot path while retention deletes", during, seconds / 2));
  } finally {
    await pool.end();
    const admin = new pg.Client({ connectionString: server });
    await admin.connect();
    await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
    await admin.end();
  }
}

main().catch((error) => {
  console.error(`retention-hot-path: ${(error as Error).stack}`);
  process.exit(1);
});
