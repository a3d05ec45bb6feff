// The soak: the real apps under a mixed load (fan-outs, chains, failures, edits, cancels) for a while, one worker
// restarted on a period (alternately kill -9 and SIGTERM), invariants watched throughout and checked at the end, and
// the apps' footprint (RSS, Redis clients, PostgreSQL connections) sampled to show it stays flat. With `retention`
// the scheduler deletes finished workflows after a short RETENTION_DAYS, and the tables' rows and sizes (sampled
// throughout) show whether they plateau.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  EditType,
  ExecutionStatus,
  type GrpcClient,
  type Node,
  NodeSchema,
  WorkflowAction,
  type WorkflowService,
  WorkflowStatus,
} from "@trellis/proto";
import {
  type AppProcess,
  type ExecuteHandler,
  type FaultStack,
  type PrivateRedis,
  REPO_ROOT,
  checkInvariants,
  startFaultStack,
  startPrivateRedis,
  waitForInvariants,
} from "@trellis/testing";

/** Options of {@link runSoak}. */
export interface SoakOptions {
  /** How long the load runs. */
  durationMs: number;
  /** Period of the worker restarts. */
  restartEveryMs: number;
  /** Period of the footprint samples. @default 5000 */
  sampleEveryMs?: number;
  /** Workflows running at once at most. @default 12 */
  maxInFlight?: number;
  /** Progress lines. @default nothing */
  log?: (line: string) => void;
  /**
   * Runs the scheduler with this retention (RETENTION_DAYS, a fraction of a day, e.g. 0.0005 = 43.2 s;
   * RETENTION_INTERVAL_MS) and reports whether the tables plateau. @default the scheduler's default (30 days)
   */
  retention?: { days: number; intervalMs: number };
}

/** The tables whose rows and sizes the soak samples. */
export const SOAK_TABLES = ["workflows", "nodes", "node_edges", "workflow_events", "node_attempts"] as const;

/** One table at one sample: its rows and `pg_total_relation_size` (heap, indexes, TOAST). */
export interface TableSample {
  rows: number;
  bytes: number;
}

/** One footprint sample. */
export interface SoakSample {
  atS: number;
  inFlight: number;
  rssMiB: Record<string, number>;
  redisClients: number;
  pgConnections: number;
  /** Per table of {@link SOAK_TABLES}. */
  tables: Record<string, TableSample>;
}

/** Whether one figure stopped growing: the maximum of the last third of the samples against the middle third's. */
export interface PlateauFigure {
  first: number;
  middleMax: number;
  lastMax: number;
  end: number;
  /** lastMax / middleMax - 1. */
  growth: number;
  plateaued: boolean;
}

/** {@link plateau}'s verdict over the samples taken while the load ran. */
export interface PlateauReport {
  samples: number;
  tolerance: number;
  /** Per `<table>.rows` and `<table>.bytes`. */
  figures: Record<string, PlateauFigure>;
  /** Every figure plateaued (false too when there were fewer than 6 samples). */
  plateaued: boolean;
}

/**
 * How far the last third's maximum may exceed the middle third's for a plateau. A table growing at a steady rate
 * shows +50% on this measure (its maximum at 3/3 of the run against 2/3); a plateau moves with the load's throughput
 * (the rows kept are the workflows finished within RETENTION_DAYS), which varies by a fifth on a shared machine.
 */
export const PLATEAU_TOLERANCE = 0.25;

/**
 * Splits the series into thirds by sample and calls a figure plateaued when the maximum of the last third is at
 * most `tolerance` above the maximum of the middle third (the first third is the ramp-up: the first workflows are
 * not old enough to delete yet). With fewer than 6 samples nothing is called plateaued.
 */
