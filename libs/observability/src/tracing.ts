// OpenTelemetry traces: off unless the standard OTEL_* variables ask for an OTLP exporter. Off, only
// @opentelemetry/api is loaded (its no-op tracer) and the apps skip every span at one boolean check; the SDK and the
// exporter are imported only when tracing starts (docs/traces.md).
import {
  type Context,
  DiagLogLevel,
  ROOT_CONTEXT,
  type Span,
  type Tracer,
  defaultTextMapGetter,
  defaultTextMapSetter,
  diag,
  isSpanContextValid,
  propagation,
  trace,
} from "@opentelemetry/api";
import { ConfigError, type Env } from "@trellis/config";
import type { Logger } from "pino";

/** OTLP over HTTP, the two encodings this build exports (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL). */
export type OtlpProtocol = "http/protobuf" | "http/json";

/** Whether traces are exported, from the OTEL_* variables. */
export type TracesSettings = { enabled: false } | { enabled: true; protocol: OtlpProtocol };

const PROTOCOLS: readonly string[] = ["http/protobuf", "http/json"];

function envValue(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/**
 * Reads the switch: traces are exported when `OTEL_TRACES_EXPORTER` is `otlp`, or when it is unset and
 * `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; never with `OTEL_SDK_DISABLED=true`
 * or `OTEL_TRACES_EXPORTER=none`. Throws a ConfigError (one line, exit 2) for an exporter or protocol this build
 * does not have (`zipkin`, `grpc`, ...), rather than silently exporting nothing.
 */
export function readTracesSettings(env: Env = process.env): TracesSettings {
  if (envValue(env, "OTEL_SDK_DISABLED")?.toLowerCase() === "true") return { enabled: false };
  const exporters = (envValue(env, "OTEL_TRACES_EXPORTER") ?? "")
    .split(",")
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e !== "");
  const unknown = exporters.filter((e) => e !== "otlp" && e !== "none");
  if (unknown.length > 0) {
    throw ConfigError.invalid(
      "OTEL_TRACES_EXPORTER",
      `only "otlp" or "none" are supported, got "${unknown.join(",")}"`,
    );
  }
  const endpoint = envValue(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") ?? envValue(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
  const enabled = exporters.length > 0 ? exporters.includes("otlp") : endpoint !== undefined;
  if (!enabled) return { enabled: false };
  const protocolVar =
    envValue(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") !== undefined
      ? "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
      : "OTEL_EXPORTER_OTLP_PROTOCOL";
  const protocol = envValue(env, protocolVar) ?? "http/protobuf";
  if (!PROTOCOLS.includes(protocol)) {
    throw ConfigError.invalid(protocolVar, `only "http/protobuf" or "http/json" are supported, got "${protocol}"`);
  }
  for (const name of ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]) {
    const value = envValue(env, name);
    if (value !== undefined && !/^https?:\/\/[^/]/i.test(value)) {
      throw ConfigError.invalid(name, `must be an http:// or https:// URL, got "${value}"`);
    }
  }
  return { enabled: true, protocol: protocol as OtlpProtocol };
}

/** Started tracing: flushes and stops the exporter on shutdown. */
export interface RunningTracing {
  /** Exports what is still buffered and stops; safe to call twice. */
  shutdown(): Promise<void>;
  /** Exports what is buffered now (tests). */
  forceFlush(): Promise<void>;
}

/** Options of {@link startTracing}. */
export interface StartTracingOptions {
  /** `service.name` unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) says otherwise, e.g. `trellis-worker`. */
  serviceName: string;
  /** From {@link readTracesSettings}. */
  settings: TracesSettings;
  /** Where the SDK's own warnings go (an export that failed, a collector away). */
  logger?: Logger;
}

let running: RunningTracing | null = null;

/** Whether this process exports traces: the apps' one check before any span work. */
export function tracingEnabled(): boolean {
  return running !== null;
}

/**
 * Starts the OpenTelemetry SDK when `settings` enable it: a BasicTracerProvider (sampler and limits from
 * OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_SPAN_*), a BatchSpanProcessor (OTEL_BSP_*), the OTLP/HTTP
 * exporter of the protocol (endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*), the resource from
 * OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, and the W3C trace context propagator, all registered as the
 * global API's. Disabled: loads nothing and returns null. One per process (a second call returns the first).
 */
export async function startTracing(options: StartTracingOptions): Promise<RunningTracing | null> {
  if (!options.settings.enabled) return null;
  if (running) return running;
  const [{ BasicTracerProvider, BatchSpanProcessor }, resources, { W3CTraceContextPropagator }, semconv, exporter] =
    await Promise.all([
      import("@opentelemetry/sdk-trace-base"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/core"),
      import("@opentelemetry/semantic-conventions"),
      options.settings.protocol === "http/json"
        ? import("@opentelemetry/exporter-trace-otlp-http")
        : import("@opentelemetry/exporter-trace-otlp-proto"),
    ]);
  const { logger } = options;
  if (logger) {
    const log =
      (level: "warn" | "error") =>
      (message: string, ...args: unknown[]) =>
        logger[level]({ otel: args.length > 0 ? args.map(String).join(" ") : undefined }, `opentelemetry: ${message}`);
    diag.setLogger(
      { error: log("error"), warn: log("warn"), info: () => {}, debug: () => {}, verbose: () => {} },
      DiagLogLevel.WARN,
    );
  }
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ [semconv.ATTR_SERVICE_NAME]: options.serviceName }))
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new exporter.OTLPTraceExporter())],
  });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  let stopped: Promise<void> | undefined;
  const handle: RunningTracing = {
    shutdown: () => {
      // A collector that is away loses the last spans, never the shutdown.
      stopped ??= provider
        .shutdown()
        .catch((error: unknown) => logger?.warn({ err: error }, "opentelemetry: the last spans were not exported"))
        .finally(() => {
          if (running === handle) running = null;
          trace.disable();
          propagation.disable();
        });
      return stopped;
    },
    forceFlush: () => provider.forceFlush(),
  };
  running = handle;
  logger?.info(
    { protocol: options.settings.protocol, service_name: resource.attributes[semconv.ATTR_SERVICE_NAME] },
    "exporting traces over OTLP",
  );
  return handle;
}

/** Trellis's tracer (the API's no-op one while tracing is off). */
export function tracer(): Tracer {
  return trace.getTracer("trellis");
}

/**
 * The context a W3C `traceparent` (and `tracestate`) carries, e.g. from CreateWorkflow's metadata or a workflow's
 * stored trace_parent; ROOT_CONTEXT when absent, malformed or tracing is off.
 */
export function contextOfTraceparent(traceparent: string | undefined | null, tracestate?: string): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent, tracestate }, defaultTextMapGetter);
}

/** The W3C `traceparent` of a span (`00-<trace id>-<span id>-<flags>`), or undefined for a no-op span. */
export function traceparentOf(span: Span): string | undefined {
  const sc = span.spanContext();
  if (!isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

/** The W3C headers (`traceparent`, `tracestate`) that carry `span` to another process. */
export function traceHeadersOf(span: Span, parent: Context = ROOT_CONTEXT): Record<string, string> {
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(parent, span), headers, defaultTextMapSetter);
  return headers;
}
