import { create } from "@bufbuild/protobuf";
import { createLogger } from "@trellis/observability";
import { OutputChunkSchema } from "@trellis/proto";
import { ChunkPublisher, createRedis } from "@trellis/queue";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DashboardFixture, node, passNode, readSse, startDashboard, startNode } from "./fixture.js";

let f: DashboardFixture;
let redis: Redis;
let chunks: ChunkPublisher;

beforeAll(async () => {
  f = await startDashboard("chunks");
  redis = createRedis(f.redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  await redis.connect();
  // As a worker publishes them.
  chunks = new ChunkPublisher({
    redis,
    queuePrefix: f.queuePrefix,
    retentionMs: 60_000,
    maxPerAttempt: 1_000,
    maxBytesPerAttempt: 1_000_000,
    logger: createLogger({ app: "worker", level: "silent" }),
  });
});

afterAll(async () => {
  redis?.disconnect();
  await f?.close();
});

describe("GET /api/workflows/:id/stream?chunks=1", () => {
  it("sends a running node's chunks as `event: chunk` without an id, from the first, before the event ending the attempt", async () => {
    const { workflow } = await f.stateManager.createWorkflow({ name: "chunks", nodes: [node("a"), node("b", ["a"])] });
    const id = workflow.id;
    const started = await startNode(f.stateManager, id, "a");
    const attempt = chunks.open({ workflowId: id, nodeId: "a", attempt: 1 });
    for (const text of ["Once", " upon", " a"]) attempt.push(create(OutputChunkSchema, { channel: "tokens", text }));
    await chunks.flush();

    // Connects while the node runs, after its three first chunks were written; once they arrived, the node writes the
    // rest and passes.
    let rest: Promise<void> | undefined;
    const finishNode = async () => {
      for (const text of [" time", "."]) attempt.push(create(OutputChunkSchema, { channel: "tokens", text }));
      attempt.end();
      await chunks.flush();
      const recorded = await f.stateManager.recordResult(id, "a", started.lease, {
        kind: "success",
        output: undefined,
        edits: [],
      });
      expect(recorded.outcome).toBe("passed");
      await passNode(f.stateManager, id, "b");
    };
    const response = await fetch(`${f.baseUrl}/api/workflows/${id}/stream?chunks=1`);
    const all = readSse(response, (frames) => {
      if (rest === undefined && frames.filter((x) => x.event === "chunk").length === 3) rest = finishNode();
      return false;
    });
    const { frames, ended } = await all;
    await rest;
    expect(ended).toBe(true);
    const chunkFrames = frames.filter((x) => x.event === "chunk");
    expect(chunkFrames.every((x) => x.id === undefined)).toBe(true);
    const events = chunkFrames.map((x) => JSON.parse(x.data));
    expect(events.map((e) => e.chunk.text).join("")).toBe("Once upon a time.");
    expect(events.map((e) => Number(e.chunkIndex ?? 0))).toEqual([0, 1, 2, 3, 4]);
    expect(events.every((e) => e.type === "node.output_chunk" && e.nodeId === "a" && e.attempt === 1)).toBe(true);
    const passOfA = frames.findIndex(
      (x) =>
        x.event === "message" &&
        /"nodeId":"a".*NODE_STATUS_PASS/.test(x.data) &&
        x.data.includes('"type":"node.status_changed"'),
    );
    expect(frames.indexOf(chunkFrames.at(-1)!)).toBeLessThan(passOfA);
    // The durable events keep their ids, so a reconnect resumes after the last one.
    const ids = frames.filter((x) => x.event === "message").map((x) => Number(x.id));
    expect(ids).toEqual(ids.map((_, i) => i + 1));

    const plain = await readSse(await fetch(`${f.baseUrl}/api/workflows/${id}/stream`));
    expect(plain.frames.some((x) => x.event === "chunk")).toBe(false);
  });
});
