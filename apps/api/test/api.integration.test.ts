import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type JsonObject, create, toJson } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { DEFAULT_LIMITS } from "@trellis/core";
import { PgStateManager, type StateManager } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  EditType,
  ErrorKind,
  type GrpcClient,
  NodeStatus,
  type Workflow,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
} from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import type { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningApiServer, startApiServer } from "../src/index.js";
import { checkHealth } from "./health-client.js";
import { LogLines } from "./log-lines.js";
import { callUnary, listServices, registryForSymbol } from "./reflection-client.js";

const run = promisify(execFile);
const BUF = fileURLToPath(new URL("../../../node_modules/.bin/buf", import.meta.url));
const TOKEN = "s3cret-token";

interface Harness {
  server: RunningApiServer;
  client: GrpcClient<typeof WorkflowService>;
  address: string;
  registry: Registry;
  logs: LogLines;
}

const started: Harness[] = [];

async function startHarness(
  stateManager: StateManager,
  settings: { apiToken?: string; maxReceiveBytes?: number } = {},
): Promise<Harness> {
  const logs = new LogLines();
  const registry = createMetricsRegistry({ app: "api", collectDefault: false });
  const server = await startApiServer({
    stateManager,
    logger: createLogger({ app: "api", level: "info", destination: logs }),
    registry,
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: settings.apiToken,
      tls: undefined,
      maxReceiveBytes: settings.maxReceiveBytes ?? 16 * 1024 * 1024,
    },
  });
  const address = `127.0.0.1:${server.port}`;
  const harness = { server, client: createGrpcClient(WorkflowService, address), address, registry, logs };
  started.push(harness);
  return harness;
}

let testDb: TestDatabase;
let sm: PgStateManager;
let api: Harness;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_api");
  sm = new PgStateManager(testDb.db);
  api = await startHarness(sm);
});

afterAll(async () => {
  for (const h of started) {
    h.client.close();
    await h.server.close(1_000);
  }
  await testDb?.drop();
});

/** Call options with a deadline, as every real caller should send. */
function opts(metadata?: grpc.Metadata): { deadline: number; metadata?: grpc.Metadata } {
  return { deadline: Date.now() + 10_000, ...(metadata === undefined ? {} : { metadata }) };
}

