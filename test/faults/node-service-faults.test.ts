// Fault suite: the NodeService misbehaves: hangs past the deadline, dies mid-call, answers garbage, answers too
// much, and returns edits that conflict with an EditWorkflow made meanwhile.
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  EditType,
  ErrorKind,
  ExecutionStatus,
  NodeSchema,
  NodeStatus,
  WorkflowStatus,
  type ExecuteNodeResponse,
} from "@trellis/proto";
import {
  type AppProcess,
  type ExecuteHandler,
  type FaultStack,
  freePort,
  rawResponse,
  recordMeasurement,
  startFaultStack,
  testNode,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const gates = new Map<string, () => void>();
const arrived = new Set<string>();

function gate(key: string): Promise<void> {
  arrived.add(key);
  return new Promise((resolve) => gates.set(key, resolve));
}

function success(output: unknown, edits: ExecuteNodeResponse["edits"] = []) {
  return { status: ExecutionStatus.SUCCESS, output: fromJson(ValueSchema, output as never), edits };
}

const handler: ExecuteHandler = async (request, _call, signal) => {
  const node = request.node!;
  const key = request.context!.idempotencyKey;
  switch (node.capability) {
    case "hang":
      // The first attempt never answers; the worker's deadline (the node's timeout) must end it.
      if (request.context!.attempt === 1) {
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        throw new Error("aborted");
      }
      return success({ attempt: request.context!.attempt });
    case "garbage":
      // Field 1 with wire type 7: not protobuf at all.
      return rawResponse(Uint8Array.from([0x0f, 0x01, 0xff, 0xfe]));
    case "huge":
      return success({ text: "x".repeat(17 * 1024 * 1024) });
    case "nul":
      return success({ text: "before\u0000after" });
    case "nan":
      return { status: ExecutionStatus.SUCCESS, output: { kind: { case: "numberValue", value: Number.NaN } } };
    case "unspecified":
      return { status: ExecutionStatus.UNSPECIFIED };
    case "enum99":
      return { status: 99 as ExecutionStatus };
    case "badedit":
      return success(
        null,
        [create(NodeSchema, { id: "bad id!", capability: "echo" })].map((n) => ({
          type: EditType.INSERT,
          node: n,
        })) as never,
      );
    case "plan1000":
      return success(
        { planned: 1000 },
        Array.from({ length: 1000 }, (_, i) => ({
          type: EditType.INSERT,
          node: create(NodeSchema, { id: `t${i}`, capability: "echo", parentIds: [node.id] }),
        })) as never,
      );
    case "planner": {
      await gate(key);
      const wanted = (node.input?.insert as string | undefined) ?? "x";
      return success(null, [
        { type: EditType.INSERT, node: create(NodeSchema, { id: wanted, capability: "echo", parentIds: [node.id] }) },
      ] as never);
    }
    default:
      return success({ node: node.id });
  }
};

let stack: FaultStack;

beforeAll(async () => {
  stack = await startFaultStack({ name: "fault_node_service", handler });
  await Promise.all([
    stack.startScheduler(),
    stack.startWorker([
      "hang",
      "garbage",
      "huge",
      "nul",
      "nan",
      "unspecified",
      "enum99",
      "badedit",
      "plan1000",
      "planner",
      "echo",
    ]),
  ]);
}, 120_000);

afterAll(async () => {
  for (const release of gates.values()) release();
  await stack?.close();
});

const twoAttempts = { retryPolicy: { maxAttempts: 2, initialBackoff: { nanos: 100_000_000 } } };

describe("a misbehaving NodeService", () => {
  it("hangs past the deadline: the call is cut at the node's timeout and retried", async () => {
    const workflow = await stack.createWorkflow([testNode("h", "hang", [], { timeout: { nanos: 500_000_000 } })]);
    const [done] = await stack.waitFinished([workflow.id], 20_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done!.nodes[0]!.attempt).toBe(2);
    const first = stack.nodeService.calls.find((c) => c.request.context?.idempotencyKey === `${workflow.id}/h`)!;
    expect(first.cancelled).toBe(true);
    const { rows } = await stack.db.pool.query<{ data: { error: { kind: string; message: string } } }>(
      "select data from workflow_events where workflow_id = $1 and type = 'node.retry_scheduled'",
      [workflow.id],
    );
    expect(rows[0]!.data.error).toMatchObject({
      kind: "INFRA_ERROR",
      message: expect.stringMatching(/DEADLINE_EXCEEDED/),
    });
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  }, 60_000);

  it("is killed mid-call (kill -9) and comes back: the node is retried and passes", async () => {
    const port = await freePort();
    const startService = async (): Promise<AppProcess> => {
      const app = stack.apps.start({
        app: "example-node-service",
        env: { NODE_SERVICE_LISTEN_ADDR: `127.0.0.1:${port}`, HTTP_ADDR: `127.0.0.1:${await freePort()}` },
      });
      await app.waitReady();
      return app;
    };
    let service = await startService();
    await stack.startWorker(["sleep"], { env: { NODE_SERVICE_ADDR: `127.0.0.1:${port}` } });
    // Attempts enough to outlast a restart on a busy machine (the service takes seconds to start under load).
    const retryPolicy = { maxAttempts: 8, initialBackoff: { nanos: 500_000_000 }, maxBackoff: { seconds: 2n } };
    const workflow = await stack.createWorkflow([testNode("s", "sleep", [], { input: { ms: 1500 }, retryPolicy })]);
    await waitFor(async () => (await stack.stateManager.getNode(workflow.id, "s")).status === NodeStatus.RUNNING, {
      description: "the sleep node to be running",
    });
    await service.kill();
    const killedAt = Date.now();
    service = await startService();
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done!.nodes[0]!.attempt).toBeGreaterThanOrEqual(2);
    recordMeasurement("node service kill -9 mid-call", { finishedAfterKillMs: Date.now() - killedAt });
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  }, 60_000);

  it("answers bytes that are not protobuf, or more than 16 MiB: INFRA_ERROR, retried, then FAIL; the worker lives on", async () => {
    const workflow = await stack.createWorkflow([
      testNode("g", "garbage", [], twoAttempts),
      testNode("big", "huge", [], twoAttempts),
      testNode("ok", "echo"),
    ]);
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.FAILED);
    const byId = new Map(done!.nodes.map((n) => [n.id, n]));
    expect(byId.get("ok")!.status).toBe(NodeStatus.PASS);
    for (const id of ["g", "big"]) {
      expect(byId.get(id)).toMatchObject({
        status: NodeStatus.FAIL,
        attempt: 2,
        error: { kind: ErrorKind.INFRA_ERROR },
      });
    }
    expect(byId.get("g")!.error!.message).toMatch(/ExecuteNode failed/);
    expect(byId.get("big")!.error!.message).toMatch(/RESOURCE_EXHAUSTED/);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  }, 60_000);

  it("answers what cannot be recorded or makes no sense: the node fails with TASK_ERROR naming why", async () => {
    const workflow = await stack.createWorkflow([
      testNode("nul", "nul", [], twoAttempts),
      testNode("nan", "nan", [], twoAttempts),
      testNode("unspecified", "unspecified"),
      testNode("enum99", "enum99"),
      testNode("badedit", "badedit"),
    ]);
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.FAILED);
    const byId = new Map(done!.nodes.map((n) => [n.id, n]));
    const summary = Object.fromEntries(
      [...byId].map(([id, n]) => [id, `${NodeStatus[n.status]} ${ErrorKind[n.error?.kind ?? 0]} ${n.error?.message}`]),
    );
    for (const id of ["nul", "nan", "unspecified", "enum99", "badedit"]) {
      expect(summary[id], JSON.stringify(summary, null, 2)).toMatch(/^FAIL TASK_ERROR /);
    }
    expect(byId.get("badedit")!.error!.message).toMatch(/invalid edits/);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  }, 60_000);

  it("returns 1,000 edits in one response: all applied with the PASS, and they all run", async () => {
    const workflow = await stack.createWorkflow([testNode("p", "plan1000")]);
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done!.nodes).toHaveLength(1001);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  }, 90_000);

  it("returns edits that conflict with an EditWorkflow made while it ran: the later batch fails whole", async () => {
    const workflow = await stack.createWorkflow([
      testNode("plan", "planner", [], { input: { insert: "x" } }),
      testNode("plan2", "planner", [], { input: { insert: "y" } }),
      testNode("later", "echo", ["plan2"]),
    ]);
    const keys = [`${workflow.id}/plan`, `${workflow.id}/plan2`];
    await waitFor(() => keys.every((k) => arrived.has(k)), { description: "both planners to be running" });
    // Meanwhile, from outside: a node "x" (the first planner will insert the same id) and a child of "later" that
    // keeps it (the second planner's insert is fine alongside it).
    await stack.stateManager.applyNodeEdits(workflow.id, [
      { type: EditType.INSERT, node: create(NodeSchema, { id: "x", capability: "echo" }) },
      { type: EditType.INSERT, node: create(NodeSchema, { id: "z", capability: "echo", parentIds: ["later"] }) },
    ] as never);
    for (const key of keys) gates.get(key)!();
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    const byId = new Map(done!.nodes.map((n) => [n.id, n]));
    expect(byId.get("plan")).toMatchObject({ status: NodeStatus.FAIL, error: { kind: ErrorKind.TASK_ERROR } });
    expect(byId.get("plan")!.error!.message).toMatch(/invalid edits: .*"x" already exists/);
    expect(byId.get("x")!.parentIds).toEqual([]);
    expect(byId.get("y")!.status).toBe(NodeStatus.PASS);
    expect(byId.get("z")!.status).toBe(NodeStatus.PASS);
    expect(done!.status).toBe(WorkflowStatus.FAILED);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  }, 60_000);
});
