import {
  CHANNELS,
  PgEventRelayStore,
  PgListener,
  PgStateManager,
  createDatabase,
  createPool,
  eventLogger,
  parseUnqueuedJobs,
} from "@trellis/db";
import { NodeQueues, checkRedis, connectRedis, redisTlsOptions } from "@trellis/queue";
import { composeEventHooks, eventMetrics } from "@trellis/observability";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { SchedulerSettings } from "./config.js";
import { EventRelay } from "./event-relay.js";
import { registerLimitMetrics } from "./limit-metrics.js";
import { createSchedulerMetrics } from "./metrics.js";
import { Reconciler } from "./reconciler.js";
import { Retention, createRetentionCounter } from "./retention.js";
import { ScheduleTicker, createScheduleTickCounter } from "./schedule-ticker.js";
import { Scheduler } from "./scheduler.js";

/** A running scheduler app: scheduler + reconciler + LISTEN connection (+ the event relay when configured). */
export interface SchedulerApp {
  scheduler: Scheduler;
  reconciler: Reconciler;
  /** Creates the workflows of the cron schedules at their ticks. */
  scheduleTicker: ScheduleTicker;
  /** The Redis Stream event relay; null when `EVENTS_REDIS_STREAM` is unset. */
  eventRelay: EventRelay | null;
  /** Deletes old finished workflows; null when retention is off (`RETENTION_DAYS=0`). */
  retention: Retention | null;
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
  const tls = redisTlsOptions(settings.redisTls);
  const { evictionPolicy } = await checkRedis(settings.redisUrl, undefined, tls);
  const redis = connectRedis(settings.redisUrl, tls);
  redis.on("error", (e) => logger.warn({ err: e }, "redis connection error"));
  if (evictionPolicy !== "noeviction" && evictionPolicy !== "unknown") {
    logger.warn({ evictionPolicy }, "Redis maxmemory-policy should be noeviction: BullMQ jobs may be evicted");
  }
  const queues = new NodeQueues(redis, settings.queuePrefix);
  const metrics = createSchedulerMetrics(deps.registry);
  registerLimitMetrics(deps.registry, () => stateManager.listLimits(), {
    onError: (e) => logger.warn({ err: e }, "reading limits for metrics failed"),
  });
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
  const scheduleTicker = new ScheduleTicker({
    stateManager,
    logger,
    pollMs: settings.pollMs,
    onWorkflowCreated: () => scheduler.wake(),
    ticks: createScheduleTickCounter(deps.registry),
  });
  const eventRelay = settings.eventRelay ? createEventRelay(settings, deps) : null;
  const retentionDeleted = createRetentionCounter(deps.registry);
  const retention = settings.retention
    ? new Retention({ ...settings.retention, pool, logger, deleted: retentionDeleted })
    : null;
  // LISTEN holds session state: a direct connection, not a transaction-pooling PgBouncer (DATABASE_LISTEN_URL).
  const listener = new PgListener({
    databaseUrl: settings.databaseListenUrl ?? settings.databaseUrl,
    channels: [CHANNELS.ready, CHANNELS.schedules, CHANNELS.unqueued, ...(eventRelay ? [CHANNELS.events] : [])],
    onError: (e) => logger.warn({ err: e }, "LISTEN connection lost; reconnecting (polling meanwhile)"),
    onConnect: () => {
      scheduler.wake();
      scheduleTicker.wake();
      eventRelay?.wake();
    },
  });
  listener.on("notification", (channel, payload) => {
    if (channel === CHANNELS.events) eventRelay?.wake();
    else if (channel === CHANNELS.unqueued) removeUnqueuedJobs(queues, payload, logger);
    else if (channel === CHANNELS.schedules) scheduleTicker.wake();
    else scheduler.wake();
  });
  await listener.start();
  scheduler.start();
  reconciler.start();
  scheduleTicker.start();
  eventRelay?.start();
  retention?.start();
  logger.info(
    {
      queuePrefix: settings.queuePrefix,
      pollMs: settings.pollMs,
      eventsRedisStream: settings.eventRelay?.streamKey,
      retentionDays: settings.retention?.days ?? "off",
    },
    "scheduler started",
  );
  let closing = false;
  let closed: Promise<void> | null = null;
  return {
    scheduler,
    reconciler,
    scheduleTicker,
    eventRelay,
    retention,
    isReady: () => !closing && listener.connected && redis.status === "ready",
    close() {
      closing = true;
      closed ??= (async () => {
        await listener.close();
        await retention?.stop();
        await scheduler.stop();
        await scheduleTicker.stop();
        await reconciler.stop();
        await eventRelay?.stop();
        await queues.close();
        redis.disconnect();
        await stateManager.flushNotifications();
        await pool.end();
      })();
      return closed;
    },
  };
}

/**
 * Removes from Redis the jobs of nodes a committed CANCEL or PAUSE took off their queues (waiting, prioritized or
 * delayed; an active one is left to its worker, which finds its node changed). Every scheduler replica does it: a
 * job already gone is no error.
 */
function removeUnqueuedJobs(queues: NodeQueues, payload: string, logger: Logger): void {
  const unqueued = parseUnqueuedJobs(payload);
  if (unqueued === null) {
    logger.warn({ payload }, "ignored a malformed unqueued-jobs notification");
    return;
  }
  queues.remove(unqueued.jobs).then(
    () => logger.debug({ workflow_id: unqueued.workflowId, jobs: unqueued.jobs.length }, "removed unqueued jobs"),
    (error: unknown) => logger.warn({ err: error, workflow_id: unqueued.workflowId }, "removing unqueued jobs failed"),
  );
}

/** The relay with its own PostgreSQL and Redis connections (not started). */
function createEventRelay(settings: SchedulerSettings, deps: { logger: Logger; registry: Registry }): EventRelay {
  const { logger } = deps;
  const { streamKey, maxLen, pollMs } = settings.eventRelay!;
  // Commands fail after one reconnect attempt instead of waiting for Redis forever: the relay logs and retries.
  const redis = connectRedis(settings.redisUrl, {
    ...redisTlsOptions(settings.redisTls),
    maxRetriesPerRequest: 1,
    connectionName: "trellis-event-relay",
  });
  redis.on("error", (e) => logger.warn({ err: e }, "event relay: redis connection error"));
  // Its session-level advisory lock and `set synchronous_commit` need a session of its own: the direct connection.
  const store = new PgEventRelayStore({
    databaseUrl: settings.databaseListenUrl ?? settings.databaseUrl,
    streamKey,
    onError: (e) => logger.warn({ err: e }, "event relay: PostgreSQL connection lost"),
  });
  return new EventRelay({ store, redis, streamKey, maxLen, pollMs, logger, registry: deps.registry });
}