export function plateau(series: Record<string, readonly number[]>, tolerance = PLATEAU_TOLERANCE): PlateauReport {
  const figures: Record<string, PlateauFigure> = {};
  let samples = 0;
  for (const [name, values] of Object.entries(series)) {
    const n = values.length;
    samples = Math.max(samples, n);
    const middle = values.slice(Math.floor(n / 3), Math.floor((2 * n) / 3));
    const last = values.slice(Math.floor((2 * n) / 3));
    const middleMax = middle.length ? Math.max(...middle) : Number.NaN;
    const lastMax = last.length ? Math.max(...last) : Number.NaN;
    const growth = middleMax > 0 ? lastMax / middleMax - 1 : lastMax > 0 ? Number.POSITIVE_INFINITY : 0;
    figures[name] = {
      first: values[0] ?? Number.NaN,
      middleMax,
      lastMax,
      end: values[n - 1] ?? Number.NaN,
      growth: Math.round(growth * 1000) / 1000,
      plateaued: n >= 6 && growth <= tolerance,
    };
  }
  const all = Object.values(figures);
  return { samples, tolerance, figures, plateaued: all.length > 0 && all.every((f) => f.plateaued) };
}

/** What a soak did and found. */
export interface SoakReport {
  durationS: number;
  /** When the load stopped (the samples after it are of the drain). */
  loadStoppedAtS: number;
  /** Workflows the soak created. */
  workflowsCreated: number;
  /** Workflows in the database at the end, by status (with retention: those not deleted yet). */
  workflows: Record<string, number>;
  nodes: number;
  restarts: { kill: number; term: number };
  redeliveredKeys: number;
  duplicateEffects: number;
  unexpectedErrors: string[];
  violationsDuringRun: string[];
  finalViolations: string[];
  samples: SoakSample[];
  /** Per figure: the first sample after warm-up, the last one, and the maximum in between. */
  footprint: Record<string, { warm: number; end: number; max: number }>;
  /** The tables' rows and sizes over the samples taken while the load ran: did they plateau? */
  tables: PlateauReport;
  /** The retention the scheduler ran with, and what it deleted; absent when the soak ran without. */
  retention?: {
    days: number;
    intervalMs: number;
    deletedWorkflows: number;
    /** VACUUMs of the five tables the soak ran itself, standing in for autovacuum where the server has it off. */
    soakVacuums: number;
  };
}

const SLOW_MS = [50, 400] as const;

const handler: ExecuteHandler = async (request, _call, signal) => {
  const node = request.node!;
  const attempt = request.context!.attempt;
  const output = fromJson(ValueSchema, { node: node.id, attempt });
  switch (node.capability) {
    case "slow": {
      const ms = SLOW_MS[0] + Math.floor(Math.random() * (SLOW_MS[1] - SLOW_MS[0]));
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve(undefined);
        });
      });
      return { status: ExecutionStatus.SUCCESS, output };
    }
    case "fail":
      return { status: ExecutionStatus.TASK_ERROR, errorMessage: "this node always fails" };
    case "flaky":
      return attempt === 1
        ? { status: ExecutionStatus.INFRA_ERROR, errorMessage: "first attempt fails" }
        : { status: ExecutionStatus.SUCCESS, output };
    case "plan":
      return {
        status: ExecutionStatus.SUCCESS,
        output,
        edits: [0, 1].map((k) => ({
          type: EditType.INSERT,
          node: create(NodeSchema, { id: `${node.id}-sub${k}`, capability: "echo", parentIds: [node.id] }),
        })),
      };
    default:
      return { status: ExecutionStatus.SUCCESS, output };
  }
};

function node(id: string, capability: string, parentIds: string[] = []): Node {
  return create(NodeSchema, {
    id,
    capability,
    parentIds,
    retryPolicy: { maxAttempts: 4, initialBackoff: { nanos: 100_000_000 }, maxBackoff: { seconds: 1n } },
  });
}

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)]!;
}

/** A random workflow of the mix: fan-out/fan-in, chain, diamond with a failure, a planner that edits itself. */
function randomWorkflow(): Node[] {
  const shape = pick(["fan", "fan", "chain", "chain", "diamond", "failing", "plan"] as const);
  switch (shape) {
    case "fan": {
      const width = 5 + Math.floor(Math.random() * 20);
      const leaves = Array.from({ length: width }, (_, i) => node(`f${i}`, pick(["echo", "slow", "flaky"]), ["root"]));
      return [
        node("root", "echo"),
        ...leaves,
        node(
          "join",
          "echo",
          leaves.map((l) => l.id),
        ),
      ];
    }
    case "chain": {
      const length = 3 + Math.floor(Math.random() * 10);
      return Array.from({ length }, (_, i) => node(`c${i}`, pick(["echo", "slow"]), i ? [`c${i - 1}`] : []));
    }
    case "diamond":
      return [node("a", "echo"), node("b", "slow", ["a"]), node("c", "flaky", ["a"]), node("d", "echo", ["b", "c"])];
    case "failing":
      return [node("a", "echo"), node("b", "fail", ["a"]), node("c", "echo", ["a"]), node("d", "echo", ["b", "c"])];
    case "plan":
      return [node("p", "plan"), node("after", "slow", ["p"])];
  }
}

