import { type MessageInitShape, create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { FailedPreconditionError, NotFoundError, TrellisError } from "@trellis/core";
import {
  EditType,
  NodeEditSchema,
  NodeSchema,
  NodeStatus,
  type WaitSchema,
  WorkflowAction,
  WorkflowStatus,
  type Node,
} from "@trellis/proto";
import { FAULT_TIMINGS, checkInvariants, createTestDatabase, type TestDatabase } from "@trellis/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager, type QueuedNode } from "../src/index.js";

// Waits, signals and timers in PostgreSQL: a ready node with `wait` or a future `not_before` is WAITING (never
// queued), SignalNode completes or rejects it (or keeps the signal until it is ready), time wakes it. The clock is
// moved by editing wake_at, never by waiting.

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_waits");
  sm = new PgStateManager(testDb.db);
});

afterEach(async () => {
  await testDb.pool.query("truncate workflows cascade");
});

afterAll(async () => {
  await testDb.drop();
});

const value = (json: unknown) => fromJson(ValueSchema, json as never);

function node(id: string, parentIds: string[] = [], extra: Pick<Node, "notBefore"> = {} as Node): Node {
  return create(NodeSchema, { id, capability: "echo", parentIds, notBefore: extra.notBefore });
}

const approval = (id: string, parentIds: string[] = [], wait: MessageInitShape<typeof WaitSchema> = {}) =>
  create(NodeSchema, { id, capability: "", parentIds, wait });

async function status(workflowId: string, nodeId: string): Promise<{ status: string; attempt: number }> {
  const { rows } = await testDb.pool.query("select status, attempt from nodes where workflow_id = $1 and id = $2", [
    workflowId,
    nodeId,
  ]);
  return rows[0];
}

/** Claims, starts and passes one queued node. */
async function run(q: QueuedNode, output: unknown = 1): Promise<void> {
  const started = await sm.startNode(q.workflowId, q.nodeId);
  expect(started).not.toBeNull();
  await sm.recordResults(
    [
      {
        workflowId: q.workflowId,
        nodeId: q.nodeId,
        lease: started!.lease,
        result: { kind: "success", output: value(output), edits: [] },
      },
    ],
    { dispatch: true },
  );
}

async function pastDue(workflowId: string, nodeId: string): Promise<void> {
  await testDb.pool.query(
    "update nodes set wake_at = now() - interval '1 second', not_before = least(not_before, now() - interval '1 second') where workflow_id = $1 and id = $2",
    [workflowId, nodeId],
  );
}

async function invariantsHold(workflowId: string): Promise<void> {
  const violations = await checkInvariants({ pool: testDb.pool, recovery: FAULT_TIMINGS, workflowIds: [workflowId] });
  expect(violations).toEqual([]);
}

