import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, NotFoundError } from "@trellis/core";
import {
  EditType,
  ErrorKind,
  NodeEditSchema,
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowStatus,
  type Node,
  type NodeEdit,
  type Workflow,
} from "@trellis/proto";
import { FAULT_TIMINGS, checkInvariants, createTestDatabase, type TestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager, type NodeResult } from "../src/index.js";

// ForkWorkflow against PostgreSQL: what a fork keeps, runs again and leaves out, inserted_by on every path that
// inserts nodes, and that every refusal changes nothing.

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_fork");
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await testDb?.drop();
});

function node(id: string, parentIds: string[] = [], capability = "echo"): Node {
  return create(NodeSchema, { id, capability, parentIds, input: { id } });
}

function insert(id: string, parentIds: string[]): NodeEdit {
  return create(NodeEditSchema, { type: EditType.INSERT, node: node(id, parentIds) });
}

function rewire(id: string, parentIds: string[]): NodeEdit {
  return create(NodeEditSchema, {
    type: EditType.UPDATE,
    node: { id, parentIds },
    updateMask: { paths: ["parent_ids"] },
  });
}

function pass(value: unknown, edits: NodeEdit[] = []): NodeResult {
  return { kind: "success", output: fromJson(ValueSchema, value as never), edits };
}

const failure: NodeResult = { kind: "error", errorKind: ErrorKind.TASK_ERROR, message: "boom" };

/** Claims and starts `nodeId` of `workflowId`, then records `result` for it. */
async function run(workflowId: string, nodeId: string, result: NodeResult): Promise<void> {
  const lease = await start(workflowId, nodeId);
  await sm.recordResult(workflowId, nodeId, lease, result);
}

async function start(workflowId: string, nodeId: string): Promise<string> {
  await sm.claimReadyNodes(1000);
  const started = await sm.startNode(workflowId, nodeId);
  if (!started) throw new Error(`${nodeId} did not start`);
  return started.lease;
}

/** Runs every ready node of a workflow to PASS (output {ran: id}) until none is ready. */
async function runToEnd(workflowId: string): Promise<string[]> {
  const ran: string[] = [];
  for (;;) {
    const claimed = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflowId);
    if (claimed.length === 0) return ran;
    for (const q of claimed) {
      const started = await sm.startNode(q.workflowId, q.nodeId);
      await sm.recordResult(q.workflowId, q.nodeId, started!.lease, pass({ ran: q.nodeId }));
      ran.push(q.nodeId);
    }
  }
}

function byId(workflow: Workflow): Map<string, Node> {
  return new Map(workflow.nodes.map((n) => [n.id, n]));
}

function outputOf(n: Node | undefined): unknown {
  return n?.output ? toJson(ValueSchema, n.output) : undefined;
}

/** Everything a fork could change: row counts of every table, and a source workflow with its events. */
async function snapshot(sourceId: string): Promise<{ counts: unknown; source: unknown }> {
  const r = await testDb.pool.query(`
    select (select count(*) from workflows)::int as workflows, (select count(*) from nodes)::int as nodes,
           (select count(*) from node_edges)::int as edges, (select count(*) from workflow_events)::int as events,
           (select count(*) from node_attempts)::int as attempts`);
  const source = await sm.getWorkflow(sourceId);
  return { counts: r.rows[0], source: { source, events: await sm.listEvents(sourceId, 0) } };
}

async function invariants(workflowIds: string[]): Promise<string[]> {
  return (await checkInvariants({ pool: testDb.pool, recovery: FAULT_TIMINGS, workflowIds })).map(
    (v) => `${v.invariant} ${v.message}`,
  );
}

/** a -> (b, c) -> d, with c failed: the workflow FAILED. */
async function failedDiamond(): Promise<Workflow> {
  const { workflow } = await sm.createWorkflow({
    name: "diamond",
    labels: { team: "x" },
    input: { topic: "t" },
    budget: { tokens: 1000 },
    nodes: [node("a"), node("b", ["a"]), node("c", ["a"]), node("d", ["b", "c"])],
  });
  await run(workflow.id, "a", pass("A"));
  await run(workflow.id, "b", pass("B"));
  await run(workflow.id, "c", failure);
  const failed = await sm.getWorkflow(workflow.id);
  expect(failed.status).toBe(WorkflowStatus.FAILED);
  return failed;
}

describe("inserted_by", () => {
  it("is the PASSing node for its edits' inserts, '' for the original graph and the api's edits", async () => {
    const { workflow } = await sm.createWorkflow({ name: "planner", nodes: [node("p"), node("report", ["p"])] });
    await sm.applyNodeEdits(workflow.id, [insert("manual", [])]);
    await run(workflow.id, "p", pass("plan", [insert("x", ["p"]), rewire("report", ["x"])]));
    await sm.createNode(workflow.id, node("late", []));
    const nodes = byId(await sm.getWorkflow(workflow.id));
    expect(Object.fromEntries([...nodes].map(([id, n]) => [id, n.insertedBy]))).toEqual({
      p: "",
      report: "",
      manual: "",
      x: "p",
      late: "",
    });
    expect((await sm.getNode(workflow.id, "x")).insertedBy).toBe("p");
  });
});

