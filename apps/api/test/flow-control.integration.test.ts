import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { PgStateManager } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  EditType,
  ErrorKind,
  type GrpcClient,
  NodeStatus,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
} from "@trellis/proto";
import { type TestDatabase, createTestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type RunningApiServer, startApiServer } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;
let server: RunningApiServer;
let client: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_api_flow");
  sm = new PgStateManager(testDb.db);
  server = await startApiServer({
    stateManager: sm,
    logger: createLogger({ app: "api", level: "silent" }),
    registry: createMetricsRegistry({ app: "api", collectDefault: false }),
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: undefined,
      tls: undefined,
      maxReceiveBytes: 16 * 1024 * 1024,
    },
  });
  client = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
});

afterAll(async () => {
  client?.close();
  await server?.close(1_000);
  await testDb?.drop();
});

beforeEach(async () => {
  await testDb.pool.query("delete from limits");
  await testDb.pool.query("delete from workflows");
});

function opts(): { deadline: number } {
  return { deadline: Date.now() + 10_000 };
}

async function expectStatus(call: Promise<unknown>, code: grpc.status, details: string): Promise<void> {
  const error = (await call.then(
    () => {
      throw new Error("the call succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as grpc.ServiceError;
  expect([grpc.status[error.code], error.details]).toEqual([grpc.status[code], details]);
}

async function claim(workflowId: string): Promise<string[]> {
  return (await sm.claimReadyNodes(100))
    .filter((q) => q.workflowId === workflowId)
    .map((q) => q.nodeId)
    .sort();
}

describe("limits over gRPC", () => {
  it("SetLimit answers the stored limit, ListLimits lists it, DeleteLimit removes it and then answers NOT_FOUND", async () => {
    const { limit } = await client.setLimit(
      { limit: { key: "model:gpt-4o", maxConcurrency: 2, rate: 100, period: durationFromMs(60_000), unit: "tokens" } },
      opts(),
    );
    expect(limit).toMatchObject({
      key: "model:gpt-4o",
      maxConcurrency: 2,
      rate: 100,
      burst: 100,
      unit: "tokens",
      running: 0,
      waiting: 0n,
    });
    expect(limit!.period).toEqual(durationFromMs(60_000));
    expect(limit!.available).toBeCloseTo(100, 3);
    expect(limit!.throttledUntil).toBeUndefined();

    const { limits } = await client.listLimits({}, opts());
    expect(limits.map((l) => l.key)).toEqual(["model:gpt-4o"]);
    await client.deleteLimit({ key: "model:gpt-4o" }, opts());
    expect((await client.listLimits({}, opts())).limits).toEqual([]);
    await expectStatus(
      client.deleteLimit({ key: "model:gpt-4o" }, opts()),
      grpc.status.NOT_FOUND,
      'limit "model:gpt-4o" not found',
    );
  });

  it("refuses an invalid limit naming the field, and stores nothing", async () => {
    await expectStatus(
      client.setLimit({ limit: { key: "k", rate: 2, burst: 0.5 } }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "limit.burst: must be at least 1 with a rate, got 0.5",
    );
    await expectStatus(
      client.setLimit({ limit: { key: "k", rate: 1, period: durationFromMs(86_400_001) } }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "limit.period: must be greater than 0 and at most 24h",
    );
    await expectStatus(
      client.setLimit({ limit: { key: "k" } }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "limit: set max_concurrency, rate or both (0 means no cap)",
    );
    expect((await client.listLimits({}, opts())).limits).toEqual([]);
  });

  it("shows the nodes a cap holds back, and DeleteLimit gives them to the scheduler", async () => {
    await client.setLimit({ limit: { key: "model:x", maxConcurrency: 1 } }, opts());
    const { workflow } = await client.createWorkflow(
      {
        name: "capped",
        nodes: [
          { id: "a", capability: "llm", limitKeys: ["model:x"], priority: 5 },
          { id: "b", capability: "llm", limitKeys: ["model:x"] },
          { id: "c", capability: "llm" },
        ],
      },
      opts(),
    );
    const id = workflow!.id;
    expect(await claim(id)).toEqual(["a", "c"]);
    const [limit] = (await client.listLimits({}, opts())).limits;
    expect([limit!.running, limit!.waiting]).toEqual([1, 1n]);
    const { node: held } = await client.getNode({ workflowId: id, nodeId: "b" }, opts());
    expect([held!.status, held!.heldBy]).toEqual([NodeStatus.PENDING, "model:x"]);

    await client.deleteLimit({ key: "model:x" }, opts());
    expect((await client.getNode({ workflowId: id, nodeId: "b" }, opts())).node!.heldBy).toBe("");
    expect(await claim(id)).toEqual(["b"]);
  });
});

describe("nodes' priority and limit_keys over gRPC", () => {
  it("round-trip through CreateWorkflow, EditWorkflow (INSERT and UPDATE) and UpdateNode", async () => {
    const { workflow } = await client.createWorkflow(
      {
        name: "keys",
        nodes: [
          { id: "a", capability: "llm", priority: 9, limitKeys: ["model:x", "tenant:acme"] },
          { id: "b", capability: "llm", parentIds: ["a"] },
        ],
      },
      opts(),
    );
    const id = workflow!.id;
    const a = (await client.getWorkflow({ workflowId: id }, opts())).workflow!.nodes.find((n) => n.id === "a")!;
    expect([a.priority, a.limitKeys]).toEqual([9, ["model:x", "tenant:acme"]]);

    const { workflow: edited } = await client.editWorkflow(
      {
        workflowId: id,
        edits: [
          { type: EditType.INSERT, node: { id: "x", capability: "echo", priority: 3, limitKeys: ["tenant:b"] } },
          { type: EditType.UPDATE, node: { id: "b", priority: 10 }, updateMask: { paths: ["priority"] } },
        ],
      },
      opts(),
    );
    const byId = Object.fromEntries(edited!.nodes.map((n) => [n.id, n]));
    expect([byId.x!.priority, byId.x!.limitKeys, byId.b!.priority]).toEqual([3, ["tenant:b"], 10]);

    const { node } = await client.updateNode(
      { workflowId: id, node: { id: "b", limitKeys: ["model:y"] }, updateMask: { paths: ["limit_keys"] } },
      opts(),
    );
    expect([node!.priority, node!.limitKeys]).toEqual([10, ["model:y"]]);
    await expectStatus(
      client.updateNode(
        { workflowId: id, node: { id: "b", limitKeys: ["capability:llm"] }, updateMask: { paths: ["limit_keys"] } },
        opts(),
      ),
      grpc.status.INVALID_ARGUMENT,
      'node.limit_keys[0]: the prefix "capability:" is reserved: every node counts under "capability:<its capability>"',
    );
  });
});

describe("budgets and attempts over gRPC", () => {
  it("UpdateWorkflow lowering the budget under the usage pauses; RESUME is refused until it is raised", async () => {
    const { workflow } = await client.createWorkflow(
      { name: "spend", budget: { tokens: 1000 }, nodes: [{ id: "a", capability: "llm" }] },
      opts(),
    );
    const id = workflow!.id;
    expect(workflow!.budget).toEqual({ tokens: 1000 });
    expect(await claim(id)).toEqual(["a"]);
    await testDb.pool.query(`update workflows set usage = '{"tokens": 700}' where id = $1`, [id]);

    const { workflow: paused } = await client.updateWorkflow(
      { workflowId: id, budget: { tokens: 500 }, updateMask: { paths: ["budget"] } },
      opts(),
    );
    expect([paused!.status, paused!.usage, paused!.budget]).toEqual([
      WorkflowStatus.PAUSED,
      { tokens: 700 },
      { tokens: 500 },
    ]);
    const types = (await sm.listEvents(id, 0)).map((e) => e.type);
    expect(types.slice(-4)).toEqual([
      "workflow.updated",
      "workflow.budget_exceeded",
      "workflow.status_changed",
      "node.status_changed",
    ]);

    await expectStatus(
      client.updateWorkflow({ workflowId: id, action: WorkflowAction.RESUME }, opts()),
      grpc.status.FAILED_PRECONDITION,
      "budget exceeded for tokens: raise it with update_mask budget first",
    );
    const { workflow: resumed } = await client.updateWorkflow(
      { workflowId: id, budget: { tokens: 5000 }, updateMask: { paths: ["budget"] }, action: WorkflowAction.RESUME },
      opts(),
    );
    expect(resumed!.status).toBe(WorkflowStatus.RUNNING);
  });

  it("GetNode answers every ended attempt, oldest first, with its error and usage", async () => {
    const { workflow } = await client.createWorkflow(
      {
        name: "attempts",
        nodes: [{ id: "a", capability: "llm", retryPolicy: { maxAttempts: 3, initialBackoff: durationFromMs(0) } }],
      },
      opts(),
    );
    const id = workflow!.id;
    expect(await claim(id)).toEqual(["a"]);
    const first = await sm.startNode(id, "a");
    await sm.recordResult(id, "a", first!.lease, {
      kind: "error",
      errorKind: ErrorKind.INFRA_ERROR,
      message: "provider down",
      usage: { tokens: 3 },
    });
    const second = await sm.startNode(id, "a");
    await sm.recordResult(id, "a", second!.lease, {
      kind: "success",
      output: undefined,
      edits: [],
      usage: { tokens: 9 },
    });

    const { node, attempts } = await client.getNode({ workflowId: id, nodeId: "a" }, opts());
    expect(node!.status).toBe(NodeStatus.PASS);
    expect(attempts.map((a) => [a.attempt, a.status, a.error?.kind, a.error?.message, a.usage])).toEqual([
      [1, "RETRY", ErrorKind.INFRA_ERROR, "provider down", { tokens: 3 }],
      [2, "PASS", undefined, undefined, { tokens: 9 }],
    ]);
    for (const a of attempts) {
      expect(timestampDate(a.finishedAt!).getTime()).toBeGreaterThanOrEqual(timestampDate(a.startedAt!).getTime());
    }
    const { workflow: read } = await client.getWorkflow({ workflowId: id }, opts());
    expect(read!.usage).toEqual({ tokens: 12 });
  });
});
