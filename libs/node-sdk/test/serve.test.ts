import * as grpc from "@grpc/grpc-js";
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { durationMs, timestampFromMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  createGrpcClient,
  EditType,
  type ExecuteNodeStreamResponse,
  ExecutionStatus,
  type GrpcClient,
  NodeService,
} from "@trellis/proto";
import { waitFor } from "@trellis/testing";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ExecuteNodeRequestSchema } from "@trellis/proto";
import { afterEach, describe, expect, it } from "vitest";
import {
  type CallEnd,
  type Handlers,
  InfraError,
  type NodeContext,
  type NodeServiceHandle,
  type ServeOptions,
  serve,
  TaskError,
  Throttled,
} from "../src/index.js";
import { checkHealth, watchHealth } from "./health-client.js";

type RequestInit = MessageInitShape<typeof ExecuteNodeRequestSchema>;

let service: NodeServiceHandle | undefined;
let client: GrpcClient<typeof NodeService> | undefined;

afterEach(async () => {
  client?.close();
  await service?.close();
  service = undefined;
  client = undefined;
});

async function start(handlers: Handlers, options: ServeOptions = {}): Promise<GrpcClient<typeof NodeService>> {
  service = await serve(handlers, { host: "127.0.0.1", port: 0, shutdownGraceMs: 300, ...options });
  client = createGrpcClient(NodeService, service.address);
  return client;
}

function request(
  capability: string,
  parts: Partial<RequestInit> & { input?: Record<string, JsonValue> } = {},
): RequestInit {
  return {
    node: {
      id: "n1",
      workflowId: "wf-1",
      capability,
      input: parts.input ?? {},
      attempt: 2,
      labels: { team: "search" },
    },
    context: {
      workflowId: "wf-1",
      workflowName: "research",
      workflowInput: { topic: "graphs" },
      parentOutputs: { a: fromJson(ValueSchema, { x: 1 }), b: fromJson(ValueSchema, "plain") },
      attempt: 2,
      idempotencyKey: "wf-1/n1",
      deadline: timestampFromMs(Date.now() + 60_000),
    },
    ...(parts.context ? { context: parts.context } : {}),
  };
}

function deadline(ms = 5000): number {
  return Date.now() + ms;
}

/** Every message of one ExecuteNodeStream call, until it ends. */
function streamAll(c: GrpcClient<typeof NodeService>, req: RequestInit): Promise<ExecuteNodeStreamResponse[]> {
  return new Promise((resolve, reject) => {
    const messages: ExecuteNodeStreamResponse[] = [];
    const stream = c.executeNodeStream(req, { deadline: deadline() });
    stream.on("data", (message: ExecuteNodeStreamResponse) => messages.push(message));
    stream.on("error", reject);
    stream.on("end", () => resolve(messages));
  });
}

