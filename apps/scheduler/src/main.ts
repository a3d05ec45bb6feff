// Wires the scheduler app: settings -> dependencies -> start -> SIGTERM (runApp).
import { postgresDependencies } from "@trellis/db";
import { runApp } from "@trellis/observability";
import { checkRedis, redisTlsOptions } from "@trellis/queue";
import { startSchedulerApp } from "./app.js";
import { readSchedulerSettings } from "./config.js";

await runApp({
  name: "scheduler",
  readSettings: readSchedulerSettings,
  dependencies: (s) => [
    ...postgresDependencies(s),
    { name: "Redis", check: () => checkRedis(s.redisUrl, undefined, redisTlsOptions(s.redisTls)) },
  ],
  start: startSchedulerApp,
});
