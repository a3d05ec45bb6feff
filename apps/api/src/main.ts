import {
  PgStateManager,
  WorkflowEventHub,
  createDatabase,
  createPool,
  eventLogger,
  postgresDependencies,
} from "@trellis/db";
import {
  GracefulShutdown,
  composeEventHooks,
  createLogger,
  createMetricsRegistry,
  eventMetrics,
  readTracesSettings,
  startHttpServer,
  startTracing,
  waitForDependency,
} from "@trellis/observability";
import { configOrExit, readStartupSettings } from "@trellis/config";
import { WorkflowChunkSource, connectRedis, redisTlsOptions } from "@trellis/queue";
import { loadApiSettings } from "./config.js";
import { type RunningApiServer, startApiServer } from "./server.js";

const settings = loadApiSettings();
// How long the api waits for PostgreSQL at start before giving up (STARTUP_TIMEOUT_MS).
const { startupTimeoutMs } = configOrExit(() => readStartupSettings(process.env), "api");
const traces = configOrExit(() => readTracesSettings(process.env), "api");
const logger = createLogger({ app: "api", level: settings.logLevel });
const registry = createMetricsRegistry({ app: "api" });
// Each closer is bounded by this; the gRPC drain inside it has its own, shorter bound.
const shutdown = new GracefulShutdown(logger, { timeoutMs: settings.shutdownTimeoutMs + 5_000 });
shutdown.listen();

try {
  // OTEL_* asking for traces: the SDK, closed last (the final spans exported); otherwise nothing is loaded.
  const tracing = await startTracing({ serviceName: "trellis-api", settings: traces, logger });
  if (tracing) shutdown.add("traces", () => tracing.shutdown());
  const pool = createPool(settings.databaseUrl, { max: settings.dbPoolSize, applicationName: "trellis-api" }, (error) =>
    logger.error({ err: error }, "idle PostgreSQL connection failed"),
  );
  shutdown.add("postgres pool", () => pool.end());
  await waitForDependency("PostgreSQL", () => pool.query("select 1"), {
    logger,
    timeoutMs: startupTimeoutMs,
    signal: shutdown.signal,
  });
  // DATABASE_LISTEN_URL, when it is another address than DATABASE_URL (PostgreSQL behind a PgBouncer).
  for (const dependency of postgresDependencies(settings).slice(1)) {
    await waitForDependency(dependency.name, dependency.check, {
      logger,
      timeoutMs: startupTimeoutMs,
      signal: shutdown.signal,
    });
  }

  let api: RunningApiServer | undefined;
  const http = await startHttpServer({
    host: settings.httpAddr.host,
    port: settings.httpAddr.port,
    registry,
    logger,
    isReady: () => api?.isServing() ?? false,
  });
  shutdown.add("http server", () => http.close());

  const stateManager = new PgStateManager(createDatabase(pool), {
    onEvents: composeEventHooks(eventLogger(logger), eventMetrics(registry)),
  });
  shutdown.add("notifications", () => stateManager.flushNotifications());
  // LISTEN holds session state: a direct connection, not a transaction-pooling PgBouncer (DATABASE_LISTEN_URL).
  const events = new WorkflowEventHub({
    stateManager,
    databaseUrl: settings.databaseListenUrl ?? settings.databaseUrl,
    onError: (error) => logger.warn({ err: error }, "event LISTEN connection lost; reconnecting"),
  });
  await events.start();
  shutdown.add("event listener", () => events.close());

  let chunks: WorkflowChunkSource | undefined;
  if (settings.chunks) {
    // Fails fast: while Redis is away watchers get their durable events without chunks.
    const redis = connectRedis(settings.chunks.redisUrl, {
      ...redisTlsOptions(settings.chunks.redisTls),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
    });
    redis.on("error", (error) => logger.debug({ err: error }, "redis (output chunks) connection error"));
    shutdown.add("redis", async () => redis.disconnect());
    chunks = new WorkflowChunkSource({
      events,
      getWorkflow: (workflowId) => stateManager.getWorkflow(workflowId),
      redis,
      queuePrefix: settings.chunks.queuePrefix,
      onError: (error) => logger.warn({ err: error }, "output chunks unavailable for a watch (Redis)"),
    });
  }

  api = await startApiServer({ stateManager, logger, registry, settings, events, chunks });
  const running = api;
  shutdown.add("grpc server", () => running.close(settings.shutdownTimeoutMs));
} catch (error) {
  if (!shutdown.started) {
    const message = error instanceof Error ? error.message : String(error);
    logger.fatal({ err: error }, "api failed to start");
    process.stderr.write(`trellis api: cannot start: ${message}\n`);
    await shutdown.shutdown("start failed");
    process.exit(1);
  }
}
