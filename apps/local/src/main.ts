// `npm start`: the whole engine in one process for a laptop — migrations, api, scheduler, one worker,
// dashboard, and the example NodeService unless NODE_SERVICE_ADDR points at a real one.
import { readApiSettings, startApiServer } from "@trellis/api";
import { configOrExit, describeRedisTarget, type Env, parseRedisUrl } from "@trellis/config";
import { startDashboardApp, readDashboardSettings } from "@trellis/dashboard";
import { PgStateManager, WorkflowEventHub, createDatabase, createPool, eventLogger, runMigrations } from "@trellis/db";
import {
  EXAMPLE_CAPABILITIES,
  readExampleNodeServiceConfig,
  startExampleNodeService,
} from "@trellis/example-node-service";
import {
  GracefulShutdown,
  composeEventHooks,
  createLogger,
  createMetricsRegistry,
  eventMetrics,
  readTracesSettings,
  startHttpServer,
  startTracing,
} from "@trellis/observability";
import { WorkflowChunkSource, connectRedis, redisTlsOptions } from "@trellis/queue";
import { readSchedulerSettings, startSchedulerApp } from "@trellis/scheduler";
import { readWorkerSettings, startWorkerApp } from "@trellis/worker";
import { bannerText } from "./banner.js";

// One HTTP_ADDR cannot serve five apps: in this process each app keeps its own default side port.
const { HTTP_ADDR: _ignored, ...env } = process.env;
const externalNodeService = env.NODE_SERVICE_ADDR;
const nodeServiceEnv: Env = { NODE_SERVICE_LISTEN_ADDR: "127.0.0.1:50052", ...env };
const settings = configOrExit(
  () => ({
    api: readApiSettings(env),
    scheduler: readSchedulerSettings(env),
    worker: readWorkerSettings({ WORKER_CAPABILITIES: EXAMPLE_CAPABILITIES.join(","), ...env }),
    dashboard: readDashboardSettings(env),
    nodeService: readExampleNodeServiceConfig(nodeServiceEnv),
  }),
  "start",
);
// In a terminal one readable line per entry (pino-pretty); piped (`npm start | tee`, a log collector) JSON lines.
const loggerFor = (app: string) => createLogger({ app, level: settings.api.logLevel, pretty: process.stdout.isTTY });
const logger = loggerFor("trellis");
const traces = configOrExit(() => readTracesSettings(env), "start");
const shutdown = new GracefulShutdown(logger);
shutdown.listen();
// OTEL_* asking for traces: one SDK for every app of this process (service.name `trellis`), closed last.
const tracing = await startTracing({ serviceName: "trellis", settings: traces, logger });
if (tracing) shutdown.add("traces", () => tracing.shutdown());

function fail(error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  const db = new URL(settings.api.databaseUrl);
  const redis = describeRedisTarget(parseRedisUrl(settings.scheduler.redisUrl));
  process.stderr.write(
    `trellis start: ${message}\n` +
      `  Trellis needs PostgreSQL 15+ at ${db.host} (DATABASE_URL) and Redis 7+ at ${redis} (REDIS_URL).\n` +
      "  Start them (e.g. `docker compose up -d postgres redis`, or your system's services) and run `npm start` again.\n",
  );
  process.exit(1);
}

try {
  // Migrations take a session-level advisory lock: over the direct connection (DATABASE_LISTEN_URL).
  await runMigrations(settings.api.databaseListenUrl ?? settings.api.databaseUrl);
} catch (error) {
  fail(error);
}

