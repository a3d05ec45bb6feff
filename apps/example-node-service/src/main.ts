import * as grpc from "@grpc/grpc-js";
import { configOrExit } from "@trellis/config";
import { createLogger, createMetricsRegistry, GracefulShutdown, startHttpServer } from "@trellis/observability";
import { readExampleNodeServiceConfig } from "./config.js";
import { startExampleNodeService } from "./server.js";

const APP = "example-node-service";

/** Wires the app: settings, logger, HTTP side server, the NodeService, then SIGTERM/SIGINT handling. */
async function main(): Promise<void> {
  const config = configOrExit(() => readExampleNodeServiceConfig(process.env), APP);
  const logger = createLogger({ app: APP, level: config.logLevel });
  // grpc-js writes its diagnostics to stderr; log them as JSON so stderr keeps only the one-line start failure.
  const grpcLog =
    (level: "debug" | "info" | "warn") =>
    (message: unknown, ...rest: unknown[]) =>
      logger[level]({ grpc: [message, ...rest].map(String).join(" ") }, "grpc-js");
  grpc.setLogger({ debug: grpcLog("debug"), info: grpcLog("info"), error: grpcLog("warn") });
  const shutdown = new GracefulShutdown(logger);
  shutdown.listen();
  const registry = createMetricsRegistry({ app: APP });

  let serving = false;
  try {
    // Started first so it closes last: /healthz and /metrics stay up while calls drain.
    const http = await startHttpServer({
      host: config.http.host,
      port: config.http.port,
      registry,
      logger,
      isReady: () => serving && !shutdown.started,
    });
    shutdown.add("http server", () => http.close());
    const service = await startExampleNodeService({
      host: config.listen.host,
      port: config.listen.port,
      logger,
      registry,
    });
    shutdown.add("node service", () => service.close());
    serving = true;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    logger.fatal({ err: error }, "start failed");
    process.stderr.write(`trellis ${APP}: ${message}\n`);
    await shutdown.shutdown("start failed");
    process.exit(1);
  }
}

await main();
