import pg from "pg";
import { createGrpcClient, type GrpcClient, WorkflowService } from "@trellis/proto";
import { cleanup } from "./cleanup.js";
import type { BenchContext } from "./context.js";
import { withDatabaseName } from "@trellis/db";
import { BENCH_SQL, benchServerUrl, createBenchDatabase, dropBenchDatabase } from "./database.js";
import { Deadline } from "./deadline.js";
import { ResourceMonitor } from "./monitor.js";
import { freePort } from "./ports.js";
import { NOOP_CAPABILITY } from "./workflows.js";
import { ManagedProcess } from "./process.js";
import { benchRedisUrl, deleteRedisPrefix } from "./redis.js";

/** Options of {@link withEngineStack}. */
export interface StackOptions {
  /** Short name of the workload, used in the database name and the queue prefix. */
  label: string;
  /** WORKER_CAPABILITIES of the worker. */
  capabilities: readonly string[];
  /** Where the worker calls ExecuteNode. */
  nodeServiceAddr: string;
  /** WORKER_CONCURRENCY of the worker. */
  workerConcurrency: number;
  /** Directory of the apps' log files. */
  logDir: string;
  /** Worker processes (the same settings, each its own WORKER_ID); default 1. */
  workers?: number;
  /** Scheduler processes (the same settings); default 1. */
  schedulers?: number;
  /** More environment for every app (e.g. pool sizes), over the bench's own. */
  env?: Record<string, string>;
  /** The PostgreSQL server to create the workload's database on (any database's URL); default the bench's. */
  serverUrl?: string;
  /** The Redis of the queues; default the bench's. */
  redisUrl?: string;
}

/**
 * The stack every workload runs on: a worker serving the no-op capability, calling the bench's shared NodeService
 * at the bench's concurrency.
 */
export function noopStackOptions(ctx: BenchContext, label: string): StackOptions {
  return {
    label,
    capabilities: [NOOP_CAPABILITY],
    nodeServiceAddr: ctx.nodeService.address,
    workerConcurrency: ctx.workerConcurrency,
    logDir: ctx.logDir,
  };
}

/** How long the apps may take to answer /readyz (tsx compiles them at start; the machine may be busy). */
const START_TIMEOUT_MS = 120_000;

/**
 * One copy of the engine for one workload: a fresh database (migrated with runMigrations), a fresh BullMQ
 * prefix, and the api, scheduler and worker apps as separate processes, plus a typed API client and a small
 * pool for the bench's own reads.
 */
export class EngineStack {
  /** The typed WorkflowService client. */
  readonly api: GrpcClient<typeof WorkflowService>;
  /** The bench's reads of the workload's database (max 3 connections). */
  readonly pool: pg.Pool;
  private readonly processes = new Map<string, ManagedProcess>();
  private stopped: Promise<void> | null = null;
  private unregister: () => void = () => undefined;

