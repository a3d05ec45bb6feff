import { Counter } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { type HttpServerOptions, type RunningHttpServer, startHttpServer } from "./http-server.js";
import { LogCapture } from "./log-capture.test-helper.js";
import { createLogger } from "./logger.js";
import { createMetricsRegistry } from "./metrics.js";

const running: RunningHttpServer[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((server) => server.close()));
});

/** Starts a server on 127.0.0.1, a free port, and returns its base URL and log. */
async function start(overrides: Partial<HttpServerOptions> = {}) {
  const log = new LogCapture();
  const registry = createMetricsRegistry({ app: "test", collectDefault: false });
  const server = await startHttpServer({
    host: "127.0.0.1",
    port: 0,
    registry,
    logger: createLogger({ app: "test", level: "info", destination: log }),
    isReady: () => true,
    ...overrides,
  });
  running.push(server);
  return { server, registry, log, base: `http://127.0.0.1:${server.address.port}` };
}

describe("startHttpServer", () => {
  it("listens on a free port when given 0", async () => {
    const { server } = await start();
    expect(server.address.host).toBe("127.0.0.1");
    expect(server.address.port).toBeGreaterThan(0);
  });

  it("serves Prometheus text at /metrics with the registry's content type", async () => {
    const { base, registry } = await start();
    new Counter({ name: "trellis_nodes_total", help: "nodes", registers: [registry] }).inc(3);
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(registry.contentType);
    expect(await res.text()).toContain('trellis_nodes_total{app="test"} 3');
  });

  it("answers ok at /healthz", async () => {
    const { base } = await start({ isReady: () => false });
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok\n");
  });

  it("answers /readyz with 200 or 503 as isReady says", async () => {
    let ready = false;
    const { base } = await start({ isReady: async () => ready });
    const notReady = await fetch(`${base}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false });
    ready = true;
    const isReady = await fetch(`${base}/readyz`);
    expect(isReady.status).toBe(200);
    expect(await isReady.json()).toEqual({ ready: true });
  });

  it("answers 503 when isReady throws", async () => {
    const { base, log } = await start({
      isReady: () => {
        throw new Error("pool closed");
      },
    });
    const res = await fetch(`${base}/readyz?verbose=1`);
    expect(res.status).toBe(503);
    expect(log.records().some((r) => r.msg === "readiness check failed")).toBe(true);
  });

  it("answers 404 for unknown paths and 405 for other methods on its own paths", async () => {
    const { base } = await start();
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    const post = await fetch(`${base}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  it("hands other paths to the app's routes", async () => {
    const { base } = await start({
      routes: (req, res) => {
        if (req.url !== "/api/hello") return false;
        res.writeHead(200, { "content-type": "text/plain" }).end("hi");
        return true;
      },
    });
    expect(await (await fetch(`${base}/api/hello`)).text()).toBe("hi");
    expect((await fetch(`${base}/api/other`)).status).toBe(404);
  });

  it("answers 500 and logs when a route throws", async () => {
    const { base, log } = await start({
      routes: async () => {
        throw new Error("route exploded");
      },
    });
    const res = await fetch(`${base}/boom`);
    expect(res.status).toBe(500);
    const record = log.records().find((r) => r.msg === "http request failed");
    expect(record).toMatchObject({ level: "error", url: "/boom", err: { message: "route exploded" } });
  });

  it("rejects with a clear error when the port is taken", async () => {
    const { server } = await start();
    await expect(start({ port: server.address.port })).rejects.toThrow(
      `HTTP server cannot listen on 127.0.0.1:${server.address.port}: listen EADDRINUSE`,
    );
  });

  it("closes even with a kept-alive connection and a hanging request, and twice is harmless", async () => {
    const { server, base } = await start({
      closeGraceMs: 50,
      routes: () => new Promise<boolean>(() => {}),
    });
    await fetch(`${base}/healthz`);
    const hanging = fetch(`${base}/stream`).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await Promise.all([server.close(), server.close()]);
    expect(server.server.listening).toBe(false);
    expect(await hanging).toBeInstanceOf(Error);
  });
});