describe("serve: ExecuteNode over gRPC", () => {
  it("hands the handler plain JSON input, parents' outputs, workflow input, attempt, key, deadline and node; returns its JSON", async () => {
    let seen: NodeContext | undefined;
    const c = await start({
      "llm.chat": async (input, ctx) => {
        seen = ctx;
        return { answer: `about ${String(input.q)}`, parents: ctx.parents };
      },
    });

    const response = await c.executeNode(request("llm.chat", { input: { q: "trees" } }), { deadline: deadline() });

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(toJson(ValueSchema, response.output!)).toEqual({
      answer: "about trees",
      parents: { a: { x: 1 }, b: "plain" },
    });
    expect(seen?.workflowInput).toEqual({ topic: "graphs" });
    expect(seen?.attempt).toBe(2);
    expect(seen?.idempotencyKey).toBe("wf-1/n1");
    expect(seen?.deadline?.getTime()).toBeGreaterThan(Date.now());
    expect(seen?.node).toEqual({ id: "n1", name: "n1", capability: "llm.chat", labels: { team: "search" } });
    expect(seen?.workflow).toEqual({ id: "wf-1", name: "research" });
  });

  it("answers a handler returning nothing with a null output", async () => {
    const c = await start({ noop: () => undefined });

    const response = await c.executeNode(request("noop"), { deadline: deadline() });

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(toJson(ValueSchema, response.output!)).toBeNull();
  });

  it.each([
    ["TaskError", () => new TaskError("bad input"), ExecutionStatus.TASK_ERROR, "bad input"],
    ["InfraError", () => new InfraError("provider down"), ExecutionStatus.INFRA_ERROR, "provider down"],
    ["an unknown Error", () => new RangeError("oops"), ExecutionStatus.TASK_ERROR, "oops"],
    ["a thrown string", () => "just a string", ExecutionStatus.TASK_ERROR, "just a string"],
  ])("maps %s to its status and message, with no output and no edits", async (_name, make, status, message) => {
    const c = await start({
      boom: (_input, ctx) => {
        ctx.edits.delete("x");
        throw make();
      },
    });

    const response = await c.executeNode(request("boom"), { deadline: deadline() });

    expect(response.status).toBe(status);
    expect(response.errorMessage).toBe(message);
    expect(response.output).toBeUndefined();
    expect(response.edits).toEqual([]);
  });

  it("maps Throttled to THROTTLED with retry_after, or none when not given", async () => {
    const c = await start({
      slow: () => {
        throw new Throttled(1500, "429 from the provider");
      },
      bare: () => {
        throw new Throttled();
      },
    });

    const slow = await c.executeNode(request("slow"), { deadline: deadline() });
    const bare = await c.executeNode(request("bare"), { deadline: deadline() });

    expect(slow.status).toBe(ExecutionStatus.THROTTLED);
    expect(slow.errorMessage).toBe("429 from the provider");
    expect(durationMs(slow.retryAfter!)).toBe(1500);
    expect(bare.status).toBe(ExecutionStatus.THROTTLED);
    expect(bare.retryAfter).toBeUndefined();
  });

  it("answers TASK_ERROR naming an unknown capability", async () => {
    const c = await start({ echo: (input) => input });

    const response = await c.executeNode(request("translate"), { deadline: deadline() });

    expect(response.status).toBe(ExecutionStatus.TASK_ERROR);
    expect(response.errorMessage).toBe('unknown capability "translate"');
  });

  it("sums ctx.usage calls into the response's usage, on success and on failure", async () => {
    const c = await start({
      ok: (_input, ctx) => {
        ctx.usage({ tokens: 12, cost_usd: 0.001 });
        ctx.usage({ tokens: 30 });
        return "done";
      },
      failing: (_input, ctx) => {
        ctx.usage({ tokens: 5 });
        throw new InfraError("timeout after spending");
      },
    });

    const ok = await c.executeNode(request("ok"), { deadline: deadline() });
    const failing = await c.executeNode(request("failing"), { deadline: deadline() });

    expect(ok.usage).toEqual({ tokens: 42, cost_usd: 0.001 });
    expect(failing.status).toBe(ExecutionStatus.INFRA_ERROR);
    expect(failing.usage).toEqual({ tokens: 5 });
  });

  it("sends the edits builder's inserts, updates (with their mask) and deletes with the success, in order", async () => {
    const c = await start({
      plan: (_input, ctx) => {
        ctx.edits
          .insert({
            id: "n1.search",
            capability: "web.search",
            parents: ["n1"],
            input: { q: "graphs" },
            retryPolicy: { maxAttempts: 5, initialBackoffMs: 500 },
            timeoutMs: 30_000,
            labels: { kind: "tool" },
          })
          .insert({ id: "approve", parents: ["n1.search"], wait: { timeoutMs: 3_600_000, failOnTimeout: true } })
          .update("report", { parents: ["n1", "approve"], input: { style: "short" } })
          .delete("obsolete");
        return { planned: 2 };
      },
    });

    const response = await c.executeNode(request("plan"), { deadline: deadline() });

    expect(response.status).toBe(ExecutionStatus.SUCCESS);
    expect(response.edits.map((edit) => edit.type)).toEqual([
      EditType.INSERT,
      EditType.INSERT,
      EditType.UPDATE,
      EditType.DELETE,
    ]);
    const [search, approve, report, obsolete] = response.edits;
    expect(search?.node).toMatchObject({
      id: "n1.search",
      capability: "web.search",
      parentIds: ["n1"],
      input: { q: "graphs" },
      labels: { kind: "tool" },
    });
    expect(search?.node?.retryPolicy?.maxAttempts).toBe(5);
    expect(durationMs(search!.node!.retryPolicy!.initialBackoff!)).toBe(500);
    expect(durationMs(search!.node!.timeout!)).toBe(30_000);
    expect(approve?.node?.wait?.failOnTimeout).toBe(true);
    expect(durationMs(approve!.node!.wait!.timeout!)).toBe(3_600_000);
    expect(report?.node).toMatchObject({ id: "report", parentIds: ["n1", "approve"], input: { style: "short" } });
    expect(report?.updateMask?.paths).toEqual(["parent_ids", "input"]);
    expect(obsolete?.nodeId).toBe("obsolete");
  });

  it("accepts requests up to maxReceiveMessageBytes, larger than gRPC's default 4 MiB", async () => {
    const c = await start({ size: (input) => String(input.padding).length });

    const response = await c.executeNode(request("size", { input: { padding: "x".repeat(6 * 1024 * 1024) } }), {
      deadline: deadline(),
    });

    expect(toJson(ValueSchema, response.output!)).toBe(6 * 1024 * 1024);
  });
});

