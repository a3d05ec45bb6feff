// Wires the scheduler app: settings -> dependencies -> start -> SIGTERM.
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
import { startSchedulerApp } from "./app.js";
import { readSchedulerSettings } from "./config.js";

const settings = configOrExit(() => readSchedulerSettings(process.env), "scheduler");
const { startupTimeoutMs } = configOrExit(() => readStartupSettings(process.env), "scheduler");
const logger = createLogger({ app: "scheduler", level: settings.logLevel });
const registry = createMetricsRegistry({ app: "scheduler" });
const shutdown = new GracefulShutdown(logger);
shutdown.listen();
try {
  // Started before its dependencies (a reboot, a compose file): wait for them, bounded, rather than crash-loop.
  const wait = { logger, timeoutMs: startupTimeoutMs, signal: shutdown.signal };
  await waitForDependency("PostgreSQL", () => checkPostgres(settings.databaseUrl), wait);
  await waitForDependency("Redis", () => checkRedis(settings.redisUrl), wait);
  const app = await startSchedulerApp(settings, { logger, registry });
  shutdown.add("scheduler", () => app.close());
  const http = await startHttpServer({ ...settings.http, registry, logger, isReady: () => app.isReady() });
  shutdown.add("http", () => http.close());
} catch (error) {
  if (!shutdown.started) {
    logger.fatal({ err: error }, "scheduler cannot start");
    console.error(
      `trellis scheduler: cannot start: ${(error as Error).message} (is PostgreSQL at DATABASE_URL and Redis at REDIS_URL running?)`,
    );
    process.exit(1);
  }
}
