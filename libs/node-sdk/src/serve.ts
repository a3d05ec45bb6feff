import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { HealthImplementation } from "grpc-health-check";
import type { Handlers } from "./context.js";
import { type ChunkSink, executeNode } from "./execute.js";
import {
  type ExecuteNodeRequest,
  type ExecuteNodeResponse,
  ExecuteNodeStreamResponseSchema,
  ExecutionStatus,
  NodeService,
} from "./gen/workflow/v1/node_service_pb.js";
import { nodeServiceDefinition } from "./grpc-service.js";

/** Largest request accepted by default: node inputs and parents' outputs can be big. */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Where the service logs; a pino logger fits. Every call and a caller's cancellation at debug, a deadline at info, trouble at warn/error. */
export interface ServeLogger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/**
 * How one call ended: an ExecutionStatus name (SUCCESS, TASK_ERROR, INFRA_ERROR, THROTTLED), or the gRPC status it
 * got instead of an answer (CANCELLED by the caller or its deadline, UNAVAILABLE at shutdown, INTERNAL).
 */
export type CallOutcome = keyof typeof ExecutionStatus | "CANCELLED" | "UNAVAILABLE" | "INTERNAL";

/** What {@link ServeOptions.onCallEnd} is told about each call. */
export interface CallEnd {
  /** The node's capability as requested (maybe one no handler serves). */
  capability: string;
  outcome: CallOutcome;
  /** Time from the call's arrival to its answer. */
  durationMs: number;
  request: ExecuteNodeRequest;
}

/** Options of {@link serve}. */
export interface ServeOptions {
  /** Interface to listen on. @default "0.0.0.0" */
  host?: string;
  /** Port to listen on; 0 picks a free one. @default 50052 */
  port?: number;
  /** TLS and the like. @default insecure */
  credentials?: grpc.ServerCredentials;
  /** Largest request accepted (`grpc.max_receive_message_length`); gRPC's own default, 4 MiB, is small for agents. @default 16 MiB */
  maxReceiveMessageBytes?: number;
  /**
   * How long `close()` lets calls in flight finish; then their `ctx.signal` aborts and they answer UNAVAILABLE, which
   * the worker retries. @default 10000
   */
  shutdownGraceMs?: number;
  /** @default no logging */
  logger?: ServeLogger;
  /** Called once per call when it is answered, e.g. to count outcomes in metrics. */
  onCallEnd?: (call: CallEnd) => void;
  /** More grpc-js server options (keepalive, ...); the receive limit above wins. */
  serverOptions?: grpc.ServerOptions;
}

/** A listening NodeService, from {@link serve}. */
export interface NodeServiceHandle {
  /** `host:port` it listens on, with the real port. */
  address: string;
  /** The port actually bound. */
  port: number;
  /** The grpc-js server, to add services of your own (call before traffic). */
  server: grpc.Server;
  /**
   * Graceful shutdown: health turns NOT_SERVING, new calls are refused, calls in flight get `shutdownGraceMs` to
   * finish, then are aborted (UNAVAILABLE); resolves once the server is stopped. Safe to call twice.
   */
  close(): Promise<void>;
}

/** Health reports on the whole server ("") and on the NodeService. */
const HEALTH_SERVICES = ["", NodeService.typeName];

/** Formats `host:port`, bracketing IPv6 hosts. */
function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function statusError(code: grpc.status, details: string): grpc.ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

const SILENT: ServeLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** Longest delay setTimeout takes (about 24.8 days); later deadlines are simply not timed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The fields every log line about one call carries, named as in the engine's logs. */
function callFields(request: ExecuteNodeRequest): Record<string, string | number> {
  return {
    workflow_id: request.context?.workflowId ?? "",
    node_id: request.node?.id ?? "",
    capability: request.node?.capability ?? "",
    attempt: request.context?.attempt ?? 0,
  };
}

/** The earlier of the call's gRPC deadline and the request's own (the worker sets both), in epoch ms; none: undefined. */
function earliestDeadlineMs(callDeadline: grpc.Deadline, request: ExecuteNodeRequest): number | undefined {
  const candidates = [
    callDeadline instanceof Date ? callDeadline.getTime() : callDeadline,
    request.context?.deadline === undefined ? Number.POSITIVE_INFINITY : timestampMs(request.context.deadline),
  ].filter((ms) => Number.isFinite(ms) && ms > 0);
  return candidates.length === 0 ? undefined : Math.min(...candidates);
}

/**
 * Serves `handlers` as a `workflow.v1.NodeService` (ExecuteNode and ExecuteNodeStream) plus the standard
 * `grpc.health.v1.Health`, and resolves once listening (rejects when the address cannot be bound). A worker reaches it
 * at `NODE_SERVICE_ADDR`.
 */
