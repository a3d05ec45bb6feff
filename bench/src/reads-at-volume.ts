/**
 * The reads of the api and the dashboard at volume: ListWorkflows (status and label filters, the next page),
 * GetWorkflow, WatchWorkflow's first read and the dashboard's search, each run through the real StateManager with
 * its SQL captured, then explained and timed. docs/reads-at-volume.md has its output on a 1,000,000-workflow fill
 * (bench/src/fill-workflows.ts); test/reads/plans.test.ts checks the plans on a small one.
 *
 *   npx tsx bench/src/reads-at-volume.ts [--database-url URL] [--runs 200]
 */
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { PgStateManager, RETENTION_SELECT_SQL, schema } from "@trellis/db";
import { WorkflowStatus } from "@trellis/proto";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { parseWorkflowSearch, searchWorkflows } from "../../apps/dashboard/src/workflow-search.js";

/** One statement a read sent, with its parameters. */
export interface CapturedStatement {
  text: string;
  params: unknown[];
}

/** A read as the api or the dashboard makes it. */
export interface ReadCase {
  name: string;
  /** Indexes its statements must use (every one of them appears in some statement's plan). */
  indexes: string[];
  /** Whether a statement may sort (false: the index gives the order, the scan stops after a page). */
  sorts: boolean;
  run(sm: PgStateManager): Promise<unknown>;
}

/** The workflow reads measured, given one workflow id of the fill. */
export function readCases(workflowId: string): ReadCase[] {
  const statusAndLabel = { pageSize: 25, status: WorkflowStatus.FAILED, labelSelector: { team: "team-3" } };
  return [
    {
      name: "ListWorkflows status=FAILED, labels team=team-3 (a page of 25)",
      indexes: ["workflows_status_created_at_idx"],
      sorts: false,
      run: (sm) => sm.listWorkflows(statusAndLabel),
    },
    {
      name: "ListWorkflows status=FAILED, labels team=team-3, the 5th page",
      indexes: ["workflows_status_created_at_idx"],
      sorts: false,
      run: async (sm) => {
        let page = await sm.listWorkflows(statusAndLabel);
        for (let i = 0; i < 3; i++) page = await sm.listWorkflows({ ...statusAndLabel, pageToken: page.nextPageToken });
        return sm.listWorkflows({ ...statusAndLabel, pageToken: page.nextPageToken });
      },
    },
    {
      name: "ListWorkflows status=FAILED, labels customer=c85 (0.1% of workflows, all FAILED)",
      indexes: ["workflows_labels_path_idx"],
      sorts: true,
      run: (sm) =>
        sm.listWorkflows({ pageSize: 25, status: WorkflowStatus.FAILED, labelSelector: { customer: "c85" } }),
    },
    {
      name: "ListWorkflows status=FAILED, labels customer=c17 (none FAILED)",
      indexes: ["workflows_labels_path_idx"],
      sorts: true,
      run: (sm) =>
        sm.listWorkflows({ pageSize: 25, status: WorkflowStatus.FAILED, labelSelector: { customer: "c17" } }),
    },
    {
      name: "ListWorkflows status=CANCELLED",
      indexes: ["workflows_status_created_at_idx"],
      sorts: false,
      run: (sm) => sm.listWorkflows({ pageSize: 25, status: WorkflowStatus.CANCELLED }),
    },
    {
      name: "Dashboard list, first page (no filter)",
      indexes: ["workflows_created_at_id_idx"],
      sorts: false,
      run: (sm) => searchWorkflows(sm, parseWorkflowSearch({})),
    },
    {
      name: "Dashboard list, status=failed q=team=team-3 env=prod",
      indexes: ["workflows_status_created_at_idx"],
      sorts: false,
      run: (sm) => searchWorkflows(sm, parseWorkflowSearch({ status: "failed", q: "team=team-3 env=prod" })),
    },
    {
      name: "Dashboard list, q=customer=c17",
      indexes: ["workflows_labels_path_idx"],
      sorts: true,
      run: (sm) => searchWorkflows(sm, parseWorkflowSearch({ q: "customer=c17" })),
    },
    {
      name: "GetWorkflow (the workflow and its nodes)",
      indexes: ["workflows_pkey", "nodes_workflow_id_id_pk"],
      sorts: true,
      run: (sm) => sm.getWorkflow(workflowId),
    },
    {
      name: "WatchWorkflow's first read (its status, then its events)",
      indexes: ["workflows_pkey", "workflow_events_workflow_id_sequence_pk"],
      // A bitmap scan of the workflow's events (one of few pages), then their order.
      sorts: true,
      run: async (sm) => {
        await sm.getWorkflowStatus(workflowId);
        return sm.listEvents(workflowId, 0, 500);
      },
    },
  ];
}

