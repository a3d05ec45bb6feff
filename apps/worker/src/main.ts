// Wires the worker app: settings -> dependencies -> start -> SIGTERM.
import { configOrExit } from "@trellis/config";
import { GracefulShutdown, createLogger, createMetricsRegistry, startHttpServer } from "@trellis/observability";
import { startWorkerApp } from "./app.js";
import { readWorkerSettings } from "./config.js";

const settings = configOrExit(() => readWorkerSettings(process.env), "worker");
const logger = createLogger({ app: "worker", level: settings.logLevel });
const registry = createMetricsRegistry({ app: "worker" });
const shutdown = new GracefulShutdown(logger);
shutdown.listen();
try {
  const app = await startWorkerApp(settings, { logger, registry });
  shutdown.add("worker", () => app.close());
  const http = await startHttpServer({ ...settings.http, registry, logger, isReady: () => app.isReady() });
  shutdown.add("http", () => http.close());
} catch (error) {
  logger.fatal({ err: error }, "worker cannot start");
  console.error(
    `trellis worker: cannot start: ${(error as Error).message} (is PostgreSQL at DATABASE_URL and Redis at REDIS_URL running?)`,
  );
  process.exit(1);
}