function bearer(token: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

interface NodeInit {
  id: string;
  capability?: string;
  parentIds?: string[];
  name?: string;
  input?: JsonObject;
}

function node(id: string, parentIds: string[] = [], extra: Partial<NodeInit> = {}): NodeInit {
  return { id, capability: "echo", parentIds, ...extra };
}

function diamond(): NodeInit[] {
  return [node("a"), node("b", ["a"]), node("c", ["a"]), node("d", ["b", "c"])];
}

async function createWorkflow(
  init: Partial<{ name: string; nodes: NodeInit[]; labels: Record<string, string>; requestId: string }> = {},
  client = api.client,
): Promise<Workflow> {
  const { workflow } = await client.createWorkflow({ name: "wf", nodes: diamond(), ...init }, opts());
  return workflow!;
}

/** Resolves with the error the call failed with; fails the test if it succeeded. */
async function failure(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error("the call succeeded but was expected to fail");
}

async function expectStatus(call: Promise<unknown>, code: grpc.status, details?: string | RegExp): Promise<void> {
  const error = await failure(call);
  expect(grpc.status[error.code], error.details).toBe(grpc.status[code]);
  if (typeof details === "string") expect(error.details).toBe(details);
  else if (details !== undefined) expect(error.details).toMatch(details);
}

async function rowCounts(): Promise<Record<string, number>> {
  const r = await testDb.pool.query(`
    select (select count(*) from workflows)::int as workflows, (select count(*) from nodes)::int as nodes,
           (select count(*) from node_edges)::int as edges, (select count(*) from workflow_events)::int as events`);
  return r.rows[0];
}

/** Plays scheduler and worker for one node: claims it, starts it and records a TASK_ERROR, so it ends FAIL. */
async function failNode(workflowId: string, nodeId: string): Promise<void> {
  await waitFor(
    async () => {
      await sm.claimReadyNodes(10_000);
      return (await sm.getNode(workflowId, nodeId)).status === NodeStatus.QUEUED;
    },
    { description: `node ${nodeId} queued` },
  );
  const startedNode = await sm.startNode(workflowId, nodeId);
  expect(startedNode).not.toBeNull();
  const outcome = await sm.recordResult(workflowId, nodeId, startedNode!.lease, {
    kind: "error",
    errorKind: ErrorKind.TASK_ERROR,
    message: "boom",
  });
  expect(outcome.outcome).toBe("failed");
}

describe("CreateWorkflow and GetWorkflow", () => {
  it("stores a DAG and returns it PENDING with every node in topological order", async () => {
    const created = await createWorkflow({ name: "diamond", labels: { team: "core" } });
    expect(created.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.status).toBe(WorkflowStatus.PENDING);
    expect(created.labels).toEqual({ team: "core" });

    const { workflow } = await api.client.getWorkflow({ workflowId: created.id }, opts());
    expect(workflow!.name).toBe("diamond");
    const ids = workflow!.nodes.map((n) => n.id);
    expect(ids).toHaveLength(4);
    expect(ids.indexOf("a")).toBeLessThan(ids.indexOf("b"));
    expect(ids.indexOf("c")).toBeLessThan(ids.indexOf("d"));
    expect(workflow!.nodes.every((n) => n.workflowId === created.id && n.status === NodeStatus.PENDING)).toBe(true);
  });

  it("round-trips the workflow input and node inputs as JSON", async () => {
    const { workflow } = await api.client.createWorkflow(
      { name: "inputs", nodes: [node("a", [], { input: { prompt: "hi", n: 3 } })], input: { user: "ada" } },
      opts(),
    );
    const got = await api.client.getWorkflow({ workflowId: workflow!.id }, opts());
    expect(got.workflow!.input).toEqual({ user: "ada" });
    expect(got.workflow!.nodes[0]!.input).toEqual({ prompt: "hi", n: 3 });
  });

  it("is idempotent on request_id: the same id returns the first workflow and stores nothing more", async () => {
    const requestId = `req-${randomUUID()}`;
    const first = await createWorkflow({ name: "first", requestId });
    const before = await rowCounts();
    const second = await createWorkflow({ name: "second", nodes: [node("x")], requestId });
    expect(second.id).toBe(first.id);
    expect(second.name).toBe("first");
    expect(await rowCounts()).toEqual(before);
    expect((await createWorkflow({ requestId: `req-${randomUUID()}` })).id).not.toBe(first.id);
  });

  it("names the field and the reason of every malformed DAG, as INVALID_ARGUMENT", async () => {
    const cases: [NodeInit[], string | RegExp][] = [
      [[node("a", [], { capability: "" })], "nodes[0].capability: required"],
      [[node("a", [], { capability: "Bad Cap" })], /^nodes\[0\]\.capability: "Bad Cap" must match/],
      [[node("a"), node("b", ["ghost"])], 'nodes[1].parent_ids[0]: unknown node "ghost"'],
      [[node("a", ["b"]), node("b", ["a"])], /^nodes: cycle (a -> b -> a|b -> a -> b)$/],
      [[node("a"), node("a")], /^nodes\[1\]\.id: duplicate node id "a"/],
      [[node("bad id!")], /^nodes\[0\]\.id: /],
      [[], "nodes: at least one node is required"],
    ];
    for (const [nodes, details] of cases) {
      await expectStatus(
        api.client.createWorkflow({ name: "bad", nodes }, opts()),
        grpc.status.INVALID_ARGUMENT,
        details,
      );
    }
  });

  it("refuses a missing or malformed workflow id with INVALID_ARGUMENT and an unknown one with NOT_FOUND", async () => {
    await expectStatus(
      api.client.getWorkflow({ workflowId: "" }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "workflow_id: required",
    );
    await expectStatus(
      api.client.getWorkflow({ workflowId: "nope" }, opts()),
      grpc.status.INVALID_ARGUMENT,
      'workflow_id: "nope" is not a UUID',
    );
    const unknown = randomUUID();
    await expectStatus(
      api.client.getWorkflow({ workflowId: unknown }, opts()),
      grpc.status.NOT_FOUND,
      `workflow ${unknown} not found`,
    );
  });

  it("changes nothing when a request is rejected", async () => {
    const workflow = await createWorkflow();
    const before = await rowCounts();
    await failure(api.client.createWorkflow({ nodes: [node("a", ["b"]), node("b", ["a"])] }, opts()));
    await failure(
      api.client.editWorkflow(
        {
          workflowId: workflow.id,
          edits: [
            { type: EditType.INSERT, node: node("fresh", ["a"]) },
            { type: EditType.INSERT, node: node("orphan", ["ghost"]) },
          ],
        },
        opts(),
      ),
    );
    await failure(api.client.updateWorkflow({ workflowId: workflow.id, action: WorkflowAction.RETRY }, opts()));
    await failure(
      api.client.updateWorkflow(
        { workflowId: workflow.id, name: "renamed", updateMask: { paths: ["name", "status"] } },
        opts(),
      ),
    );
    expect(await rowCounts()).toEqual(before);
    const { workflow: after } = await api.client.getWorkflow({ workflowId: workflow.id }, opts());
    expect(after!.nodes.map((n) => n.id).sort()).toEqual(["a", "b", "c", "d"]);
    expect(after!.name).toBe("wf");
  });
});

describe("ListWorkflows", () => {
  it("walks every page newest first without overlap or loss", async () => {
    const batch = randomUUID();
    const ids: string[] = [];
    for (let i = 0; i < 25; i++) ids.push((await createWorkflow({ name: `w${i}`, labels: { batch } })).id);

    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await api.client.listWorkflows({ pageSize: 7, pageToken, labelSelector: { batch } }, opts());
      expect(page.workflows.length).toBeLessThanOrEqual(7);
      expect(page.workflows.every((w) => w.nodes.length === 0)).toBe(true);
      seen.push(...page.workflows.map((w) => w.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");

    expect(pages).toBe(4);
    expect(new Set(seen).size).toBe(25);
    expect([...seen].sort()).toEqual([...ids].sort());
    const all = await api.client.listWorkflows({ pageSize: 500, labelSelector: { batch } }, opts());
    expect(all.workflows.map((w) => w.id)).toEqual(seen);
    expect(all.workflows[0]!.name).toBe("w24");
    expect(all.workflows[24]!.name).toBe("w0");
  });

  it("filters by every label of the selector and by status", async () => {
    const batch = randomUUID();
    const a1 = await createWorkflow({ labels: { batch, team: "a", tier: "1" } });
    const a2 = await createWorkflow({ labels: { batch, team: "a", tier: "2" } });
    const b1 = await createWorkflow({ labels: { batch, team: "b", tier: "1" } });
    await api.client.updateWorkflow({ workflowId: a2.id, action: WorkflowAction.CANCEL }, opts());
    await api.client.updateWorkflow({ workflowId: b1.id, action: WorkflowAction.PAUSE }, opts());

    const ids = async (query: { status?: WorkflowStatus; labelSelector: Record<string, string> }) =>
      (await api.client.listWorkflows(query, opts())).workflows.map((w) => w.id).sort();
    expect(await ids({ labelSelector: { batch } })).toEqual([a1.id, a2.id, b1.id].sort());
    expect(await ids({ labelSelector: { batch, team: "a" } })).toEqual([a1.id, a2.id].sort());
    expect(await ids({ labelSelector: { batch, team: "a", tier: "1" } })).toEqual([a1.id]);
    expect(await ids({ labelSelector: { batch, team: "c" } })).toEqual([]);
    expect(await ids({ labelSelector: { batch }, status: WorkflowStatus.CANCELLED })).toEqual([a2.id]);
    expect(await ids({ labelSelector: { batch }, status: WorkflowStatus.PAUSED })).toEqual([b1.id]);
    expect(await ids({ labelSelector: { batch }, status: WorkflowStatus.PENDING })).toEqual([a1.id]);
  });

  it("refuses a page size outside 0..500 and a forged page token", async () => {
    await expectStatus(
      api.client.listWorkflows({ pageSize: 501 }, opts()),
      grpc.status.INVALID_ARGUMENT,
      /^page_size: must be between 1 and 500/,
    );
    await expectStatus(api.client.listWorkflows({ pageSize: -1 }, opts()), grpc.status.INVALID_ARGUMENT, /^page_size/);
    await expectStatus(
      api.client.listWorkflows({ pageToken: "forged" }, opts()),
      grpc.status.INVALID_ARGUMENT,
      /^page_token: /,
    );
  });
});

describe("UpdateWorkflow", () => {
  it("renames and relabels through update_mask, leaving fields outside the mask alone", async () => {
    const workflow = await createWorkflow({ name: "old", labels: { keep: "me" } });
    const renamed = await api.client.updateWorkflow(
      { workflowId: workflow.id, name: "new", labels: { ignored: "x" }, updateMask: { paths: ["name"] } },
      opts(),
    );
    expect(renamed.workflow!.name).toBe("new");
    expect(renamed.workflow!.labels).toEqual({ keep: "me" });
    const relabelled = await api.client.updateWorkflow(
      { workflowId: workflow.id, labels: { env: "prod" }, updateMask: { paths: ["labels"] } },
      opts(),
    );
    expect(relabelled.workflow!.name).toBe("new");
    expect(relabelled.workflow!.labels).toEqual({ env: "prod" });
  });

  it("refuses update_mask paths other than name, labels and budget, and a request that changes nothing", async () => {
    const workflow = await createWorkflow();
    await expectStatus(
      api.client.updateWorkflow({ workflowId: workflow.id, updateMask: { paths: ["status"] } }, opts()),
      grpc.status.INVALID_ARGUMENT,
      'update_mask.paths[0]: "status" cannot be updated (allowed: name, labels, budget)',
    );
    await expectStatus(
      api.client.updateWorkflow({ workflowId: workflow.id }, opts()),
      grpc.status.INVALID_ARGUMENT,
      /^update_mask: required when no action is given/,
    );
    await expectStatus(
      api.client.updateWorkflow({ workflowId: "", action: WorkflowAction.PAUSE }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "workflow_id: required",
    );
    await expectStatus(
      api.client.updateWorkflow({ workflowId: randomUUID(), action: WorkflowAction.PAUSE }, opts()),
      grpc.status.NOT_FOUND,
    );
  });

  it("pauses, resumes and cancels in the states that allow it and refuses the others naming both", async () => {
    const workflow = await createWorkflow();
    const update = (action: WorkflowAction) => api.client.updateWorkflow({ workflowId: workflow.id, action }, opts());

    await expectStatus(
      update(WorkflowAction.RESUME),
      grpc.status.FAILED_PRECONDITION,
      "cannot RESUME workflow in status PENDING",
    );
    await expectStatus(
      update(WorkflowAction.RETRY),
      grpc.status.FAILED_PRECONDITION,
      "cannot RETRY workflow in status PENDING",
    );
    expect((await update(WorkflowAction.PAUSE)).workflow!.status).toBe(WorkflowStatus.PAUSED);
    await expectStatus(
      update(WorkflowAction.PAUSE),
      grpc.status.FAILED_PRECONDITION,
      "cannot PAUSE workflow in status PAUSED",
    );
    // Paused before any node was queued: RESUME returns it to PENDING (PENDING until the first node is queued).
    expect((await update(WorkflowAction.RESUME)).workflow!.status).toBe(WorkflowStatus.PENDING);
    await expectStatus(
      update(WorkflowAction.RESUME),
      grpc.status.FAILED_PRECONDITION,
      "cannot RESUME workflow in status PENDING",
    );
    const cancelled = (await update(WorkflowAction.CANCEL)).workflow!;
    expect(cancelled.status).toBe(WorkflowStatus.CANCELLED);
    expect(cancelled.nodes.every((n) => n.status === NodeStatus.CANCELLED)).toBe(true);
    await expectStatus(
      update(WorkflowAction.CANCEL),
      grpc.status.FAILED_PRECONDITION,
      "cannot CANCEL workflow in status CANCELLED",
    );
    await expectStatus(
      api.client.editWorkflow(
        { workflowId: workflow.id, edits: [{ type: EditType.INSERT, node: node("late") }] },
        opts(),
      ),
      grpc.status.FAILED_PRECONDITION,
      /cannot be edited/,
    );
    await expectStatus(
      api.client.updateWorkflow({ workflowId: workflow.id, action: 42 as WorkflowAction }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "action: unknown action 42",
    );
  });

  it("retries a FAILED workflow: its FAIL node and SKIPPED descendants go back to PENDING", async () => {
    const workflow = await createWorkflow({ nodes: [node("a"), node("b", ["a"])] });
    await failNode(workflow.id, "a");
    const failed = (await api.client.getWorkflow({ workflowId: workflow.id }, opts())).workflow!;
    expect(failed.status).toBe(WorkflowStatus.FAILED);
    expect(failed.nodes.map((n) => [n.id, n.status])).toEqual([
      ["a", NodeStatus.FAIL],
      ["b", NodeStatus.SKIPPED],
    ]);
    await expectStatus(
      api.client.updateWorkflow({ workflowId: workflow.id, action: WorkflowAction.PAUSE }, opts()),
      grpc.status.FAILED_PRECONDITION,
      "cannot PAUSE workflow in status FAILED",
    );

    const retried = await api.client.updateWorkflow({ workflowId: workflow.id, action: WorkflowAction.RETRY }, opts());
    expect(retried.workflow!.status).toBe(WorkflowStatus.RUNNING);
    expect(retried.workflow!.nodes.map((n) => [n.id, n.status])).toEqual([
      ["a", NodeStatus.PENDING],
      ["b", NodeStatus.PENDING],
    ]);
  });
});

describe("GetNode, UpdateNode and EditWorkflow", () => {
  it("gets one node, and refuses a missing node id and an unknown node", async () => {
    const workflow = await createWorkflow();
    const { node: b } = await api.client.getNode({ workflowId: workflow.id, nodeId: "b" }, opts());
    expect(b!.parentIds).toEqual(["a"]);
    expect(b!.name).toBe("b");
    await expectStatus(
      api.client.getNode({ workflowId: workflow.id, nodeId: "" }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "node_id: required",
    );
    await expectStatus(
      api.client.getNode({ workflowId: workflow.id, nodeId: "ghost" }, opts()),
      grpc.status.NOT_FOUND,
      `node "ghost" not found in workflow ${workflow.id}`,
    );
    await expectStatus(
      api.client.getNode({ workflowId: randomUUID(), nodeId: "a" }, opts()),
      grpc.status.NOT_FOUND,
      /^workflow .* not found$/,
    );
  });

  it("updates the masked fields of a PENDING node and refuses a RUNNING one", async () => {
    const workflow = await createWorkflow({ nodes: [node("a"), node("b", ["a"])] });
    const { node: updated } = await api.client.updateNode(
      {
        workflowId: workflow.id,
        node: { id: "b", capability: "summarize", name: "ignored" },
        updateMask: { paths: ["capability"] },
      },
      opts(),
    );
    expect(updated!.capability).toBe("summarize");
    expect(updated!.name).toBe("b");
    await expectStatus(
      api.client.updateNode({ workflowId: workflow.id, node: { id: "b" }, updateMask: { paths: ["status"] } }, opts()),
      grpc.status.INVALID_ARGUMENT,
      /^update_mask\.paths\[0\]: "status" cannot be updated/,
    );
    await expectStatus(
      api.client.updateNode({ workflowId: workflow.id, updateMask: { paths: ["name"] } }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "node: required",
    );

    await waitFor(
      async () => {
        await sm.claimReadyNodes(10_000);
        return (await sm.getNode(workflow.id, "a")).status === NodeStatus.QUEUED;
      },
      { description: "node a queued" },
    );
    expect(await sm.startNode(workflow.id, "a")).not.toBeNull();
    await expectStatus(
      api.client.updateNode(
        { workflowId: workflow.id, node: { id: "a", name: "x" }, updateMask: { paths: ["name"] } },
        opts(),
      ),
      grpc.status.FAILED_PRECONDITION,
      /RUNNING/,
    );
    await expectStatus(
      api.client.updateWorkflow({ workflowId: workflow.id, action: WorkflowAction.RESUME }, opts()),
      grpc.status.FAILED_PRECONDITION,
      "cannot RESUME workflow in status RUNNING",
    );
  });

  it("applies a batch of edits atomically and refuses an empty or invalid batch", async () => {
    const workflow = await createWorkflow();
    const { workflow: edited } = await api.client.editWorkflow(
      {
        workflowId: workflow.id,
        edits: [
          { type: EditType.INSERT, node: node("e", ["d"]) },
          { type: EditType.UPDATE, node: { id: "b", name: "B" }, updateMask: { paths: ["name"] } },
        ],
      },
      opts(),
    );
    expect(edited!.nodes.map((n) => n.id)).toContain("e");
    expect(edited!.nodes.find((n) => n.id === "b")!.name).toBe("B");

    const { workflow: deleted } = await api.client.editWorkflow(
      { workflowId: workflow.id, edits: [{ type: EditType.DELETE, nodeId: "e" }] },
      opts(),
    );
    expect(deleted!.nodes.map((n) => n.id).sort()).toEqual(["a", "b", "c", "d"]);

    await expectStatus(
      api.client.editWorkflow({ workflowId: workflow.id, edits: [] }, opts()),
      grpc.status.INVALID_ARGUMENT,
      "edits: at least one edit is required",
    );
    await expectStatus(
      api.client.editWorkflow(
        { workflowId: workflow.id, edits: [{ type: EditType.INSERT, node: node("x", ["ghost"]) }] },
        opts(),
      ),
      grpc.status.INVALID_ARGUMENT,
      'edits[0].node.parent_ids[0]: unknown node "ghost"',
    );
    await expectStatus(
      api.client.editWorkflow({ workflowId: workflow.id, edits: [{ type: EditType.INSERT, node: node("a") }] }, opts()),
      grpc.status.INVALID_ARGUMENT,
      'edits[0].node.id: node "a" already exists',
    );
    await expectStatus(
      api.client.editWorkflow({ workflowId: workflow.id, edits: [{ type: EditType.DELETE, nodeId: "a" }] }, opts()),
      grpc.status.INVALID_ARGUMENT,
      /keeps|deleted|parent/,
    );
  });
});

describe("limits", () => {
  let limited: Harness;

  beforeAll(async () => {
    const small = new PgStateManager(testDb.db, { limits: { ...DEFAULT_LIMITS, maxNodes: 5, maxInputBytes: 1024 } });
    limited = await startHarness(small, { maxReceiveBytes: 64 * 1024 });
  });

  it("answers RESOURCE_EXHAUSTED for too many nodes, an oversized input and an oversized message, storing nothing", async () => {
    const before = await rowCounts();
    const six = ["n1", "n2", "n3", "n4", "n5", "n6"].map((id) => node(id));
    await expectStatus(
      limited.client.createWorkflow({ name: "big", nodes: six }, opts()),
      grpc.status.RESOURCE_EXHAUSTED,
      "nodes: at most 5 nodes are allowed, got 6",
    );
    await expectStatus(
      limited.client.createWorkflow({ nodes: [node("a", [], { input: { text: "x".repeat(2_000) } })] }, opts()),
      grpc.status.RESOURCE_EXHAUSTED,
      /^nodes\[0\]\.input: /,
    );
    await expectStatus(
      limited.client.createWorkflow({ nodes: [node("a")], input: { text: "x".repeat(100_000) } }, opts()),
      grpc.status.RESOURCE_EXHAUSTED,
      /larger than max/,
    );
    expect(await rowCounts()).toEqual(before);
    expect((await createWorkflow({ nodes: six.slice(0, 5) }, limited.client)).nodes).toHaveLength(5);
  });
});

describe("WatchWorkflow", () => {
  it("answers UNIMPLEMENTED until it is built", async () => {
    const stream = api.client.watchWorkflow({ workflowId: randomUUID() }, opts());
    const error = await new Promise<grpc.ServiceError>((resolve) => stream.on("error", resolve));
    expect(error.code).toBe(grpc.status.UNIMPLEMENTED);
  });
});

describe("observability", () => {
  it("logs one line per call with method, code, duration and workflow id, and counts it", async () => {
    const workflow = await createWorkflow();
    await failure(api.client.getWorkflow({ workflowId: "nope" }, opts()));
    const lines = api.logs.records().filter((r) => r.msg === "grpc call");
    const create = lines.find(
      (r) => r.method === "workflow.v1.WorkflowService/CreateWorkflow" && r.workflow_id === workflow.id,
    );
    expect(create).toMatchObject({ code: "OK", level: "info" });
    expect(typeof create!.duration_ms).toBe("number");
    expect(lines.some((r) => r.workflow_id === "nope" && r.code === "INVALID_ARGUMENT")).toBe(true);

    const metrics = await api.registry.metrics();
    expect(metrics).toMatch(
      /trellis_grpc_requests_total\{method="workflow.v1.WorkflowService\/GetWorkflow",code="INVALID_ARGUMENT",app="api"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /trellis_grpc_request_seconds_count\{[^}]*method="workflow.v1.WorkflowService\/CreateWorkflow"[^}]*\} [1-9]/,
    );
  });
});

describe("health", () => {
  it("is SERVING for the server and WorkflowService, and NOT_SERVING while draining", async () => {
    expect(await checkHealth(api.address)).toBe("SERVING");
    expect(await checkHealth(api.address, "workflow.v1.WorkflowService")).toBe("SERVING");

    const draining = await startHarness(sm);
    draining.server.setServing(false);
    expect(await checkHealth(draining.address)).toBe("NOT_SERVING");
    await draining.server.close(1_000);
    expect(draining.server.isServing()).toBe(false);
    await expectStatus(draining.client.getWorkflow({ workflowId: randomUUID() }, opts()), grpc.status.UNAVAILABLE);
  });
});

describe("auth", () => {
  let secured: Harness;

  beforeAll(async () => {
    secured = await startHarness(sm, { apiToken: TOKEN });
  });

  it("refuses a call without a token or with a wrong one, and accepts the right one", async () => {
    await expectStatus(
      secured.client.listWorkflows({}, opts()),
      grpc.status.UNAUTHENTICATED,
      /^authorization: required/,
    );
    await expectStatus(
      secured.client.listWorkflows({}, opts(bearer("wrong"))),
      grpc.status.UNAUTHENTICATED,
      "authorization: invalid bearer token",
    );
    const basic = new grpc.Metadata();
    basic.set("authorization", `Basic ${TOKEN}`);
    await expectStatus(secured.client.listWorkflows({}, opts(basic)), grpc.status.UNAUTHENTICATED);

    const before = await rowCounts();
    await expectStatus(
      secured.client.createWorkflow({ nodes: [node("a")] }, opts(bearer(`${TOKEN}x`))),
      grpc.status.UNAUTHENTICATED,
    );
    expect(await rowCounts()).toEqual(before);

    const { workflow } = await secured.client.createWorkflow(
      { name: "authed", nodes: [node("a")] },
      opts(bearer(TOKEN)),
    );
    const got = await secured.client.getWorkflow({ workflowId: workflow!.id }, opts(bearer(TOKEN)));
    expect(got.workflow!.name).toBe("authed");
    expect(secured.logs.records().some((r) => r.msg === "grpc call" && r.code === "UNAUTHENTICATED")).toBe(true);
  });

  it("leaves health open and guards reflection", async () => {
    expect(await checkHealth(secured.address)).toBe("SERVING");
    const channel = new grpc.Client(secured.address, grpc.credentials.createInsecure());
    try {
      const error = await failure(listServices(channel));
      expect(error.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(await listServices(channel, bearer(TOKEN))).toContain("workflow.v1.WorkflowService");
    } finally {
      channel.close();
    }
  });

  it("is off when no token is configured: calls without metadata succeed", async () => {
    const page = await api.client.listWorkflows({ pageSize: 1 }, opts());
    expect(page.workflows).toHaveLength(1);
  });
});

describe("server reflection", () => {
  it("lets a client that knows no Trellis types list the services and call GetWorkflow", async () => {
    const workflow = await createWorkflow({ name: "reflected", labels: { via: "reflection" } });
    const channel = new grpc.Client(api.address, grpc.credentials.createInsecure());
    try {
      const services = await listServices(channel);
      expect(services).toEqual(expect.arrayContaining(["workflow.v1.WorkflowService", "grpc.health.v1.Health"]));

      const registry = await registryForSymbol(channel, "workflow.v1.WorkflowService");
      const service = registry.getService("workflow.v1.WorkflowService")!;
      expect(service.methods.map((m) => m.name)).toEqual(
        expect.arrayContaining(["CreateWorkflow", "GetWorkflow", "ListWorkflows", "UpdateWorkflow", "EditWorkflow"]),
      );
      const method = service.methods.find((m) => m.name === "GetWorkflow")!;
      // Only descriptors from the server: not the generated WorkflowService of @trellis/proto.
      expect(method.input).not.toBe(WorkflowService.method.getWorkflow.input);
      const response = await callUnary(
        channel,
        `/${service.typeName}/${method.name}`,
        method.input,
        method.output,
        create(method.input, { workflowId: workflow.id } as never),
      );
      const json = toJson(method.output, response, { registry }) as {
        workflow: { id: string; name: string; status: string; labels: Record<string, string>; nodes: unknown[] };
      };
      expect(json.workflow).toMatchObject({
        id: workflow.id,
        name: "reflected",
        status: "WORKFLOW_STATUS_PENDING",
        labels: { via: "reflection" },
      });
      expect(json.workflow.nodes).toHaveLength(4);
    } finally {
      channel.close();
    }
  });

  it("serves `buf curl --reflect` with no proto files at hand", async () => {
    const workflow = await createWorkflow({ name: "curled" });
    const url = `http://${api.address}`;
    const base = ["curl", "--protocol", "grpc", "--http2-prior-knowledge"];
    const listed = await run(BUF, [...base, "--list-services", url]);
    expect(listed.stdout.split("\n")).toContain("workflow.v1.WorkflowService");
    const called = await run(BUF, [
      ...base,
      "-d",
      JSON.stringify({ workflowId: workflow.id }),
      `${url}/workflow.v1.WorkflowService/GetWorkflow`,
    ]);
    expect(JSON.parse(called.stdout)).toMatchObject({ workflow: { id: workflow.id, name: "curled" } });
    // Go clients validate descriptors strictly: this failed with grpc-health-check's proto-loader descriptor.
    const health = await run(BUF, [...base, "-d", "{}", `${url}/grpc.health.v1.Health/Check`]);
    expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
  });
});