/** A StateManager whose statements are captured into the returned array (cleared by the caller between reads). */
export function capturingStateManager(pool: pg.Pool): { sm: PgStateManager; statements: CapturedStatement[] } {
  const statements: CapturedStatement[] = [];
  const db = drizzle(pool, {
    schema,
    logger: { logQuery: (text: string, params: unknown[]) => statements.push({ text, params: [...params] }) },
  });
  return { sm: new PgStateManager(db), statements };
}

/** The statements one read sends. */
export async function statementsOf(pool: pg.Pool, read: ReadCase): Promise<CapturedStatement[]> {
  const { sm, statements } = capturingStateManager(pool);
  await read.run(sm);
  return statements;
}

/** The statement retention runs to pick a batch (with a cutoff 30 days back and a batch of 500). */
export function retentionStatement(): CapturedStatement {
  return { text: RETENTION_SELECT_SQL, params: [new Date(Date.now() - 30 * 86_400_000), 500] };
}

/** A plan node of EXPLAIN (FORMAT JSON). */
export interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  Plans?: PlanNode[];
  [key: string]: unknown;
}

/** EXPLAIN (FORMAT JSON) of a captured statement, with its parameters: the plan it runs with. */
export async function planOf(pool: pg.Pool, statement: CapturedStatement): Promise<PlanNode> {
  const { rows } = await pool.query(`explain (format json) ${statement.text}`, statement.params);
  return (rows[0]["QUERY PLAN"] as { Plan: PlanNode }[])[0]!.Plan;
}

/** Every node of a plan, depth first. */
export function planNodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(planNodes)];
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { "database-url": { type: "string" }, runs: { type: "string", default: "200" } },
  });
  const databaseUrl =
    values["database-url"] ?? process.env.DATABASE_URL ?? "postgres://postgres:postgres@localhost:5432/trellis";
  const runs = Number(values.runs);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  try {
    const counts = await pool.query<{ workflows: string; nodes: string; events: string }>(
      `select (select count(*) from workflows) as workflows, (select count(*) from nodes) as nodes,
              (select count(*) from workflow_events) as events`,
    );
    const c = counts.rows[0]!;
    const sample = await pool.query<{ id: string }>(
      "select id from workflows where finished_at is not null order by created_at desc limit 1 offset 500000",
    );
    const workflowId =
      sample.rows[0]?.id ?? (await pool.query<{ id: string }>("select id from workflows limit 1")).rows[0]!.id;
    const version = (await pool.query<{ v: string }>("select version() as v")).rows[0]!.v;
    console.log(`# ${c.workflows} workflows, ${c.nodes} nodes, ${c.events} events; ${version}\n`);
    const { sm } = capturingStateManager(pool);
    const summary: string[] = ["| read | p50 ms | p95 ms | statements |", "| --- | --- | --- | --- |"];
    for (const read of readCases(workflowId)) {
      const statements = await statementsOf(pool, read);
      console.log(`## ${read.name}\n`);
      for (const statement of read.name.includes("5th page") ? statements.slice(-1) : statements) {
        const { rows } = await pool.query(`explain (analyze, buffers, costs off) ${statement.text}`, statement.params);
        console.log("```");
        console.log(statement.text);
        if (statement.params.length > 0) console.log(`-- params: ${JSON.stringify(statement.params)}`);
        console.log("");
        for (const row of rows) console.log(row["QUERY PLAN"]);
        console.log("```\n");
      }
      for (let i = 0; i < 10; i++) await read.run(sm);
      const times: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t = performance.now();
        await read.run(sm);
        times.push(performance.now() - t);
      }
      times.sort((a, b) => a - b);
      const line = `| ${read.name} | ${percentile(times, 0.5).toFixed(2)} | ${percentile(times, 0.95).toFixed(2)} | ${statements.length} |`;
      summary.push(line);
      console.log(
        `p50 ${percentile(times, 0.5).toFixed(2)} ms, p95 ${percentile(times, 0.95).toFixed(2)} ms over ${runs} runs (the whole StateManager call)\n`,
      );
    }
    const retention = retentionStatement();
    const { rows } = await pool.query(`explain (analyze, buffers, costs off) ${retention.text}`, retention.params);
    console.log("## Retention's pick of a batch (its locks end with the statement here)\n");
    console.log("```");
    console.log(retention.text);
    console.log("");
    for (const row of rows) console.log(row["QUERY PLAN"]);
    console.log("```\n");
    console.log(summary.join("\n"));
  } finally {
    await pool.end();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main().catch((error) => {
    console.error(`reads-at-volume: ${(error as Error).stack}`);
    process.exit(1);
  });
}
