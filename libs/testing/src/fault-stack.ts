import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { PgStateManager } from "@trellis/db";
import {
  type Node,
  NodeSchema,
  type Workflow,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
} from "@trellis/proto";
import { type RedisConnection, connectRedis, mastersOf } from "@trellis/queue";
import type { RedisOptions } from "ioredis";
import { AppGroup, type AppProcess } from "./app-process.js";
import { type TestDatabase, createTestDatabase } from "./database.js";
import { freePort } from "./free-port.js";
import { type InvariantOptions, type RecoverySettings, recoveryBoundMs, waitForInvariants } from "./invariants.js";
import { type ExecuteHandler, type NodeServiceServer, startNodeServiceServer } from "./node-service-server.js";
import { SideEffectLedger } from "./side-effect-ledger.js";
import { waitFor } from "./wait-for.js";

/** The engine's timing settings in a fault test: short, so faults are detected and repaired in seconds. */
export interface EngineTimings extends RecoverySettings {
  /** SCHEDULER_POLL_MS. */
  pollMs: number;
  /** WORKER_HEARTBEAT_MS. */
  heartbeatMs: number;
}

/**
 * Timings of the fault suite: a worker silent for 2 s is dead (heartbeat every 0.3 s), reconcile every 0.5 s, lost
 * jobs looked for after 1 s.
 */
export const FAULT_TIMINGS: EngineTimings = {
  reconcileIntervalMs: 500,
  reconcileQueuedAfterMs: 1_000,
  pollMs: 200,
  workerStaleMs: 2_000,
  heartbeatMs: 300,
};

/** Options of {@link startFaultStack}. */
export interface FaultStackOptions {
  /** Prefix of the test database's name. */
  name: string;
  /** The NodeService behaviour; it is wrapped by the stack's side-effect ledger. */
  handler: ExecuteHandler;
  /** Redis of the apps. @default TEST_REDIS_URL or redis://127.0.0.1:6379 (shared: only the stack's prefix is touched) */
  redisUrl?: string;
  /** ioredis options of the test's own connection to that Redis (e.g. the CA of a rediss:// one). @default none */
  redisOptions?: RedisOptions;
  /** Settings every app of the stack gets besides the stack's own (e.g. REDIS_TLS_CA). @default none */
  env?: Record<string, string>;
  /** PostgreSQL server the test database is created on. @default the shared test server */
  serverUrl?: string;
  /** Overrides of {@link FAULT_TIMINGS}. */
  timings?: Partial<EngineTimings>;
  /** LOG_LEVEL of the apps. @default "info" */
  logLevel?: string;
}

/** Options of one app started by a {@link FaultStack}. */
export interface StackAppOptions {
  /** Extra settings (override the stack's). */
  env?: Record<string, string>;
  /** Name in errors. */
  name?: string;
  /** Wait for /readyz. @default true */
  ready?: boolean;
}

/** A node for {@link FaultStack.createWorkflow}. */
export function testNode(
  id: string,
  capability: string,
  parentIds: string[] = [],
  extra: Omit<Exclude<MessageInitShape<typeof NodeSchema>, Node>, "id" | "capability" | "parentIds"> = {},
): Node {
  return create(NodeSchema, {
    id,
    capability,
    parentIds,
    // Fast retries: a fault test must not wait out the default 1 s backoff.
    retryPolicy: { maxAttempts: 5, initialBackoff: { nanos: 100_000_000 }, maxBackoff: { seconds: 1n } },
    ...extra,
  });
}

/**
 * The load the fault tests run: `width` "work" nodes `w0`, `w1`, ... joined by an "echo" node `join`, then `tail`.
 */
export function fanInNodes(width: number, tail: readonly Node[] = []): Node[] {
  const ids = Array.from({ length: width }, (_, i) => `w${i}`);
  return [...ids.map((id) => testNode(id, "work")), testNode("join", "echo", ids), ...tail];
}

/**
 * Everything one fault test file runs against: its own database and queue prefix, a NodeService in the test process
 * (with a side-effect ledger), and the real apps as separate processes, started on demand.
 */
