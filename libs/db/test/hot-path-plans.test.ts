import { create } from "@bufbuild/protobuf";
import { NodeSchema, type Node } from "@trellis/proto";
import { createTestDatabase, type TestDatabase } from "@trellis/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager } from "../src/index.js";

// The hot-path functions' plans, read with auto_explain (EXPLAIN ANALYZE of every statement inside them): a state
// change of a few nodes reads those nodes, not every node of their workflow nor a fan-out squared. A generic plan
// once looked nodes up through a (workflow_id, status) index and filtered the rest (the whole workflow's QUEUED
// nodes per start), and the eager local start once joined each of a fan-out's edges to a CTE of its ready children.
// Asserted on rows read, not on time.

/** Nodes of the wide workflow: far more than any lookup of a few nodes may read. */
const WIDE = 300;
/** Finished nodes (of finished workflows of 4), so that the tables are not tiny. */
const FILLER = 20_000;

let testDb: TestDatabase;
let sm: PgStateManager;
let client: pg.Client;
let session: string;
const plans: string[] = [];

function node(id: string, parentIds: string[] = []): Node {
  return create(NodeSchema, { id, capability: "echo", parentIds });
}

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_plans_hot");
  sm = new PgStateManager(testDb.db);
  session = await sm.registerWorker("plans-worker", ["echo"], "localhost");
  client = new pg.Client({ connectionString: testDb.url });
  await client.connect();
  client.on("notice", (notice) => plans.push(notice.message ?? ""));
  // Other workflows' finished nodes, as a database in use has: with a few hundred rows in all a sequential scan is
  // the right plan for anything, and no plan would show what it reads.
  await client.query(`
    insert into workflows (id, name, status)
    select gen_random_uuid(), 'filler', 'SUCCEEDED' from generate_series(1, ${FILLER / 4})`);
  await client.query(`
    insert into nodes (workflow_id, id, name, capability, status)
    select w.id, 'f' || i, 'f' || i, 'echo', 'PASS' from workflows w, generate_series(1, 4) as i`);
  await client.query(`
    insert into node_edges (workflow_id, parent_id, child_id)
    select workflow_id, 'f' || (substr(id, 2)::int - 1), id from nodes where id <> 'f1'`);
  await client.query("load 'auto_explain'");
  for (const [name, value] of [
    ["auto_explain.log_min_duration", "0"],
    ["auto_explain.log_nested_statements", "on"],
    ["auto_explain.log_analyze", "on"],
    ["auto_explain.log_timing", "off"],
    ["auto_explain.log_level", "notice"],
  ]) {
    await client.query("select set_config($1, $2, false)", [name, value]);
  }
});

afterAll(async () => {
  await client?.end();
  await testDb?.drop();
});

/** The plans of every statement `sql` runs (itself and the statements of the functions it calls). */
async function plansOf(sql: string, params: unknown[]): Promise<{ rows: Record<string, unknown>[]; plans: string }> {
  plans.length = 0;
  const { rows } = await client.query(sql, params);
  return { rows, plans: plans.join("\n") };
}

/** The most rows any plan node of `plans` discarded by a filter after reading them (0 when none did). */
function mostRowsFiltered(plans: string): number {
  return Math.max(0, ...[...plans.matchAll(/Rows Removed by (?:Join )?Filter: (\d+)/g)].map((m) => Number(m[1])));
}

/** The most rows any scan of `nodes` returned over all its loops (a hashed subplan reads its whole input once). */
function mostNodeRowsRead(plans: string): number {
  return Math.max(
    0,
    ...[...plans.matchAll(/Scan (?:Backward )?(?:using \w+ )?on nodes \w+ .*?actual rows=(\d+) loops=(\d+)/g)].map(
      (m) => Number(m[1]) * Number(m[2]),
    ),
  );
}

/** The most rows any scan of a CTE (no index) returned over all its loops. */
function mostCteRowsRead(plans: string): number {
  return Math.max(
    0,
    ...[...plans.matchAll(/CTE Scan on \w+ \w+ .*?actual rows=(\d+) loops=(\d+)/g)].map(
      (m) => Number(m[1]) * Number(m[2]),
    ),
  );
}

