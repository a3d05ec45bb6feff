// Wires the scheduler app: settings -> dependencies -> start -> SIGTERM (runApp).
import { checkPostgres } from "@trellis/db";
import { runApp } from "@trellis/observability";
import { checkRedis, redisTlsOptions } from "@trellis/queue";
import { startSchedulerApp } from "./app.js";
import { readSchedulerSettings } from "./config.js";

await runApp({
  name: "scheduler",
  readSettings: readSchedulerSettings,
  dependencies: (s) => [
    { name: "PostgreSQL", check: () => checkPostgres(s.databaseUrl) },
    { name: "Redis", check: () => checkRedis(s.redisUrl, undefined, redisTlsOptions(s.redisTls)) },
  ],
  start: startSchedulerApp,
});
