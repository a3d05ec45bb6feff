// Wires the scheduler app: settings -> dependencies -> start -> SIGTERM.
import { configOrExit } from "@trellis/config";
import { GracefulShutdown, createLogger, createMetricsRegistry, startHttpServer } from "@trellis/observability";
import { startSchedulerApp } from "./app.js";
import { readSchedulerSettings } from "./config.js";

const settings = configOrExit(() => readSchedulerSettings(process.env), "scheduler");
const logger = createLogger({ app: "scheduler", level: settings.logLevel });
const registry = createMetricsRegistry({ app: "scheduler" });
const shutdown = new GracefulShutdown(logger);
shutdown.listen();
try {
  const app = await startSchedulerApp(settings, { logger, registry });
  shutdown.add("scheduler", () => app.close());
  const http = await startHttpServer({ ...settings.http, registry, logger, isReady: () => app.isReady() });
  shutdown.add("http", () => http.close());
} catch (error) {
  logger.fatal({ err: error }, "scheduler cannot start");
  console.error(
    `trellis scheduler: cannot start: ${(error as Error).message} (is PostgreSQL at DATABASE_URL and Redis at REDIS_URL running?)`,
  );
  process.exit(1);
}