describe("forkWorkflow", () => {
  it("of a diamond failed at one branch keeps a and b, runs c and d again, and leaves the source untouched", async () => {
    const source = await failedDiamond();
    const before = await snapshot(source.id);
    const { workflow: fork, created } = await sm.forkWorkflow({ workflowId: source.id, fromNodeIds: ["c"] });
    expect(created).toBe(true);
    expect(fork.id).not.toBe(source.id);
    expect([fork.name, fork.status, fork.labels, fork.budget]).toEqual([
      "diamond",
      WorkflowStatus.PENDING,
      { team: "x", forked_from: source.id },
      { tokens: 1000 },
    ]);
    expect(fork.input).toEqual({ topic: "t" });
    const nodes = byId(fork);
    expect([...nodes.keys()].sort()).toEqual(["a", "b", "c", "d"]);
    expect(["a", "b", "c", "d"].map((id) => NodeStatus[nodes.get(id)!.status])).toEqual([
      "PASS",
      "PASS",
      "PENDING",
      "PENDING",
    ]);
    expect([outputOf(nodes.get("a")), outputOf(nodes.get("b"))]).toEqual(["A", "B"]);
    expect([nodes.get("a")!.attempt, nodes.get("c")!.attempt, nodes.get("c")!.error]).toEqual([1, 0, undefined]);
    expect(nodes.get("d")!.parentIds).toEqual(["b", "c"]);
    const pending = await testDb.pool.query(
      "select id, pending_parents from nodes where workflow_id = $1 and status = 'PENDING' order by id",
      [fork.id],
    );
    expect(pending.rows).toEqual([
      { id: "c", pending_parents: 0 },
      { id: "d", pending_parents: 1 },
    ]);
    const events = await sm.listEvents(fork.id, 0);
    expect(events.map((e) => [Number(e.sequence), e.type, e.nodeId])).toEqual([
      [1, "workflow.created", ""],
      [2, "node.copied", "a"],
      [3, "node.copied", "b"],
    ]);
    expect(events[0]!.data).toMatchObject({ nodeCount: 4, forkedFrom: source.id, fromNodeIds: ["c"] });
    expect((await sm.listNodeAttempts(fork.id, "a")).map((a) => a.attempt)).toEqual([1]);
    expect((await snapshot(source.id)).source).toEqual(before.source);

    expect((await runToEnd(fork.id)).sort()).toEqual(["c", "d"]);
    expect((await sm.getWorkflow(fork.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    expect(await invariants([source.id, fork.id])).toEqual([]);
  });

  it("from a node above the failure runs it, its downstream and every node that is not PASS", async () => {
    const source = await failedDiamond();
    const { workflow: fork } = await sm.forkWorkflow({ workflowId: source.id, fromNodeIds: ["b"] });
    const nodes = byId(fork);
    expect(["a", "b", "c", "d"].map((id) => NodeStatus[nodes.get(id)!.status])).toEqual([
      "PASS",
      "PENDING",
      "PENDING",
      "PENDING",
    ]);
  });

  it("leaves out the nodes a re-run planner inserted and makes its rewired report wait for the planner again", async () => {
    const { workflow } = await sm.createWorkflow({ name: "plan", nodes: [node("p"), node("report", ["p"])] });
    // p inserts x and rewires the report to x; x inserts z and rewires the report to z.
    await run(workflow.id, "p", pass("plan", [insert("x", ["p"]), rewire("report", ["x"])]));
    await run(workflow.id, "x", pass("X", [insert("z", ["x"]), rewire("report", ["z"])]));
    await run(workflow.id, "z", pass("Z"));
    await run(workflow.id, "report", pass("R"));
    const source = await sm.getWorkflow(workflow.id);
    expect(source.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(byId(source).get("z")!.insertedBy).toBe("x");

    const fromPlanner = byId((await sm.forkWorkflow({ workflowId: source.id, fromNodeIds: ["p"] })).workflow);
    expect([...fromPlanner.keys()].sort()).toEqual(["p", "report"]);
    expect(fromPlanner.get("report")!.parentIds).toEqual(["p"]);
    expect(NodeStatus[fromPlanner.get("p")!.status]).toBe("PENDING");

    const { workflow: fromX } = await sm.forkWorkflow({ workflowId: source.id, fromNodeIds: ["x"] });
    const nodes = byId(fromX);
    expect([...nodes.keys()].sort()).toEqual(["p", "report", "x"]);
    expect([NodeStatus[nodes.get("p")!.status], outputOf(nodes.get("p"))]).toEqual(["PASS", "plan"]);
    expect([NodeStatus[nodes.get("x")!.status], nodes.get("x")!.insertedBy, nodes.get("x")!.parentIds]).toEqual([
      "PENDING",
      "p",
      ["p"],
    ]);
    expect(nodes.get("report")!.parentIds).toEqual(["x"]);
    const edges = await testDb.pool.query(
      "select parent_id, child_id from node_edges where workflow_id = $1 order by child_id",
      [fromX.id],
    );
    expect(edges.rows).toEqual([
      { parent_id: "x", child_id: "report" },
      { parent_id: "p", child_id: "x" },
    ]);
    // The re-run x inserts its own z again.
    await run(fromX.id, "x", pass("X2", [insert("z", ["x"]), rewire("report", ["z"])]));
    expect((await runToEnd(fromX.id)).sort()).toEqual(["report", "z"]);
    expect((await sm.getWorkflow(fromX.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    expect(await invariants([source.id, fromX.id])).toEqual([]);
  });

  it("of a RUNNING workflow runs again what has not passed, and the source goes on", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "live",
      nodes: [node("a"), node("b", ["a"]), node("c")],
    });
    await run(workflow.id, "a", pass("A"));
    const leaseOfC = await start(workflow.id, "c");
    const { workflow: fork } = await sm.forkWorkflow({ workflowId: workflow.id, fromNodeIds: ["b"] });
    const nodes = byId(fork);
    expect(["a", "b", "c"].map((id) => NodeStatus[nodes.get(id)!.status])).toEqual(["PASS", "PENDING", "PENDING"]);
    expect(nodes.get("c")!.attempt).toBe(0);
    expect((await sm.recordResult(workflow.id, "c", leaseOfC, pass("C"))).outcome).toBe("passed");
    expect(NodeStatus[(await sm.getNode(workflow.id, "c")).status]).toBe("PASS");
    expect(NodeStatus[(await sm.getNode(fork.id, "c")).status]).toBe("PENDING");
  });

  it("carries on a CANCELLED workflow", async () => {
    const { workflow } = await sm.createWorkflow({ name: "stopped", nodes: [node("a"), node("b", ["a"])] });
    await run(workflow.id, "a", pass("A"));
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    expect((await sm.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.CANCELLED);
    const { workflow: fork } = await sm.forkWorkflow({ workflowId: workflow.id, fromNodeIds: ["b"] });
    expect(await runToEnd(fork.id)).toEqual(["b"]);
    expect((await sm.getWorkflow(fork.id)).status).toBe(WorkflowStatus.SUCCEEDED);
  });

  it("gives re-run nodes their new inputs and the others their own", async () => {
    const source = await failedDiamond();
    const { workflow: fork } = await sm.forkWorkflow({
      workflowId: source.id,
      fromNodeIds: ["c"],
      inputs: { c: { prompt: "fixed" } },
    });
    const nodes = byId(fork);
    expect([nodes.get("c")!.input, nodes.get("d")!.input, nodes.get("a")!.input]).toEqual([
      { prompt: "fixed" },
      { id: "d" },
      { id: "a" },
    ]);
  });

  it("is idempotent on request_id", async () => {
    const source = await failedDiamond();
    const first = await sm.forkWorkflow({ workflowId: source.id, fromNodeIds: ["c"], requestId: "fork-once" });
    const before = await snapshot(source.id);
    const again = await sm.forkWorkflow({ workflowId: source.id, fromNodeIds: ["d"], requestId: "fork-once" });
    expect(again.created).toBe(false);
    expect(again.workflow).toEqual(first.workflow);
    expect(await snapshot(source.id)).toEqual(before);
  });

  it("refuses a missing workflow, unknown node ids and inputs of nodes that do not run again, changing nothing", async () => {
    const source = await failedDiamond();
    const before = await snapshot(source.id);
    const refusals: [Parameters<PgStateManager["forkWorkflow"]>[0], string, string][] = [
      [{ workflowId: crypto.randomUUID(), fromNodeIds: ["a"] }, "NotFoundError", ""],
      [{ workflowId: "not-a-uuid", fromNodeIds: ["a"] }, "InvalidArgumentError", "workflow_id"],
      [{ workflowId: source.id, fromNodeIds: [] }, "InvalidArgumentError", "from_node_ids"],
      [{ workflowId: source.id, fromNodeIds: ["c", "nope"] }, "InvalidArgumentError", "from_node_ids[1]"],
      [{ workflowId: source.id, fromNodeIds: ["c"], inputs: { a: {} } }, "InvalidArgumentError", 'inputs["a"]'],
      [{ workflowId: source.id, fromNodeIds: ["c"], inputs: { x: {} } }, "InvalidArgumentError", 'inputs["x"]'],
      [{ workflowId: source.id, fromNodeIds: ["c"], requestId: "r".repeat(257) }, "InvalidArgumentError", "request_id"],
    ];
    for (const [input, name, field] of refusals) {
      const error = await sm.forkWorkflow(input).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, JSON.stringify(input)).toBeInstanceOf(
        name === "NotFoundError" ? NotFoundError : InvalidArgumentError,
      );
      if (error instanceof InvalidArgumentError) expect(error.field).toBe(field);
    }
    expect(await snapshot(source.id)).toEqual(before);
  });
});
