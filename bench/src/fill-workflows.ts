/**
 * Fills a Trellis database with finished workflows through `COPY ... FROM STDIN` (psql's, fed from here): each with
 * a chain of a few nodes, their edges, events and attempts, labels, a status among SUCCEEDED, FAILED and CANCELLED
 * and a created_at spread over the last `days` days. For measuring reads at volume (docs/reads-at-volume.md) and
 * retention.
 *
 *   npx tsx bench/src/fill-workflows.ts [--workflows 1000000] [--nodes 3] [--days 28] [--database-url URL]
 *
 * DATABASE_URL (or --database-url) names the database; it is migrated first. Rows are added to what is there.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { runMigrations } from "@trellis/db";

/** What to fill. */
export interface FillOptions {
  /** Workflows to add. */
  workflows: number;
  /** Nodes per workflow (a chain). @default 3 */
  nodesPerWorkflow?: number;
  /** created_at spreads evenly over this many days before now. @default 28 */
  days?: number;
  /** Rows written to psql per write. @default 2000 */
  chunkRows?: number;
  /** Progress lines. @default none */
  log?: (line: string) => void;
}

/** Rows added, by table, and how long each COPY took. */
export interface FillResult {
  rows: Record<string, number>;
  seconds: Record<string, number>;
  totalSeconds: number;
}

const TEAMS = 8;
const CUSTOMERS = 1_000;
const NAMES = ["nightly-report", "ingest", "research-plan", "summarize", "triage", "enrich", "backfill"];
const CAPABILITIES = ["llm.mock", "web.search", "echo"];

type WorkflowStatus = "SUCCEEDED" | "FAILED" | "CANCELLED";

/** 80% SUCCEEDED, 12% FAILED, 8% CANCELLED, interleaved. */
export function fillStatus(i: number): WorkflowStatus {
  const r = i % 100;
  return r < 80 ? "SUCCEEDED" : r < 92 ? "FAILED" : "CANCELLED";
}

/** The labels of workflow i: team (8 values), env (prod 80%, staging 20%), customer (1,000 values). */
export function fillLabels(i: number): Record<string, string> {
  return { team: `team-${i % TEAMS}`, env: i % 5 === 0 ? "staging" : "prod", customer: `c${i % CUSTOMERS}` };
}

/** A node's final status in a workflow of that status: FAILED fails its last node, CANCELLED stops after the first. */
function nodeStatus(status: WorkflowStatus, k: number, count: number): "PASS" | "FAIL" | "CANCELLED" {
  if (status === "SUCCEEDED") return "PASS";
  if (status === "FAILED") return k === count - 1 ? "FAIL" : "PASS";
  return k === 0 ? "PASS" : "CANCELLED";
}

/** A CSV field: NULL for null, else quoted with doubled quotes. */
function csv(value: string | number | null): string {
  if (value === null) return "";
  if (typeof value === "number") return String(value);
  return `"${value.replaceAll('"', '""')}"`;
}

function line(fields: (string | number | null)[]): string {
  return `${fields.map(csv).join(",")}\n`;
}

