import { once } from "node:events";
import { createServer } from "node:http";
import { ROOT_CONTEXT, isSpanContextValid, trace } from "@opentelemetry/api";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  contextOfTraceparent,
  readTracesSettings,
  startTracing,
  traceHeadersOf,
  traceparentOf,
  tracer,
  tracingEnabled,
} from "./tracing.js";

/** The OpenTelemetry SDK modules this process has imported (each mock records its first import). */
const loaded = vi.hoisted(() => new Set<string>());
vi.mock("@opentelemetry/sdk-trace-base", async (importOriginal) => {
  loaded.add("sdk-trace-base");
  return importOriginal();
});
vi.mock("@opentelemetry/resources", async (importOriginal) => {
  loaded.add("resources");
  return importOriginal();
});
vi.mock("@opentelemetry/core", async (importOriginal) => {
  loaded.add("core");
  return importOriginal();
});
vi.mock("@opentelemetry/exporter-trace-otlp-proto", async (importOriginal) => {
  loaded.add("exporter-trace-otlp-proto");
  return importOriginal();
});
vi.mock("@opentelemetry/exporter-trace-otlp-http", async (importOriginal) => {
  loaded.add("exporter-trace-otlp-http");
  return importOriginal();
});

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("readTracesSettings", () => {
  it("is off without OTEL_* variables, and on with an OTLP endpoint or OTEL_TRACES_EXPORTER=otlp", () => {
    expect(readTracesSettings({})).toEqual({ enabled: false });
    expect(readTracesSettings({ OTEL_SERVICE_NAME: "x", OTEL_TRACES_SAMPLER: "always_on" })).toEqual({
      enabled: false,
    });
    expect(readTracesSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })).toEqual({
      enabled: true,
      protocol: "http/protobuf",
    });
    expect(readTracesSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://c/v1/traces" }).enabled).toBe(true);
    expect(readTracesSettings({ OTEL_TRACES_EXPORTER: "otlp" }).enabled).toBe(true);
    expect(readTracesSettings({ OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })).toEqual({
      enabled: true,
      protocol: "http/json",
    });
    // The traces-specific protocol wins over the general one.
    expect(
      readTracesSettings({
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
      }),
    ).toEqual({ enabled: true, protocol: "http/json" });
  });

  it("stays off with OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true, whatever the endpoint", () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" };
    expect(readTracesSettings({ ...endpoint, OTEL_TRACES_EXPORTER: "none" })).toEqual({ enabled: false });
    expect(readTracesSettings({ ...endpoint, OTEL_SDK_DISABLED: "true" })).toEqual({ enabled: false });
  });

  it("refuses an exporter, protocol or endpoint this build cannot honour, naming the variable", () => {
    expect(() => readTracesSettings({ OTEL_TRACES_EXPORTER: "zipkin" })).toThrow(
      'OTEL_TRACES_EXPORTER: only "otlp" or "none" are supported, got "zipkin"',
    );
    expect(() => readTracesSettings({ OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).toThrow(
      'OTEL_EXPORTER_OTLP_PROTOCOL: only "http/protobuf" or "http/json" are supported, got "grpc"',
    );
    expect(() => readTracesSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" })).toThrow(
      /^OTEL_EXPORTER_OTLP_ENDPOINT: must be an http:\/\/ or https:\/\/ URL/,
    );
  });
});

describe("startTracing", () => {
  it("with no OTEL_* set starts no SDK and no exporter: the API's no-op tracer, nothing propagated", async () => {
    expect(await startTracing({ serviceName: "trellis-test", settings: readTracesSettings({}) })).toBeNull();
    expect(tracingEnabled()).toBe(false);
    expect([...loaded]).toEqual([]);
    const span = tracer().startSpan("nothing");
    expect(span.isRecording()).toBe(false);
    expect(isSpanContextValid(span.spanContext())).toBe(false);
    expect(traceparentOf(span)).toBeUndefined();
    expect(traceHeadersOf(span)).toEqual({});
    // A caller's traceparent is not even parsed.
    const context = contextOfTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect(context).toBe(ROOT_CONTEXT);
    expect(trace.getSpanContext(context)).toBeUndefined();
  });

  it("with an endpoint exports spans over OTLP/HTTP in protobuf, the default protocol, and stops on shutdown", async () => {
    const bodies: { contentType: string; body: Buffer; url: string }[] = [];
    const server = createServer(async (request, response) => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      bodies.push({
        url: request.url ?? "",
        contentType: String(request.headers["content-type"]),
        body: Buffer.concat(chunks),
      });
      response.writeHead(200).end();
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    try {
      // The exporter reads its endpoint from the process's environment, as in an app.
      vi.stubEnv("OTEL_EXPORTER_OTLP_ENDPOINT", `http://127.0.0.1:${port}`);
      const settings = readTracesSettings(process.env);
      const running = await startTracing({ serviceName: "trellis-test", settings });
      expect(running).not.toBeNull();
      expect(tracingEnabled()).toBe(true);
      expect([...loaded].sort()).toEqual(["core", "exporter-trace-otlp-proto", "resources", "sdk-trace-base"]);

      const parent = contextOfTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
      const span = tracer().startSpan("child", {}, parent);
      expect(traceparentOf(span)).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
      expect(traceHeadersOf(span).traceparent).toBe(traceparentOf(span));
      span.end();
      await running!.forceFlush();
      expect(bodies).toHaveLength(1);
      expect(bodies[0]).toMatchObject({ url: "/v1/traces", contentType: "application/x-protobuf" });
      // Protobuf carries ids as raw bytes and strings as UTF-8.
      expect(bodies[0]!.body.includes(Buffer.from("4bf92f3577b34da6a3ce929d0e0e4736", "hex"))).toBe(true);
      expect(bodies[0]!.body.includes(Buffer.from("trellis-test"))).toBe(true);

      await running!.shutdown();
      expect(tracingEnabled()).toBe(false);
      expect(tracer().startSpan("after").isRecording()).toBe(false);
    } finally {
      server.close();
    }
  }, 60_000);
});
