import * as grpc from "@grpc/grpc-js";
import { type MessageInitShape, create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema, durationFromMs } from "@bufbuild/protobuf/wkt";
import { type RunningApiServer, startApiServer } from "@trellis/api";
import { WorkflowEventHub } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  type ExecuteNodeRequest,
  ExecuteNodeResponseSchema,
  type ExecuteNodeStreamResponse,
  ExecuteNodeStreamResponseSchema,
  ExecutionStatus,
  type GrpcClient,
  type Node,
  NodeSchema,
  NodeService,
  NodeStatus,
  type RetryPolicySchema,
  WorkflowService,
  WorkflowStatus,
  type WorkflowEvent,
  addGrpcService,
  createGrpcClient,
} from "@trellis/proto";
import { WorkflowChunkSource, chunkStreamKey, createRedis } from "@trellis/queue";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestEngine, startTestEngine } from "./engine.js";

/** A promise a test releases by hand. */
interface Gate {
  promise: Promise<void>;
  release(): void;
}

/** Gates by `<node id>/<attempt>`: a node whose input asks for one waits there until the test releases it. */
const gates = new Map<string, Gate>();
function gate(key: string): Gate {
  let found = gates.get(key);
  if (!found) {
    let release = () => {};
    const promise = new Promise<void>((resolve) => {
      release = resolve;
    });
    found = { promise, release };
    gates.set(key, found);
  }
  return found;
}

/**
 * The streaming NodeService of these tests. Input: `count` chunks `a<attempt>-<i>` on channel "tokens"; `gate_before`
 * / `gate_after` (attempts) wait for the test before / after sending them; `fail_attempts`: those attempts answer
 * INFRA_ERROR. The output says how many chunks were sent and how.
 */
function streamingHandlers() {
  const handlers = {
    unaryCalls: 0,
    executeNode(
      _call: grpc.ServerUnaryCall<ExecuteNodeRequest, unknown>,
      callback: grpc.sendUnaryData<ReturnType<typeof create<typeof ExecuteNodeResponseSchema>>>,
    ) {
      handlers.unaryCalls++;
      callback(null, create(ExecuteNodeResponseSchema, { status: ExecutionStatus.SUCCESS }));
    },
    async executeNodeStream(call: grpc.ServerWritableStream<ExecuteNodeRequest, ExecuteNodeStreamResponse>) {
      const input = call.request.node?.input ?? {};
      const nodeId = call.request.node?.id ?? "";
      const attempt = call.request.context?.attempt ?? 0;
      const count = typeof input.count === "number" ? input.count : 0;
      const has = (field: string) => Array.isArray(input[field]) && (input[field] as number[]).includes(attempt);
      if (has("gate_before")) await gate(`${nodeId}/${attempt}`).promise;
      for (let i = 0; i < count; i++) {
        call.write(
          create(ExecuteNodeStreamResponseSchema, {
            message: { case: "chunk", value: { channel: "tokens", text: `a${attempt}-${i}` } },
          }),
        );
      }
      if (has("gate_after")) await gate(`${nodeId}/${attempt}`).promise;
      const result = has("fail_attempts")
        ? create(ExecuteNodeResponseSchema, { status: ExecutionStatus.INFRA_ERROR, errorMessage: "fails on purpose" })
        : create(ExecuteNodeResponseSchema, {
            status: ExecutionStatus.SUCCESS,
            output: fromJson(ValueSchema, { sent: count, via: "stream" }),
          });
      call.write(create(ExecuteNodeStreamResponseSchema, { message: { case: "result", value: result } }));
      call.end();
    },
  };
  return handlers;
}

/** A NodeService with ExecuteNode only: its ExecuteNodeStream answers UNIMPLEMENTED, counted. */
function unaryOnlyHandlers() {
  const handlers = {
    unaryCalls: 0,
    streamCalls: 0,
    executeNode(
      _call: grpc.ServerUnaryCall<ExecuteNodeRequest, unknown>,
      callback: grpc.sendUnaryData<ReturnType<typeof create<typeof ExecuteNodeResponseSchema>>>,
    ) {
      handlers.unaryCalls++;
      callback(
        null,
        create(ExecuteNodeResponseSchema, {
          status: ExecutionStatus.SUCCESS,
          output: fromJson(ValueSchema, { via: "unary" }),
        }),
      );
    },
    executeNodeStream(call: grpc.ServerWritableStream<ExecuteNodeRequest, ExecuteNodeStreamResponse>) {
      handlers.streamCalls++;
      call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "ExecuteNodeStream is not implemented" });
    },
  };
  return handlers;
}