try {
  let nodeServiceAddr = externalNodeService;
  let exampleNodeService: { address: string; metricsPort: number } | undefined;
  if (!nodeServiceAddr) {
    const nsLogger = loggerFor("example-node-service");
    const nsRegistry = createMetricsRegistry({ app: "example-node-service", collectDefault: false });
    const ns = await startExampleNodeService({
      host: settings.nodeService.listen.host,
      port: settings.nodeService.listen.port,
      logger: nsLogger,
      registry: nsRegistry,
    });
    shutdown.add("example-node-service", () => ns.close());
    // Its side port as when it runs alone (HTTP_ADDR's default, :9467): /metrics, /healthz, /readyz.
    const nsHttp = await startHttpServer({
      ...settings.nodeService.http,
      registry: nsRegistry,
      logger: nsLogger,
      isReady: () => true,
    });
    shutdown.add("example-node-service http", () => nsHttp.close());
    nodeServiceAddr = ns.address;
    exampleNodeService = { address: ns.address, metricsPort: nsHttp.address.port };
  }

  const pool = createPool(settings.api.databaseUrl, { max: settings.api.dbPoolSize, applicationName: "trellis-api" });
  shutdown.add("api pool", () => pool.end());
  const apiLogger = loggerFor("api");
  const apiRegistry = createMetricsRegistry({ app: "api", collectDefault: false });
  const stateManager = new PgStateManager(createDatabase(pool), {
    onEvents: composeEventHooks(eventLogger(apiLogger), eventMetrics(apiRegistry)),
  });
  shutdown.add("api notifications", () => stateManager.flushNotifications());
  const events = new WorkflowEventHub({
    stateManager,
    databaseUrl: settings.api.databaseListenUrl ?? settings.api.databaseUrl,
  });
  await events.start();
  shutdown.add("event listener", () => events.close());
  // WatchWorkflow's include_chunks: the workers' output chunks, on a connection that fails fast.
  const chunkRedis = connectRedis(settings.scheduler.redisUrl, {
    ...redisTlsOptions(settings.scheduler.redisTls),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  chunkRedis.on("error", () => undefined);
  shutdown.add("chunk redis", async () => chunkRedis.disconnect());
  const chunks = new WorkflowChunkSource({
    events,
    getWorkflow: (workflowId) => stateManager.getWorkflow(workflowId),
    redis: chunkRedis,
    queuePrefix: settings.scheduler.queuePrefix,
  });

  const schedulerRegistry = createMetricsRegistry({ app: "scheduler" });
  const scheduler = await startSchedulerApp(settings.scheduler, {
    logger: loggerFor("scheduler"),
    registry: schedulerRegistry,
  });
  shutdown.add("scheduler", () => scheduler.close());

  const workerRegistry = createMetricsRegistry({ app: "worker", collectDefault: false });
  const worker = await startWorkerApp(
    { ...settings.worker, nodeServiceAddr },
    { logger: loggerFor("worker"), registry: workerRegistry },
  );
  shutdown.add("worker", () => worker.close());

  const api = await startApiServer({
    stateManager,
    logger: apiLogger,
    registry: apiRegistry,
    settings: settings.api,
    events,
    chunks,
    notifyScheduler: () => scheduler.scheduler.wake(),
  });
  shutdown.add("api", () => api.close(settings.api.shutdownTimeoutMs));

  // The dashboard's own metrics (its HTTP requests); process metrics are the scheduler's in this shared process.
  const dashboardRegistry = createMetricsRegistry({ app: "dashboard", collectDefault: false });
  const dashboard = await startDashboardApp(settings.dashboard, {
    logger: loggerFor("dashboard"),
    registry: dashboardRegistry,
    stateManager,
    events,
    notifyScheduler: () => scheduler.scheduler.wake(),
    signal: shutdown.signal,
  });
  shutdown.add("dashboard", () => dashboard.close());

  const sides = [
    { name: "api", registry: apiRegistry, addr: settings.api.httpAddr, ready: () => api.isServing() },
    { name: "scheduler", registry: schedulerRegistry, addr: settings.scheduler.http, ready: () => scheduler.isReady() },
    { name: "worker", registry: workerRegistry, addr: settings.worker.http, ready: () => worker.isReady() },
  ];
  for (const side of sides) {
    const http = await startHttpServer({ ...side.addr, registry: side.registry, logger, isReady: side.ready });
    shutdown.add(`${side.name} http`, () => http.close());
  }
  const dashboardHttp = await startHttpServer({
    ...settings.dashboard.http,
    registry: dashboardRegistry,
    logger,
    isReady: () => dashboard.isReady(),
    routes: (req, res) => dashboard.handle(req, res),
  });
  shutdown.add("dashboard http", () => dashboardHttp.close());

  const host = (h: string) => (h === "0.0.0.0" || h === "::" ? "localhost" : h);
  const banner = bannerText({
    api: `${host(settings.api.grpcAddr.host)}:${api.port}`,
    dashboard: `http://${host(settings.dashboard.http.host)}:${dashboardHttp.address.port}/`,
    metricsPorts: {
      api: settings.api.httpAddr.port,
      scheduler: settings.scheduler.http.port,
      worker: settings.worker.http.port,
      exampleNodeService: exampleNodeService?.metricsPort,
    },
    capabilities: settings.worker.capabilities,
    routes: settings.worker.nodeServiceRoutes ?? [],
    nodeServiceAddr,
    exampleNodeService: exampleNodeService?.address,
  });
  process.stdout.write(`${banner}\n`);
} catch (error) {
  await shutdown.shutdown("start failed").catch(() => undefined);
  fail(error);
}
