import { type Env, type HostPort, type LogLevel, configOrExit, readStartupSettings } from "@trellis/config";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { GracefulShutdown } from "./graceful-shutdown.js";
import { type HttpRoutes, type RunningHttpServer, startHttpServer } from "./http-server.js";
import { createLogger } from "./logger.js";
import { createMetricsRegistry } from "./metrics.js";
import { readTracesSettings, startTracing } from "./tracing.js";
import { waitForDependency } from "./wait-for-dependency.js";

/** What every long-running app's settings have. */
export interface AppSettings {
  logLevel: LogLevel;
  http: HostPort;
}

/** A started app: its readiness and how to stop it. */
export interface RunningApp {
  isReady(): boolean;
  close(): Promise<void>;
}

/** What the app gets to start with. */
export interface AppContext {
  logger: Logger;
  registry: Registry;
  /** Aborted when shutdown begins (SIGTERM/SIGINT), e.g. during a long start. */
  signal: AbortSignal;
}

/** How to run one app. */
export interface AppSpec<S extends AppSettings, A extends RunningApp> {
  /** The app's name, as in logs, metrics and messages: `scheduler`, `worker`, ... */
  name: string;
  readSettings: (env: Env) => S;
  /** Services the app needs before it starts, probed in order (e.g. PostgreSQL, then Redis). */
  dependencies: (settings: S) => { name: string; check: () => Promise<unknown> }[];
  start: (settings: S, context: AppContext) => Promise<A>;
  /** Extra routes of the app's HTTP port, besides /healthz, /readyz and /metrics. */
  routes?: (app: A) => HttpRoutes;
  /** Called once the HTTP port listens. */
  onListening?: (http: RunningHttpServer, logger: Logger) => void;
}

/**
 * Runs a long-running app the way every Trellis app runs: settings read (exit 2 with a message when invalid),
 * dependencies waited for with a bounded backoff (STARTUP_TIMEOUT_MS) rather than crash-looping, the app
 * started, its HTTP port with /healthz, /readyz and /metrics, and SIGTERM/SIGINT handled by closing the app and
 * then the port. A failed start logs, prints one line and exits 1. OTEL_* variables that ask for traces start the
 * OpenTelemetry SDK first (see tracing.ts); otherwise none is loaded.
 */
export async function runApp<S extends AppSettings, A extends RunningApp>(
  spec: AppSpec<S, A>,
  env: Env = process.env,
): Promise<void> {
  const settings = configOrExit(() => spec.readSettings(env), spec.name);
  const { startupTimeoutMs } = configOrExit(() => readStartupSettings(env), spec.name);
  const traces = configOrExit(() => readTracesSettings(env), spec.name);
  const logger = createLogger({ app: spec.name, level: settings.logLevel });
  const registry = createMetricsRegistry({ app: spec.name });
  const shutdown = new GracefulShutdown(logger);
  shutdown.listen();
  try {
    // Off (no OTEL_* asking for it): nothing loaded. Added first, so it closes last, exporting the final spans.
    const tracing = await startTracing({ serviceName: `trellis-${spec.name}`, settings: traces, logger });
    if (tracing) shutdown.add("traces", () => tracing.shutdown());
    const wait = { logger, timeoutMs: startupTimeoutMs, signal: shutdown.signal };
    for (const dependency of spec.dependencies(settings)) {
      await waitForDependency(dependency.name, dependency.check, wait);
    }
    const app = await spec.start(settings, { logger, registry, signal: shutdown.signal });
    shutdown.add(spec.name, () => app.close());
    const http = await startHttpServer({
      ...settings.http,
      registry,
      logger,
      isReady: () => app.isReady(),
      ...(spec.routes ? { routes: spec.routes(app) } : {}),
    });
    shutdown.add("http", () => http.close());
    spec.onListening?.(http, logger);
  } catch (error) {
    if (!shutdown.started) {
      logger.fatal({ err: error }, `${spec.name} cannot start`);
      console.error(
        `trellis ${spec.name}: cannot start: ${(error as Error).message} (is PostgreSQL at DATABASE_URL and Redis at REDIS_URL running?)`,
      );
      process.exit(1);
    }
  }
}
