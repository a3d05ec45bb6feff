import type { IncomingMessage, ServerResponse } from "node:http";
import {
  PgStateManager,
  type StateManager,
  WorkflowEventHub,
  createDatabase,
  createPool,
  eventLogger,
} from "@trellis/db";
import { composeEventHooks, eventMetrics } from "@trellis/observability";
import type { Registry } from "prom-client";
import { WorkflowAction } from "@trellis/proto";
import { NodeQueues, WorkflowChunkSource, checkRedis, connectRedis, redisTlsOptions } from "@trellis/queue";
import express from "express";
import type { Logger } from "pino";
import { createApiRouter } from "./api-routes.js";
import { dashboardHttpMetrics } from "./http-metrics.js";
import { createDashboardAuth } from "./token-auth.js";
import type { DashboardSettings } from "./config.js";
import type { WorkflowEventSource } from "./event-stream.js";
import { startQueueBoard } from "./queue-board.js";
import { createUiRouter } from "./ui-routes.js";

/** A running dashboard: an HTTP handler plus what it holds. */
export interface DashboardApp {
  /** Handles every request the side server does not (/metrics, /healthz, /readyz). */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  isReady(): boolean;
  /** Event streams open now. */
  openStreams(): number;
  /** Ends the event streams, then releases connections. */
  close(): Promise<void>;
}

/** Optional collaborators of the dashboard; the app creates what is not given. */
export interface DashboardDeps {
  logger: Logger;
  /** Reads and actions; by default a PgStateManager on its own small pool. */
  stateManager?: StateManager | undefined;
  /** Event source of the live views; by default a WorkflowEventHub with its own LISTEN connection. */
  events?: WorkflowEventSource | undefined;
  /** Woken after RESUME and RETRY (an in-process scheduler, `npm start`); the StateManager NOTIFYs anyway. */
  notifyScheduler?: ((workflowId: string) => void) | undefined;
  /** Aborts when shutdown starts: open event streams end at once instead of holding the HTTP server open. */
  signal?: AbortSignal | undefined;
  /** Period of the SSE heartbeat comments. @default 15000 */
  heartbeatMs?: number | undefined;
  /** Period of Bull Board's queue discovery. @default 5000 */
  queueRefreshMs?: number | undefined;
  /**
   * Where the dashboard's HTTP requests (`trellis_dashboard_http_requests_total`) and the events this app commits (its
   * actions, with its own StateManager) are counted; none means not counted.
   */
  registry?: Registry | undefined;
  /** How often API_TOKENS_FILE is stat-ed besides fs.watch (tests). @default 2000 */
  tokensFilePollMs?: number | undefined;
}

/**
 * Builds the dashboard: the web UI, its JSON API and event streams (`/api`) over the StateManager, and Bull Board
 * at `/queues` over every capability queue, all behind basic auth when DASHBOARD_USER is set.
 */
export async function startDashboardApp(settings: DashboardSettings, deps: DashboardDeps): Promise<DashboardApp> {
  const { logger } = deps;
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) await close();
  };
  try {
    let stateManager = deps.stateManager;
    if (stateManager === undefined) {
      const pool = createPool(settings.databaseUrl, { max: 4, applicationName: "trellis-dashboard" });
      closers.push(() => pool.end());
      await pool.query("select 1");
      // Actions taken here commit events: they are logged and counted like everywhere else.
      const hooks = [eventLogger(logger), ...(deps.registry ? [eventMetrics(deps.registry)] : [])];
      const own = new PgStateManager(createDatabase(pool), { onEvents: composeEventHooks(...hooks) });
      closers.push(() => own.flushNotifications());
      stateManager = own;
    }
    let events = deps.events;
    let hub: WorkflowEventHub | undefined;
    if (events === undefined) {
      // LISTEN: the direct connection, not a transaction-pooling PgBouncer (DATABASE_LISTEN_URL).
      hub = new WorkflowEventHub({
        stateManager,
        databaseUrl: settings.databaseListenUrl ?? settings.databaseUrl,
        onError: (e) => logger.warn({ err: e }, "event listener error"),
      });
      await hub.start();
      closers.push(() => hub?.close());
      events = hub;
    }

    const tls = redisTlsOptions(settings.redisTls);
    await checkRedis(settings.redisUrl, undefined, tls);
    const redis = connectRedis(settings.redisUrl, tls);
    closers.push(() => redis.disconnect());
    redis.on("error", (e) => logger.warn({ err: e }, "redis connection error"));
    const queues = new NodeQueues(redis, settings.queuePrefix);
    // Output chunks for the node panel (`?chunks=1`), on a connection that fails fast: without Redis, no chunks.
    const chunkRedis = connectRedis(settings.redisUrl, { ...tls, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    chunkRedis.on("error", () => undefined);
    closers.push(() => chunkRedis.disconnect());
    const chunks = new WorkflowChunkSource({
      events,
      getWorkflow: (workflowId) => stateManager.getWorkflow(workflowId),
      redis: chunkRedis,
      queuePrefix: settings.queuePrefix,
      onError: (e) => logger.warn({ err: e }, "output chunks unavailable for a stream (Redis)"),
    });
    closers.push(() => queues.close());
    const board = await startQueueBoard({
      queues,
      basePath: "/queues",
      refreshMs: deps.queueRefreshMs ?? 5_000,
      logger,
      actions: settings.queueActions,
    });
    closers.push(() => board.close());

    const shutdown = new AbortController();
    const streams = new Set<AbortController>();
    const endStreams = () => shutdown.abort();
    deps.signal?.addEventListener("abort", endStreams, { once: true });
    closers.push(() => {
      deps.signal?.removeEventListener("abort", endStreams);
      endStreams();
    });

    const app = express();
    app.disable("x-powered-by");
    app.set("etag", "strong");
    if (deps.registry) app.use(dashboardHttpMetrics(deps.registry));
    // Sign-in (the api's tokens, or basic auth) before everything: roles, tenants' scopes and the events' actor.
    const auth = createDashboardAuth({
      tokens: settings.tokens ?? {},
      basic: settings,
      stateManager,
      logger,
      pollMs: deps.tokensFilePollMs,
    });
    closers.push(() => auth.close());
    app.use(auth.router);
    app.use("/queues", board.router);
    app.use(
      "/api",
      createApiRouter({
        stateManager,
        events,
        chunks,
        logger,
        heartbeatMs: deps.heartbeatMs ?? 15_000,
        workerStaleMs: settings.workerStaleMs ?? 5_000,
        shutdownSignal: shutdown.signal,
        streams,
        onAction: (action, effects) => {
          const workflowId = effects.workflow.id;
          if (action === WorkflowAction.RESUME || action === WorkflowAction.RETRY) deps.notifyScheduler?.(workflowId);
          // Jobs whose node is no longer QUEUED would be dropped by their worker; removing them keeps Bull Board honest.
          if (effects.removedJobIds.length > 0) {
            queues.remove(effects.removedJobIds).catch((e) => logger.warn({ err: e }, "removing stale jobs failed"));
          }
        },
        onFork: (workflowId) => deps.notifyScheduler?.(workflowId),
        onSignal: (workflowId) => deps.notifyScheduler?.(workflowId),
      }),
    );
    app.use(createUiRouter());

    return {
      handle(req, res) {
        app(req as express.Request, res as express.Response);
        return true;
      },
      isReady: () => redis.status === "ready" && (hub === undefined || hub.connected),
      openStreams: () => streams.size,
      close: closeAll,
    };
  } catch (error) {
    await closeAll().catch(() => undefined);
    throw error;
  }
}
