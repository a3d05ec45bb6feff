import { create } from "@bufbuild/protobuf";
import { PgStateManager, deleteFinishedWorkflows } from "@trellis/db";
import { NodeSchema, WorkflowAction } from "@trellis/proto";
import { createTestDatabase, type TestDatabase } from "@trellis/testing";
import { Writable } from "node:stream";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fillWorkflows } from "../../../bench/src/fill-workflows.js";
import { Retention, createRetentionCounter } from "../src/retention.js";

const DAY = 86_400_000;
const TABLES = ["workflows", "nodes", "node_edges", "workflow_events", "node_attempts"] as const;

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_retention");
  sm = new PgStateManager(testDb.db);
}, 120_000);

afterAll(async () => {
  await testDb?.drop();
});

function node(id: string, parents: string[] = []) {
  return create(NodeSchema, { id, name: id, capability: "echo", parentIds: parents });
}

/** Rows per table of the given workflows. */
async function rowsOf(ids: readonly string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of TABLES) {
    const column = table === "workflows" ? "id" : "workflow_id";
    const { rows } = await testDb.pool.query<{ n: number }>(
      `select count(*)::int as n from ${table} where ${column} = any($1::uuid[])`,
      [ids],
    );
    out[table] = rows[0]!.n;
  }
  return out;
}

/** Rows whose workflow is gone: none may be left. */
async function orphans(): Promise<number> {
  let total = 0;
  for (const table of TABLES.slice(1)) {
    const { rows } = await testDb.pool.query<{ n: number }>(
      `select count(*)::int as n from ${table} t where not exists (select 1 from workflows w where w.id = t.workflow_id)`,
    );
    total += rows[0]!.n;
  }
  return total;
}

function capturingLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l.trim() !== "") lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level: "info" }, sink), lines };
}