  private constructor(
    readonly databaseName: string,
    readonly databaseUrl: string,
    readonly queuePrefix: string,
    readonly grpcAddress: string,
    /** The PostgreSQL server (any database's URL) and the Redis the stack runs on. */
    readonly serverUrl: string,
    readonly redisUrl: string,
  ) {
    this.api = createGrpcClient(WorkflowService, grpcAddress);
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: 3, application_name: "trellis-bench" });
    this.pool.on("error", () => undefined);
  }

  /** The (first) worker process (for its RSS). */
  get worker(): ManagedProcess {
    return this.processes.get("worker")!;
  }

  /** The process id of every app, by name (`api`, `scheduler`, `worker`, `worker-2`, ...). */
  pids(): Record<string, number> {
    const pids: Record<string, number> = {};
    for (const [name, p] of this.processes) pids[name] = p.pid;
    return pids;
  }

  /** Throws when any app has died. */
  assertRunning(): void {
    for (const p of this.processes.values()) p.assertRunning();
  }

  /**
   * Starts measuring the apps' CPU (and `extra` processes', name -> pid) and, unless `sampleWaits` is false, the
   * database's wait states (a query every 50 ms on the workload's database, which its statistics then count).
   */
  monitor(extra: Record<string, number> = {}, sampleWaits = true): Promise<ResourceMonitor> {
    return ResourceMonitor.start({ ...this.pids(), ...extra }, sampleWaits ? this.databaseUrl : undefined);
  }

  /** Runs one of the bench's own queries (tagged with BENCH_SQL) on the workload's database. */
  async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    return (await this.pool.query<R>(`${BENCH_SQL} ${sql}`, params)).rows;
  }

  /** Creates the database and starts the apps; on failure everything started is torn down. */
  static async start(options: StackOptions): Promise<EngineStack> {
    const stamp = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const databaseName = `trellis_bench_${options.label}_${stamp}`;
    const queuePrefix = `bench-${options.label}-${stamp}`;
    const workers = Math.max(1, options.workers ?? 1);
    const schedulers = Math.max(1, options.schedulers ?? 1);
    const serverUrl = options.serverUrl ?? benchServerUrl();
    const redisUrl = options.redisUrl ?? benchRedisUrl();
    const [grpcPort, apiHttp, ...appHttp] = await Promise.all(
      Array.from({ length: 2 + schedulers + workers }, () => freePort()),
    );
    const schedulerHttp = appHttp.slice(0, schedulers);
    const workerHttp = appHttp.slice(schedulers);
    const stack = new EngineStack(
      databaseName,
      withDatabaseName(serverUrl, databaseName),
      queuePrefix,
      `127.0.0.1:${grpcPort}`,
      serverUrl,
      redisUrl,
    );
    // Registered before anything exists, so an interrupt at any point still drops the database.
    stack.unregister = cleanup.add(`engine stack ${options.label}`, () => stack.stop());
    try {
      await createBenchDatabase(databaseName, serverUrl);
      const logLevel = process.env.LOG_LEVEL ?? "warn";
      const common = { ...options.env, DATABASE_URL: stack.databaseUrl, LOG_LEVEL: logLevel };
      const queue = { REDIS_URL: redisUrl, QUEUE_PREFIX: queuePrefix };
      // [process name, app, environment, HTTP port]
      const apps: [string, string, Record<string, string>, number][] = [
        ["api", "api", { ...common, GRPC_ADDR: `127.0.0.1:${grpcPort}` }, apiHttp!],
      ];
      for (let i = 0; i < schedulers; i++) {
        apps.push([
          i === 0 ? "scheduler" : `scheduler-${i + 1}`,
          "scheduler",
          { ...common, ...queue },
          schedulerHttp[i]!,
        ]);
      }
      for (let i = 0; i < workers; i++) {
        const name = i === 0 ? "worker" : `worker-${i + 1}`;
        const env = {
          ...common,
          ...queue,
          WORKER_CAPABILITIES: options.capabilities.join(","),
          WORKER_CONCURRENCY: String(options.workerConcurrency),
          NODE_SERVICE_ADDR: options.nodeServiceAddr,
          WORKER_ID: `bench-${name}-${stamp}`,
        };
        apps.push([name, "worker", env, workerHttp[i]!]);
      }
      const deadline = new Deadline(START_TIMEOUT_MS, `${options.label}: starting the apps`);
      const ready: Promise<void>[] = [];
      for (const [name, app, env, httpPort] of apps) {
        const child = ManagedProcess.start({
          name: `${options.label}-${name}`,
          script: `apps/${app}/src/main.ts`,
          env: { ...env, HTTP_ADDR: `127.0.0.1:${httpPort}` },
          logDir: options.logDir,
        });
        stack.processes.set(name, child);
        ready.push(child.waitHttpReady(`127.0.0.1:${httpPort}`, deadline));
      }
      await Promise.all(ready);
      return stack;
    } catch (error) {
      await stack.stop();
      throw error;
    }
  }

  /** Stops the apps (SIGTERM, then SIGKILL), drops the database and deletes the prefix's Redis keys. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.api.close();
      await Promise.all([...this.processes.values()].map((p) => p.stop()));
      await this.pool.end().catch(() => undefined);
      await dropBenchDatabase(this.databaseName, this.serverUrl);
      await deleteRedisPrefix(this.queuePrefix, this.redisUrl);
      this.unregister();
    })();
    return this.stopped;
  }
}

/** Starts an engine stack, runs `fn` with it, and tears it down whatever happens. */
export async function withEngineStack<T>(options: StackOptions, fn: (stack: EngineStack) => Promise<T>): Promise<T> {
  const stack = await EngineStack.start(options);
  try {
    return await fn(stack);
  } finally {
    await stack.stop();
  }
}
