import { isTerminalNodeStatus, isTerminalWorkflowStatus } from "@trellis/core";
import { NodeStatus, WorkflowStatus } from "@trellis/proto";
import { createTestDatabase, type TestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeStatusToName, workflowStatusToName } from "../src/index.js";

// The status sets are written once in @trellis/core and once in SQL (libs/db/sql/010_status_sets.sql, used by every
// function that settles or starts). This holds the two equal for every value of the enums, and every stored value.

let testDb: TestDatabase;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_status_sets");
});

afterAll(async () => {
  await testDb.drop();
});

const numbers = (e: Record<string, string | number>) =>
  Object.values(e).filter((v): v is number => typeof v === "number");

describe("the SQL status sets", () => {
  it("agree with @trellis/core on every node status", async () => {
    const stored = await testDb.pool.query<{ s: string }>("select unnest(enum_range(null::node_status))::text as s");
    const statuses = numbers(NodeStatus).filter((s) => s !== NodeStatus.UNSPECIFIED);
    expect(statuses.map(nodeStatusToName).sort()).toEqual(stored.rows.map((r) => r.s).sort());
    for (const status of statuses) {
      const { rows } = await testDb.pool.query("select trellis_node_unfinished($1::node_status) as unfinished", [
        nodeStatusToName(status),
      ]);
      expect({ status: NodeStatus[status], unfinished: rows[0].unfinished }).toEqual({
        status: NodeStatus[status],
        unfinished: !isTerminalNodeStatus(status),
      });
    }
  });

  it("agree with @trellis/core on every workflow status", async () => {
    const stored = await testDb.pool.query<{ s: string }>(
      "select unnest(enum_range(null::workflow_status))::text as s",
    );
    const statuses = numbers(WorkflowStatus).filter((s) => s !== WorkflowStatus.UNSPECIFIED);
    expect(statuses.map(workflowStatusToName).sort()).toEqual(stored.rows.map((r) => r.s).sort());
    for (const status of statuses) {
      const { rows } = await testDb.pool.query("select trellis_workflow_finished($1::workflow_status) as finished", [
        workflowStatusToName(status),
      ]);
      expect({ status: WorkflowStatus[status], finished: rows[0].finished }).toEqual({
        status: WorkflowStatus[status],
        finished: isTerminalWorkflowStatus(status),
      });
    }
  });
});