describe("serve: ExecuteNodeStream", () => {
  it("sends ctx.emit chunks in order, then the result; ExecuteNode ignores them and answers the same result", async () => {
    const c = await start({
      "llm.stream": async (_input, ctx) => {
        for (const word of ["Hello", " streaming", " world"]) ctx.emit(word, { channel: "tokens" });
        ctx.emit("done", { channel: "log" });
        ctx.emit("plain");
        ctx.usage({ tokens: 3 });
        return { text: "Hello streaming world" };
      },
    });

    const messages = await streamAll(c, request("llm.stream"));
    const unary = await c.executeNode(request("llm.stream"), { deadline: deadline() });

    const chunks = messages.slice(0, -1).map((m) => (m.message.case === "chunk" ? m.message.value : undefined));
    expect(chunks.map((chunk) => [chunk?.channel, chunk?.text])).toEqual([
      ["tokens", "Hello"],
      ["tokens", " streaming"],
      ["tokens", " world"],
      ["log", "done"],
      ["output", "plain"],
    ]);
    const last = messages.at(-1)?.message;
    expect(last?.case).toBe("result");
    const result = last?.case === "result" ? last.value : undefined;
    expect(result?.status).toBe(ExecutionStatus.SUCCESS);
    expect(result?.usage).toEqual({ tokens: 3 });
    expect(toJson(ValueSchema, result!.output!)).toEqual({ text: "Hello streaming world" });
    expect(unary.status).toBe(ExecutionStatus.SUCCESS);
    expect(toJson(ValueSchema, unary.output!)).toEqual({ text: "Hello streaming world" });
  });

  it("ends the stream with an error result as its only message", async () => {
    const c = await start({ fails: () => Promise.reject(new TaskError("no")) });

    const messages = await streamAll(c, request("fails"));

    expect(messages).toHaveLength(1);
    const only = messages[0]?.message;
    expect(only?.case === "result" ? [only.value.status, only.value.errorMessage] : []).toEqual([
      ExecutionStatus.TASK_ERROR,
      "no",
    ]);
  });
});

/** A handler that waits until its signal aborts, recording why. */
function waitForAbort(reasons: unknown[]): Handlers[string] {
  return (_input, ctx) =>
    new Promise((_resolve, reject) => {
      ctx.signal.addEventListener("abort", () => {
        reasons.push(ctx.signal.reason);
        reject(ctx.signal.reason);
      });
    });
}

