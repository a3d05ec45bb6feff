import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Registry } from "prom-client";

/** An app's own HTTP handler; returns true when it handled the request, false to let the server answer 404. */
export type HttpRoutes = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;

/** Options of {@link startHttpServer}. */
export interface HttpServerOptions {
  /** Interface to listen on, e.g. `0.0.0.0` or `127.0.0.1`. */
  host: string;
  /** Port to listen on; 0 picks a free one (tests). */
  port: number;
  /** Served at `/metrics`. */
  registry: Registry;
  /** Request failures are logged here. */
  logger: Logger;
  /** Whether `/readyz` answers 200 (true) or 503 (false); a throw counts as not ready. */
  isReady: () => boolean | Promise<boolean>;
  /** The app's own routes, tried after `/metrics`, `/healthz` and `/readyz`. */
  routes?: HttpRoutes;
  /** How long `close()` lets open requests (e.g. event streams) finish before cutting them. @default 2000 */
  closeGraceMs?: number;
}

/** A listening server started by {@link startHttpServer}. */
export interface RunningHttpServer {
  /** Where it listens; `port` is the real one when 0 was asked. */
  address: { host: string; port: number };
  /** Stops accepting connections and resolves once every connection is closed. Safe to call twice. */
  close(): Promise<void>;
  /** The underlying node:http server. */
  server: Server;
}

/** Writes a whole response. */
function send(res: ServerResponse, status: number, contentType: string, body: string, headers = {}): void {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store", ...headers });
  res.end(body);
}

const TEXT = "text/plain; charset=utf-8";

/** Answers `/metrics`, `/healthz` or `/readyz`; false for any other path. */
async function serveBuiltin(opts: HttpServerOptions, path: string, res: ServerResponse): Promise<boolean> {
  switch (path) {
    case "/metrics": {
      const body = await opts.registry.metrics();
      send(res, 200, opts.registry.contentType, body);
      return true;
    }
    case "/healthz":
      send(res, 200, TEXT, "ok\n");
      return true;
    case "/readyz": {
      let ready = false;
      try {
        ready = await opts.isReady();
      } catch (error) {
        opts.logger.warn({ err: error }, "readiness check failed");
      }
      send(res, ready ? 200 : 503, "application/json", JSON.stringify({ ready }));
      return true;
    }
    default:
      return false;
  }
}

const BUILTIN_PATHS = new Set(["/metrics", "/healthz", "/readyz"]);

/** Routes one request; never rejects. */
async function handle(opts: HttpServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (BUILTIN_PATHS.has(path)) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(res, 405, TEXT, "method not allowed\n", { allow: "GET, HEAD" });
        return;
      }
      await serveBuiltin(opts, path, res);
      return;
    }
    if (opts.routes !== undefined && (await opts.routes(req, res))) return;
    send(res, 404, TEXT, "not found\n");
  } catch (error) {
    opts.logger.error({ err: error, method: req.method, url: req.url }, "http request failed");
    if (res.headersSent) res.destroy();
    else send(res, 500, TEXT, "internal server error\n");
  }
}

/**
 * Starts the node:http server every app runs: `GET /metrics` (Prometheus text), `/healthz` (200 `ok` while the
 * process runs), `/readyz` (200 or 503 with `{"ready":bool}`), then `opts.routes`, else 404. Resolves once
 * listening; rejects when the address cannot be bound.
 */
export async function startHttpServer(opts: HttpServerOptions): Promise<RunningHttpServer> {
  const server = createServer((req, res) => {
    void handle(opts, req, res);
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => {
      reject(new Error(`HTTP server cannot listen on ${opts.host}:${opts.port}: ${error.message}`, { cause: error }));
    };
    server.once("error", onError);
    server.listen(opts.port, opts.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (error) => opts.logger.error({ err: error }, "http server error"));
  const info = server.address() as AddressInfo;
  const address = { host: info.address, port: info.port };
  opts.logger.info({ address }, "http server listening");

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve, reject) => {
      const cut = setTimeout(() => server.closeAllConnections(), opts.closeGraceMs ?? 2000);
      cut.unref();
      server.close((error) => {
        clearTimeout(cut);
        if (error) reject(error);
        else resolve();
      });
      server.closeIdleConnections();
    });
    return closing;
  };
  return { address, close, server };
}
