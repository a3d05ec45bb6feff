import { hostname } from "node:os";
import pino from "pino";
import { Registry } from "prom-client";
import { PgStateManager, createDatabase, createPool } from "@trellis/db";
import { ChunkPublisher, createRedis } from "@trellis/queue";
import { startSchedulerApp, type SchedulerApp } from "@trellis/scheduler";
import { isTerminalWorkflowStatus } from "@trellis/core";
import type { Workflow } from "@trellis/proto";
import { type TestDatabase, waitFor } from "@trellis/testing";
import { createNodeServiceClient } from "../src/node-service-client.js";
import { NodeWorker } from "../src/node-worker.js";

/** A scheduler and workers running in this process against a test database and its own queue prefix. */
export interface TestEngine {
  queuePrefix: string;
  stateManager: PgStateManager;
  scheduler: SchedulerApp;
  workers: NodeWorker[];
  startWorker(capabilities: string[], opts?: StartWorkerOptions): Promise<NodeWorker>;
  startScheduler(): Promise<SchedulerApp>;
  /** Waits for the workflow to be SUCCEEDED, FAILED or CANCELLED (20 s unless said) and returns it. */
  finished(workflowId: string, timeoutMs?: number): Promise<Workflow>;
  close(): Promise<void>;
}

/** Options of TestEngine.startWorker. */
export interface StartWorkerOptions {
  concurrency?: number;
  /** Another NodeService than the engine's. */
  nodeServiceAddr?: string;
  /** WORKER_START_AFTER_MS. @default the worker's default */
  startAfterMs?: number;
  /** Publish output chunks (to the engine's Redis unless `redisUrl`), with these bounds. */
  chunks?: { redisUrl?: string; maxPerAttempt?: number; maxBytesPerAttempt?: number; retentionMs?: number };
}

/** Starts a scheduler (fast polls and reconciles) for tests; workers are started with startWorker. */
export async function startTestEngine(
  testDb: TestDatabase,
  nodeServiceAddr: string,
  opts: { reconcileIntervalMs?: number } = {},
): Promise<TestEngine> {
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const queuePrefix = `t${Math.random().toString(36).slice(2, 10)}`;
  const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  const pool = createPool(testDb.url, { max: 20 });
  const stateManager = new PgStateManager(createDatabase(pool));
  const closers: (() => Promise<void>)[] = [];
  const workers: NodeWorker[] = [];
  const schedulers: SchedulerApp[] = [];

  const startScheduler = async () => {
    const app = await startSchedulerApp(
      {
        databaseUrl: testDb.url,
        redisUrl,
        queuePrefix,
        logLevel: "silent",
        http: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
        pollMs: 200,
        batchSize: 100,
        reconcileIntervalMs: opts.reconcileIntervalMs ?? 500,
        reconcileQueuedAfterMs: 1_000,
        workerStaleMs: 2_000,
        dbPoolSize: 4,
      },
      { logger, registry: new Registry() },
    );
    schedulers.push(app);
    closers.push(() => app.close());
    return app;
  };

  const scheduler = await startScheduler();
  return {
    queuePrefix,
    stateManager,
    scheduler,
    workers,
    startScheduler,
    finished: (workflowId, timeoutMs = 20_000) =>
      waitFor(
        async () => {
          const workflow = await stateManager.getWorkflow(workflowId);
          return isTerminalWorkflowStatus(workflow.status) && workflow;
        },
        { timeoutMs, description: `workflow ${workflowId} to finish` },
      ),
    async startWorker(capabilities, workerOpts = {}) {
      const redis = createRedis(redisUrl);
      const client = createNodeServiceClient(workerOpts.nodeServiceAddr ?? nodeServiceAddr, 16 * 1024 * 1024);
      const chunkRedis = workerOpts.chunks
        ? createRedis(workerOpts.chunks.redisUrl ?? redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1 })
        : undefined;
      chunkRedis?.on("error", () => undefined);
      const chunks =
        chunkRedis &&
        new ChunkPublisher({
          redis: chunkRedis,
          queuePrefix,
          retentionMs: workerOpts.chunks?.retentionMs ?? 60_000,
          maxPerAttempt: workerOpts.chunks?.maxPerAttempt ?? 100_000,
          maxBytesPerAttempt: workerOpts.chunks?.maxBytesPerAttempt ?? 16 * 1024 * 1024,
          logger,
        });
      const workerPool = createPool(testDb.url, { max: 10 });
      const worker = new NodeWorker({
        stateManager: new PgStateManager(createDatabase(workerPool)),
        client,
        connection: redis,
        queuePrefix,
        capabilities,
        concurrency: workerOpts.concurrency ?? 8,
        resultRetryMs: 30_000,
        heartbeatMs: 200,
        startAfterMs: workerOpts.startAfterMs,
        workerId: `${hostname()}-${Math.random().toString(36).slice(2, 8)}`,
        hostname: hostname(),
        logger,
        databaseUrl: testDb.url,
        chunks,
      });
      await worker.start();
      workers.push(worker);
      closers.push(async () => {
        await worker.close();
        client.close();
        redis.disconnect();
        chunkRedis?.disconnect();
        await workerPool.end();
      });
      return worker;
    },
    async close() {
      for (const close of closers.reverse()) await close();
      const redis = createRedis(redisUrl);
      const keys = await redis.keys(`${queuePrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await pool.end();
    },
  };
}
