import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { ExecutionStatus, NodeSchema, WorkflowStatus } from "@trellis/proto";
import {
  type NodeServiceServer,
  type TestDatabase,
  createTestDatabase,
  startApp,
  startNodeServiceServer,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type WorkerApp, startWorkerApp } from "../src/app.js";
import { readWorkerSettings } from "../src/config.js";
import { type TestEngine, startTestEngine } from "./engine.js";

let testDb: TestDatabase;
let engine: TestEngine;
let worker: WorkerApp;
/** NODE_SERVICE_ROUTES `llm.*`, `web.search`, and NODE_SERVICE_ADDR (everything else). */
const servers = {} as Record<"llm" | "search" | "fallback", NodeServiceServer>;

/** Each server answers with its own name, so an output says where its node ran. */
async function startNamedServer(name: string): Promise<NodeServiceServer> {
  return startNodeServiceServer((request) => ({
    status: ExecutionStatus.SUCCESS,
    output: fromJson(ValueSchema, { server: name, capability: request.node?.capability ?? "" }),
  }));
}

/** Capabilities each server was called for, sorted. */
function capabilitiesCalled(server: NodeServiceServer): string[] {
  return [...new Set(server.calls.map((c) => c.request.node?.capability ?? ""))].sort();
}

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_routes");
  servers.llm = await startNamedServer("llm");
  servers.search = await startNamedServer("search");
  servers.fallback = await startNamedServer("fallback");
  engine = await startTestEngine(testDb, servers.fallback.address);
  // Read from the environment as main.ts reads it: the routes go through the same parser as in production.
  const settings = readWorkerSettings({
    DATABASE_URL: testDb.url,
    REDIS_URL: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
    QUEUE_PREFIX: engine.queuePrefix,
    HTTP_ADDR: "127.0.0.1:0",
    WORKER_CAPABILITIES: "llm.chat,llm.embed,web.search,echo",
    WORKER_HEARTBEAT_MS: "200",
    NODE_SERVICE_ADDR: servers.fallback.address,
    NODE_SERVICE_ROUTES: `llm.*=${servers.llm.address}, web.search=${servers.search.address}`,
  });
  worker = await startWorkerApp(settings, {
    logger: createLogger({ app: "worker", level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    registry: createMetricsRegistry({ app: "worker" }),
  });
});

afterAll(async () => {
  await worker?.close();
  await engine?.close();
  for (const server of Object.values(servers)) await server?.close();
  await testDb?.drop();
});

describe("NODE_SERVICE_ROUTES", () => {
  it("sends each capability to its route's NodeService (an exact name, a glob) and the rest to NODE_SERVICE_ADDR", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "routed",
      nodes: [
        create(NodeSchema, { id: "chat", capability: "llm.chat" }),
        // A chain through the three NodeServices: each node's call goes where its own capability is routed.
        create(NodeSchema, { id: "search", capability: "web.search", parentIds: ["chat"] }),
        create(NodeSchema, { id: "embed", capability: "llm.embed", parentIds: ["search"] }),
        create(NodeSchema, { id: "report", capability: "echo", parentIds: ["embed"] }),
      ],
    });
    const done = await waitFor(
      async () => {
        const wf = await engine.stateManager.getWorkflow(workflow.id);
        return wf.status !== WorkflowStatus.RUNNING && wf.status !== WorkflowStatus.PENDING && wf;
      },
      { timeoutMs: 20_000, description: "the routed workflow to finish" },
    );
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    const outputs = Object.fromEntries(done.nodes.map((n) => [n.id, n.output && toJson(ValueSchema, n.output)]));
    expect(outputs).toEqual({
      chat: { server: "llm", capability: "llm.chat" },
      search: { server: "search", capability: "web.search" },
      embed: { server: "llm", capability: "llm.embed" },
      report: { server: "fallback", capability: "echo" },
    });
    expect(capabilitiesCalled(servers.llm)).toEqual(["llm.chat", "llm.embed"]);
    expect(capabilitiesCalled(servers.search)).toEqual(["web.search"]);
    expect(capabilitiesCalled(servers.fallback)).toEqual(["echo"]);
  });

  it("stops the worker at start with one line naming a bad entry (exit code 2)", async () => {
    const app = startApp({
      app: "worker",
      env: {
        WORKER_CAPABILITIES: "llm.chat",
        NODE_SERVICE_ROUTES: "llm.*=grpcs://10.0.0.5:50052",
        DATABASE_URL: testDb.url,
      },
    });
    const status = await app.exited;
    expect(status.code).toBe(2);
    expect(app.lines).toEqual([
      'trellis worker: invalid setting: NODE_SERVICE_ROUTES: "llm.*=grpcs://10.0.0.5:50052": TLS routes (grpcs://) need NODE_SERVICE_TLS_CA (the CA their certificates chain to)',
    ]);
  });
});
