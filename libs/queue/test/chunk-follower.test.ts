import { create } from "@bufbuild/protobuf";
import { NodeStatus, OutputChunkSchema, type WorkflowEvent, WorkflowEventSchema, WorkflowStatus } from "@trellis/proto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ChunkPublisher, createRedis, followWithChunks } from "../src/index.js";

const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `t${Math.random().toString(36).slice(2, 10)}`;
let redis: Redis;
let chunks: ChunkPublisher;
let workflowNumber = 0;

function failFast(url: string): Redis {
  const connection = createRedis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  connection.on("error", () => undefined);
  return connection;
}

beforeAll(async () => {
  redis = failFast(redisUrl);
  await redis.connect();
  chunks = new ChunkPublisher({
    redis,
    queuePrefix: prefix,
    retentionMs: 60_000,
    maxPerAttempt: 1_000,
    maxBytesPerAttempt: 1_000_000,
    logger: { warn: () => {}, info: () => {} },
  });
});

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

function newWorkflowId(): string {
  workflowNumber++;
  return `00000000-0000-4000-8000-${String(workflowNumber).padStart(12, "0")}`;
}

/** A durable event of node `a`; `attempt` goes in its data, as the state machine writes it. */
function nodeEvent(workflowId: string, sequence: number, type: string, status: NodeStatus, attempt?: number) {
  return create(WorkflowEventSchema, {
    workflowId,
    sequence: BigInt(sequence),
    nodeId: "a",
    type,
    nodeStatus: status,
    workflowStatus: WorkflowStatus.RUNNING,
    data: attempt === undefined ? {} : { attempt },
  });
}

function finished(workflowId: string, sequence: number) {
  return create(WorkflowEventSchema, {
    workflowId,
    sequence: BigInt(sequence),
    type: "workflow.status_changed",
    workflowStatus: WorkflowStatus.SUCCEEDED,
  });
}

async function* durable(events: WorkflowEvent[]) {
  yield* events;
}

function write(workflowId: string, attempt: number, texts: string[], end: boolean) {
  const stream = chunks.open({ workflowId, nodeId: "a", attempt });
  for (const text of texts) stream.push(create(OutputChunkSchema, { channel: "tokens", text }));
  if (end) stream.end();
  return stream;
}

const describeEvent = (e: WorkflowEvent) =>
  e.type === "node.output_chunk" ? `chunk ${e.attempt}:${e.chunkIndex}:${e.chunk?.text}` : `${e.type} ${e.sequence}`;

describe("followWithChunks", () => {
  it("sends the chunks written after the attempt's ending event was read, before that event (up to the end marker)", async () => {
    const workflowId = newWorkflowId();
    // Chunks of the attempt are being written; its PASS is already committed.
    const attempt = chunks.open({ workflowId, nodeId: "a", attempt: 1 });
    attempt.push(create(OutputChunkSchema, { channel: "tokens", text: "x" }));
    await chunks.flush();
    const seen: string[] = [];
    for await (const event of followWithChunks({
      redis,
      queuePrefix: prefix,
      workflowId,
      events: durable([
        nodeEvent(workflowId, 1, "node.status_changed", NodeStatus.RUNNING, 1),
        nodeEvent(workflowId, 2, "node.status_changed", NodeStatus.PASS, 1),
        finished(workflowId, 3),
      ]),
      nodes: new Map(),
      signal: new AbortController().signal,
      drainMs: 30_000,
    })) {
      seen.push(describeEvent(event));
      if (seen.length === 2) {
        // The worker publishes the rest only now, after the watcher has read the PASS event.
        attempt.push(create(OutputChunkSchema, { channel: "tokens", text: "y" }));
        attempt.end();
        await chunks.flush();
      }
    }
    expect(seen).toEqual([
      "node.status_changed 1",
      "chunk 1:0:x",
      "chunk 1:1:y",
      "node.status_changed 2",
      "workflow.status_changed 3",
    ]);
  });

  it("stops waiting for an attempt whose end marker never comes (its worker died) after drainMs", async () => {
    const workflowId = newWorkflowId();
    write(workflowId, 1, ["only"], false);
    await chunks.flush();
    const seen: string[] = [];
    for await (const event of followWithChunks({
      redis,
      queuePrefix: prefix,
      workflowId,
      events: durable([
        nodeEvent(workflowId, 1, "node.status_changed", NodeStatus.RUNNING, 1),
        nodeEvent(workflowId, 2, "node.retry_scheduled", NodeStatus.QUEUED, 1),
        finished(workflowId, 3),
      ]),
      nodes: new Map(),
      signal: new AbortController().signal,
      drainMs: 500,
    })) {
      seen.push(describeEvent(event));
    }
    expect(seen).toEqual([
      "node.status_changed 1",
      "chunk 1:0:only",
      "node.retry_scheduled 2",
      "workflow.status_changed 3",
    ]);
  });

  it("follows the attempt running at the start from its first chunk; replayed events of earlier attempts end nothing", async () => {
    const workflowId = newWorkflowId();
    write(workflowId, 1, ["old"], true);
    write(workflowId, 2, ["new", "er"], true);
    await chunks.flush();
    const seen: string[] = [];
    for await (const event of followWithChunks({
      redis,
      queuePrefix: prefix,
      workflowId,
      events: durable([
        nodeEvent(workflowId, 1, "node.status_changed", NodeStatus.RUNNING, 1),
        nodeEvent(workflowId, 2, "node.retry_scheduled", NodeStatus.QUEUED, 1),
        nodeEvent(workflowId, 3, "node.status_changed", NodeStatus.RUNNING, 2),
        nodeEvent(workflowId, 4, "node.status_changed", NodeStatus.PASS, 2),
        finished(workflowId, 5),
      ]),
      // When the watch started, attempt 2 was running: attempt 1 is history.
      nodes: new Map([["a", { attempt: 2, running: true }]]),
      signal: new AbortController().signal,
    })) {
      seen.push(describeEvent(event));
    }
    const chunkLines = seen.filter((line) => line.startsWith("chunk"));
    expect(chunkLines).toEqual(["chunk 2:0:new", "chunk 2:1:er"]);
    expect(seen.indexOf("chunk 2:1:er")).toBeLessThan(seen.indexOf("node.status_changed 4"));
  });

  it("sends every durable event, without chunks, when Redis is away", async () => {
    const workflowId = newWorkflowId();
    const away = failFast("redis://127.0.0.1:1");
    const onError = vi.fn();
    const seen: string[] = [];
    for await (const event of followWithChunks({
      redis: away,
      queuePrefix: prefix,
      workflowId,
      events: durable([
        nodeEvent(workflowId, 1, "node.status_changed", NodeStatus.RUNNING, 1),
        nodeEvent(workflowId, 2, "node.status_changed", NodeStatus.PASS, 1),
        finished(workflowId, 3),
      ]),
      nodes: new Map(),
      signal: new AbortController().signal,
      onError,
    })) {
      seen.push(describeEvent(event));
    }
    away.disconnect();
    expect(seen).toEqual(["node.status_changed 1", "node.status_changed 2", "workflow.status_changed 3"]);
  });
});
