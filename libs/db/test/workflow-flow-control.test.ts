import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { FailedPreconditionError, InvalidArgumentError } from "@trellis/core";
import {
  EditType,
  ErrorKind,
  NodeEditSchema,
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowStatus,
} from "@trellis/proto";
import { type TestDatabase, createTestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_flow_api");
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await testDb?.drop();
});

async function events(
  workflowId: string,
): Promise<{ sequence: number; type: string; data: Record<string, unknown> }[]> {
  return (await sm.listEvents(workflowId, 0)).map((e) => ({
    sequence: Number(e.sequence),
    type: e.type,
    data: e.data as Record<string, unknown>,
  }));
}

async function setUsage(workflowId: string, usage: Record<string, number>): Promise<void> {
  await testDb.pool.query("update workflows set usage = $2 where id = $1", [workflowId, JSON.stringify(usage)]);
}

/** A RUNNING workflow: a and b claimed (QUEUED), c waiting on a. */
async function running(budget?: Record<string, number>): Promise<string> {
  const { workflow } = await sm.createWorkflow({
    name: "spending",
    budget,
    nodes: [
      create(NodeSchema, { id: "a", capability: "llm" }),
      create(NodeSchema, { id: "b", capability: "llm" }),
      create(NodeSchema, { id: "c", capability: "llm", parentIds: ["a"] }),
    ],
  });
  const claimed = (await sm.claimReadyNodes(100)).filter((q) => q.workflowId === workflow.id);
  expect(claimed.map((q) => q.nodeId).sort()).toEqual(["a", "b"]);
  return workflow.id;
}

describe("priority and limit_keys", () => {
  it("round-trip through create, an INSERT edit, an UPDATE edit and UpdateNode", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "prioritised",
      nodes: [
        create(NodeSchema, { id: "a", capability: "llm", priority: 7, limitKeys: ["model:x", "tenant:acme"] }),
        create(NodeSchema, { id: "b", capability: "llm", parentIds: ["a"] }),
      ],
    });
    const created = workflow.nodes.find((n) => n.id === "a")!;
    expect([created.priority, created.limitKeys, created.heldBy]).toEqual([7, ["model:x", "tenant:acme"], ""]);
    expect(await sm.getWorkflow(workflow.id)).toEqual(workflow);

    const edited = await sm.applyNodeEdits(workflow.id, [
      create(NodeEditSchema, {
        type: EditType.INSERT,
        node: { id: "x", capability: "echo", priority: 2, limitKeys: ["tenant:b"] },
      }),
      create(NodeEditSchema, {
        type: EditType.UPDATE,
        node: { id: "b", priority: 10, limitKeys: ["model:y"] },
        updateMask: { paths: ["priority", "limit_keys"] },
      }),
    ]);
    const byId = Object.fromEntries(edited.nodes.map((n) => [n.id, n]));
    expect([byId.x!.priority, byId.x!.limitKeys]).toEqual([2, ["tenant:b"]]);
    expect([byId.b!.priority, byId.b!.limitKeys]).toEqual([10, ["model:y"]]);

    // A node held back under its old keys is weighed afresh once they change.
    await testDb.pool.query("update nodes set held_by = 'model:y' where workflow_id = $1 and id = 'b'", [workflow.id]);
    const updated = await sm.updateNode(workflow.id, create(NodeSchema, { id: "b", priority: 1, limitKeys: [] }), {
      $typeName: "google.protobuf.FieldMask",
      paths: ["limit_keys", "priority"],
    });
    expect([updated.priority, updated.limitKeys, updated.heldBy]).toEqual([1, [], ""]);
  });

  it("refuses a bad priority or limit key with the field named, writing nothing", async () => {
    const before = (await testDb.pool.query("select count(*)::int as n from workflows")).rows[0].n;
    const error = await sm
      .createWorkflow({
        name: "bad",
        nodes: [
          create(NodeSchema, { id: "a", capability: "llm" }),
          create(NodeSchema, { id: "b", capability: "llm", priority: 11 }),
        ],
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as Error).message).toBe("nodes[1].priority: must be between 0 and 10, got 11");
    await expect(
      sm.createWorkflow({
        name: "bad",
        nodes: [create(NodeSchema, { id: "a", capability: "llm", limitKeys: ["capability:llm"] })],
      }),
    ).rejects.toThrow(/^nodes\[0\]\.limit_keys\[0\]: the prefix "capability:" is reserved/);
    expect((await testDb.pool.query("select count(*)::int as n from workflows")).rows[0].n).toBe(before);
  });
});

