import { hostname } from "node:os";
import { PgStateManager, createDatabase, createPool, eventLogger } from "@trellis/db";
import {
  ChunkPublisher,
  DEFAULT_CHUNK_MAX_BYTES_PER_ATTEMPT,
  DEFAULT_CHUNK_MAX_PER_ATTEMPT,
  DEFAULT_CHUNK_RETENTION_MS,
  checkRedis,
  connectRedis,
  redisTlsOptions,
} from "@trellis/queue";
import { composeEventHooks, eventMetrics } from "@trellis/observability";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { WorkerSettings } from "./config.js";
import { createWorkerMetrics } from "./metrics.js";
import { NodeServiceClients } from "./node-service-client.js";
import { NodeWorker } from "./node-worker.js";

/** A running worker app. */
export interface WorkerApp {
  worker: NodeWorker;
  isReady(): boolean;
  close(): Promise<void>;
}

/** Builds and starts a worker from its settings; PostgreSQL and Redis must answer. */
export async function startWorkerApp(
  settings: WorkerSettings,
  deps: { logger: Logger; registry: Registry },
): Promise<WorkerApp> {
  const { logger } = deps;
  const pool = createPool(settings.databaseUrl, { max: settings.dbPoolSize, applicationName: "trellis-worker" }, (e) =>
    logger.warn({ err: e }, "idle PostgreSQL connection failed"),
  );
  await pool.query("select 1");
  const tls = redisTlsOptions(settings.redisTls);
  await checkRedis(settings.redisUrl, undefined, tls);
  const redis = connectRedis(settings.redisUrl, tls);
  redis.on("error", (e) => logger.warn({ err: e }, "redis connection error"));
  // A connection of its own that fails fast: while Redis is away chunks are dropped, not held in memory.
  const chunkRedis = connectRedis(settings.redisUrl, { ...tls, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  chunkRedis.on("error", () => undefined);
  const chunks = new ChunkPublisher({
    redis: chunkRedis,
    queuePrefix: settings.queuePrefix,
    retentionMs: settings.chunkRetentionMs ?? DEFAULT_CHUNK_RETENTION_MS,
    maxPerAttempt: settings.chunkMaxPerAttempt ?? DEFAULT_CHUNK_MAX_PER_ATTEMPT,
    maxBytesPerAttempt: settings.chunkMaxBytesPerAttempt ?? DEFAULT_CHUNK_MAX_BYTES_PER_ATTEMPT,
    logger,
  });
  const clients = new NodeServiceClients({
    fallbackAddress: settings.nodeServiceAddr,
    routes: settings.nodeServiceRoutes,
    maxReceiveBytes: settings.nodeServiceMaxReceiveBytes,
    tls: settings.nodeServiceTls,
  });
  if (settings.nodeServiceRoutes?.length) {
    const routed = Object.fromEntries(settings.capabilities.map((c) => [c, clients.addressFor(c)]));
    logger.info({ routes: routed }, "NodeService routes (NODE_SERVICE_ROUTES)");
  }
  const stateManager = new PgStateManager(createDatabase(pool), {
    onEvents: composeEventHooks(eventLogger(logger), eventMetrics(deps.registry)),
  });
  const worker = new NodeWorker({
    stateManager,
    client: clients.fallbackClient(),
    clientFor: (capability) => clients.clientFor(capability),
    connection: redis,
    queuePrefix: settings.queuePrefix,
    capabilities: settings.capabilities,
    concurrency: settings.concurrency,
    resultRetryMs: settings.resultRetryMs,
    heartbeatMs: settings.heartbeatMs,
    startAfterMs: settings.startAfterMs,
    workerId: settings.workerId,
    hostname: hostname(),
    logger,
    // The cancellations' LISTEN: a direct connection, not a transaction-pooling PgBouncer (DATABASE_LISTEN_URL).
    databaseUrl: settings.databaseListenUrl ?? settings.databaseUrl,
    metrics: createWorkerMetrics(deps.registry),
    chunks,
  });
  await worker.start();
  return {
    worker,
    isReady: () => worker.isReady(),
    async close() {
      await worker.close();
      clients.close();
      redis.disconnect();
      chunkRedis.disconnect();
      await stateManager.flushNotifications();
      await pool.end();
    },
  };
}
