// Wires the dashboard app: settings -> dependencies -> start -> SIGTERM.
import { configOrExit, readStartupSettings } from "@trellis/config";
import { checkPostgres } from "@trellis/db";
import {
  GracefulShutdown,
  createLogger,
  createMetricsRegistry,
  startHttpServer,
  waitForDependency,
} from "@trellis/observability";
import { checkRedis } from "@trellis/queue";
import { startDashboardApp } from "./app.js";
import { readDashboardSettings } from "./config.js";

const settings = configOrExit(() => readDashboardSettings(process.env), "dashboard");
const { startupTimeoutMs } = configOrExit(() => readStartupSettings(process.env), "dashboard");
const logger = createLogger({ app: "dashboard", level: settings.logLevel });
const registry = createMetricsRegistry({ app: "dashboard" });
const shutdown = new GracefulShutdown(logger);
shutdown.listen();
try {
  // Started before its dependencies (a reboot, a compose file): wait for them, bounded, rather than crash-loop.
  const wait = { logger, timeoutMs: startupTimeoutMs, signal: shutdown.signal };
  await waitForDependency("PostgreSQL", () => checkPostgres(settings.databaseUrl), wait);
  await waitForDependency("Redis", () => checkRedis(settings.redisUrl), wait);
  const app = await startDashboardApp(settings, { logger, registry, signal: shutdown.signal });
  shutdown.add("dashboard", () => app.close());
  const http = await startHttpServer({
    ...settings.http,
    registry,
    logger,
    isReady: () => app.isReady(),
    routes: (req, res) => app.handle(req, res),
  });
  shutdown.add("http", () => http.close());
  logger.info({ address: `http://${http.address.host}:${http.address.port}/` }, "dashboard listening");
} catch (error) {
  if (!shutdown.started) {
    logger.fatal({ err: error }, "dashboard cannot start");
    console.error(
      `trellis dashboard: cannot start: ${(error as Error).message} (is PostgreSQL at DATABASE_URL and Redis at REDIS_URL running?)`,
    );
    process.exit(1);
  }
}