describe("budgets", () => {
  it("are stored by create and shown with the usage", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "budgeted",
      budget: { tokens: 1000, cost_usd: 2.5 },
      nodes: [create(NodeSchema, { id: "a", capability: "llm" })],
    });
    expect(workflow.budget).toEqual({ tokens: 1000, cost_usd: 2.5 });
    expect(workflow.usage).toEqual({});
    await setUsage(workflow.id, { tokens: 12.5 });
    const read = await sm.getWorkflow(workflow.id);
    expect([read.budget, read.usage]).toEqual([{ tokens: 1000, cost_usd: 2.5 }, { tokens: 12.5 }]);
    await expect(
      sm.createWorkflow({
        name: "x",
        budget: { tokens: 0 },
        nodes: [create(NodeSchema, { id: "a", capability: "c" })],
      }),
    ).rejects.toThrow('budget["tokens"]: must be a finite number above 0, got 0');
  });

  it("a budget lowered to what the workflow already spent pauses it in the same transaction", async () => {
    const id = await running({ tokens: 1000 });
    await setUsage(id, { tokens: 600 });
    const unchanged = await sm.updateWorkflow(id, { budget: { tokens: 800 } });
    expect(unchanged.workflow.status).toBe(WorkflowStatus.RUNNING);
    const before = (await events(id)).length;

    const paused = await sm.updateWorkflow(id, { budget: { tokens: 500, cost_usd: 1 } });
    expect(paused.workflow.status).toBe(WorkflowStatus.PAUSED);
    expect(paused.workflow.budget).toEqual({ tokens: 500, cost_usd: 1 });
    expect(paused.removedJobIds.map((j) => j.jobId).sort()).toEqual([`${id}/a/1`, `${id}/b/1`]);
    expect(paused.workflow.nodes.map((n) => [n.id, n.status])).toEqual([
      ["a", NodeStatus.PENDING],
      ["b", NodeStatus.PENDING],
      ["c", NodeStatus.PENDING],
    ]);
    const all = await events(id);
    expect(all.map((e) => e.sequence)).toEqual(all.map((_, i) => i + 1));
    expect(all.slice(before).map((e) => e.type)).toEqual([
      "workflow.updated",
      "workflow.budget_exceeded",
      "workflow.status_changed",
      "node.status_changed",
      "node.status_changed",
    ]);
    expect(all[before]!.data).toEqual({ budget: { tokens: 500, cost_usd: 1 } });
    expect(all[before + 1]!.data).toEqual({ unit: "tokens", usage: 600, budget: 500 });
    expect(all[before + 2]!.data).toMatchObject({ from: "RUNNING", reason: "budget exceeded" });
    expect((await sm.claimReadyNodes(100)).filter((q) => q.workflowId === id)).toEqual([]);
  });

  it("a PAUSE asked together with a budget that pauses the workflow is done once, not refused", async () => {
    const id = await running();
    await setUsage(id, { tokens: 10 });
    const paused = await sm.updateWorkflow(id, { budget: { tokens: 10 }, action: WorkflowAction.PAUSE });
    expect(paused.workflow.status).toBe(WorkflowStatus.PAUSED);
    expect((await events(id)).filter((e) => e.type === "workflow.status_changed").map((e) => e.data)).toEqual([
      expect.objectContaining({ from: "PENDING" }),
      expect.objectContaining({ from: "RUNNING", reason: "budget exceeded" }),
    ]);
  });

  it("RESUME over budget is refused naming the unit, changing nothing; raising the budget lets it resume", async () => {
    const id = await running({ tokens: 100, cost_usd: 5 });
    await setUsage(id, { tokens: 150, cost_usd: 5 });
    await sm.updateWorkflow(id, { action: WorkflowAction.PAUSE });
    const before = await events(id);
    const refusal = await sm.updateWorkflow(id, { action: WorkflowAction.RESUME }).catch((e: unknown) => e);
    expect(refusal).toBeInstanceOf(FailedPreconditionError);
    expect((refusal as Error).message).toBe("budget exceeded for cost_usd: raise it with update_mask budget first");
    // Raising one unit is not enough, and the refused request leaves even its name change out.
    await expect(
      sm.updateWorkflow(id, { name: "renamed", budget: { tokens: 100, cost_usd: 6 }, action: WorkflowAction.RESUME }),
    ).rejects.toThrow("budget exceeded for tokens: raise it with update_mask budget first");
    const after = await sm.getWorkflow(id);
    expect([after.status, after.name, after.budget]).toEqual([
      WorkflowStatus.PAUSED,
      "spending",
      { tokens: 100, cost_usd: 5 },
    ]);
    expect(await events(id)).toEqual(before);

    const resumed = await sm.updateWorkflow(id, {
      budget: { tokens: 200, cost_usd: 6 },
      action: WorkflowAction.RESUME,
    });
    expect(resumed.workflow.status).toBe(WorkflowStatus.RUNNING);
    await sm.updateWorkflow(id, { action: WorkflowAction.PAUSE });
    await sm.updateWorkflow(id, { budget: {} });
    expect((await sm.updateWorkflow(id, { action: WorkflowAction.RESUME })).workflow.status).toBe(
      WorkflowStatus.RUNNING,
    );
  });
});