describe("retention (RETENTION_DAYS)", () => {
  it("deletes the workflows finished before the cutoff with all their rows, in bounded batches, and keeps the rest", async () => {
    // 600 finished workflows created over the last 60 days (about half finished more than 30 days ago), with their
    // nodes, edges, events and attempts.
    await fillWorkflows(testDb.url, { workflows: 600, nodesPerWorkflow: 3, days: 60 });
    // Real ones through the StateManager: a cancelled one backdated 40 days, a PENDING one created 40 days ago,
    // a PAUSED one, and a cancelled one that finished yesterday.
    const oldCancelled = (await sm.createWorkflow({ name: "old-cancelled", nodes: [node("a"), node("b", ["a"])] }))
      .workflow.id;
    await sm.updateWorkflow(oldCancelled, { action: WorkflowAction.CANCEL });
    const oldPending = (await sm.createWorkflow({ name: "old-pending", nodes: [node("a")] })).workflow.id;
    const paused = (await sm.createWorkflow({ name: "paused", nodes: [node("a")] })).workflow.id;
    await sm.updateWorkflow(paused, { action: WorkflowAction.PAUSE });
    const recentCancelled = (await sm.createWorkflow({ name: "recent", nodes: [node("a")] })).workflow.id;
    await sm.updateWorkflow(recentCancelled, { action: WorkflowAction.CANCEL });
    await testDb.pool.query(
      `update workflows set finished_at = now() - interval '40 days', created_at = now() - interval '41 days'
        where id = $1`,
      [oldCancelled],
    );
    await testDb.pool.query(
      `update workflows set created_at = now() - interval '40 days', updated_at = now() - interval '40 days'
        where id = any($1::uuid[])`,
      [[oldPending, paused]],
    );
    await testDb.pool.query(`update workflows set finished_at = now() - interval '1 day' where id = $1`, [
      recentCancelled,
    ]);
    // A schedule that last created a workflow retention deletes: it stays, pointing at an id that is gone.
    await testDb.pool.query(
      `insert into schedules (id, cron, workflow, next_run_at, last_workflow_id)
       values ('nightly', '0 3 * * *', '{}', now() + interval '1 day', $1)`,
      [oldCancelled],
    );

    const cutoff = `now() - interval '30 days'`;
    const old = (
      await testDb.pool.query<{ id: string }>(`select id from workflows where finished_at < ${cutoff}`)
    ).rows.map((r) => r.id);
    const kept = (
      await testDb.pool.query<{ id: string }>(
        `select id from workflows where finished_at is null or finished_at >= ${cutoff}`,
      )
    ).rows.map((r) => r.id);
    expect(old).toContain(oldCancelled);
    expect(kept).toEqual(expect.arrayContaining([oldPending, paused, recentCancelled]));
    expect(old.length).toBeGreaterThan(250);
    const oldRows = await rowsOf(old);
    const keptRows = await rowsOf(kept);
    expect(oldRows.nodes).toBeGreaterThan(0);
    expect(oldRows.node_attempts).toBeGreaterThan(0);
    expect(oldRows.workflow_events).toBeGreaterThan(0);
    expect(oldRows.node_edges).toBeGreaterThan(0);

    const registry = new Registry();
    const deleted = createRetentionCounter(registry);
    const { logger, lines } = capturingLogger();
    const batches: number[] = [];
    const retention = new Retention({
      days: 30,
      intervalMs: 60_000,
      batchSize: 100,
      pool: testDb.pool,
      logger,
      deleted,
      deleteBatch: async (pool, options) => {
        const batch = await deleteFinishedWorkflows(pool, options);
        batches.push(batch.workflows);
        return batch;
      },
    });
    const pass = await retention.pass();

    expect(pass.workflows).toBe(old.length);
    // Batches of at most 100 workflows: full ones, then a short one that ends the pass.
    expect(batches.every((n) => n <= 100)).toBe(true);
    expect(batches.length).toBe(Math.floor(old.length / 100) + 1);
    expect(batches.slice(0, -1).every((n) => n === 100)).toBe(true);
    expect(await rowsOf(old)).toEqual({ workflows: 0, nodes: 0, node_edges: 0, workflow_events: 0, node_attempts: 0 });
    expect(await rowsOf(kept)).toEqual(keptRows);
    expect(await orphans()).toBe(0);
    const schedule = await testDb.pool.query("select last_workflow_id from schedules where id = 'nightly'");
    expect(schedule.rows[0].last_workflow_id).toBe(oldCancelled);

    // The metric and one log line per batch that deleted something.
    expect((await registry.getSingleMetric("trellis_retention_deleted_workflows_total")!.get()).values[0]!.value).toBe(
      old.length,
    );
    const logged = lines.filter((l) => l.msg === "retention: deleted finished workflows");
    expect(logged.length).toBe(batches.filter((n) => n > 0).length);
    expect(logged.reduce((sum, l) => sum + (l.workflows as number), 0)).toBe(old.length);
    expect(logged[0]).toMatchObject({ retentionDays: 30, workflows: 100 });
    expect(logged[0]!.nodes).toBeGreaterThan(0);

    // The running and recent workflows still work: the PAUSED one resumes.
    await sm.updateWorkflow(paused, { action: WorkflowAction.RESUME });
    expect((await sm.getWorkflow(oldPending)).nodes.map((n) => n.id)).toEqual(["a"]);

    // Nothing left to delete: a pass of one empty batch.
    expect(await retention.pass()).toEqual({ batches: 1, workflows: 0 });
  });

  it("skips a workflow another transaction holds instead of waiting for it, and takes it on a later batch", async () => {
    const { workflow } = await sm.createWorkflow({ name: "held", nodes: [node("a")] });
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    const other = (await sm.createWorkflow({ name: "free", nodes: [node("a")] })).workflow.id;
    await sm.updateWorkflow(other, { action: WorkflowAction.CANCEL });
    await testDb.pool.query(
      `update workflows set finished_at = now() - interval '50 days' where id = any($1::uuid[])`,
      [[workflow.id, other]],
    );
    const holder = await testDb.pool.connect();
    try {
      await holder.query("begin");
      await holder.query("select id from workflows where id = $1 for update", [workflow.id]);
      const batch = await deleteFinishedWorkflows(testDb.pool, {
        before: new Date(Date.now() - 30 * DAY),
        batchSize: 10,
      });
      expect(batch.workflows).toBe(1);
      expect((await rowsOf([workflow.id])).workflows).toBe(1);
      expect((await rowsOf([other])).workflows).toBe(0);
      await holder.query("rollback");
    } finally {
      holder.release();
    }
    const later = await deleteFinishedWorkflows(testDb.pool, {
      before: new Date(Date.now() - 30 * DAY),
      batchSize: 10,
    });
    expect(later.workflows).toBe(1);
    expect(await rowsOf([workflow.id])).toEqual({
      workflows: 0,
      nodes: 0,
      node_edges: 0,
      workflow_events: 0,
      node_attempts: 0,
    });
  });

  it("two schedulers' concurrent batches delete disjoint workflows, all of them once", async () => {
    await fillWorkflows(testDb.url, { workflows: 400, nodesPerWorkflow: 2, days: 400 });
    const before = new Date(Date.now() - 30 * DAY);
    const { rows } = await testDb.pool.query<{ n: number }>(
      "select count(*)::int as n from workflows where finished_at < $1",
      [before],
    );
    const due = rows[0]!.n;
    expect(due).toBeGreaterThan(300);
    let total = 0;
    for (;;) {
      const [a, b] = await Promise.all([
        deleteFinishedWorkflows(testDb.pool, { before, batchSize: 50 }),
        deleteFinishedWorkflows(testDb.pool, { before, batchSize: 50 }),
      ]);
      expect(a.workflows).toBeLessThanOrEqual(50);
      expect(b.workflows).toBeLessThanOrEqual(50);
      total += a.workflows + b.workflows;
      if (a.workflows + b.workflows === 0) break;
    }
    expect(total).toBe(due);
    expect(await orphans()).toBe(0);
  });
});
