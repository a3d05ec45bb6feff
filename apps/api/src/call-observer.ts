import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { Counter, Histogram, type Registry } from "prom-client";
import { HEALTH_PATH_PREFIX } from "./auth.js";
import { deadlinePassed } from "./deadline.js";

/** The per-call metrics of the api. */
export interface GrpcCallMetrics {
  /** `trellis_grpc_requests_total{method,code}`. */
  requests: Counter<"method" | "code">;
  /** `trellis_grpc_request_seconds{method}`. */
  duration: Histogram<"method">;
}

/** Registers (or finds, when the registry already has them) the api's call metrics on `registry`. */
export function createGrpcCallMetrics(registry: Registry): GrpcCallMetrics {
  const requests =
    (registry.getSingleMetric("trellis_grpc_requests_total") as Counter<"method" | "code"> | undefined) ??
    new Counter({
      name: "trellis_grpc_requests_total",
      help: "gRPC calls served, by method and status code.",
      labelNames: ["method", "code"] as const,
      registers: [registry],
    });
  const duration =
    (registry.getSingleMetric("trellis_grpc_request_seconds") as Histogram<"method"> | undefined) ??
    new Histogram({
      name: "trellis_grpc_request_seconds",
      help: "Time from a gRPC call's arrival to its status, by method.",
      labelNames: ["method"] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
  return { requests, duration };
}

/** The workflow a request or response is about: its `workflowId`, or the id of the `workflow` it carries. */
function workflowIdOf(message: unknown): string | undefined {
  if (typeof message !== "object" || message === null) return undefined;
  const m = message as { workflowId?: unknown; workflow?: { id?: unknown } };
  if (typeof m.workflowId === "string" && m.workflowId !== "") return m.workflowId;
  if (typeof m.workflow?.id === "string" && m.workflow.id !== "") return m.workflow.id;
  return undefined;
}

/**
 * A server interceptor that writes one log line per call (method, code, duration_ms, workflow_id) and counts it in
 * {@link GrpcCallMetrics}. Installed innermost, so it also sees calls the auth interceptor rejects. Health checks
 * are logged at debug, the rest at info.
 */
export function createCallObserver(logger: Logger, metrics: GrpcCallMetrics): grpc.ServerInterceptor {
  return (descriptor, call) => {
    const method = descriptor.path.replace(/^\//, "");
    const level = descriptor.path.startsWith(HEALTH_PATH_PREFIX) ? "debug" : "info";
    const started = performance.now();
    let workflowId: string | undefined;
    let finished = false;
    const finish = (code: grpc.status): void => {
      if (finished) return;
      finished = true;
      const seconds = (performance.now() - started) / 1000;
      const codeName = grpc.status[code] ?? String(code);
      metrics.requests.inc({ method, code: codeName });
      metrics.duration.observe({ method }, seconds);
      logger[level](
        {
          method,
          code: codeName,
          duration_ms: Math.round(seconds * 100_000) / 100,
          ...(workflowId === undefined ? {} : { workflow_id: workflowId }),
        },
        "grpc call",
      );
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMessage: (message, nextMessage) => {
            workflowId ??= workflowIdOf(message);
            nextMessage(message);
          },
          // Without a status first, grpc-js ended the call itself: the deadline passed or the client went away.
          onCancel: () =>
            finish(deadlinePassed(call.getDeadline()) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED),
        }),
      sendMessage: (message, next) => {
        workflowId ??= workflowIdOf(message);
        next(message);
      },
      sendStatus: (status, next) => {
        finish(status.code);
        next(status);
      },
    });
  };
}
