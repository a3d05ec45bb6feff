import { mockCompletion } from "@trellis/example-node-service";
import { PgStateManager } from "@trellis/db";
import { create } from "@bufbuild/protobuf";
import { NodeSchema, NodeStatus } from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStack, startTestStack } from "../../worker/test/stack.js";
import { connect } from "../src/client.js";
import { runCommand } from "../src/commands.js";
import { MemoryOutput } from "../src/output.js";

let testDb: TestDatabase;
let stack: TestStack;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_cli_chunks");
  stack = await startTestStack(testDb);
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await stack?.close();
  await testDb?.drop();
});

describe("trellis watch --chunks", () => {
  it("prints llm.stream's text, written word by word by the example NodeService, between its RUNNING and PASS lines", async () => {
    const prompt = "Explain what a workflow engine does, in one paragraph.";
    // `gate` has a capability no worker serves: the test passes it once the watch is under way, so the streaming
    // node starts after the watcher is following the workflow.
    const { workflow } = await sm.createWorkflow({
      name: "chat-stream",
      nodes: [
        { id: "gate", capability: "manual" },
        { id: "answer", capability: "llm.stream", parentIds: ["gate"], input: { prompt, word_delay_ms: 5 } },
        { id: "store", capability: "echo", parentIds: ["answer"] },
      ].map((n) => create(NodeSchema, n)),
    });
    const output = new MemoryOutput();
    const api = connect(stack.apiAddr, undefined);
    const controller = new AbortController();
    const watching = runCommand(
      { kind: "watch", workflowId: workflow.id, chunks: true },
      { api, output, signal: controller.signal },
    );
    await waitFor(() => output.lines.some((line) => /● workflow\s+RUNNING/.test(line)), {
      description: "the watch to follow the running workflow",
    });
    const gate = await waitFor(() => sm.startNode(workflow.id, "gate"), { description: "gate to start" });
    expect(
      (await sm.recordResult(workflow.id, "gate", gate.lease, { kind: "success", output: undefined, edits: [] }))
        .outcome,
    ).toBe("passed");
    expect(await watching).toBe(0);
    api.close();

    const lines = output.lines;
    const text = lines.filter((line) => line.startsWith("  answer │ ")).map((line) => line.slice("  answer │ ".length));
    expect(text.join(" ")).toBe(mockCompletion(prompt));
    const running = lines.findIndex((line) => /▶ answer\s+RUNNING/.test(line));
    const passed = lines.findIndex((line) => /✔ answer\s+PASS/.test(line));
    expect(running).toBeGreaterThanOrEqual(0);
    expect(lines.indexOf(`  answer │ ${text[0]}`)).toBeGreaterThan(running);
    expect(lines.lastIndexOf(`  answer │ ${text.at(-1)}`)).toBeLessThan(passed);
    expect((await sm.getNode(workflow.id, "answer")).status).toBe(NodeStatus.PASS);
  });
});