export async function serve(handlers: Handlers, options: ServeOptions = {}): Promise<NodeServiceHandle> {
  const host = options.host ?? "0.0.0.0";
  const logger = options.logger ?? SILENT;
  const graceMs = options.shutdownGraceMs ?? 10_000;
  const inFlight = new Set<AbortController>();
  let closing: Promise<void> | undefined;

  /**
   * Runs one call (ExecuteNode, or ExecuteNodeStream with `onChunk`) and answers through `answer`: a response, or a
   * gRPC status when the call was cancelled, its deadline passed, or the service is shutting down.
   */
  const execute = (
    call: grpc.ServerUnaryCall<ExecuteNodeRequest, unknown> | grpc.ServerWritableStream<ExecuteNodeRequest, unknown>,
    answer: (error: grpc.ServerErrorResponse | null, response?: ExecuteNodeResponse) => void,
    onChunk?: ChunkSink,
  ): void => {
    const request = call.request;
    const fields = callFields(request);
    const capability = request.node?.capability ?? "";
    const started = performance.now();
    const controller = new AbortController();
    inFlight.add(controller);
    let answered = false;
    let cancelledByCaller = false;
    // grpc-js also emits "cancelled" when the stream closes after a normal answer: only earlier ones count.
    call.on("cancelled", () => {
      if (answered) return;
      cancelledByCaller = true;
      controller.abort(new DOMException("the caller cancelled the call", "AbortError"));
    });
    const deadlineMs = earliestDeadlineMs(call.getDeadline(), request);
    const deadlineTimer =
      deadlineMs === undefined
        ? undefined
        : setTimeout(
            () => controller.abort(new DOMException("the call's deadline passed", "TimeoutError")),
            Math.min(Math.max(0, deadlineMs - Date.now()), MAX_TIMER_MS),
          );
    const finish = (outcome: CallOutcome): void => {
      answered = true;
      clearTimeout(deadlineTimer);
      options.onCallEnd?.({ capability, outcome, durationMs: performance.now() - started, request });
    };
    void executeNode(handlers, request, { signal: controller.signal, ...(onChunk ? { onChunk } : {}) })
      .then(
        (response) => {
          const outcome = (ExecutionStatus[response.status] ?? "UNSPECIFIED") as CallOutcome;
          logger.debug({ ...fields, outcome, ms: Math.round(performance.now() - started) }, "node executed");
          finish(outcome);
          answer(null, response);
        },
        (error: unknown) => {
          if (cancelledByCaller) {
            // debug: the caller knows (a worker logs the node's cancellation once, as its CANCELLED event).
            logger.debug(fields, "call cancelled by the caller; work stopped");
            finish("CANCELLED");
            answer(statusError(grpc.status.CANCELLED, "cancelled by the caller"));
          } else if (
            controller.signal.reason instanceof DOMException &&
            controller.signal.reason.name === "TimeoutError"
          ) {
            logger.info(fields, "call's deadline passed; work stopped");
            finish("CANCELLED");
            answer(statusError(grpc.status.DEADLINE_EXCEEDED, "the call's deadline passed"));
          } else if (closing !== undefined) {
            logger.warn(fields, "call cut short by shutdown");
            finish("UNAVAILABLE");
            answer(statusError(grpc.status.UNAVAILABLE, "the node service is shutting down"));
          } else {
            logger.error({ ...fields, err: error }, "node execution failed unexpectedly");
            finish("INTERNAL");
            answer(statusError(grpc.status.INTERNAL, error instanceof Error ? error.message : String(error)));
          }
        },
      )
      .finally(() => inFlight.delete(controller));
  };

  const server = new grpc.Server({
    ...options.serverOptions,
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  });
  const health = new HealthImplementation();
  health.addToServer(server);
  const implementation: grpc.UntypedServiceImplementation = {
    executeNode(
      call: grpc.ServerUnaryCall<ExecuteNodeRequest, ExecuteNodeResponse>,
      callback: grpc.sendUnaryData<ExecuteNodeResponse>,
    ) {
      execute(call, (error, response) => (error ? callback(error) : callback(null, response)));
    },
    executeNodeStream(call: grpc.ServerWritableStream<ExecuteNodeRequest, unknown>) {
      const chunk: ChunkSink = (value) =>
        call.write(create(ExecuteNodeStreamResponseSchema, { message: { case: "chunk", value } }));
      execute(
        call,
        (error, response) => {
          if (error || !response) {
            call.emit("error", error);
            return;
          }
          call.write(create(ExecuteNodeStreamResponseSchema, { message: { case: "result", value: response } }));
          call.end();
        },
        chunk,
      );
    },
  };
  server.addService(nodeServiceDefinition, implementation);

  const wanted = joinHostPort(host, options.port ?? 50052);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(wanted, options.credentials ?? grpc.ServerCredentials.createInsecure(), (error, bound) => {
      if (error) reject(new Error(`NodeService cannot listen on ${wanted}: ${error.message}`));
      else resolve(bound);
    });
  });
  for (const name of HEALTH_SERVICES) health.setStatus(name, "SERVING");
  const address = joinHostPort(host, port);
  logger.info({ address, capabilities: Object.keys(handlers) }, "node service listening");

  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      for (const name of HEALTH_SERVICES) health.setStatus(name, "NOT_SERVING");
      const abortInFlight = setTimeout(() => {
        if (inFlight.size > 0) logger.warn({ calls: inFlight.size }, "cancelling calls still running at shutdown");
        for (const controller of inFlight) {
          controller.abort(new DOMException("the node service is shutting down", "AbortError"));
        }
      }, graceMs);
      // Aborted calls answer at once; this only cuts connections (and handlers ignoring their signal) that hang on.
      const force = setTimeout(() => server.forceShutdown(), graceMs + 1000);
      server.tryShutdown(() => {
        clearTimeout(abortInFlight);
        clearTimeout(force);
        resolve();
      });
    });
    return closing;
  };

  return { address, port, server, close };
}
