import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
} from "@trellis/proto";
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
/** A workflow cancelled while its node `s` runs. */
let cancelledId: string;

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
  const { workflow: cancelled } = await client.createWorkflow(
    {
      name: "logs-cancelled",
      nodes: [
        create(NodeSchema, { id: "s", capability: "sleep", input: { ms: 20_000 } }),
        create(NodeSchema, { id: "t", capability: "echo", parentIds: ["s"] }),
      ],
    },
    { deadline: Date.now() + 10_000 },
  );
  cancelledId = cancelled!.id;
  await waitFor(
    async () =>
      (await client.getWorkflow({ workflowId: cancelledId }, { deadline: Date.now() + 5_000 })).workflow!.nodes.find(
        (n) => n.id === "s",
      )?.status === NodeStatus.RUNNING,
    { timeoutMs: 20_000, description: "the sleep node to run" },
  );
  await client.updateWorkflow(
    { workflowId: cancelledId, action: WorkflowAction.CANCEL },
    { deadline: Date.now() + 5_000 },
  );
  // The worker's call is aborted and its result refused: the last thing logged about the cancelled node.
  await waitFor(
    () => lines.records.some((r) => r.workflow_id === cancelledId && String(r.msg).startsWith("result not recorded")),
    { timeoutMs: 10_000, description: "the cancelled node's result to be refused" },
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

  it("write exactly one line at info or above per node change (its event), a FAIL at warn", () => {
    const atInfo = (r: Record<string, unknown>) => ["info", "warn", "error", "fatal"].includes(String(r.level));
    for (const id of [workflowId, cancelledId]) {
      const about = lines.records.filter((r) => r.workflow_id === id && atInfo(r));
      const nodeLines = about.filter((r) => r.node_id !== undefined);
      // Every line about a node is one of its committed events...
      for (const record of nodeLines) expect(record, JSON.stringify(record)).toHaveProperty("event");
      // ...and every event of the workflow is logged once: their sequences are 1, 2, 3, ... without gaps or repeats.
      const sequences = lines.records
        .filter((r) => r.workflow_id === id && r.event !== undefined)
        .map((r) => Number(r.sequence))
        .sort((x, y) => x - y);
      expect(sequences).toEqual(sequences.map((_, i) => i + 1));
    }
    const failed = lines.records.filter((r) => r.workflow_id === workflowId && r.node_status === "FAIL");
    expect(failed).toMatchObject([{ event: "node.status_changed", node_id: "c", level: "warn" }]);
    expect(lines.records.find((r) => r.workflow_id === workflowId && r.event === "node.retry_scheduled")).toMatchObject(
      { node_id: "b", level: "info" },
    );
    const ended = lines.records.filter((r) => r.workflow_id === workflowId && r.event === "workflow.status_changed");
    expect(ended.at(-1)).toMatchObject({ workflow_status: "FAILED", level: "warn" });
    const others = lines.records.filter(
      (r) => r.workflow_id === workflowId && r.event !== undefined && r.node_status !== "FAIL" && r !== ended.at(-1),
    );
    for (const record of others) expect(record.level).toBe("info");
  });

  it("do not warn about a cancelled node's lost lease", () => {
    const cancelled = lines.records.filter((r) => r.workflow_id === cancelledId);
    expect(cancelled.filter((r) => r.level === "warn" || r.level === "error")).toEqual([]);
    expect(cancelled.filter((r) => r.node_id === "s" && r.event !== undefined).map((r) => r.node_status)).toEqual([
      "QUEUED",
      "RUNNING",
      "CANCELLED",
    ]);
    expect(cancelled.find((r) => String(r.msg).startsWith("result not recorded"))).toMatchObject({
      app: "worker",
      node_id: "s",
      level: "debug",
      msg: "result not recorded: the node was cancelled",
    });
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