describe("wait nodes and SignalNode", () => {
  it("a ready wait node is WAITING, not queued; a signal passes it with its output and its child runs", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "approve",
      nodes: [node("plan"), approval("approve", ["plan"]), node("act", ["approve"])],
    });
    const [plan] = await sm.claimReadyNodes(10);
    await run(plan!);
    // The PASS left the wait node to the claim, which makes it WAITING.
    expect(await sm.claimReadyNodes(10)).toEqual([]);
    expect(await status(workflow.id, "approve")).toEqual({ status: "WAITING", attempt: 0 });
    const outcome = await sm.signalNode({
      workflowId: workflow.id,
      nodeId: "approve",
      output: value({ approved: true }),
      reject: false,
      message: "",
      edits: [],
    });
    expect(outcome.completed).toBe(true);
    expect(outcome.node.status).toBe(NodeStatus.PASS);
    expect(outcome.node.attempt).toBe(1);
    const [act] = await sm.claimReadyNodes(10);
    expect(act?.nodeId).toBe("act");
    const started = await sm.startNode(workflow.id, "act");
    expect(toJson(ValueSchema, started!.parentOutputs.approve!)).toEqual({ approved: true });
    await invariantsHold(workflow.id);
  });

  it("a rejecting signal FAILs the node with TASK_ERROR and its message; descendants are SKIPPED", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "reject",
      nodes: [approval("approve"), node("act", ["approve"])],
    });
    expect(await sm.claimReadyNodes(10)).toEqual([]);
    const { node: rejected } = await sm.signalNode({
      workflowId: workflow.id,
      nodeId: "approve",
      reject: true,
      message: "plan too expensive",
      edits: [],
    });
    expect(rejected.status).toBe(NodeStatus.FAIL);
    expect(rejected.error?.message).toBe("plan too expensive");
    expect((await status(workflow.id, "act")).status).toBe("SKIPPED");
    expect((await sm.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.FAILED);
    await invariantsHold(workflow.id);
    // RETRY asks again: the rejection is spent, a new signal completes the node.
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.RETRY });
    expect(await sm.claimReadyNodes(10)).toEqual([]);
    expect(await sm.wakeNodes(10)).toEqual([]);
    expect(await status(workflow.id, "approve")).toEqual({ status: "WAITING", attempt: 1 });
    const { node: approved } = await sm.signalNode({
      workflowId: workflow.id,
      nodeId: "approve",
      reject: false,
      message: "",
      edits: [],
    });
    expect(approved.status).toBe(NodeStatus.PASS);
    expect(approved.attempt).toBe(2);
    await invariantsHold(workflow.id);
  });

  it("keeps a signal sent before the node is ready and completes it the moment it is", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "early",
      nodes: [node("plan"), approval("approve", ["plan"]), node("act", ["approve"])],
    });
    const early = await sm.signalNode({
      workflowId: workflow.id,
      nodeId: "approve",
      output: value("ok"),
      reject: false,
      message: "",
      edits: [],
      requestId: "r1",
    });
    expect(early.completed).toBe(false);
    expect(early.node.status).toBe(NodeStatus.PENDING);
    // The same request again is answered alike; a different one is refused.
    expect(
      (
        await sm.signalNode({
          workflowId: workflow.id,
          nodeId: "approve",
          reject: false,
          message: "",
          edits: [],
          requestId: "r1",
        })
      ).node.status,
    ).toBe(NodeStatus.PENDING);
    await expect(
      sm.signalNode({ workflowId: workflow.id, nodeId: "approve", reject: true, message: "no", edits: [] }),
    ).rejects.toThrow(FailedPreconditionError);
    const [plan] = await sm.claimReadyNodes(10);
    await run(plan!);
    expect(await sm.claimReadyNodes(10)).toEqual([]);
    // WAITING with its signal kept: due at once for the scheduler.
    const signaled = await sm.wakeNodes(10);
    expect(signaled).toEqual([{ workflowId: workflow.id, nodeId: "approve" }]);
    expect(await sm.completeKeptSignals(signaled)).toBe(1);
    expect(await status(workflow.id, "approve")).toEqual({ status: "PASS", attempt: 1 });
    expect((await sm.claimReadyNodes(10)).map((q) => q.nodeId)).toEqual(["act"]);
    await invariantsHold(workflow.id);
  });

  it("refuses signals to a missing node, a node without wait and a finished node, changing nothing", async () => {
    const { workflow } = await sm.createWorkflow({ name: "refuse", nodes: [approval("approve"), node("plain")] });
    const signal = (nodeId: string) =>
      sm.signalNode({ workflowId: workflow.id, nodeId, reject: false, message: "", edits: [] });
    await expect(signal("missing")).rejects.toThrow(NotFoundError);
    await expect(signal("plain")).rejects.toThrow(/does not wait for a signal/);
    await sm.claimReadyNodes(10);
    await signal("approve");
    await expect(signal("approve")).rejects.toThrow(/already ended PASS/);
    await expect(
      sm.signalNode({
        workflowId: "00000000-0000-4000-8000-000000000000",
        nodeId: "approve",
        reject: false,
        message: "",
        edits: [],
      }),
    ).rejects.toThrow(NotFoundError);
  });

  it("applies a signal's edits atomically with its PASS, the inserted nodes inserted_by the signalled node", async () => {
    const { workflow } = await sm.createWorkflow({ name: "edits", nodes: [approval("approve")] });
    await sm.claimReadyNodes(10);
    const insert = (id: string, parentIds: string[]) =>
      create(NodeEditSchema, { type: EditType.INSERT, node: node(id, parentIds) });
    // Invalid edits are the caller's error: refused whole, the node still WAITING, no signal kept.
    await expect(
      sm.signalNode({
        workflowId: workflow.id,
        nodeId: "approve",
        reject: false,
        message: "",
        edits: [insert("x", ["nope"])],
      }),
    ).rejects.toThrow(TrellisError);
    expect(await status(workflow.id, "approve")).toEqual({ status: "WAITING", attempt: 0 });
    await sm.signalNode({
      workflowId: workflow.id,
      nodeId: "approve",
      reject: false,
      message: "",
      edits: [insert("step-1", ["approve"]), insert("step-2", ["step-1"])],
    });
    const wf = await sm.getWorkflow(workflow.id);
    expect(wf.nodes.map((n) => [n.id, n.insertedBy])).toEqual([
      ["approve", ""],
      ["step-1", "approve"],
      ["step-2", "approve"],
    ]);
    expect((await sm.claimReadyNodes(10)).map((q) => q.nodeId)).toEqual(["step-1"]);
    await invariantsHold(workflow.id);
  });

  it("a wait that times out PASSes with its timeout_output, or FAILs with fail_on_timeout", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "timeouts",
      nodes: [
        approval("lenient", [], {
          timeout: { seconds: 60n },
          timeoutOutput: value({ approved: "by default" }),
        } as never),
        approval("strict", [], { timeout: { seconds: 60n }, failOnTimeout: true }),
        approval("forever"),
      ],
    });
    await sm.claimReadyNodes(10);
    const { rows } = await testDb.pool.query(
      "select id, wake_at > now() + interval '50 seconds' as later from nodes where workflow_id = $1 order by id",
      [workflow.id],
    );
    expect(rows).toEqual([
      { id: "forever", later: null },
      { id: "lenient", later: true },
      { id: "strict", later: true },
    ]);
    expect(await sm.wakeNodes(10)).toEqual([]);
    await pastDue(workflow.id, "lenient");
    await pastDue(workflow.id, "strict");
    await sm.wakeNodes(10);
    const wf = await sm.getWorkflow(workflow.id);
    const byId = new Map(wf.nodes.map((n) => [n.id, n]));
    expect(byId.get("lenient")!.status).toBe(NodeStatus.PASS);
    expect(toJson(ValueSchema, byId.get("lenient")!.output!)).toEqual({ approved: "by default" });
    expect(byId.get("strict")!.status).toBe(NodeStatus.FAIL);
    expect(byId.get("strict")!.error?.message).toBe("timed out waiting for a signal after 60s");
    expect(byId.get("forever")!.status).toBe(NodeStatus.WAITING);
    await invariantsHold(workflow.id);
  });
});

