import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  addGrpcService,
  type ExecuteNodeRequest,
  type ExecuteNodeResponse,
  ExecuteNodeStreamResponseSchema,
  ExecutionStatus,
  NodeService,
  type OutputChunkSchema,
} from "@trellis/proto";
import type { Logger } from "pino";
import { Counter, Histogram, type Registry } from "prom-client";
import { type ChunkSink, executeExample, isExampleCapability } from "./capabilities.js";

/** Largest request the service accepts: node inputs and parent outputs can be big. */
export const MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Options of {@link startExampleNodeService}. */
export interface ExampleNodeServiceOptions {
  /** Interface to listen on, e.g. `0.0.0.0`, or `127.0.0.1` in tests. */
  host: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Every call is logged here (debug), failures and cancellations at info and above. */
  logger: Logger;
  /** Where the execution metrics are registered; none means no metrics. */
  registry?: Registry;
  /**
   * How long `close()` lets calls in flight finish before cancelling them (they answer UNAVAILABLE, which the
   * worker retries). @default 5000
   */
  shutdownGraceMs?: number;
}

/** A listening example NodeService, from {@link startExampleNodeService}. */
export interface RunningExampleNodeService {
  /** `host:port` it listens on, with the real port. */
  address: string;
  /** The port actually bound. */
  port: number;
  /** Stops taking calls, lets those in flight finish within the grace period, then stops. Safe to call twice. */
  close(): Promise<void>;
}

/** Formats `host:port`, bracketing IPv6 hosts. */
function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A gRPC status answer for the callback of a unary handler. */
function statusError(code: grpc.status, details: string): grpc.ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

/** The execution metrics, labelled by capability (unknown ones as `unknown`, to bound the label's values). */
interface ExecutionMetrics {
  observe(capability: string, outcome: string, seconds: number): void;
}

function createExecutionMetrics(registry: Registry | undefined): ExecutionMetrics {
  if (registry === undefined) return { observe: () => {} };
  const executions = new Counter({
    name: "trellis_example_node_executions_total",
    help: "ExecuteNode calls answered by the example NodeService, by capability and outcome.",
    labelNames: ["capability", "outcome"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "trellis_example_node_execution_duration_seconds",
    help: "Time the example NodeService took to answer ExecuteNode, by capability.",
    labelNames: ["capability"],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600],
    registers: [registry],
  });
  return {
    observe(capability, outcome, seconds) {
      const label = isExampleCapability(capability) ? capability : "unknown";
      executions.inc({ capability: label, outcome });
      duration.observe({ capability: label }, seconds);
    },
  };
}

/** The fields every log line about one call carries, named as in every Trellis app's logs. */
function callFields(request: ExecuteNodeRequest): Record<string, string | number> {
  return {
    workflow_id: request.context?.workflowId ?? "",
    node_id: request.node?.id ?? "",
    capability: request.node?.capability ?? "",
    attempt: request.context?.attempt ?? 0,
  };
}

/**
 * Starts the example `workflow.v1.NodeService` (echo, sleep, fail, flaky, llm.mock, llm.metered, llm.stream, plan),
 * ExecuteNode and ExecuteNodeStream, on a grpc-js server that accepts requests up to
 * {@link MAX_RECEIVE_MESSAGE_BYTES}. Resolves once listening; rejects when the address
 * cannot be bound. A call its caller cancels stops its work (a `sleep` ends at once).
 */
export async function startExampleNodeService(opts: ExampleNodeServiceOptions): Promise<RunningExampleNodeService> {
  const { logger } = opts;
  const metrics = createExecutionMetrics(opts.registry);
  const inFlight = new Set<AbortController>();
  let closing: Promise<void> | undefined;

  /**
   * Runs one call (ExecuteNode, or ExecuteNodeStream with `onChunk`) and answers through `answer`: a response, or a
   * gRPC status when the call was cancelled, the service is shutting down, or the execution failed unexpectedly.
   */
  const execute = (
    call: grpc.ServerUnaryCall<ExecuteNodeRequest, unknown> | grpc.ServerWritableStream<ExecuteNodeRequest, unknown>,
    answer: (error: grpc.ServerErrorResponse | null, response?: ExecuteNodeResponse) => void,
    onChunk?: ChunkSink,
  ): void => {
    const fields = callFields(call.request);
    const capability = call.request.node?.capability ?? "";
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
    const finish = (outcome: string): void => {
      answered = true;
      metrics.observe(capability, outcome, (performance.now() - started) / 1000);
    };
    void executeExample(call.request, controller.signal, onChunk)
      .then(
        (response) => {
          const outcome = ExecutionStatus[response.status] ?? String(response.status);
          logger.debug({ ...fields, outcome, ms: Math.round(performance.now() - started) }, "node executed");
          finish(outcome);
          answer(null, response);
        },
        (error: unknown) => {
          if (cancelledByCaller) {
            logger.info(fields, "call cancelled by the caller; work stopped");
            finish("CANCELLED");
            answer(statusError(grpc.status.CANCELLED, "cancelled by the caller"));
          } else if (closing !== undefined) {
            logger.warn(fields, "call cut short by shutdown");
            finish("UNAVAILABLE");
            answer(statusError(grpc.status.UNAVAILABLE, "the example node service is shutting down"));
          } else {
            logger.error({ ...fields, err: error }, "node execution failed unexpectedly");
            finish("INTERNAL");
            answer(statusError(grpc.status.INTERNAL, error instanceof Error ? error.message : String(error)));
          }
        },
      )
      .finally(() => inFlight.delete(controller));
  };

  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE_BYTES });
  addGrpcService(server, NodeService, {
    executeNode(call, callback) {
      execute(call, (error, response) => (error ? callback(error) : callback(null, response)));
    },
    // The streaming form: `llm.stream` sends its words as chunks; every other capability sends its result alone.
    executeNodeStream(call) {
      const chunk = (value: MessageInitShape<typeof OutputChunkSchema>) =>
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
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(joinHostPort(opts.host, opts.port), grpc.ServerCredentials.createInsecure(), (error, bound) => {
      if (error) {
        reject(new Error(`NodeService cannot listen on ${joinHostPort(opts.host, opts.port)}: ${error.message}`));
      } else {
        resolve(bound);
      }
    });
  });
  const address = joinHostPort(opts.host, port);
  logger.info({ address }, "example node service listening");

  const graceMs = opts.shutdownGraceMs ?? 5000;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      const cancelInFlight = setTimeout(() => {
        if (inFlight.size > 0) logger.warn({ calls: inFlight.size }, "cancelling calls still running at shutdown");
        for (const controller of inFlight) {
          controller.abort(new DOMException("the example node service is shutting down", "AbortError"));
        }
      }, graceMs);
      // Cancelled calls answer at once; this only cuts connections that still hang on.
      const force = setTimeout(() => server.forceShutdown(), graceMs + 1000);
      server.tryShutdown(() => {
        clearTimeout(cancelInFlight);
        clearTimeout(force);
        resolve();
      });
    });
    return closing;
  };

  return { address, port, close };
}
