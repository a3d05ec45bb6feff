import * as grpc from "@grpc/grpc-js";
import { PgStateManager, WorkflowEventHub } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  NodeStatus,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
  type WorkflowEvent,
} from "@trellis/proto";
import { type TestDatabase, createChainWorkflow, createTestDatabase, passReadyNodes, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningApiServer, startApiServer } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;
let hub: WorkflowEventHub;
let server: RunningApiServer;
let client: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_watch");
  sm = new PgStateManager(testDb.db);
  // No fallback polling to speak of: live events must arrive through LISTEN/NOTIFY.
  hub = new WorkflowEventHub({ stateManager: sm, databaseUrl: testDb.url, fallbackPollMs: 60_000 });
  await hub.start();
  server = await startApiServer({
    stateManager: sm,
    logger: createLogger({ app: "api", level: "silent" }),
    registry: createMetricsRegistry({ app: "api", collectDefault: false }),
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: undefined,
      tls: undefined,
      maxReceiveBytes: 16 * 1024 * 1024,
    },
    events: hub,
  });
  client = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
});

afterAll(async () => {
  client?.close();
  await server?.close(1_000);
  await hub?.close();
  await testDb?.drop();
});

const chain = (name: string) => createChainWorkflow(sm, name);
const step = (workflowId: string) => passReadyNodes(sm, workflowId);

/** Opens a watch and collects its events; resolves with them when the stream ends. */
function watch(workflowId: string, afterSequence = 0n, into: WorkflowEvent[] = []): Promise<WorkflowEvent[]> {
  return new Promise((resolve, reject) => {
    const stream = client.watchWorkflow({ workflowId, afterSequence }, { deadline: Date.now() + 20_000 });
    stream.on("data", (event: WorkflowEvent) => into.push(event));
    stream.on("error", reject);
    stream.on("end", () => resolve(into));
  });
}

describe("WatchWorkflow", () => {
  it("streams the complete ordered history of a finished workflow and ends after its terminal event", async () => {
    const id = await chain("finished");
    await step(id);
    await step(id);
    const events = await watch(id);
    expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
    expect(events[0]!.type).toBe("workflow.created");
    expect(events.at(-1)!.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    expect(events.filter((e) => e.nodeStatus === NodeStatus.PASS).map((e) => e.nodeId)).toEqual(["a", "b"]);
  });

  it("follows a running workflow live for two watchers and resumes from a sequence", async () => {
    const id = await chain("live");
    const first: WorkflowEvent[] = [];
    const second: WorkflowEvent[] = [];
    const a = watch(id, 0n, first);
    const b = watch(id, 0n, second);
    await waitFor(() => first.length >= 1 && second.length >= 1, { description: "the created event on both streams" });
    await step(id);
    await waitFor(() => first.some((e) => e.nodeId === "a" && e.nodeStatus === NodeStatus.PASS), {
      description: "a live PASS event",
    });
    await step(id);
    await Promise.all([a, b]);
    expect(second).toEqual(first);
    const resumed = await watch(id, 2n);
    expect(resumed).toEqual(first.slice(2));
  });

  it("answers NOT_FOUND for an unknown workflow and INVALID_ARGUMENT for a bad id or sequence", async () => {
    await expect(watch(crypto.randomUUID())).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(watch("not-a-uuid")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(watch(await chain("neg"), -1n)).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining("after_sequence"),
    });
  });

  it("stops producing when the client cancels", async () => {
    const id = await chain("cancelled");
    const stream = client.watchWorkflow({ workflowId: id }, { deadline: Date.now() + 20_000 });
    const got: WorkflowEvent[] = [];
    stream.on("data", (e: WorkflowEvent) => got.push(e));
    const ended = new Promise((resolve) => stream.on("error", resolve));
    await waitFor(() => got.length === 1);
    stream.cancel();
    expect(await ended).toMatchObject({ code: grpc.status.CANCELLED });
  });
});