describe("not_before timers", () => {
  it("a ready node waits (WAITING) until its start time, then is queued as usual", async () => {
    const later = timestampFromMs(Date.now() + 3_600_000);
    const { workflow } = await sm.createWorkflow({
      name: "timer",
      nodes: [
        node("first"),
        node("nightly", ["first"], { notBefore: later }),
        node("past", [], { notBefore: timestampFromMs(Date.now() - 60_000) }),
      ],
    });
    const claimed = await sm.claimReadyNodes(10);
    // A start time in the past means now.
    expect(claimed.map((q) => q.nodeId).sort()).toEqual(["first", "past"]);
    await run(claimed.find((q) => q.nodeId === "first")!);
    expect(await sm.claimReadyNodes(10)).toEqual([]);
    expect((await status(workflow.id, "nightly")).status).toBe("WAITING");
    const { rows } = await testDb.pool.query(
      "select data from workflow_events where workflow_id = $1 and node_id = 'nightly' and node_status = 'WAITING'",
      [workflow.id],
    );
    expect(rows[0].data).toMatchObject({ from: "PENDING", reason: "waiting for its start time" });
    expect(await sm.wakeNodes(10)).toEqual([]);
    expect((await status(workflow.id, "nightly")).status).toBe("WAITING");
    await pastDue(workflow.id, "nightly");
    await sm.wakeNodes(10);
    expect((await status(workflow.id, "nightly")).status).toBe("PENDING");
    expect((await sm.claimReadyNodes(10)).map((q) => q.nodeId)).toEqual(["nightly"]);
    await invariantsHold(workflow.id);
  });
});
