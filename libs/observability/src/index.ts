export { composeEventHooks, type EventHook } from "./event-hooks.js";
export {
  countEvents,
  createEventMetrics,
  type EventMetrics,
  eventMetrics,
  FINAL_NODE_STATUSES,
  FINAL_WORKFLOW_STATUSES,
  type ObservedEvent,
} from "./event-metrics.js";
export { GracefulShutdown, type GracefulShutdownOptions } from "./graceful-shutdown.js";
export {
  type HttpRoutes,
  type HttpServerOptions,
  type RunningHttpServer,
  startHttpServer,
} from "./http-server.js";
export { createLogger, type LoggerOptions } from "./logger.js";
export { createMetricsRegistry, type MetricsRegistryOptions } from "./metrics.js";
export {
  type OtlpProtocol,
  type RunningTracing,
  type StartTracingOptions,
  type TracesSettings,
  contextOfTraceparent,
  readTracesSettings,
  startTracing,
  traceHeadersOf,
  traceparentOf,
  tracer,
  tracingEnabled,
} from "./tracing.js";
export { type WaitForDependencyOptions, waitForDependency } from "./wait-for-dependency.js";
export { type AppContext, type AppSettings, type AppSpec, type RunningApp, runApp } from "./run-app.js";