function codeOf(error: unknown): string {
  return grpc.status[(error as grpc.ServiceError).code] ?? String(error);
}

/** Runs the soak and reports; throws only when the stack cannot be started. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => undefined);
  const sampleEveryMs = options.sampleEveryMs ?? 5_000;
  const maxInFlight = options.maxInFlight ?? 12;
  let redis: PrivateRedis | undefined;
  let stack: FaultStack | undefined;
  try {
    redis = await startPrivateRedis();
    stack = await startFaultStack({ name: "soak", redisUrl: redis.url, handler, logLevel: "warn" });
    const capabilities = ["echo", "slow", "fail", "flaky", "plan"];
    const [apiStarted, scheduler, stable] = await Promise.all([
      stack.startApi(),
      stack.startScheduler(
        options.retention
          ? {
              env: {
                RETENTION_DAYS: String(options.retention.days),
                RETENTION_INTERVAL_MS: String(options.retention.intervalMs),
              },
            }
          : {},
      ),
      stack.startWorker(capabilities, { name: "worker-stable" }),
    ]);
    const api: GrpcClient<typeof WorkflowService> = apiStarted.client;
    let restarting: AppProcess = await stack.startWorker(capabilities, { name: "worker-restarted-0" });
    log(
      `stack up: api, scheduler, 2 workers; queue prefix ${stack.queuePrefix}; Redis ${redis.url}; retention ${
        options.retention
          ? `${options.retention.days} days (${Math.round(options.retention.days * 86_400_000) / 1000} s), every ${options.retention.intervalMs} ms`
          : "the default (30 days)"
      }`,
    );

    const started = Date.now();
    const deadline = () => Date.now() + 10_000;
    const all = new Set<string>();
    const inFlight = new Set<string>();
    const unexpected: string[] = [];
    const violationsDuringRun: string[] = [];
    const samples: SoakSample[] = [];
    const restarts = { kill: 0, term: 0 };
    const admin = redis.client();
    const stackRef = stack;

    const sample = async () => {
      const rssMiB: Record<string, number> = {};
      for (const app of [apiStarted.app, scheduler, stable, restarting]) {
        const name = app.name.startsWith("worker-restarted") ? "worker-restarted" : app.name;
        rssMiB[name] = Math.round((app.rssBytes() / 1024 / 1024) * 10) / 10;
      }
      const clients = Number(/connected_clients:(\d+)/.exec(await admin.info("clients"))?.[1] ?? -1);
      const { rows } = await stackRef.db.pool.query<{ n: number }>(
        "select count(*)::int as n from pg_stat_activity where datname = $1 and application_name like 'trellis-%'",
        [stackRef.db.name],
      );
      const sized = await stackRef.db.pool.query<{ name: string; rows: number; bytes: string }>(
        SOAK_TABLES.map(
          (t) =>
            `select '${t}' as name, (select count(*)::int from ${t}) as rows, pg_total_relation_size('${t}') as bytes`,
        ).join(" union all "),
      );
      const tables: Record<string, TableSample> = {};
      for (const r of sized.rows) tables[r.name] = { rows: r.rows, bytes: Number(r.bytes) };
      const s: SoakSample = {
        atS: Math.round((Date.now() - started) / 1000),
        inFlight: inFlight.size,
        rssMiB,
        // The sampler's own connection is not the apps'.
        redisClients: clients - 1,
        pgConnections: rows[0]!.n,
        tables,
      };
      samples.push(s);
      log(
        `t=${s.atS}s in flight ${s.inFlight}, RSS MiB ${JSON.stringify(rssMiB)}, Redis clients ${s.redisClients}, PG connections ${s.pgConnections}; rows ${SOAK_TABLES.map((t) => `${t} ${tables[t]?.rows}`).join(", ")}; MiB ${SOAK_TABLES.map((t) => ((tables[t]?.bytes ?? 0) / 1048576).toFixed(1)).join("/")}`,
      );
    };

    const watch = async () => {
      const found = await checkInvariants({
        pool: stackRef.db.pool,
        redis: stackRef.redis,
        queuePrefix: stackRef.queuePrefix,
        recovery: stackRef.timings,
        ledger: stackRef.ledger,
        slackMs: 2_000,
      });
      // I5 settles a moment after each worker restart (stale jobs of the dead worker): it is checked at the end.
      for (const v of found.filter((x) => x.invariant !== "I5"))
        violationsDuringRun.push(`${v.invariant}: ${v.message}`);
    };

    let watching: Promise<void> | null = null;
    // Deleted rows leave dead tuples that only (auto)vacuum makes reusable; a server with autovacuum off (a CI
    // server, for speed) would grow the tables' files however many rows retention deletes. The soak then stands in
    // for autovacuum: a plain VACUUM of the five tables every 30 s (autovacuum_naptime is 60 s).
    const { rows: av } = await stack.db.pool.query<{ autovacuum: string }>("show autovacuum");
    let soakVacuums = 0;
    let vacuuming: Promise<void> | null = null;
    const vacuumTimer =
      options.retention && av[0]?.autovacuum === "off"
        ? setInterval(() => {
            vacuuming ??= stackRef.db.pool
              .query(`vacuum (analyze) ${SOAK_TABLES.join(", ")}`)
              .then(() => {
                soakVacuums++;
              })
              .catch((e: unknown) => log(`vacuum failed: ${String(e)}`))
              .finally(() => {
                vacuuming = null;
              });
          }, 30_000)
        : null;
    if (vacuumTimer) log("the server's autovacuum is off: the soak VACUUMs the five tables every 30 s instead");
    const timers = [
      setInterval(() => void sample().catch((e: unknown) => log(`sample failed: ${String(e)}`)), sampleEveryMs),
      setInterval(() => {
        watching ??= watch()
          .catch((e: unknown) => log(`invariant check failed: ${String(e)}`))
          .finally(() => {
            watching = null;
          });
      }, 3_000),
      setInterval(() => {
        void (async () => {
          const old = restarting;
          const kill = (restarts.kill + restarts.term) % 2 === 0;
          if (kill) {
            await old.kill();
            restarts.kill++;
          } else {
            await old.stop(15_000);
            restarts.term++;
          }
          restarting = await stackRef.startWorker(capabilities, {
            name: `worker-restarted-${restarts.kill + restarts.term}`,
          });
          log(`worker restarted (${kill ? "kill -9" : "SIGTERM"})`);
        })().catch((e: unknown) => unexpected.push(`restart: ${String(e)}`));
      }, options.restartEveryMs),
    ];
    await sample();

    const act = async (workflowId: string) => {
      const roll = Math.random();
      if (roll < 0.1) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        await api
          .updateWorkflow({ workflowId, action: WorkflowAction.CANCEL }, { deadline: deadline() })
          .catch((e: unknown) => codeOf(e) === "FAILED_PRECONDITION" || unexpected.push(`cancel: ${codeOf(e)}`));
      } else if (roll < 0.25) {
        const wf = await stackRef.stateManager.getWorkflow(workflowId);
        const parent = pick(wf.nodes).id;
        await api
          .editWorkflow(
            { workflowId, edits: [{ type: EditType.INSERT, node: node(`extra-${parent}`, "echo", [parent]) }] },
            { deadline: deadline() },
          )
          .catch((e: unknown) => codeOf(e) === "FAILED_PRECONDITION" || unexpected.push(`edit: ${codeOf(e)}`));
      }
    };

    while (Date.now() - started < options.durationMs) {
      if (inFlight.size < maxInFlight) {
        try {
          const { workflow } = await api.createWorkflow(
            { name: "soak", nodes: randomWorkflow() },
            { deadline: deadline() },
          );
          all.add(workflow!.id);
          inFlight.add(workflow!.id);
          void act(workflow!.id).catch((e: unknown) => unexpected.push(`action: ${String(e)}`));
        } catch (error) {
          unexpected.push(`create: ${codeOf(error)}`);
        }
      }
      for (const id of [...inFlight]) {
        const status = await stackRef.stateManager.getWorkflowStatus(id);
        if (
          status === WorkflowStatus.SUCCEEDED ||
          status === WorkflowStatus.FAILED ||
          status === WorkflowStatus.CANCELLED
        ) {
          inFlight.delete(id);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    clearInterval(timers[2]);
    const loadStoppedAtS = Math.round((Date.now() - started) / 1000);
    const loadSamples = samples.length;
    log(`load stopped after ${Math.round((Date.now() - started) / 1000)} s; ${inFlight.size} workflows still running`);
    const finalViolations: string[] = [];
    try {
      // With retention the workflows finished long ago may be gone: wait for those still running.
      await stackRef.waitFinished(options.retention ? [...inFlight] : [...all], stackRef.recoveryBoundMs + 60_000);
      await waitForInvariants(
        {
          pool: stackRef.db.pool,
          redis: stackRef.redis,
          queuePrefix: stackRef.queuePrefix,
          recovery: stackRef.timings,
          ledger: stackRef.ledger,
          requireFinished: true,
          workflowIds: [...all],
        },
        30_000,
      );
    } catch (error) {
      finalViolations.push((error as Error).message);
    }
    await sample();
    clearInterval(timers[0]);
    clearInterval(timers[1]);
    if (vacuumTimer) clearInterval(vacuumTimer);
    await vacuuming;
    await watching;

    const { rows: statuses } = await stackRef.db.pool.query<{ status: string; n: number }>(
      "select status, count(*)::int as n from workflows group by status",
    );
    const { rows: nodeCount } = await stackRef.db.pool.query<{ n: number }>("select count(*)::int as n from nodes");
    const warmIndex = Math.min(samples.length - 1, Math.max(1, Math.floor(samples.length / 4)));
    const series: Record<string, number[]> = {};
    const add = (name: string, value: number) => {
      series[name] = [...(series[name] ?? []), value];
    };
    for (const s of samples) {
      for (const [app, rss] of Object.entries(s.rssMiB)) add(`rssMiB.${app}`, rss);
      add("redisClients", s.redisClients);
      add("pgConnections", s.pgConnections);
    }
    const tableSeries: Record<string, number[]> = {};
    for (const s of samples.slice(0, loadSamples)) {
      for (const t of SOAK_TABLES) {
        tableSeries[`${t}.rows`] = [...(tableSeries[`${t}.rows`] ?? []), s.tables[t]?.rows ?? 0];
        tableSeries[`${t}.bytes`] = [...(tableSeries[`${t}.bytes`] ?? []), s.tables[t]?.bytes ?? 0];
      }
    }
    const footprint: SoakReport["footprint"] = {};
    for (const [name, values] of Object.entries(series)) {
      footprint[name] = {
        warm: values[warmIndex]!,
        end: values[values.length - 1]!,
        max: Math.max(...values.slice(warmIndex)),
      };
    }
    const remaining = statuses.reduce((sum, r) => sum + r.n, 0);
    return {
      durationS: Math.round((Date.now() - started) / 1000),
      loadStoppedAtS,
      workflowsCreated: all.size,
      workflows: Object.fromEntries(statuses.map((r) => [r.status, r.n])),
      nodes: nodeCount[0]!.n,
      restarts,
      redeliveredKeys: stackRef.ledger.redelivered().length,
      duplicateEffects: stackRef.ledger.duplicates().length,
      unexpectedErrors: unexpected,
      violationsDuringRun: [...new Set(violationsDuringRun)],
      finalViolations,
      samples,
      footprint,
      tables: plateau(tableSeries),
      ...(options.retention
        ? { retention: { ...options.retention, deletedWorkflows: all.size - remaining, soakVacuums } }
        : {}),
    };
  } finally {
    await stack?.close();
    await redis?.close();
  }
}

/** Writes a report as `test-artifacts/soak-<time>.json`; returns the path. */
export function saveSoakReport(report: SoakReport): string {
  mkdirSync(join(REPO_ROOT, "test-artifacts"), { recursive: true });
  const path = join(REPO_ROOT, "test-artifacts", `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  return path;
}