describe("PAUSE", () => {
  it("pauses through the SQL function after the request's field changes, with its events in order", async () => {
    const id = await running();
    const before = (await events(id)).length;
    const paused = await sm.updateWorkflow(id, { name: "paused-now", action: WorkflowAction.PAUSE });
    expect([paused.workflow.status, paused.workflow.name]).toEqual([WorkflowStatus.PAUSED, "paused-now"]);
    expect(paused.removedJobIds).toEqual([
      { capability: "llm", jobId: `${id}/a/1` },
      { capability: "llm", jobId: `${id}/b/1` },
    ]);
    const all = await events(id);
    expect(all.map((e) => e.sequence)).toEqual(all.map((_, i) => i + 1));
    expect(all.slice(before).map((e) => [e.type, e.data])).toEqual([
      ["workflow.updated", { name: "paused-now" }],
      ["workflow.status_changed", { from: "RUNNING", action: "PAUSE" }],
      ["node.status_changed", { from: "QUEUED", reason: "workflow paused" }],
      ["node.status_changed", { from: "QUEUED", reason: "workflow paused" }],
    ]);
    await expect(sm.updateWorkflow(id, { action: WorkflowAction.PAUSE })).rejects.toThrow(
      "cannot PAUSE workflow in status PAUSED",
    );
  });
});

describe("listNodeAttempts", () => {
  it("returns every ended attempt, oldest first, with its error, worker, times and usage", async () => {
    const id = await running();
    await testDb.pool.query(
      `insert into node_attempts (workflow_id, node_id, attempt, outcome, started_at, ended_at, error_kind,
                                  error_message, worker_id, usage)
       values ($1, 'a', 2, 'PASS', '2026-01-01T00:00:10Z', '2026-01-01T00:00:12Z', null, null, 'w-2',
               '{"tokens": 42.5}'),
              ($1, 'a', 1, 'RETRY', '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'INFRA_ERROR', 'flaky', 'w-1',
               '{}')`,
      [id],
    );
    const attempts = await sm.listNodeAttempts(id, "a");
    expect(
      attempts.map((a) => ({
        attempt: a.attempt,
        status: a.status,
        error: a.error ? [a.error.kind, a.error.message] : null,
        workerId: a.workerId,
        startedAt: a.startedAt && timestampDate(a.startedAt).toISOString(),
        finishedAt: a.finishedAt && timestampDate(a.finishedAt).toISOString(),
        usage: a.usage,
      })),
    ).toEqual([
      {
        attempt: 1,
        status: "RETRY",
        error: [ErrorKind.INFRA_ERROR, "flaky"],
        workerId: "w-1",
        startedAt: "2026-01-01T00:00:00.000Z",
        finishedAt: "2026-01-01T00:00:01.000Z",
        usage: {},
      },
      {
        attempt: 2,
        status: "PASS",
        error: null,
        workerId: "w-2",
        startedAt: "2026-01-01T00:00:10.000Z",
        finishedAt: "2026-01-01T00:00:12.000Z",
        usage: { tokens: 42.5 },
      },
    ]);
    expect(await sm.listNodeAttempts(id, "b")).toEqual([]);
    await expect(sm.listNodeAttempts(id, "ghost")).rejects.toThrow(`node "ghost" not found in workflow ${id}`);
  });
});
