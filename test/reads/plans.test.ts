import { createTestDatabase, type TestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fillWorkflows } from "../../bench/src/fill-workflows.js";
import {
  type PlanNode,
  planNodes,
  planOf,
  readCases,
  retentionStatement,
  statementsOf,
} from "../../bench/src/reads-at-volume.js";

/**
 * The plans of the api's and the dashboard's reads on 20,000 finished workflows (60,000 nodes, 100,000 events):
 * index scans, never a sequential scan of a table that grows with the history, and no sort of a filtered list
 * where an index gives the order. Plans, not timings: ANALYZE reads every row of tables this small, so the planner's
 * statistics, and its choices, are the same on every run. docs/reads-at-volume.md shows them at 1,000,000.
 */
const GROWING = new Set(["workflows", "nodes", "node_edges", "workflow_events", "node_attempts"]);

let testDb: TestDatabase;
let workflowId: string;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_reads");
  await fillWorkflows(testDb.url, { workflows: 20_000, nodesPerWorkflow: 3, days: 28 });
  workflowId = (
    await testDb.pool.query<{ id: string }>("select id from workflows order by created_at limit 1 offset 7000")
  ).rows[0]!.id;
}, 300_000);

afterAll(async () => {
  await testDb?.drop();
});

function describePlan(plan: PlanNode): string {
  return planNodes(plan)
    .map((n) => [n["Node Type"], n["Relation Name"], n["Index Name"]].filter(Boolean).join(" "))
    .join(" > ");
}

describe("reads at volume: plans", () => {
  it("fills through COPY with what the reads filter on", async () => {
    const { rows } = await testDb.pool.query<{ status: string; n: number }>(
      "select status, count(*)::int as n from workflows group by status order by status",
    );
    expect(rows).toEqual([
      { status: "SUCCEEDED", n: 16_000 },
      { status: "FAILED", n: 2_400 },
      { status: "CANCELLED", n: 1_600 },
    ]);
    const nodes = await testDb.pool.query<{ n: number }>("select count(*)::int as n from nodes");
    expect(nodes.rows[0]!.n).toBe(60_000);
  });

  for (const read of readCases("00000000-0000-0000-0000-000000000000")) {
    it(`${read.name}: index scans only`, async () => {
      const [actual] = readCases(workflowId).filter((r) => r.name === read.name);
      const statements = await statementsOf(testDb.pool, actual!);
      expect(statements.length).toBeGreaterThan(0);
      const used = new Set<string>();
      for (const statement of statements) {
        const plan = await planOf(testDb.pool, statement);
        const nodes = planNodes(plan);
        const seqScans = nodes.filter((n) => n["Node Type"] === "Seq Scan" && GROWING.has(n["Relation Name"] ?? ""));
        expect(seqScans, `${statement.text}\n${describePlan(plan)}`).toEqual([]);
        if (!read.sorts) {
          expect(
            nodes.filter((n) => n["Node Type"] === "Sort"),
            `${statement.text}\n${describePlan(plan)}`,
          ).toEqual([]);
        }
        for (const n of nodes) if (n["Index Name"]) used.add(n["Index Name"] as string);
      }
      for (const index of read.indexes) expect([...used], `${read.name} uses ${index}`).toContain(index);
    });
  }

  it("retention picks its batch through workflows_finished_at_idx, oldest first, without a sort", async () => {
    const plan = await planOf(testDb.pool, retentionStatement());
    const nodes = planNodes(plan);
    expect(nodes.filter((n) => n["Node Type"] === "Seq Scan")).toEqual([]);
    expect(nodes.filter((n) => n["Node Type"] === "Sort")).toEqual([]);
    expect(nodes.map((n) => n["Index Name"]).filter(Boolean)).toEqual(["workflows_finished_at_idx"]);
  });
});