describe("serve: cancellation", () => {
  it("aborts ctx.signal when the caller cancels the call, and reports the call CANCELLED", async () => {
    const reasons: unknown[] = [];
    const ends: CallEnd[] = [];
    const c = await start({ hang: waitForAbort(reasons) }, { onCallEnd: (end) => ends.push(end) });
    const controller = new AbortController();
    const pending = c.executeNode(request("hang"), { deadline: deadline(), signal: controller.signal });
    setTimeout(() => controller.abort(), 50);

    await expect(pending).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    await waitFor(() => ends.length === 1, { description: "the handler to stop" });
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatchObject({ name: "AbortError" });
    expect(ends[0]).toMatchObject({ capability: "hang", outcome: "CANCELLED" });
  });

  it("aborts ctx.signal when the call's deadline passes", async () => {
    const reasons: unknown[] = [];
    const c = await start({ hang: waitForAbort(reasons) });
    const started = performance.now();

    await expect(c.executeNode(request("hang"), { deadline: Date.now() + 200 })).rejects.toMatchObject({
      code: grpc.status.DEADLINE_EXCEEDED,
    });
    await waitFor(() => reasons.length === 1, { description: "the handler's signal to abort" });
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("aborts ctx.signal when the request's own deadline passes", async () => {
    const reasons: unknown[] = [];
    const c = await start({ hang: waitForAbort(reasons) });
    const req = request("hang");
    req.context = { ...req.context, deadline: timestampFromMs(Date.now() + 150) };

    await expect(c.executeNode(req, { deadline: deadline() })).rejects.toMatchObject({
      code: grpc.status.DEADLINE_EXCEEDED,
    });
    expect(reasons[0]).toMatchObject({ name: "TimeoutError" });
  });
});

describe("serve: health and graceful close", () => {
  it("reports SERVING for the server and the NodeService, then NOT_SERVING as soon as close() starts", async () => {
    let release: () => void = () => {};
    const c = await start({ slow: () => new Promise((resolve) => (release = () => resolve("late"))) });
    const address = service!.address;
    expect(await checkHealth(address)).toBe("SERVING");
    expect(await checkHealth(address, "workflow.v1.NodeService")).toBe("SERVING");
    const statuses: string[] = [];
    const watch = watchHealth(address, statuses, "workflow.v1.NodeService");
    await waitFor(() => statuses.length === 1, { description: "the watch's first status" });
    const pending = c.executeNode(request("slow"), { deadline: deadline() });
    await new Promise((resolve) => setTimeout(resolve, 50));

    const closed = service!.close();

    await waitFor(() => statuses.length === 2, { description: "NOT_SERVING while the call drains" });
    expect(statuses).toEqual(["SERVING", "NOT_SERVING"]);
    release();
    expect((await pending).status).toBe(ExecutionStatus.SUCCESS);
    watch.close();
    await closed;
  });

  it("lets a call in flight finish during close and refuses new calls", async () => {
    const c = await start({ sleep: () => new Promise((resolve) => setTimeout(() => resolve("slept"), 150)) });
    const pending = c.executeNode(request("sleep"), { deadline: deadline() });
    await new Promise((resolve) => setTimeout(resolve, 20));

    const closed = service!.close();
    const late = createGrpcClient(NodeService, service!.address);
    const refused = expect(late.executeNode(request("sleep"), { deadline: deadline(1000) })).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });

    expect((await pending).status).toBe(ExecutionStatus.SUCCESS);
    await refused;
    await closed;
    late.close();
  });

  it("aborts calls still running when the grace period ends: their signal fires and they answer UNAVAILABLE", async () => {
    const reasons: unknown[] = [];
    const c = await start({ hang: waitForAbort(reasons) }, { shutdownGraceMs: 200 });
    const pending = c.executeNode(request("hang"), { deadline: deadline() });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const rejected = expect(pending).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    const started = performance.now();

    await service!.close();

    await rejected;
    expect(performance.now() - started).toBeLessThan(2000);
    expect(reasons).toHaveLength(1);
  });
});
