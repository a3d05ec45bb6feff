// Wires the dashboard app: settings -> dependencies -> start -> SIGTERM.
import { configOrExit } from "@trellis/config";
import { GracefulShutdown, createLogger, createMetricsRegistry, startHttpServer } from "@trellis/observability";
import { startDashboardApp } from "./app.js";
import { readDashboardSettings } from "./config.js";

const settings = configOrExit(() => readDashboardSettings(process.env), "dashboard");
const logger = createLogger({ app: "dashboard", level: settings.logLevel });
const registry = createMetricsRegistry({ app: "dashboard" });
const shutdown = new GracefulShutdown(logger);
shutdown.listen();
try {
  const app = await startDashboardApp(settings, { logger });
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
  logger.fatal({ err: error }, "dashboard cannot start");
  console.error(
    `trellis dashboard: cannot start: ${(error as Error).message} (is PostgreSQL at DATABASE_URL and Redis at REDIS_URL running?)`,
  );
  process.exit(1);
}
