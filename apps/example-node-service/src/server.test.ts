import * as grpc from "@grpc/grpc-js";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  createGrpcClient,
  EditType,
  type ExecuteNodeStreamResponse,
  ExecutionStatus,
  type GrpcClient,
  NodeService,
} from "@trellis/proto";
import { waitFor } from "@trellis/testing";
import type { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mockCompletion } from "./capabilities.js";
import { type RunningExampleNodeService, startExampleNodeService } from "./server.js";

const logger = createLogger({ app: "example-node-service-test", level: "silent" });

let registry: Registry;
let service: RunningExampleNodeService;
let client: GrpcClient<typeof NodeService>;

function deadline(ms = 5000): number {
  return Date.now() + ms;
}

async function executions(outcome: string): Promise<number> {
  const metric = await registry.getSingleMetric("trellis_example_node_executions_total")?.get();
  return metric?.values.find((value) => value.labels.outcome === outcome)?.value ?? 0;
}

beforeEach(async () => {
  registry = createMetricsRegistry({ app: "example-node-service-test", collectDefault: false });
  service = await startExampleNodeService({ host: "127.0.0.1", port: 0, logger, registry, shutdownGraceMs: 200 });
  client = createGrpcClient(NodeService, service.address);
});

afterEach(async () => {
  client.close();
  await service.close();
});

describe("startExampleNodeService", () => {
  it("listens on a free port and answers ExecuteNode over gRPC", async () => {
    expect(service.port).toBeGreaterThan(0);
    expect(service.address).toBe(`127.0.0.1:${service.port}`);

    const response = await client.executeNode(
      { node: { id: "a", capability: "echo", input: { text: "hi" } }, context: { workflowId: "wf", attempt: 1 } },
      { deadline: deadline() },
    );

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(toJson(ValueSchema, response.output!)).toMatchObject({ input: { text: "hi" }, attempt: 1 });
    expect(await executions("SUCCESS")).toBe(1);
  });

  it("sends a planner's edits, update mask included, over the wire", async () => {
    const response = await client.executeNode(
      { node: { id: "p", capability: "plan", input: { tasks: ["a"], join: "j" } }, context: { attempt: 1 } },
      { deadline: deadline() },
    );

    expect(response.edits.map((edit) => edit.type)).toEqual([EditType.INSERT, EditType.UPDATE]);
    expect(response.edits[0]?.node?.id).toBe("p.task-0");
    expect(response.edits[1]?.updateMask?.paths).toEqual(["parent_ids"]);
  });

  it("sends llm.metered's usage and a THROTTLED answer's retry_after over the wire", async () => {
    const input = { prompt: "hello", throttle_first_n: 1, retry_after_ms: 2000, tokens: 1234 };
    const throttled = await client.executeNode(
      { node: { id: "m", capability: "llm.metered", input }, context: { attempt: 1 } },
      { deadline: deadline() },
    );
    const passed = await client.executeNode(
      { node: { id: "m", capability: "llm.metered", input }, context: { attempt: 2 } },
      { deadline: deadline() },
    );

    expect(throttled.status).toBe(ExecutionStatus.THROTTLED);
    expect(throttled.retryAfter?.seconds).toBe(2n);
    expect(passed.status).toBe(ExecutionStatus.SUCCESS);
    expect(passed.usage).toEqual({ tokens: 1234, cost_usd: 0.002468 });
    expect(await executions("THROTTLED")).toBe(1);
  });

  it("accepts requests larger than gRPC's default 4 MiB limit", async () => {
    const padding = "x".repeat(6 * 1024 * 1024);

    const response = await client.executeNode(
      { node: { id: "big", capability: "fail", input: { message: "big", padding } } },
      { deadline: deadline() },
    );

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe("big");
  });

  it("stops a sleep when the caller cancels the call", async () => {
    const controller = new AbortController();
    const pending = client.executeNode(
      { node: { id: "s", capability: "sleep", input: { ms: 600_000 } } },
      { deadline: deadline(), signal: controller.signal },
    );
    setTimeout(() => controller.abort(), 50);

    await expect(pending).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    await waitFor(async () => (await executions("CANCELLED")) === 1, { description: "the sleep to stop" });
  });

  it("answers UNAVAILABLE to calls still running when the shutdown grace period ends", async () => {
    const pending = client.executeNode(
      { node: { id: "s", capability: "sleep", input: { ms: 600_000 } } },
      { deadline: deadline() },
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = performance.now();
    const rejected = expect(pending).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });

    await service.close();

    await rejected;
    expect(performance.now() - started).toBeLessThan(2000);
    expect(await executions("UNAVAILABLE")).toBe(1);
  });

  it("lets a short call finish during shutdown", async () => {
    const pending = client.executeNode(
      { node: { id: "s", capability: "sleep", input: { ms: 100 } } },
      { deadline: deadline() },
    );
    await new Promise((resolve) => setTimeout(resolve, 20));

    await service.close();

    expect((await pending).status).toBe(ExecutionStatus.SUCCESS);
  });
});

describe("ExecuteNodeStream", () => {
  it("streams llm.stream's completion word by word as chunks, then the result; ExecuteNode answers it whole", async () => {
    const request = {
      node: { id: "chat", capability: "llm.stream", input: { prompt: "Say hello", word_delay_ms: 0 } },
      context: { attempt: 1 },
    };
    const messages: ExecuteNodeStreamResponse[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.executeNodeStream(request, { deadline: deadline() });
      stream.on("data", (message: ExecuteNodeStreamResponse) => messages.push(message));
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    const result = messages.at(-1)?.message;
    expect(result?.case).toBe("result");
    const output = result?.case === "result" ? toJson(ValueSchema, result.value.output!) : null;
    const completion = mockCompletion("Say hello");
    expect(output).toMatchObject({ completion, model: "trellis-mock-1" });
    const chunks = messages.slice(0, -1).map((m) => (m.message.case === "chunk" ? m.message.value : undefined));
    expect(chunks.every((c) => c?.channel === "tokens")).toBe(true);
    expect(chunks.map((c) => c?.text).join("")).toBe(completion);
    expect(chunks).toHaveLength(completion.split(" ").length);

    const unary = await client.executeNode(request, { deadline: deadline() });
    expect(toJson(ValueSchema, unary.output!)).toEqual(output);
  });

  it("answers every other capability with its result alone", async () => {
    const messages: ExecuteNodeStreamResponse[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.executeNodeStream(
        { node: { id: "e", capability: "echo", input: { a: 1 } }, context: { attempt: 1 } },
        { deadline: deadline() },
      );
      stream.on("data", (message: ExecuteNodeStreamResponse) => messages.push(message));
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    expect(messages.map((m) => m.message.case)).toEqual(["result"]);
  });
});