/** A workflow of WIDE independent nodes, all QUEUED. */
async function wideQueued(name: string): Promise<string> {
  const { workflow } = await sm.createWorkflow({
    name,
    nodes: Array.from({ length: WIDE }, (_, i) => node(`n${i}`)),
  });
  const claimed = (await sm.claimReadyNodes(10_000)).filter((n) => n.workflowId === workflow.id);
  expect(claimed).toHaveLength(WIDE);
  return workflow.id;
}

// First without statistics (a database autovacuum has not analyzed yet: the bench's, a new deployment's; each
// table then looks as big as its pages, with default selectivities), then with them.
for (const statistics of [false, true]) {
  describe(`the hot path reads the nodes it changes, not their workflow (${statistics ? "with" : "without"} statistics)`, () => {
    beforeAll(async () => {
      if (statistics) await client.query("analyze nodes; analyze node_edges; analyze workflows");
    });

    it("a start, a PASS and a retry of one node among 300 queued ones", async () => {
      const id = await wideQueued(`wide-${statistics}`);
      const start = await plansOf(
        "select kind, body from trellis_start_nodes($1::uuid[], $2::text[], $3::integer[], $4::uuid)",
        [[id, id], ["n0", "n1"], [null, null], session],
      );
      const leases = start.rows
        .filter((r) => r.kind === "node")
        .map((r) => (r.body as { node: { lease: string } }).node);
      expect(leases).toHaveLength(2);
      expect(start.plans).toContain("Index Scan using nodes_workflow_id_id_pk on nodes n");
      expect(mostRowsFiltered(start.plans)).toBeLessThan(WIDE / 3);
      expect(mostNodeRowsRead(start.plans)).toBeLessThan(WIDE / 3);

      const pass = await plansOf(
        "select kind from trellis_pass_nodes($1::uuid[], $2::text[], $3::uuid[], $4::jsonb[], true, '{f}', $5::uuid, '{echo}')",
        [[id], ["n0"], [leases[0]!.lease], [null], session],
      );
      expect(pass.rows.filter((r) => r.kind === "pass")).toHaveLength(1);
      expect(mostRowsFiltered(pass.plans)).toBeLessThan(WIDE / 3);
      expect(mostNodeRowsRead(pass.plans)).toBeLessThan(WIDE / 3);

      const retry = await plansOf(
        `select kind from trellis_record_errors($1::uuid[], $2::text[], $3::uuid[], '{INFRA_ERROR}', '{reset}',
                                              '{1000}', '{f}')`,
        [[id], ["n1"], [leases[1]!.lease]],
      );
      expect(retry.rows.filter((r) => r.kind === "retry")).toHaveLength(1);
      expect(mostRowsFiltered(retry.plans)).toBeLessThan(WIDE / 3);
      expect(mostNodeRowsRead(retry.plans)).toBeLessThan(WIDE / 3);
    });

    it("a PASS that readies a fan-out of 300 and starts one of them locally", async () => {
      const { workflow } = await sm.createWorkflow({
        name: `fan-out-${statistics}`,
        nodes: [node("root"), ...Array.from({ length: WIDE }, (_, i) => node(`c${i}`, ["root"]))],
      });
      await sm.claimReadyNodes(10_000);
      const [started] = await sm.startNodes([{ workflowId: workflow.id, nodeId: "root" }], session);
      const pass = await plansOf(
        "select kind, body from trellis_pass_nodes($1::uuid[], $2::text[], $3::uuid[], $4::jsonb[], true, '{t}', $5::uuid, '{echo}')",
        [[workflow.id], ["root"], [started!.lease], [null], session],
      );
      expect(pass.rows.filter((r) => r.kind === "queued")).toHaveLength(WIDE - 1);
      expect(pass.rows.filter((r) => r.kind === "local")).toHaveLength(1);
      // Each CTE is read about once, not once per child.
      expect(mostCteRowsRead(pass.plans)).toBeLessThan(10 * WIDE);
    });
  });
}
