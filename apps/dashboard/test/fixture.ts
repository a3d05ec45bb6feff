import { create } from "@bufbuild/protobuf";
import { PgStateManager, type StartedNode } from "@trellis/db";
import { createLogger, createMetricsRegistry, type RunningHttpServer, startHttpServer } from "@trellis/observability";
import { type Node, type NodeEdit, NodeSchema, NodeStatus } from "@trellis/proto";
import { createRedis } from "@trellis/queue";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import type { Value } from "@bufbuild/protobuf/wkt";
import { type DashboardApp, type DashboardSettings, startDashboardApp } from "../src/index.js";

/** A dashboard served on 127.0.0.1 over its own database and BullMQ prefix. */
export interface DashboardFixture {
  testDb: TestDatabase;
  /** Drives workflows the way the scheduler and workers would. */
  stateManager: PgStateManager;
  redisUrl: string;
  queuePrefix: string;
  app: DashboardApp;
  http: RunningHttpServer;
  /** `http://127.0.0.1:<port>` */
  baseUrl: string;
  close(): Promise<void>;
}

/** Options of {@link startDashboard}. */
export interface DashboardFixtureOptions {
  user?: string;
  password?: string;
  heartbeatMs?: number;
  /** The api's tokens to sign in with (API_TOKENS_FILE, API_TOKEN). */
  tokens?: DashboardSettings["tokens"];
  /** Bull Board's write actions (DASHBOARD_QUEUE_ACTIONS). */
  queueActions?: boolean;
  /** WORKER_STALE_MS. */
  workerStaleMs?: number;
  /** Runs after the database and prefix exist, before the dashboard starts (e.g. to create queues). */
  before?: (f: { testDb: TestDatabase; redisUrl: string; queuePrefix: string }) => Promise<void>;
}

/** Starts a fresh database and a dashboard on port 0; `close()` removes both and the prefix's Redis keys. */
export async function startDashboard(name: string, opts: DashboardFixtureOptions = {}): Promise<DashboardFixture> {
  const testDb = await createTestDatabase(`trellis_${name}`);
  const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  const queuePrefix = `t${name}${Math.random().toString(36).slice(2, 8)}`;
  await opts.before?.({ testDb, redisUrl, queuePrefix });
  const logger = createLogger({ app: "dashboard", level: "silent" });
  // As the dashboard runs alone: one registry for its HTTP requests and actions, served at /metrics.
  const registry = createMetricsRegistry({ app: "dashboard", collectDefault: false });
  const app = await startDashboardApp(
    {
      databaseUrl: testDb.url,
      redisUrl,
      queuePrefix,
      logLevel: "silent",
      http: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      user: opts.user,
      password: opts.password,
      tokens: opts.tokens,
      queueActions: opts.queueActions,
      workerStaleMs: opts.workerStaleMs,
    },
    { logger, registry, heartbeatMs: opts.heartbeatMs, queueRefreshMs: 200, tokensFilePollMs: 100 },
  );
  const http = await startHttpServer({
    host: "127.0.0.1",
    port: 0,
    registry,
    logger,
    isReady: () => app.isReady(),
    routes: (req, res) => app.handle(req, res),
    closeGraceMs: 200,
  });
  return {
    testDb,
    stateManager: new PgStateManager(testDb.db),
    redisUrl,
    queuePrefix,
    app,
    http,
    baseUrl: `http://127.0.0.1:${http.address.port}`,
    async close() {
      await app.close();
      await http.close();
      const redis = createRedis(redisUrl);
      const keys = await redis.keys(`${queuePrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await testDb.drop();
    },
  };
}

/** A node spec for createWorkflow. */
export function node(
  id: string,
  parentIds: string[] = [],
  capability = "echo",
  extra: { name?: string; labels?: Record<string, string>; priority?: number; limitKeys?: string[] } = {},
): Node {
  return create(NodeSchema, { id, capability, parentIds, input: { task: id }, ...extra });
}

/** Claims ready nodes until this one is QUEUED (claims of other workflows' ready nodes are harmless here). */
export async function queueNode(sm: PgStateManager, workflowId: string, nodeId: string): Promise<void> {
  await waitFor(
    async () => {
      const current = await sm.getNode(workflowId, nodeId);
      if (current.status === NodeStatus.QUEUED) return true;
      if (current.status !== NodeStatus.PENDING) throw new Error(`node ${nodeId} is ${NodeStatus[current.status]}`);
      await sm.claimReadyNodes(500);
      return false;
    },
    { timeoutMs: 5_000, description: `node ${nodeId} to be queued` },
  );
}

/** Moves a node PENDING -> QUEUED -> RUNNING, as the scheduler and a worker would. */
export async function startNode(sm: PgStateManager, workflowId: string, nodeId: string): Promise<StartedNode> {
  await queueNode(sm, workflowId, nodeId);
  const started = await sm.startNode(workflowId, nodeId);
  if (!started) throw new Error(`node ${nodeId} could not be started`);
  return started;
}

/** Runs a node to PASS with this output and edits (a planner's result). */
export async function passNode(
  sm: PgStateManager,
  workflowId: string,
  nodeId: string,
  output?: Value,
  edits: readonly NodeEdit[] = [],
): Promise<void> {
  const started = await startNode(sm, workflowId, nodeId);
  const outcome = await sm.recordResult(workflowId, nodeId, started.lease, { kind: "success", output, edits });
  if (outcome.outcome !== "passed") throw new Error(`node ${nodeId}: ${JSON.stringify(outcome)}`);
}

/** One Server-Sent Event as the client sees it. */
export interface SseFrame {
  id?: string;
  event: string;
  data: string;
  comment?: string;
}

/** Reads an SSE response frame by frame (comments included) until `stop` returns true or the stream ends. */
export async function readSse(
  response: Response,
  stop: (frames: SseFrame[]) => boolean = () => false,
): Promise<{ frames: SseFrame[]; ended: boolean }> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const frames: SseFrame[] = [];
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { frames, ended: true };
    buffer += value;
    let cut = buffer.indexOf("\n\n");
    while (cut >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      cut = buffer.indexOf("\n\n");
      const frame: SseFrame = { event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) {
          frame.event = "comment";
          frame.comment = line.slice(1).trim();
        } else if (line.startsWith("id: ")) frame.id = line.slice(4);
        else if (line.startsWith("event: ")) frame.event = line.slice(7);
        else if (line.startsWith("data: ")) frame.data += line.slice(6);
        else if (line.startsWith("retry: ")) frame.event = "retry";
      }
      frames.push(frame);
      if (stop(frames)) {
        await reader.cancel();
        return { frames, ended: false };
      }
    }
  }
}
