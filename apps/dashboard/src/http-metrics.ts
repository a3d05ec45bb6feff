import type { NextFunction, Request, Response } from "express";
import { Counter, type Registry } from "prom-client";

/** The `route` label of a request: a fixed set, never a workflow id. */
export type DashboardRoute = "ui" | "api" | "stream" | "queues" | "login";

const METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** Which part of the dashboard a path is: Bull Board, the event streams, the JSON API, sign-in, or the pages. */
export function routeOf(path: string): DashboardRoute {
  if (path === "/queues" || path.startsWith("/queues/")) return "queues";
  if (path.startsWith("/api/")) return path.endsWith("/stream") ? "stream" : "api";
  if (path === "/login" || path === "/logout") return "login";
  return "ui";
}

/**
 * Express middleware counting every request the dashboard answers in `trellis_dashboard_http_requests_total{route,
 * method, code}` on `registry`, once it ends (an event stream when it closes). `/metrics`, `/healthz` and `/readyz`
 * are the side server's and not counted.
 */
export function dashboardHttpMetrics(registry: Registry): (req: Request, res: Response, next: NextFunction) => void {
  const requests = new Counter({
    name: "trellis_dashboard_http_requests_total",
    help: "HTTP requests the dashboard answered, by route (ui, api, stream, queues, login), method and status code.",
    labelNames: ["route", "method", "code"],
    registers: [registry],
  });
  return (req, res, next) => {
    const route = routeOf(new URL(req.originalUrl ?? req.url, "http://localhost").pathname);
    const method = METHODS.has(req.method) ? req.method : "OTHER";
    let counted = false;
    const count = () => {
      if (counted) return;
      counted = true;
      requests.inc({ route, method, code: String(res.statusCode) });
    };
    res.once("finish", count);
    res.once("close", count);
    next();
  };
}
