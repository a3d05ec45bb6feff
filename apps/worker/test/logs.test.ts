import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, WorkflowService, WorkflowStatus, createGrpcClient, type GrpcClient } from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStack, startTestStack } from "./stack.js";

/** Every JSON line the apps write. */
class Lines extends Writable {
  readonly records: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    for (const line of chunk.toString().split("\n")) if (line.trim() !== "") this.records.push(JSON.parse(line));
    callback();
  }
}

let testDb: TestDatabase;
let stack: TestStack;
let client: GrpcClient<typeof WorkflowService>;
const lines = new Lines();
let workflowId: string;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_logs");
  stack = await startTestStack(testDb, { logDestination: lines, logLevel: "debug" });
  client = createGrpcClient(WorkflowService, stack.apiAddr);
  const retry = { maxAttempts: 3, initialBackoff: durationFromMs(50) };
  const { workflow } = await client.createWorkflow(
    {
      name: "logs",
      nodes: [
        create(NodeSchema, { id: "a", capability: "echo" }),
        create(NodeSchema, {
          id: "b",
          capability: "flaky",
          parentIds: ["a"],
          input: { failures: 1 },
          retryPolicy: retry,
        }),
        create(NodeSchema, { id: "c", capability: "fail", parentIds: ["a"] }),
      ],
    },
    { deadline: Date.now() + 10_000 },
  );
  workflowId = workflow!.id;
  await waitFor(
    async () =>
      (await client.getWorkflow({ workflowId }, { deadline: Date.now() + 5_000 })).workflow!.status ===
      WorkflowStatus.FAILED,
    { timeoutMs: 20_000, description: "the workflow to fail" },
  );
});

afterAll(async () => {
  client?.close();
  await stack?.close();
  await testDb?.drop();
});

describe("logs", () => {
  it("are JSON lines that all name their app", () => {
    expect(lines.records.length).toBeGreaterThan(10);
    for (const record of lines.records) {
      expect(["api", "scheduler", "worker", "example-node-service"]).toContain(record.app);
      expect(typeof record.time).toBe("string");
      expect(typeof record.level).toBe("string");
    }
  });

  it("bind workflow_id, node_id, attempt and capability on the worker's lines about a node attempt", () => {
    const attempts = lines.records.filter(
      (r) => r.app === "worker" && ["node passed", "node failed", "node retry scheduled"].includes(String(r.msg)),
    );
    expect(attempts.map((r) => r.msg).sort()).toEqual([
      "node failed",
      "node passed",
      "node passed",
      "node retry scheduled",
    ]);
    for (const record of attempts) {
      expect(record).toMatchObject({ workflow_id: workflowId, node_id: expect.any(String) });
      expect(record.attempt).toBeTypeOf("number");
      expect(["echo", "flaky", "fail"]).toContain(record.capability);
    }
    expect(attempts.find((r) => r.msg === "node failed")).toMatchObject({
      node_id: "c",
      capability: "fail",
      attempt: 1,
      error_kind: "TASK_ERROR",
    });
  });

  it("write one line per committed event, in the app that committed it, with the event type", () => {
    const events = lines.records.filter((r) => r.event !== undefined && r.workflow_id === workflowId);
    const byType = (type: string) => events.filter((r) => r.event === type);
    expect(byType("workflow.created").map((r) => r.app)).toEqual(["api"]);
    expect(byType("node.retry_scheduled")).toMatchObject([{ app: "worker", node_id: "b", data: { attempt: 1 } }]);
    // The scheduler queues the root; children a PASS made ready are queued by whoever committed that PASS.
    const queued = byType("node.status_changed").filter((r) => r.node_status === "QUEUED");
    expect(queued.map((r) => r.node_id).sort()).toEqual(["a", "b", "c"]);
    expect(queued.find((r) => r.node_id === "a")?.app).toBe("scheduler");
    for (const record of queued) expect(["scheduler", "worker"]).toContain(record.app);
    expect(byType("workflow.status_changed").at(-1)).toMatchObject({ workflow_status: "FAILED" });
    for (const record of events) expect(record.sequence).toBeTypeOf("number");
  });

  it("carry workflow_id on the api's call lines and node fields on the NodeService's", () => {
    expect(lines.records.find((r) => r.app === "api" && r.msg === "grpc call")).toMatchObject({
      method: "workflow.v1.WorkflowService/CreateWorkflow",
      code: "OK",
      workflow_id: workflowId,
    });
    const executed = lines.records.filter((r) => r.app === "example-node-service" && r.msg === "node executed");
    expect(executed.length).toBeGreaterThanOrEqual(4);
    for (const record of executed) {
      expect(record).toMatchObject({
        workflow_id: workflowId,
        node_id: expect.any(String),
        capability: expect.any(String),
      });
    }
  });
});
