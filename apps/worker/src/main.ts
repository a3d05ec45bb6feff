// Wires the worker app: settings -> dependencies -> start -> SIGTERM (runApp).
import { postgresDependencies } from "@trellis/db";
import { runApp } from "@trellis/observability";
import { checkRedis, redisTlsOptions } from "@trellis/queue";
import { startWorkerApp } from "./app.js";
import { readWorkerSettings } from "./config.js";

await runApp({
  name: "worker",
  readSettings: readWorkerSettings,
  dependencies: (s) => [
    ...postgresDependencies(s),
    { name: "Redis", check: () => checkRedis(s.redisUrl, undefined, redisTlsOptions(s.redisTls)) },
  ],
  start: startWorkerApp,
});