export interface FaultStack {
  db: TestDatabase;
  queuePrefix: string;
  redisUrl: string;
  timings: EngineTimings;
  nodeService: NodeServiceServer;
  ledger: SideEffectLedger;
  /** Reads and writes of the test itself (creating workflows without an api process). */
  stateManager: PgStateManager;
  /** A Redis connection of the test (for the invariant checker): a Cluster's with a redis+cluster:// redisUrl. */
  redis: RedisConnection;
  apps: AppGroup;
  /** The bound of I1 with these timings: see recoveryBoundMs. */
  recoveryBoundMs: number;
  /** The settings every app of the stack gets. */
  env(): Record<string, string>;
  /** Starts a scheduler and waits until it is ready. */
  startScheduler(options?: StackAppOptions): Promise<AppProcess>;
  /** Starts a worker serving `capabilities` and waits until it is ready. */
  startWorker(capabilities: readonly string[], options?: StackAppOptions): Promise<AppProcess>;
  /** Starts the dashboard and waits until it is ready. */
  startDashboard(options?: StackAppOptions): Promise<AppProcess>;
  /** Starts the api with a typed client. */
  startApi(
    options?: StackAppOptions,
  ): Promise<{ app: AppProcess; address: string; client: GrpcClient<typeof WorkflowService> }>;
  /** Creates a workflow through the StateManager (as the api would; the scheduler hears its NOTIFY). */
  createWorkflow(nodes: readonly Node[], name?: string): Promise<Workflow>;
  /** How many nodes of the given workflows are in `status` (e.g. `RUNNING`) now. */
  countNodes(workflowIds: readonly string[], status: string): Promise<number>;
  /** Waits until every given workflow has finished; returns them. */
  waitFinished(workflowIds: readonly string[], timeoutMs: number): Promise<Workflow[]>;
  /** Waits until I1-I5 hold (I3 included: every workflow finished). */
  expectInvariants(extra?: Partial<InvariantOptions>, timeoutMs?: number): Promise<void>;
  /** Stops every app, the NodeService, drops the database and the prefix's keys. */
  close(): Promise<void>;
}

const TERMINAL = new Set([WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED]);