/** Runs `COPY <table> (<columns>) FROM STDIN (FORMAT csv)` in psql, fed with the lines `rows` yields. */
async function copy(
  databaseUrl: string,
  table: string,
  columns: string[],
  rows: Iterable<string>,
  chunkRows: number,
): Promise<number> {
  const child = spawn(
    "psql",
    [
      databaseUrl,
      "-X",
      "-q",
      "-v",
      "ON_ERROR_STOP=1",
      "-c",
      `COPY ${table} (${columns.join(", ")}) FROM STDIN (FORMAT csv)`,
    ],
    {
      stdio: ["pipe", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const exited = once(child, "close") as Promise<[number | null]>;
  let count = 0;
  let chunk: string[] = [];
  const flush = async () => {
    if (chunk.length === 0) return;
    const ok = child.stdin.write(chunk.join(""));
    chunk = [];
    if (!ok) await Promise.race([once(child.stdin, "drain"), exited]);
  };
  try {
    for (const row of rows) {
      chunk.push(row);
      count++;
      if (chunk.length >= chunkRows) await flush();
    }
    await flush();
  } finally {
    child.stdin.end();
  }
  const [code] = await exited;
  if (code !== 0) throw new Error(`COPY ${table} failed (psql exit ${code}): ${stderr.trim()}`);
  return count;
}

/** Adds `options.workflows` finished workflows with their nodes, edges, events and attempts; then ANALYZE. */
export async function fillWorkflows(databaseUrl: string, options: FillOptions): Promise<FillResult> {
  const n = options.workflows;
  const k = options.nodesPerWorkflow ?? 3;
  const days = options.days ?? 28;
  const chunkRows = options.chunkRows ?? 2_000;
  const log = options.log ?? (() => undefined);
  const started = performance.now();
  const now = Date.now();
  const spanMs = days * 86_400_000;
  const ids = Array.from({ length: n }, () => randomUUID());
  // Workflow i was created at createdMs(i): oldest first, spread evenly, a few seconds of jitter.
  const createdMs = (i: number) => now - spanMs + Math.floor(((i + 0.5) * spanMs) / n) - (i % 7) * 1_000;
  const iso = (ms: number) => new Date(ms).toISOString();
  const nodeMs = (i: number, j: number) => createdMs(i) + 1_000 + j * 20_000;
  const finishedMs = (i: number) => nodeMs(i, k) + 500;

  const rows: Record<string, number> = {};
  const seconds: Record<string, number> = {};
  const timed = async (table: string, columns: string[], lines: () => Iterable<string>) => {
    const t = performance.now();
    rows[table] = await copy(databaseUrl, table, columns, lines(), chunkRows);
    seconds[table] = (performance.now() - t) / 1_000;
    log(`${table}: ${rows[table]} rows in ${seconds[table]!.toFixed(1)} s`);
  };

  await timed(
    "workflows",
    ["id", "name", "status", "labels", "event_seq", "created_at", "updated_at", "finished_at"],
    function* () {
      for (let i = 0; i < n; i++) {
        const name = `${NAMES[i % NAMES.length]}-${i}`;
        const fin = iso(finishedMs(i));
        yield line([ids[i]!, name, fillStatus(i), JSON.stringify(fillLabels(i)), k + 2, iso(createdMs(i)), fin, fin]);
      }
    },
  );
  await Promise.all([
    timed(
      "nodes",
      [
        "workflow_id",
        "id",
        "name",
        "capability",
        "status",
        "parent_ids",
        "output",
        "error_kind",
        "error_message",
        "attempt",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
      ],
      function* () {
        for (let i = 0; i < n; i++) {
          const status = fillStatus(i);
          for (let j = 0; j < k; j++) {
            const s = nodeStatus(status, j, k);
            const ran = s !== "CANCELLED";
            yield line([
              ids[i]!,
              `step-${j}`,
              `step ${j}`,
              CAPABILITIES[j % CAPABILITIES.length]!,
              s,
              j === 0 ? "{}" : `{step-${j - 1}}`,
              s === "PASS" ? `{"text":"result of step ${j} of workflow ${i}"}` : null,
              s === "FAIL" ? "TASK_ERROR" : null,
              s === "FAIL" ? "the model refused" : null,
              ran ? 1 : 0,
              iso(createdMs(i)),
              iso(nodeMs(i, j + 1)),
              ran ? iso(nodeMs(i, j)) : null,
              iso(ran ? nodeMs(i, j + 1) : finishedMs(i)),
            ]);
          }
        }
      },
    ),
    timed("node_edges", ["workflow_id", "parent_id", "child_id"], function* () {
      for (let i = 0; i < n; i++) for (let j = 1; j < k; j++) yield line([ids[i]!, `step-${j - 1}`, `step-${j}`]);
    }),
    timed(
      "workflow_events",
      ["workflow_id", "sequence", "type", "node_id", "workflow_status", "node_status", "data", "time"],
      function* () {
        for (let i = 0; i < n; i++) {
          const status = fillStatus(i);
          yield line([ids[i]!, 1, "workflow.created", null, "PENDING", null, `{"nodeCount":${k}}`, iso(createdMs(i))]);
          for (let j = 0; j < k; j++) {
            const s = nodeStatus(status, j, k);
            yield line([ids[i]!, j + 2, "node.status_changed", `step-${j}`, "RUNNING", s, "{}", iso(nodeMs(i, j + 1))]);
          }
          yield line([ids[i]!, k + 2, "workflow.status_changed", null, status, null, "{}", iso(finishedMs(i))]);
        }
      },
    ),
  ]);
  await timed(
    "node_attempts",
    ["workflow_id", "node_id", "attempt", "outcome", "started_at", "ended_at", "error_kind", "error_message"],
    function* () {
      for (let i = 0; i < n; i++) {
        const status = fillStatus(i);
        for (let j = 0; j < k; j++) {
          const s = nodeStatus(status, j, k);
          if (s === "CANCELLED") continue;
          const fail = s === "FAIL";
          yield line([
            ids[i]!,
            `step-${j}`,
            1,
            s,
            iso(nodeMs(i, j)),
            iso(nodeMs(i, j + 1)),
            fail ? "TASK_ERROR" : null,
            fail ? "the model refused" : null,
          ]);
        }
      }
    },
  );
  const t = performance.now();
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    // The visibility map and statistics the planner and index-only scans rely on, as autovacuum would leave them.
    await client.query("vacuum (analyze) workflows, nodes, node_edges, workflow_events, node_attempts");
  } finally {
    await client.end();
  }
  seconds.vacuum_analyze = (performance.now() - t) / 1_000;
  log(`vacuum (analyze): ${seconds.vacuum_analyze.toFixed(1)} s`);
  return { rows, seconds, totalSeconds: (performance.now() - started) / 1_000 };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workflows: { type: "string", default: "1000000" },
      nodes: { type: "string", default: "3" },
      days: { type: "string", default: "28" },
      "database-url": { type: "string" },
    },
  });
  const databaseUrl =
    values["database-url"] ?? process.env.DATABASE_URL ?? "postgres://postgres:postgres@localhost:5432/trellis";
  const workflows = Number(values.workflows);
  const nodesPerWorkflow = Number(values.nodes);
  const days = Number(values.days);
  if (!Number.isSafeInteger(workflows) || workflows < 1) throw new Error("--workflows must be a positive integer");
  if (!Number.isSafeInteger(nodesPerWorkflow) || nodesPerWorkflow < 1 || nodesPerWorkflow > 100) {
    throw new Error("--nodes must be an integer between 1 and 100");
  }
  if (!(days > 0)) throw new Error("--days must be a positive number");
  await runMigrations(databaseUrl);
  const result = await fillWorkflows(databaseUrl, {
    workflows,
    nodesPerWorkflow,
    days,
    log: (l) => console.log(l),
  });
  console.log(`filled ${workflows} workflows in ${result.totalSeconds.toFixed(1)} s`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main().catch((error) => {
    console.error(`fill-workflows: ${(error as Error).message}`);
    process.exit(1);
  });
}
