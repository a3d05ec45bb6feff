// Wires the dashboard app: settings -> dependencies -> start -> SIGTERM (runApp).
import { postgresDependencies } from "@trellis/db";
import { runApp } from "@trellis/observability";
import { checkRedis, redisTlsOptions } from "@trellis/queue";
import { startDashboardApp } from "./app.js";
import { readDashboardSettings } from "./config.js";

await runApp({
  name: "dashboard",
  readSettings: readDashboardSettings,
  dependencies: (s) => [
    ...postgresDependencies(s),
    { name: "Redis", check: () => checkRedis(s.redisUrl, undefined, redisTlsOptions(s.redisTls)) },
  ],
  start: startDashboardApp,
  routes: (app) => (req, res) => app.handle(req, res),
  onListening: (http, logger) =>
    logger.info({ address: `http://${http.address.host}:${http.address.port}/` }, "dashboard listening"),
});