async function listen(server: grpc.Server): Promise<string> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return `127.0.0.1:${port}`;
}

let testDb: TestDatabase;
let engine: TestEngine;
let streaming: ReturnType<typeof streamingHandlers>;
let unaryOnly: ReturnType<typeof unaryOnlyHandlers>;
const servers: grpc.Server[] = [];
let hub: WorkflowEventHub;
let redis: Redis;
let api: RunningApiServer;
let client: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_chunks");
  streaming = streamingHandlers();
  unaryOnly = unaryOnlyHandlers();
  const streamingServer = new grpc.Server();
  addGrpcService(streamingServer, NodeService, streaming);
  const unaryServer = new grpc.Server();
  addGrpcService(unaryServer, NodeService, unaryOnly);
  servers.push(streamingServer, unaryServer);
  const streamingAddr = await listen(streamingServer);
  const unaryAddr = await listen(unaryServer);

  engine = await startTestEngine(testDb, streamingAddr);
  await engine.startWorker(["stream"], { chunks: {} });
  await engine.startWorker(["stream.bounded"], { chunks: { maxPerAttempt: 100 } });
  // Nothing listens on port 1: this worker's Redis for chunks is away from the start.
  await engine.startWorker(["stream.redis-away"], { chunks: { redisUrl: "redis://127.0.0.1:1" } });
  await engine.startWorker(["plain"], { nodeServiceAddr: unaryAddr, concurrency: 1 });

  const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  redis = createRedis(redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  await redis.connect();
  hub = new WorkflowEventHub({ stateManager: engine.stateManager, databaseUrl: testDb.url });
  await hub.start();
  api = await startApiServer({
    stateManager: engine.stateManager,
    logger: createLogger({ app: "api", level: "silent" }),
    registry: createMetricsRegistry({ app: "api", collectDefault: false }),
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: undefined,
      tls: undefined,
      maxReceiveBytes: 16 * 1024 * 1024,
    },
    events: hub,
    chunks: new WorkflowChunkSource({
      events: hub,
      getWorkflow: (workflowId) => engine.stateManager.getWorkflow(workflowId),
      redis,
      queuePrefix: engine.queuePrefix,
    }),
  });
  client = createGrpcClient(WorkflowService, `127.0.0.1:${api.port}`);
});

afterAll(async () => {
  for (const g of gates.values()) g.release();
  client?.close();
  await api?.close(1_000);
  await hub?.close();
  await engine?.close();
  redis?.disconnect();
  for (const server of servers) server.forceShutdown();
  await testDb?.drop();
});

function node(
  id: string,
  capability: string,
  input: Record<string, unknown>,
  extra: { parentIds?: string[]; retryPolicy?: MessageInitShape<typeof RetryPolicySchema> } = {},
): Node {
  return create(NodeSchema, { id, capability, input: input as Node["input"], ...extra });
}

/** An open WatchWorkflow: its events so far, and its end. */
interface Watch {
  events: WorkflowEvent[];
  done: Promise<WorkflowEvent[]>;
}

function watch(workflowId: string, opts: { afterSequence?: bigint; includeChunks?: boolean } = {}): Watch {
  const events: WorkflowEvent[] = [];
  const done = new Promise<WorkflowEvent[]>((resolve, reject) => {
    const stream = client.watchWorkflow(
      { workflowId, afterSequence: opts.afterSequence ?? 0n, includeChunks: opts.includeChunks ?? true },
      { deadline: Date.now() + 60_000 },
    );
    stream.on("data", (event: WorkflowEvent) => events.push(event));
    stream.on("error", reject);
    stream.on("end", () => resolve(events));
  });
  return { events, done };
}

const isChunk = (event: WorkflowEvent) => event.type === "node.output_chunk";
const chunksOf = (events: WorkflowEvent[], nodeId: string, attempt?: number) =>
  events.filter((e) => isChunk(e) && e.nodeId === nodeId && (attempt === undefined || e.attempt === attempt));
const texts = (events: WorkflowEvent[]) => events.map((e) => e.chunk?.text);
const expected = (attempt: number, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `a${attempt}-${from + i}`);
const indexOf = (events: WorkflowEvent[], predicate: (e: WorkflowEvent) => boolean) => events.findIndex(predicate);
const statusEvent = (nodeId: string, status: NodeStatus, attempt?: number) => (e: WorkflowEvent) =>
  e.type === "node.status_changed" &&
  e.nodeId === nodeId &&
  e.nodeStatus === status &&
  (attempt === undefined || e.data?.attempt === attempt);

