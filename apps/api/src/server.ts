import * as grpc from "@grpc/grpc-js";
import type { StateManager } from "@trellis/db";
import { WorkflowService } from "@trellis/proto";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { createDeniedCounter, createTokenAuthInterceptor } from "./auth.js";
import { createCallObserver, createGrpcCallMetrics } from "./call-observer.js";
import type { ApiSettings, ApiTlsSettings } from "./config.js";
import { type WorkflowEventSource, createWorkflowServiceHandlers } from "./handlers.js";
import { createReflectionService } from "./reflection.js";
import { TokenRegistry, watchTokenFile } from "./tokens.js";
import { tolerantServiceDefinition } from "./undecodable-requests.js";

/** The settings {@link startApiServer} uses. */
export type ApiServerSettings = Pick<ApiSettings, "grpcAddr" | "apiToken" | "tls" | "maxReceiveBytes"> &
  Partial<Pick<ApiSettings, "tokensFile">>;

/** Options of {@link startApiServer}. */
export interface StartApiServerOptions {
  /** Where the WorkflowService reads and writes. */
  stateManager: StateManager;
  /** One line per call, and unexpected errors with their correlation id. */
  logger: Logger;
  /** Gets `trellis_grpc_requests_total` and `trellis_grpc_request_seconds`. */
  registry: Registry;
  /** Listen address, token, TLS and message size limit. */
  settings: ApiServerSettings;
  /** Wakes an in-process scheduler after changes that may make nodes ready (see WorkflowServiceDeps). */
  notifyScheduler?: ((workflowId: string) => void) | undefined;
  /** Source of WatchWorkflow streams (a WorkflowEventHub); without it WatchWorkflow answers UNIMPLEMENTED. */
  events?: WorkflowEventSource | undefined;
  /** Source of WatchWorkflow streams with `include_chunks` (a WorkflowChunkSource); without it no chunks are sent. */
  chunks?: WorkflowEventSource | undefined;
  /** How often API_TOKENS_FILE is stat-ed besides fs.watch. @default 2000 */
  tokensFilePollMs?: number | undefined;
}

/** A running api server. */
export interface RunningApiServer {
  /** The port it listens on (the real one when 0 was asked). */
  port: number;
  /** The underlying grpc-js server. */
  server: grpc.Server;
  /** Whether health answers SERVING (false once draining). */
  isServing(): boolean;
  /** Switches grpc.health.v1.Health between SERVING and NOT_SERVING, for the whole server and WorkflowService. */
  setServing(serving: boolean): void;
  /**
   * Drains: health goes NOT_SERVING, new calls are refused, in-flight calls get `graceMs` to finish, then the rest
   * are cut. Resolves when the server is stopped. Safe to call twice.
   */
  close(graceMs: number): Promise<void>;
}

/** Service names health reports on: "" is the whole server. */
const HEALTH_SERVICES = ["", WorkflowService.typeName];

function serverCredentials(tls: ApiTlsSettings | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    tls.caCert ?? null,
    [{ cert_chain: tls.cert, private_key: tls.key }],
    tls.caCert !== undefined,
  );
}

function bind(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (error, port) => {
      if (error) reject(new Error(`gRPC server cannot listen on ${address}: ${error.message}`, { cause: error }));
      else resolve(port);
    });
  });
}

/**
 * Starts the api's gRPC server: `workflow.v1.WorkflowService`, `grpc.health.v1.Health` (SERVING from the start:
 * callers start it once PostgreSQL answers) and server reflection, behind the per-call log/metrics interceptor and,
 * when a token is configured, the bearer-token check. Resolves once listening.
 */
export async function startApiServer(options: StartApiServerOptions): Promise<RunningApiServer> {
  const { logger, settings } = options;
  const interceptors = [createCallObserver(logger, createGrpcCallMetrics(options.registry))];
  // API_TOKEN (an admin token named "api-token") and API_TOKENS_FILE's entries; neither set: no auth.
  if (settings.apiToken === "") throw new Error("API token must not be empty");
  const tokens =
    settings.apiToken === undefined && settings.tokensFile === undefined
      ? undefined
      : new TokenRegistry(settings.tokensFile?.entries ?? [], settings.apiToken);
  const stopWatching =
    settings.tokensFile === undefined || tokens === undefined
      ? undefined
      : watchTokenFile(settings.tokensFile.path, tokens, logger, { pollMs: options.tokensFilePollMs });
  // Later interceptors wrap earlier ones: the auth check runs outside the observer, which thus logs its rejections.
  if (tokens !== undefined) {
    interceptors.push(createTokenAuthInterceptor(tokens, createDeniedCounter(options.registry)));
  }
  const server = new grpc.Server({
    "grpc.max_receive_message_length": settings.maxReceiveBytes,
    interceptors,
  });

  // Requests that cannot be decoded reach the handlers as placeholders they refuse (INVALID_ARGUMENT, not INTERNAL).
  server.addService(
    tolerantServiceDefinition(WorkflowService) as unknown as grpc.ServiceDefinition,
    createWorkflowServiceHandlers({
      stateManager: options.stateManager,
      logger,
      notifyScheduler: options.notifyScheduler,
      events: options.events,
      chunks: options.chunks,
      tokens,
    }) as unknown as grpc.UntypedServiceImplementation,
  );
  const health = new HealthImplementation();
  health.addToServer(server);
  createReflectionService([WorkflowService]).addToServer(server);

  let serving = false;
  const setServing = (value: boolean): void => {
    serving = value;
    for (const name of HEALTH_SERVICES) health.setStatus(name, value ? "SERVING" : "NOT_SERVING");
  };
  setServing(true);

  const port = await bind(server, settings.grpcAddr.address, serverCredentials(settings.tls));
  logger.info(
    {
      address: settings.grpcAddr.address,
      port,
      tls: settings.tls === undefined ? "off" : settings.tls.caCert === undefined ? "tls" : "mtls",
      auth: tokens === undefined ? "off" : "bearer",
      tokens: tokens?.names(),
    },
    "grpc server listening",
  );

  let closing: Promise<void> | undefined;
  const close = (graceMs: number): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      setServing(false);
      const cut = setTimeout(() => {
        logger.warn({ graceMs }, "in-flight gRPC calls did not finish in time; cutting them");
        server.forceShutdown();
        resolve();
      }, graceMs);
      stopWatching?.();
      server.tryShutdown(() => {
        clearTimeout(cut);
        resolve();
      });
    });
    return closing;
  };

  return { port, server, isServing: () => serving, setServing, close };
}
