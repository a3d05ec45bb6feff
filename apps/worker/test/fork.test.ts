import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  NodeStatus,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
  type Workflow,
} from "@trellis/proto";
import { FAULT_TIMINGS, type TestDatabase, checkInvariants, createTestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStack, startTestStack } from "./stack.js";

// ForkWorkflow end to end: the api, a scheduler, a worker and the example NodeService run a forked workflow to
// SUCCEEDED, running only the nodes the fork re-runs.

let testDb: TestDatabase;
let stack: TestStack;
let client: GrpcClient<typeof WorkflowService>;

const opts = () => ({ deadline: Date.now() + 10_000 });

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_fork_e2e");
  stack = await startTestStack(testDb);
  client = createGrpcClient(WorkflowService, stack.apiAddr);
});

afterAll(async () => {
  client?.close();
  await stack?.close();
  await testDb?.drop();
});

async function finished(workflowId: string): Promise<Workflow> {
  return waitFor(
    async () => {
      const { workflow } = await client.getWorkflow({ workflowId }, opts());
      return [WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED].includes(workflow!.status)
        ? workflow!
        : undefined;
    },
    { timeoutMs: 20_000, description: `workflow ${workflowId} to finish` },
  );
}

/** The nodes that ran in a workflow: those an event moved to RUNNING. */
async function ran(workflowId: string): Promise<string[]> {
  const { rows } = await testDb.pool.query<{ node_id: string }>(
    `select distinct node_id from workflow_events
      where workflow_id = $1 and type = 'node.status_changed' and node_status = 'RUNNING' order by node_id`,
    [workflowId],
  );
  return rows.map((r) => r.node_id);
}

function summary(workflow: Workflow): Record<string, [string, unknown, string, string[]]> {
  return Object.fromEntries(
    workflow.nodes.map((n) => [
      n.id,
      [NodeStatus[n.status], n.output ? toJson(ValueSchema, n.output) : null, n.insertedBy, n.parentIds],
    ]),
  );
}

describe("a forked workflow", () => {
  it("runs again only from the failed node with its new input, then from the planner, to SUCCEEDED", async () => {
    // The planner inserts two tasks and rewires the report to wait for them; the check after the report fails.
    const { workflow: created } = await client.createWorkflow(
      {
        name: "plan-and-check",
        nodes: [
          { id: "p", capability: "plan", input: { tasks: ["x", "y"], join: "report", task_capability: "echo" } },
          { id: "report", capability: "echo", parentIds: ["p"], input: { text: "report" } },
          {
            id: "check",
            capability: "flaky",
            parentIds: ["report"],
            input: { failures: 100 },
            retryPolicy: { maxAttempts: 1 },
          },
        ],
      },
      opts(),
    );
    const source = await finished(created!.id);
    expect(source.status).toBe(WorkflowStatus.FAILED);
    expect(summary(source)["p.task-0"]![2]).toBe("p");

    const { workflow: forked } = await client.forkWorkflow(
      { workflowId: source.id, fromNodeIds: ["check"], inputs: { check: { failures: 0 } }, requestId: "fork-e2e" },
      opts(),
    );
    expect(forked!.labels).toEqual({ forked_from: source.id });
    const fixed = await finished(forked!.id);
    expect(fixed.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(await ran(fixed.id)).toEqual(["check"]);
    const before = summary(source);
    const after = summary(fixed);
    for (const id of ["p", "p.task-0", "p.task-1", "report"]) expect(after[id], id).toEqual(before[id]);
    expect(after.check![0]).toBe("PASS");
    expect(fixed.nodes.find((n) => n.id === "check")!.input).toEqual({ failures: 0 });
    // The same request_id answers the same fork.
    const again = await client.forkWorkflow(
      { workflowId: source.id, fromNodeIds: ["p"], requestId: "fork-e2e" },
      opts(),
    );
    expect(again.workflow!.id).toBe(fixed.id);

    // From the planner: its tasks are left out, the report waits for the planner, whose new run inserts them again.
    const { workflow: replanned } = await client.forkWorkflow({ workflowId: fixed.id, fromNodeIds: ["p"] }, opts());
    expect(replanned!.nodes.map((n) => n.id).sort()).toEqual(["check", "p", "report"]);
    expect(replanned!.nodes.find((n) => n.id === "report")!.parentIds).toEqual(["p"]);
    const done = await finished(replanned!.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(await ran(done.id)).toEqual(["check", "p", "p.task-0", "p.task-1", "report"]);
    expect(summary(done)["p.task-1"]![2]).toBe("p");
    expect(summary(done).report![3]).toEqual(["p", "p.task-0", "p.task-1"]);

    const violations = await checkInvariants({
      pool: testDb.pool,
      recovery: FAULT_TIMINGS,
      workflowIds: [source.id, fixed.id, done.id],
      requireFinished: true,
    });
    expect(violations).toEqual([]);
  });
});
