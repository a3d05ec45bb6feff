import { create } from "@bufbuild/protobuf";
import { OutputChunkSchema } from "@trellis/proto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  ChunkPublisher,
  type ChunkPublisherOptions,
  chunkStreamKey,
  createRedis,
  decodeChunkEntry,
} from "../src/index.js";

const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `t${Math.random().toString(36).slice(2, 10)}`;
let redis: Redis;

function failFast(url: string): Redis {
  const connection = createRedis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  connection.on("error", () => undefined);
  return connection;
}

function publisher(options: Partial<ChunkPublisherOptions> = {}) {
  const logger = { warn: vi.fn(), info: vi.fn() };
  const chunks = new ChunkPublisher({
    redis,
    queuePrefix: prefix,
    retentionMs: 60_000,
    maxPerAttempt: 100_000,
    maxBytesPerAttempt: 16 * 1024 * 1024,
    logger,
    ...options,
  });
  return { chunks, logger };
}

const text = (t: string) => create(OutputChunkSchema, { channel: "tokens", text: t });
const ref = (nodeId: string) => ({ workflowId: "00000000-0000-4000-8000-000000000001", nodeId, attempt: 1 });

async function entries(nodeId: string) {
  const read = await redis.xrangeBuffer(chunkStreamKey(prefix, ref(nodeId)), "-", "+");
  return read.map(([id, fields]) => decodeChunkEntry(id.toString(), fields));
}

beforeAll(async () => {
  redis = failFast(redisUrl);
  await redis.connect();
});

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

describe("ChunkPublisher", () => {
  it("writes an attempt's chunks in order with their index, then the end marker, with an expiry", async () => {
    const { chunks } = publisher();
    const attempt = chunks.open(ref("order"));
    for (const t of ["a", "b", "c"]) attempt.push(text(t));
    attempt.push(create(OutputChunkSchema, { channel: "bytes", data: new Uint8Array([0, 255, 1]) }));
    attempt.end();
    await chunks.flush();
    const read = await entries("order");
    expect(read.map((e) => (e.kind === "chunk" ? [e.index, e.chunk.channel, e.chunk.text] : e.kind))).toEqual([
      [0, "tokens", "a"],
      [1, "tokens", "b"],
      [2, "tokens", "c"],
      [3, "bytes", ""],
      "end",
    ]);
    const bytes = read[3];
    expect(bytes?.kind === "chunk" ? [...bytes.chunk.data] : []).toEqual([0, 255, 1]);
    expect(read[4]).toEqual({ kind: "end", sent: 4, dropped: 0 });
    const ttl = await redis.pttl(chunkStreamKey(prefix, ref("order")));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it("batches: 10,000 chunks pushed at once take a handful of pipelines, not 10,000 round trips", async () => {
    const { chunks } = publisher();
    const pipelines = vi.spyOn(redis, "pipeline");
    const attempt = chunks.open(ref("batch"));
    for (let i = 0; i < 10_000; i++) attempt.push(text(`t${i}`));
    attempt.end();
    await chunks.flush();
    expect(pipelines.mock.calls.length).toBeLessThanOrEqual(6);
    pipelines.mockRestore();
    expect(await redis.xlen(chunkStreamKey(prefix, ref("batch")))).toBe(10_001);
  });

  it("keeps at most maxPerAttempt chunks and maxBytesPerAttempt bytes of an attempt; the end marker counts the rest", async () => {
    const { chunks } = publisher({ maxPerAttempt: 3, maxBytesPerAttempt: 1_000 });
    const many = chunks.open(ref("count"));
    for (let i = 0; i < 10; i++) many.push(text(`${i}`));
    many.end();
    const big = chunks.open(ref("bytes"));
    big.push(text("x".repeat(600)));
    big.push(text("y".repeat(600)));
    big.end();
    await chunks.flush();
    expect(many.dropped).toBe(7);
    expect(many.overBounds).toBe(7);
    expect((await entries("count")).at(-1)).toEqual({ kind: "end", sent: 10, dropped: 7 });
    expect((await entries("count")).filter((e) => e.kind === "chunk")).toHaveLength(3);
    expect(big.dropped).toBe(1);
    expect((await entries("bytes")).filter((e) => e.kind === "chunk")).toHaveLength(1);
  });

  it("writes nothing for an attempt that sent no chunk", async () => {
    const { chunks } = publisher();
    chunks.open(ref("silent")).end();
    await chunks.flush();
    expect(await redis.exists(chunkStreamKey(prefix, ref("silent")))).toBe(0);
  });

  it("drops chunks while Redis is away, logging once, without throwing or waiting", async () => {
    const away = failFast("redis://127.0.0.1:1");
    const logger = { warn: vi.fn(), info: vi.fn() };
    const chunks = new ChunkPublisher({
      redis: away,
      queuePrefix: prefix,
      retentionMs: 60_000,
      maxPerAttempt: 100,
      maxBytesPerAttempt: 1_000_000,
      logger,
      batchSize: 2,
    });
    const attempt = chunks.open(ref("away"));
    for (let i = 0; i < 10; i++) attempt.push(text(`${i}`));
    attempt.end();
    await chunks.flush();
    expect(attempt.dropped).toBe(10);
    expect(attempt.overBounds).toBe(0);
    expect(logger.warn).toHaveBeenCalledTimes(1);
    away.disconnect();
  });
});
