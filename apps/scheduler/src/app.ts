import { CHANNELS, PgListener, PgStateManager, createDatabase, createPool, eventLogger } from "@trellis/db";
import { NodeQueues, checkRedis, createRedis } from "@trellis/queue";
import { composeEventHooks, eventMetrics } from "@trellis/observability";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { SchedulerSettings } from "./config.js";
import { createSchedulerMetrics } from "./metrics.js";
import { Reconciler } from "./reconciler.js";
import { Scheduler } from "./scheduler.js";

/** A running scheduler app: scheduler + reconciler + LISTEN connection. */
export interface SchedulerApp {
  scheduler: Scheduler;
  reconciler: Reconciler;
  isReady(): boolean;
  close(): Promise<void>;
}

/** Builds and starts the scheduler from its settings; PostgreSQL and Redis must answer. */
export async function startSchedulerApp(
  settings: SchedulerSettings,
  deps: { logger: Logger; registry: Registry },
): Promise<SchedulerApp> {
  const { logger } = deps;
  const pool = createPool(
    settings.databaseUrl,
    { max: settings.dbPoolSize, applicationName: "trellis-scheduler" },
    (e) => logger.warn({ err: e }, "idle PostgreSQL connection failed"),
  );
  await pool.query("select 1");
  const stateManager = new PgStateManager(createDatabase(pool), {
    onEvents: composeEventHooks(eventLogger(logger), eventMetrics(deps.registry)),
  });
  const { evictionPolicy } = await checkRedis(settings.redisUrl);
  const redis = createRedis(settings.redisUrl);
  redis.on("error", (e) => logger.warn({ err: e }, "redis connection error"));
  if (evictionPolicy !== "noeviction" && evictionPolicy !== "unknown") {
    logger.warn({ evictionPolicy }, "Redis maxmemory-policy should be noeviction: BullMQ jobs may be evicted");
  }
  const queues = new NodeQueues(redis, settings.queuePrefix);
  const metrics = createSchedulerMetrics(deps.registry);
  const scheduler = new Scheduler({
    stateManager,
    queues,
    logger,
    metrics,
    batchSize: settings.batchSize,
    pollMs: settings.pollMs,
  });
  const reconciler = new Reconciler({
    stateManager,
    queues,
    logger,
    metrics,
    intervalMs: settings.reconcileIntervalMs,
    queuedAfterMs: settings.reconcileQueuedAfterMs,
    workerStaleMs: settings.workerStaleMs,
  });
  const listener = new PgListener({
    databaseUrl: settings.databaseUrl,
    channels: [CHANNELS.ready],
    onError: (e) => logger.warn({ err: e }, "LISTEN connection lost; reconnecting (polling meanwhile)"),
    onConnect: () => scheduler.wake(),
  });
  listener.on("notification", () => scheduler.wake());
  await listener.start();
  scheduler.start();
  reconciler.start();
  logger.info({ queuePrefix: settings.queuePrefix, pollMs: settings.pollMs }, "scheduler started");
  let closing = false;
  let closed: Promise<void> | null = null;
  return {
    scheduler,
    reconciler,
    isReady: () => !closing && listener.connected && redis.status === "ready",
    close() {
      closing = true;
      closed ??= (async () => {
        await listener.close();
        await scheduler.stop();
        await reconciler.stop();
        await queues.close();
        redis.disconnect();
        await pool.end();
      })();
      return closed;
    },
  };
}