/** Starts a fault stack: database, NodeService and ledger; the apps are started by the test. */
export async function startFaultStack(options: FaultStackOptions): Promise<FaultStack> {
  const timings = { ...FAULT_TIMINGS, ...options.timings };
  const redisUrl = options.redisUrl ?? process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  const queuePrefix = `f${Math.random().toString(36).slice(2, 10)}`;
  const db = await createTestDatabase(options.name, options.serverUrl);
  const ledger = new SideEffectLedger(true);
  const nodeService = await startNodeServiceServer(ledger.wrap(options.handler));
  const stateManager = new PgStateManager(db.db);
  const redis = connectRedis(redisUrl, { ...options.redisOptions, maxRetriesPerRequest: 1 });
  redis.on("error", () => undefined);
  const apps = new AppGroup();
  const clients: GrpcClient<typeof WorkflowService>[] = [];
  let workers = 0;
  let schedulers = 0;

  const env = (): Record<string, string> => ({
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: queuePrefix,
    LOG_LEVEL: options.logLevel ?? "info",
    STARTUP_TIMEOUT_MS: "30000",
    ...options.env,
  });
  const launch = async (
    app: "scheduler" | "worker" | "api" | "dashboard",
    settings: Record<string, string>,
    o: StackAppOptions,
  ) => {
    const httpPort = await freePort();
    const proc = apps.start({
      app,
      name: o.name ?? app,
      env: { ...env(), HTTP_ADDR: `127.0.0.1:${httpPort}`, ...settings, ...o.env },
    });
    if (o.ready !== false) await proc.waitReady();
    return proc;
  };

  /** What a stuck test needs to know: node statuses and every app's last warnings and errors. */
  const diagnose = async (workflowIds: readonly string[]): Promise<string> => {
    const lines: string[] = [];
    try {
      const { rows } = await db.pool.query<{ status: string; n: number }>(
        "select status, count(*)::int as n from nodes where workflow_id = any($1::uuid[]) group by status",
        [workflowIds],
      );
      lines.push(`nodes: ${rows.map((r) => `${r.status} ${r.n}`).join(", ")}`);
    } catch (error) {
      lines.push(`nodes: cannot read (${(error as Error).message})`);
    }
    for (const app of apps.processes) {
      const state = app.exitStatus ? `exited ${JSON.stringify(app.exitStatus)}` : "running";
      const problems = app.exitStatus
        ? app.lines
        : app.lines.filter((l) => !l.startsWith("{") || /"level":"(warn|error|fatal)"/.test(l));
      lines.push(`--- ${app.name} (${state}), last warnings:`, ...problems.slice(-8).map((l) => l.slice(0, 600)));
    }
    return lines.join("\n");
  };

  return {
    db,
    queuePrefix,
    redisUrl,
    timings,
    nodeService,
    ledger,
    stateManager,
    redis,
    apps,
    recoveryBoundMs: recoveryBoundMs(timings),
    env,
    startScheduler(o = {}) {
      schedulers++;
      return launch(
        "scheduler",
        {
          SCHEDULER_POLL_MS: String(timings.pollMs),
          RECONCILE_INTERVAL_MS: String(timings.reconcileIntervalMs),
          RECONCILE_QUEUED_AFTER_MS: String(timings.reconcileQueuedAfterMs),
          WORKER_STALE_MS: String(timings.workerStaleMs),
        },
        { name: `scheduler-${schedulers}`, ...o },
      );
    },
    startWorker(capabilities, o = {}) {
      workers++;
      const name = o.name ?? `worker-${workers}`;
      return launch(
        "worker",
        {
          WORKER_CAPABILITIES: capabilities.join(","),
          WORKER_CONCURRENCY: "8",
          WORKER_ID: `${queuePrefix}-${name}`,
          NODE_SERVICE_ADDR: nodeService.address,
          WORKER_HEARTBEAT_MS: String(timings.heartbeatMs),
        },
        { ...o, name },
      );
    },
    startDashboard(o = {}) {
      return launch("dashboard", {}, o);
    },
    async startApi(o = {}) {
      const grpcPort = await freePort();
      const app = await launch("api", { GRPC_ADDR: `127.0.0.1:${grpcPort}` }, o);
      const address = `127.0.0.1:${grpcPort}`;
      const client = createGrpcClient(WorkflowService, address, grpc.credentials.createInsecure());
      clients.push(client);
      return { app, address, client };
    },
    async createWorkflow(nodes, name = "fault-test") {
      return (await stateManager.createWorkflow({ name, nodes })).workflow;
    },
    async countNodes(workflowIds, status) {
      const { rows } = await db.pool.query<{ n: number }>(
        "select count(*)::int as n from nodes where workflow_id = any($1::uuid[]) and status::text = $2",
        [workflowIds, status],
      );
      return rows[0]!.n;
    },
    async waitFinished(workflowIds, timeoutMs) {
      const finished = new Map<string, Workflow>();
      try {
        await waitForFinished();
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${await diagnose(workflowIds)}`);
      }
      return workflowIds.map((id) => finished.get(id)!);

      async function waitForFinished() {
        await waitFor(
          async () => {
            for (const id of workflowIds) {
              if (finished.has(id)) continue;
              if (TERMINAL.has(await stateManager.getWorkflowStatus(id)))
                finished.set(id, await stateManager.getWorkflow(id));
            }
            return finished.size === workflowIds.length;
          },
          {
            timeoutMs,
            intervalMs: 100,
            description: `${workflowIds.length} workflows to finish (${workflowIds.length - finished.size} still running)`,
          },
        );
      }
    },
    async expectInvariants(extra = {}, timeoutMs = 15_000) {
      await waitForInvariants(
        {
          pool: db.pool,
          redis,
          queuePrefix,
          recovery: timings,
          ledger,
          requireFinished: true,
          ...extra,
        },
        timeoutMs,
      );
    },
    async close() {
      for (const client of clients.splice(0)) client.close();
      await nodeService.close();
      await apps.stopAll(5_000);
      try {
        // Every master of a cluster; one key per DEL there, as a cluster's keys of one command must share a slot.
        for (const node of mastersOf(redis)) {
          const keys = await node.keys(`${queuePrefix}:*`);
          if (keys.length > 0)
            await (redis.isCluster ? Promise.all(keys.map((k) => redis.del(k))) : redis.del(...keys));
        }
      } catch {
        // A private Redis may be gone already.
      }
      redis.disconnect();
      await db.drop();
    },
  };
}
