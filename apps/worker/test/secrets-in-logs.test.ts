import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import {
  NodeSchema,
  NodeStatus,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
} from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStack, startTestStack } from "./stack.js";

/** Every line the apps write, as written. */
class Lines extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    for (const line of chunk.toString().split("\n")) if (line.trim() !== "") this.lines.push(line);
    callback();
  }
}

/** Secret-looking values, one per place a value can enter a workflow. */
const SECRETS = {
  workflowInput: "sk-wf-input-7f3a9c1e",
  nodeInput: "sk-node-input-2b8d4e6f",
  insertedInput: "sk-inserted-input-5c1a7e9b",
  signalOutput: "sk-signal-output-9e2f4a6c",
};

let testDb: TestDatabase;
let stack: TestStack;
let client: GrpcClient<typeof WorkflowService>;
const sink = new Lines();
let workflowId: string;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_secret_logs");
  // trace: the most any app would ever write.
  stack = await startTestStack(testDb, { logDestination: sink, logLevel: "trace" });
  client = createGrpcClient(WorkflowService, stack.apiAddr);
  const { workflow } = await client.createWorkflow(
    {
      name: "secrets",
      input: { api_key: SECRETS.workflowInput },
      nodes: [
        // echo answers with its input, its parents' outputs and the workflow input: every secret is in an output too.
        create(NodeSchema, { id: "a", capability: "echo", input: { api_key: SECRETS.nodeInput } }),
        // The planner inserts a wait node and a task whose inputs carry the secret (graph edits).
        create(NodeSchema, {
          id: "plan",
          capability: "plan",
          parentIds: ["a"],
          input: { tasks: [SECRETS.insertedInput], task_capability: "echo", approval: "approve" },
        }),
      ],
    },
    { deadline: Date.now() + 10_000 },
  );
  workflowId = workflow!.id;
  await waitFor(
    async () => {
      const wf = (await client.getWorkflow({ workflowId }, { deadline: Date.now() + 5_000 })).workflow!;
      return wf.nodes.find((n) => n.id === "approve")?.status === NodeStatus.WAITING;
    },
    { timeoutMs: 20_000, description: "the approval node to wait" },
  );
  await client.signalNode(
    { workflowId, nodeId: "approve", output: { kind: { case: "stringValue", value: SECRETS.signalOutput } } },
    { deadline: Date.now() + 5_000 },
  );
  await waitFor(
    async () =>
      (await client.getWorkflow({ workflowId }, { deadline: Date.now() + 5_000 })).workflow!.status ===
      WorkflowStatus.SUCCEEDED,
    { timeoutMs: 20_000, description: "the workflow to succeed" },
  );
});

afterAll(async () => {
  client?.close();
  await stack?.close();
  await testDb?.drop();
});

describe("secrets stay out of the logs", () => {
  it("the workflow carried every secret: in inputs, outputs, edits and a signal", async () => {
    const wf = (await client.getWorkflow({ workflowId }, { deadline: Date.now() + 5_000 })).workflow!;
    const stored = JSON.stringify(
      wf.nodes.map((n) => [n.input, n.output]),
      (_k, v) => (typeof v === "bigint" ? String(v) : v),
    );
    for (const secret of Object.values(SECRETS)) expect(stored).toContain(secret);
  });

  it("no line of the api, scheduler or worker, at trace level, holds a node input, output or signal", () => {
    const apps = sink.lines.filter((l) => /"app":"(api|scheduler|worker)"/.test(l));
    expect(apps.length).toBeGreaterThan(20);
    // The events of the run were logged (one line each), just not their values.
    expect(apps.some((l) => l.includes('"event":"node.created"'))).toBe(true);
    expect(apps.some((l) => l.includes('"event":"node.signaled"'))).toBe(true);
    // What the worker says of an output: its size.
    const passed = apps.filter((l) => l.includes('"msg":"node passed"')).map((l) => JSON.parse(l));
    expect(passed.length).toBeGreaterThan(0);
    for (const line of passed) expect(line.output_bytes).toBeGreaterThan(0);
    for (const secret of Object.values(SECRETS)) {
      expect(apps.filter((l) => l.includes(secret))).toEqual([]);
    }
  });
});