async function outputOf(workflowId: string, nodeId: string) {
  const wf = await engine.stateManager.getWorkflow(workflowId);
  const found = wf.nodes.find((n) => n.id === nodeId)!;
  return { status: found.status, output: found.output ? toJson(ValueSchema, found.output) : null };
}

describe("output chunks (ExecuteNodeStream -> Redis -> WatchWorkflow include_chunks)", () => {
  it("reaches a watcher in order, between the attempt's RUNNING and its PASS; a watcher without include_chunks gets none", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "in-order",
      nodes: [node("talk", "stream", { count: 200, gate_before: [1] })],
    });
    const withChunks = watch(workflow.id);
    const without = watch(workflow.id, { includeChunks: false });
    // The node waits before its first chunk until the watchers are following it live.
    await waitFor(() => withChunks.events.some(statusEvent("talk", NodeStatus.RUNNING)), { description: "RUNNING" });
    gate("talk/1").release();
    const events = await withChunks.done;
    const chunks = chunksOf(events, "talk");
    expect(texts(chunks)).toEqual(expected(1, 0, 200));
    expect(chunks.map((c) => Number(c.chunkIndex))).toEqual(expected(1, 0, 200).map((_, i) => i));
    expect(chunks.every((c) => c.sequence === 0n && c.attempt === 1 && c.chunk?.channel === "tokens")).toBe(true);
    expect(indexOf(events, statusEvent("talk", NodeStatus.RUNNING, 1))).toBeLessThan(events.indexOf(chunks[0]!));
    expect(events.indexOf(chunks.at(-1)!)).toBeLessThan(indexOf(events, statusEvent("talk", NodeStatus.PASS, 1)));
    // The durable events are the same, gap-free, with or without chunks.
    const durable = events.filter((e) => !isChunk(e));
    expect(durable.map((e) => e.sequence)).toEqual(durable.map((_, i) => BigInt(i + 1)));
    expect((await without.done).map((e) => e.sequence)).toEqual(durable.map((e) => e.sequence));
    expect(await outputOf(workflow.id, "talk")).toEqual({
      status: NodeStatus.PASS,
      output: { sent: 200, via: "stream" },
    });
  });

  it("gives a watcher that connects late (after the last durable event) the running attempt's chunks from its first", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "late",
      nodes: [node("late", "stream", { count: 25, gate_after: [1] })],
    });
    const key = chunkStreamKey(engine.queuePrefix, { workflowId: workflow.id, nodeId: "late", attempt: 1 });
    await waitFor(async () => (await redis.xlen(key)) === 25, { description: "25 chunks in Redis" });
    const events = await engine.stateManager.listEvents(workflow.id, 0);
    const last = events.at(-1)!.sequence;
    // As a reconnecting client does: after the last event it saw, which is the node's RUNNING.
    const late = watch(workflow.id, { afterSequence: last });
    await waitFor(() => chunksOf(late.events, "late").length === 25, { description: "the 25 earlier chunks" });
    gate("late/1").release();
    const seen = await late.done;
    expect(texts(chunksOf(seen, "late"))).toEqual(expected(1, 0, 25));
    expect(seen.filter((e) => !isChunk(e)).every((e) => e.sequence > last)).toBe(true);
    expect(seen.some(statusEvent("late", NodeStatus.PASS, 1))).toBe(true);
    // Once the attempt has ended, a new watcher replays the durable events only: chunks are for running nodes.
    const after = await watch(workflow.id).done;
    expect(chunksOf(after, "late")).toEqual([]);
  });

  it("tells a retried attempt's chunks from the first attempt's", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "retried",
      nodes: [
        node(
          "retry",
          "stream",
          { count: 3, fail_attempts: [1], gate_after: [1] },
          { retryPolicy: { maxAttempts: 2, initialBackoff: durationFromMs(20) } },
        ),
      ],
    });
    const w = watch(workflow.id);
    await waitFor(() => chunksOf(w.events, "retry", 1).length === 3, { description: "attempt 1's chunks" });
    gate("retry/1").release();
    const events = await w.done;
    expect(events.at(-1)?.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    const first = chunksOf(events, "retry", 1);
    const second = chunksOf(events, "retry", 2);
    expect(texts(first)).toEqual(expected(1, 0, 3));
    expect(texts(second)).toEqual(expected(2, 0, 3));
    expect(second.map((c) => Number(c.chunkIndex))).toEqual([0, 1, 2]);
    const retried = indexOf(events, (e) => e.type === "node.retry_scheduled" && e.nodeId === "retry");
    expect(events.indexOf(first.at(-1)!)).toBeLessThan(retried);
    expect(indexOf(events, statusEvent("retry", NodeStatus.RUNNING, 2))).toBeLessThan(events.indexOf(second[0]!));
    expect(events.indexOf(second.at(-1)!)).toBeLessThan(indexOf(events, statusEvent("retry", NodeStatus.PASS, 2)));
  });

  it("a flood of 10,000 chunks from one node: every chunk in order, the result and every durable event recorded", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "flood",
      nodes: [node("flood", "stream", { count: 10_000, gate_before: [1] }), node("next", "stream", {})],
    });
    const w = watch(workflow.id);
    await waitFor(() => w.events.some(statusEvent("flood", NodeStatus.RUNNING)), { description: "RUNNING" });
    gate("flood/1").release();
    const events = await w.done;
    const chunks = chunksOf(events, "flood");
    expect(chunks.length).toBe(10_000);
    expect(chunks.every((c, i) => c.chunkIndex === BigInt(i) && c.chunk?.text === `a1-${i}`)).toBe(true);
    expect(events.at(-1)?.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    const durable = events.filter((e) => !isChunk(e));
    expect(durable).toEqual(await engine.stateManager.listEvents(workflow.id, 0));
    expect(await outputOf(workflow.id, "flood")).toEqual({
      status: NodeStatus.PASS,
      output: { sent: 10_000, via: "stream" },
    });
    expect(await outputOf(workflow.id, "next")).toMatchObject({ status: NodeStatus.PASS });
    // 10,000 chunks and the end marker.
    const key = chunkStreamKey(engine.queuePrefix, { workflowId: workflow.id, nodeId: "flood", attempt: 1 });
    expect(await redis.xlen(key)).toBe(10_001);
    expect(await redis.pttl(key)).toBeGreaterThan(0);
  });

  it("keeps CHUNK_MAX_PER_ATTEMPT chunks of an attempt and drops the rest; the result is recorded", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "bounded",
      nodes: [node("many", "stream.bounded", { count: 1_000, gate_before: [1] })],
    });
    const w = watch(workflow.id);
    await waitFor(() => w.events.some(statusEvent("many", NodeStatus.RUNNING)), { description: "RUNNING" });
    gate("many/1").release();
    const events = await w.done;
    expect(texts(chunksOf(events, "many"))).toEqual(expected(1, 0, 100));
    expect(await outputOf(workflow.id, "many")).toEqual({
      status: NodeStatus.PASS,
      output: { sent: 1_000, via: "stream" },
    });
  });

  it("drops the chunks while Redis is away and records the node's result as always", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "redis-away",
      nodes: [node("away", "stream.redis-away", { count: 50 })],
    });
    await waitFor(
      async () => (await engine.stateManager.getWorkflow(workflow.id)).status === WorkflowStatus.SUCCEEDED,
      {
        description: "the workflow to succeed",
      },
    );
    expect(await outputOf(workflow.id, "away")).toEqual({
      status: NodeStatus.PASS,
      output: { sent: 50, via: "stream" },
    });
    const key = chunkStreamKey(engine.queuePrefix, { workflowId: workflow.id, nodeId: "away", attempt: 1 });
    expect(await redis.exists(key)).toBe(0);
  });

  it("falls back to ExecuteNode when ExecuteNodeStream is UNIMPLEMENTED, and asks only once", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "unary",
      nodes: [
        node("a", "plain", {}),
        node("b", "plain", {}, { parentIds: ["a"] }),
        node("c", "plain", {}, { parentIds: ["b"] }),
      ],
    });
    const events = await watch(workflow.id).done;
    expect(events.at(-1)?.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    expect(events.filter(isChunk)).toEqual([]);
    for (const id of ["a", "b", "c"]) {
      expect(await outputOf(workflow.id, id)).toEqual({ status: NodeStatus.PASS, output: { via: "unary" } });
    }
    expect(unaryOnly.streamCalls).toBe(1);
    expect(unaryOnly.unaryCalls).toBe(3);
  });
});
