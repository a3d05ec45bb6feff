import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ErrorKind, NodeSchema, NodeStatus, WorkflowStatus } from "@trellis/proto";
import { chunkStreamKey, createRedis, decodeChunkEntry } from "@trellis/queue";
import { createTestDatabase, freePort, REPO_ROOT, type TestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestEngine, type TestEngine } from "./engine.js";

/** The block of docs/node-service.md after its `node-service-example` marker: what a reader copies into service.ts. */
function docExample(): string {
  const doc = readFileSync(join(REPO_ROOT, "docs/node-service.md"), "utf8");
  const marker = doc.indexOf("<!-- node-service-example");
  const match = /```ts\n([\s\S]*?)```/.exec(doc.slice(marker));
  if (marker < 0 || !match?.[1])
    throw new Error("docs/node-service.md: the node-service-example code block is missing");
  return match[1];
}

let testDb: TestDatabase;
let engine: TestEngine;
let service: ChildProcess;
let serviceOutput = "";
const scratch = join(REPO_ROOT, ".scratch", `node-service-doc-${process.pid}`);

beforeAll(async () => {
  testDb = await createTestDatabase();
  // Inside the repository (.scratch is ignored by git) so `@trellis/node-sdk` resolves as an installed package would.
  mkdirSync(scratch, { recursive: true });
  const file = join(scratch, "service.ts");
  writeFileSync(file, docExample());
  const port = await freePort();
  service = spawn(process.execPath, ["--import", "tsx", file], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  service.stdout?.on("data", (data: Buffer) => (serviceOutput += data.toString()));
  service.stderr?.on("data", (data: Buffer) => (serviceOutput += data.toString()));
  await waitFor(() => serviceOutput.includes("NodeService listening on"), {
    timeoutMs: 20_000,
    description: "the doc's service to print where it listens",
  });
  engine = await startTestEngine(testDb, `127.0.0.1:${port}`);
  await engine.startWorker(["text.summarize"], { chunks: {} });
});

afterAll(async () => {
  await engine?.close();
  if (service && service.exitCode === null) {
    const exited = new Promise((resolve) => service.once("exit", resolve));
    service.kill("SIGTERM");
    await exited;
  }
  rmSync(scratch, { recursive: true, force: true });
  await testDb?.drop();
});

describe("docs/node-service.md's TypeScript example, run as written against a real worker", () => {
  it("prints where it listens", () => {
    expect(serviceOutput).toMatch(/NodeService listening on 0\.0\.0\.0:\d+/);
  });

  it("passes a text.summarize node with its output, usage and streamed words", async () => {
    const text = "Trellis runs DAGs of agent steps on PostgreSQL and Redis with retries";
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "summary",
      nodes: [create(NodeSchema, { id: "s", capability: "text.summarize", input: { text } })],
    });

    await waitFor(async () => (await engine.stateManager.getWorkflowStatus(workflow.id)) === WorkflowStatus.SUCCEEDED, {
      description: "the workflow to succeed",
    });

    const node = await engine.stateManager.getNode(workflow.id, "s");
    const summary = "Trellis runs DAGs of agent steps on PostgreSQL";
    expect(toJson(ValueSchema, node.output!)).toEqual({ summary, words: 12, attempt: 1 });
    const attempts = await engine.stateManager.listNodeAttempts(workflow.id, "s");
    expect(attempts.map((a) => [a.status, a.usage])).toEqual([["PASS", { tokens: 12 }]]);
    const redis = createRedis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379");
    try {
      const key = chunkStreamKey(engine.queuePrefix, { workflowId: workflow.id, nodeId: "s", attempt: 1 });
      const entries = (await redis.xrangeBuffer(key, "-", "+")).map(([id, fields]) =>
        decodeChunkEntry(id.toString(), fields),
      );
      const words = entries.flatMap((entry) => (entry.kind === "chunk" ? [entry.chunk] : []));
      expect(words.every((chunk) => chunk.channel === "tokens")).toBe(true);
      expect(words.map((chunk) => chunk.text).join("")).toBe(`${summary} `);
    } finally {
      redis.disconnect();
    }
  });

  it("fails a node without input.text with the TaskError's message, at once", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "no-text",
      nodes: [create(NodeSchema, { id: "s", capability: "text.summarize", input: { words: 3 } })],
    });

    await waitFor(async () => (await engine.stateManager.getWorkflowStatus(workflow.id)) === WorkflowStatus.FAILED, {
      description: "the workflow to fail",
    });

    const node = await engine.stateManager.getNode(workflow.id, "s");
    expect(node.status).toBe(NodeStatus.FAIL);
    expect(node.error).toMatchObject({ kind: ErrorKind.TASK_ERROR, message: "input.text is required (a string)" });
    expect(node.attempt).toBe(1);
  });
});
