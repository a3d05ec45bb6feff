import { parseArgs } from "node:util";

/** The workloads, in the order they run. */
export const WORKLOADS = ["w1", "w2", "w3", "w4", "w5", "w7", "w8", "w9"] as const;

/** One of {@link WORKLOADS}. */
export type WorkloadName = (typeof WORKLOADS)[number];

/** The bench's command line. */
export interface BenchOptions {
  quick: boolean;
  runs: number;
  only: WorkloadName[];
  enablePgStatStatements: boolean;
  /** W8's capped call hold, overriding the sizes' (`--w8-capped-hold-ms`). */
  w8CappedHoldMs: number | null;
}

/** Usage text. */
export const USAGE = `usage: npm run bench -- [--quick] [--runs N] [--only w1,w2,...] [--enable-pg-stat-statements]
                        [--w8-capped-hold-ms MS]

  --quick                      smaller sizes, one run (about a minute at the target speeds)
  --runs N                     runs of W1-W4 and W8's throughput pair (medians are reported); default 3, or 1 with
                               --quick; W5, W7, W8's rate window and W9 run once
  --only LIST                  comma-separated subset of ${WORKLOADS.join(",")} (baselines run with W1 and W2)
  --enable-pg-stat-statements  if pg_stat_statements is not in shared_preload_libraries, add it (ALTER SYSTEM) and
                               restart PostgreSQL with pg_ctlcluster; this disconnects every client of the server.
                               Without it, W5's and W7's statement counts are reported as unavailable.
  --w8-capped-hold-ms MS       how long the NodeService holds each call of W8's capped capability (default 1000, an
                               LLM call; 20 makes the capped key itself a load of up to 200 nodes/s)

environment: BENCH_DATABASE_URL (server to create bench databases on; default
postgres://postgres:postgres@127.0.0.1:5432/postgres), REDIS_URL, WORKER_CONCURRENCY (default 16, for the engine
and the baseline), LOG_LEVEL of the apps (default warn)`;

/** Parses argv; throws with a message naming the bad argument. */
export function parseBenchArgs(argv: string[]): BenchOptions | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      only: { type: "string" },
      "enable-pg-stat-statements": { type: "boolean", default: false },
      "w8-capped-hold-ms": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  const quick = values.quick ?? false;
  let runs = quick ? 1 : 3;
  if (values.runs !== undefined) {
    runs = Number(values.runs);
    if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error(`--runs: expected 1..20, got ${values.runs}`);
  }
  let only: WorkloadName[] = [...WORKLOADS];
  if (values.only !== undefined) {
    const asked = values.only.split(",").map((s) => s.trim().toLowerCase());
    for (const name of asked) {
      if (!(WORKLOADS as readonly string[]).includes(name)) {
        throw new Error(`--only: unknown workload "${name}" (expected some of ${WORKLOADS.join(",")})`);
      }
    }
    only = WORKLOADS.filter((w) => asked.includes(w));
  }
  let w8CappedHoldMs: number | null = null;
  const hold = values["w8-capped-hold-ms"];
  if (hold !== undefined) {
    w8CappedHoldMs = Number(hold);
    if (!Number.isInteger(w8CappedHoldMs) || w8CappedHoldMs < 1 || w8CappedHoldMs > 60_000) {
      throw new Error(`--w8-capped-hold-ms: expected 1..60000, got ${hold}`);
    }
  }
  return { quick, runs, only, enablePgStatStatements: values["enable-pg-stat-statements"] ?? false, w8CappedHoldMs };
}
