import { hostname } from "node:os";
import { type RunningApiServer, startApiServer } from "@trellis/api";
import { PgStateManager, WorkflowEventHub, createDatabase, createPool, eventLogger } from "@trellis/db";
import {
  EXAMPLE_CAPABILITIES,
  type RunningExampleNodeService,
  startExampleNodeService,
} from "@trellis/example-node-service";
import {
  type RunningHttpServer,
  composeEventHooks,
  createLogger,
  createMetricsRegistry,
  eventMetrics,
  startHttpServer,
} from "@trellis/observability";
import { WorkflowChunkSource, createRedis } from "@trellis/queue";
import { type SchedulerApp, startSchedulerApp } from "@trellis/scheduler";
import type { TestDatabase } from "@trellis/testing";
import type { Registry } from "prom-client";
import { type WorkerApp, startWorkerApp } from "../src/app.js";

/** The apps a {@link TestStack} runs, each with its own registry and /metrics side port. */
export type StackApp = "api" | "scheduler" | "worker" | "example-node-service";

/** The whole engine in this process, wired as the apps' main.ts files wire it: api, scheduler, worker, NodeService. */
export interface TestStack {
  /** `127.0.0.1:<port>` of the api's gRPC server. */
  apiAddr: string;
  /** The api's gRPC port. */
  apiPort: number;
  api: RunningApiServer;
  scheduler: SchedulerApp;
  worker: WorkerApp;
  nodeService: RunningExampleNodeService;
  /** Each app's metrics registry (process metrics included, as in production). */
  registries: Record<StackApp, Registry>;
  /** Where the queues are: Redis and the apps' QUEUE_PREFIX (one of its own). */
  redisUrl: string;
  queuePrefix: string;
  /** Each app's HTTP side server (`/metrics`, `/healthz`, `/readyz`) on a free port. */
  http: Record<StackApp, RunningHttpServer>;
  /** Stops the api (its gRPC server) and starts it again on the same port, e.g. to break watch streams. */
  restartApi(): Promise<void>;
  close(): Promise<void>;
}

/** Options of {@link startTestStack}. */
export interface TestStackOptions {
  /** Reconciler period (it refreshes the gauges). @default 500 */
  reconcileIntervalMs?: number;
  /** Where every app logs, at TEST_LOG_LEVEL (default silent) or `logLevel`. @default stdout */
  logDestination?: NodeJS.WritableStream;
  /** @default TEST_LOG_LEVEL, else silent */
  logLevel?: string;
}

/**
 * Starts the example NodeService, a worker for every example capability, a scheduler and the api (with
 * WatchWorkflow) against `testDb`, on loopback and free ports, with a queue prefix of their own.
 */
export async function startTestStack(testDb: TestDatabase, opts: TestStackOptions = {}): Promise<TestStack> {
  const logLevel = opts.logLevel ?? process.env.TEST_LOG_LEVEL ?? "silent";
  const loggerFor = (app: string) =>
    createLogger({
      app,
      level: logLevel,
      ...(opts.logDestination === undefined ? {} : { destination: opts.logDestination }),
    });
  const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  const queuePrefix = `t${Math.random().toString(36).slice(2, 10)}`;
  const registries: Record<StackApp, Registry> = {
    api: createMetricsRegistry({ app: "api" }),
    scheduler: createMetricsRegistry({ app: "scheduler" }),
    worker: createMetricsRegistry({ app: "worker" }),
    "example-node-service": createMetricsRegistry({ app: "example-node-service" }),
  };
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const closer of closers.splice(0).reverse()) await closer();
  };
  // Runs last: the queues are dropped once every app has stopped.
  closers.push(async () => {
    const redis = createRedis(redisUrl);
    const keys = await redis.keys(`${queuePrefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  try {
    const nodeService = await startExampleNodeService({
      host: "127.0.0.1",
      port: 0,
      logger: loggerFor("example-node-service"),
      registry: registries["example-node-service"],
      shutdownGraceMs: 100,
    });
    closers.push(() => nodeService.close());

    const common = { databaseUrl: testDb.url, redisUrl, queuePrefix, logLevel: "silent" as const };
    const http = { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" };
    const scheduler = await startSchedulerApp(
      {
        ...common,
        http,
        pollMs: 200,
        batchSize: 100,
        reconcileIntervalMs: opts.reconcileIntervalMs ?? 500,
        reconcileQueuedAfterMs: 2_000,
        workerStaleMs: 2_000,
        dbPoolSize: 4,
      },
      { logger: loggerFor("scheduler"), registry: registries.scheduler },
    );
    closers.push(() => scheduler.close());

    const worker = await startWorkerApp(
      {
        ...common,
        http,
        capabilities: [...EXAMPLE_CAPABILITIES],
        concurrency: 8,
        nodeServiceAddr: nodeService.address,
        nodeServiceMaxReceiveBytes: 16 * 1024 * 1024,
        resultRetryMs: 30_000,
        heartbeatMs: 200,
        workerId: `${hostname()}-${Math.random().toString(36).slice(2, 8)}`,
        dbPoolSize: 10,
      },
      { logger: loggerFor("worker"), registry: registries.worker },
    );
    closers.push(() => worker.close());

    // As apps/api/src/main.ts wires it: one log line and the event metrics for every committed event.
    const apiLogger = loggerFor("api");
    const pool = createPool(testDb.url, { max: 10 });
    closers.push(() => pool.end());
    const stateManager = new PgStateManager(createDatabase(pool), {
      onEvents: composeEventHooks(eventLogger(apiLogger), eventMetrics(registries.api)),
    });
    const events = new WorkflowEventHub({ stateManager, databaseUrl: testDb.url });
    await events.start();
    closers.push(() => events.close());
    // include_chunks, as apps/api/src/main.ts wires it when REDIS_URL is set.
    const chunkRedis = createRedis(redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    chunkRedis.on("error", () => undefined);
    await chunkRedis.connect();
    closers.push(async () => chunkRedis.disconnect());
    const chunks = new WorkflowChunkSource({
      events,
      getWorkflow: (workflowId) => stateManager.getWorkflow(workflowId),
      redis: chunkRedis,
      queuePrefix,
    });
    const startApi = (port: number) =>
      startApiServer({
        stateManager,
        logger: apiLogger,
        registry: registries.api,
        settings: {
          grpcAddr: { host: "127.0.0.1", port, address: `127.0.0.1:${port}` },
          apiToken: undefined,
          tls: undefined,
          maxReceiveBytes: 16 * 1024 * 1024,
        },
        events,
        chunks,
        notifyScheduler: () => scheduler.scheduler.wake(),
      });
    let api = await startApi(0);
    const apiPort = api.port;
    closers.push(() => api.close(500));

    const sides = {} as Record<StackApp, RunningHttpServer>;
    for (const app of Object.keys(registries) as StackApp[]) {
      sides[app] = await startHttpServer({
        host: "127.0.0.1",
        port: 0,
        registry: registries[app],
        logger: loggerFor(app),
        isReady: () => true,
      });
      closers.push(() => sides[app].close());
    }

    return {
      apiAddr: `127.0.0.1:${apiPort}`,
      apiPort,
      get api() {
        return api;
      },
      scheduler,
      worker,
      nodeService,
      registries,
      redisUrl,
      queuePrefix,
      http: sides,
      async restartApi() {
        api.server.forceShutdown();
        api = await startApi(apiPort);
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
