import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { DEFAULT_RETRY_POLICY } from "@trellis/core";
import { ErrorKind, NodeSchema, NodeStatus, WorkflowAction, WorkflowStatus } from "@trellis/proto";
import { NodeQueues, createRedis } from "@trellis/queue";
import { waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DashboardFixture, node, passNode, queueNode, readSse, startDashboard, startNode } from "./fixture.js";

let f: DashboardFixture;
const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";

beforeAll(async () => {
  f = await startDashboard("dashapi", { heartbeatMs: 100 });
});

afterAll(async () => {
  await f?.close();
});

interface NodeJson {
  id: string;
  status: string;
  heldBy?: string;
  limitKeys?: string[];
  priority?: number;
  parentIds?: string[];
  input?: unknown;
  output?: unknown;
  attempt?: number;
  startedAt?: string;
  error?: { kind?: string; message?: string };
}
interface WorkflowJson {
  id: string;
  name: string;
  status: string;
  labels?: Record<string, string>;
  nodes?: NodeJson[];
  createdAt?: string;
  usage?: Record<string, number>;
  budget?: Record<string, number>;
}
interface AttemptJson {
  attempt: number;
  status: string;
  usage?: Record<string, number>;
  startedAt?: string;
  finishedAt?: string;
}
interface LimitJson {
  key: string;
  maxConcurrency?: number;
  rate?: number;
  period?: string;
  burst?: number;
  unit?: string;
  running?: number;
  waiting?: string;
  available?: number;
  throttledUntil?: string;
  configured: boolean;
  throttledTotal: number;
}
interface EventJson {
  sequence: string;
  type: string;
  nodeId?: string;
  nodeStatus?: string;
  workflowStatus?: string;
}
/** The JSON bodies of the API, loosely: each endpoint fills some of these. */
interface Body {
  workflows: WorkflowJson[];
  nextPageToken?: string;
  workflow: WorkflowJson;
  node: NodeJson;
  attempts?: AttemptJson[];
  limits: LimitJson[];
  limit: LimitJson;
  events: EventJson[];
  error: { code: string; message: string };
  queues?: { name: string }[];
  completed?: boolean;
}

async function get(path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${f.baseUrl}${path}`, { headers });
  const type = response.headers.get("content-type") ?? "";
  const text = await response.text();
  const body = (type.includes("json") ? JSON.parse(text) : {}) as Body;
  return { status: response.status, type, text, body };
}

async function post(path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${f.baseUrl}${path}`, { method: "POST", headers });
  return { status: response.status, body: (await response.json()) as Body };
}

/** Sends `body` as JSON (a string as it is, to send malformed JSON). */
async function send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${f.baseUrl}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Body };
}

async function chain(name: string, labels: Record<string, string> = {}): Promise<string> {
  const { workflow } = await f.stateManager.createWorkflow({
    name,
    labels,
    nodes: [node("a"), node("b", ["a"])],
  });
  return workflow.id;
}

describe("GET /api/workflows", () => {
  let ids: string[];
  beforeAll(async () => {
    ids = [];
    for (let i = 0; i < 5; i++) {
      ids.push(await chain(i % 2 === 0 ? `nightly-report-${i}` : `ingest-${i}`, { team: i < 2 ? "search" : "ads" }));
    }
    await f.stateManager.updateWorkflow(ids[4]!, { action: WorkflowAction.CANCEL });
  });

  it("lists workflows newest first as protobuf JSON, without nodes", async () => {
    const { status, body } = await get("/api/workflows");
    expect(status).toBe(200);
    const names = body.workflows.map((w) => w.name);
    expect(names.slice(0, 5)).toEqual([
      "nightly-report-4",
      "ingest-3",
      "nightly-report-2",
      "ingest-1",
      "nightly-report-0",
    ]);
    const first = body.workflows[0]!;
    expect(first.status).toBe("WORKFLOW_STATUS_CANCELLED");
    expect(first.labels).toEqual({ team: "ads" });
    expect(first.nodes).toBeUndefined();
    expect(typeof first.createdAt).toBe("string");
  });

  it("filters by status, by name and by label", async () => {
    const cancelled = await get("/api/workflows?status=cancelled");
    expect(cancelled.body.workflows.map((w) => w.id)).toEqual([ids[4]]);
    const byName = await get("/api/workflows?q=NIGHTLY");
    expect(byName.body.workflows.map((w) => w.name)).toEqual([
      "nightly-report-4",
      "nightly-report-2",
      "nightly-report-0",
    ]);
    const byLabel = await get("/api/workflows?q=team%3Dsearch");
    expect(byLabel.body.workflows.map((w) => w.name)).toEqual(["ingest-1", "nightly-report-0"]);
    const both = await get("/api/workflows?q=nightly%20team%3Dads&status=pending");
    expect(both.body.workflows.map((w) => w.name)).toEqual(["nightly-report-2"]);
    const byId = await get(`/api/workflows?q=${ids[2]}`);
    expect(byId.body.workflows.map((w) => w.id)).toEqual([ids[2]]);
  });

  it("pages with page_token until next_page_token is empty", async () => {
    const seen: string[] = [];
    let token = "";
    do {
      const { body } = await get(`/api/workflows?page_size=2&page_token=${token}`);
      expect(body.workflows.length).toBeLessThanOrEqual(2);
      seen.push(...body.workflows.map((w) => w.id));
      token = body.nextPageToken ?? "";
    } while (token !== "");
    expect(seen.slice(0, 5)).toEqual([...ids].reverse());
    expect(new Set(seen).size).toBe(seen.length);
  });

  it("answers 400 with the typed error for a bad status, page size or token", async () => {
    for (const query of ["status=sleeping", "page_size=0", "page_token=garbage"]) {
      const { status, body } = await get(`/api/workflows?${query}`);
      expect(status).toBe(400);
      expect(body.error.code).toBe("INVALID_ARGUMENT");
    }
  });
});

describe("GET /api/workflows/:id and its nodes", () => {
  it("returns the workflow with every node", async () => {
    const id = await chain("with-nodes");
    const { status, body } = await get(`/api/workflows/${id}`);
    expect(status).toBe(200);
    expect(body.workflow.id).toBe(id);
    expect(body.workflow.nodes!.map((n) => [n.id, n.parentIds ?? []])).toEqual([
      ["a", []],
      ["b", ["a"]],
    ]);
    expect(body.workflow.nodes![0]!.status).toBe("NODE_STATUS_PENDING");
    expect(body.workflow.nodes![0]!.input).toEqual({ task: "a" });
  });

  it("returns one node with its output once it passed", async () => {
    const id = await chain("node-output");
    await passNode(f.stateManager, id, "a", fromJson(ValueSchema, { answer: 42 }));
    const { status, body } = await get(`/api/workflows/${id}/nodes/a`);
    expect(status).toBe(200);
    expect(body.node).toMatchObject({ id: "a", status: "NODE_STATUS_PASS", attempt: 1, output: { answer: 42 } });
    expect(typeof body.node.startedAt).toBe("string");
  });

  it("returns a node's ended attempts with what each spent, and the workflow's usage and budget", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "spending",
      budget: { tokens: 1_000_000 },
      nodes: [node("a"), node("b", ["a"])],
    });
    const started = await startNode(f.stateManager, workflow.id, "a");
    await f.stateManager.recordResult(workflow.id, "a", started.lease, {
      kind: "error",
      errorKind: ErrorKind.INFRA_ERROR,
      message: "connection reset",
      usage: { tokens: 10 },
    });
    const again = await startNode(f.stateManager, workflow.id, "a");
    await f.stateManager.recordResult(workflow.id, "a", again.lease, {
      kind: "success",
      output: undefined,
      edits: [],
      usage: { tokens: 1234, cost_usd: 0.0025 },
    });
    const { body } = await get(`/api/workflows/${workflow.id}/nodes/a`);
    expect(body.attempts!.map((a) => [a.attempt, a.status, a.usage])).toEqual([
      [1, "RETRY", { tokens: 10 }],
      [2, "PASS", { tokens: 1234, cost_usd: 0.0025 }],
    ]);
    expect(typeof body.attempts![1]!.finishedAt).toBe("string");
    expect((await get(`/api/workflows/${workflow.id}/nodes/b`)).body.attempts ?? []).toEqual([]);
    const shown = await get(`/api/workflows/${workflow.id}`);
    expect(shown.body.workflow.usage).toEqual({ tokens: 1244, cost_usd: 0.0025 });
    expect(shown.body.workflow.budget).toEqual({ tokens: 1_000_000 });
  });

  it("answers 404 for an unknown workflow or node and 400 for a malformed id", async () => {
    expect((await get(`/api/workflows/${UNKNOWN_ID}`)).status).toBe(404);
    const id = await chain("unknown-node");
    const missing = await get(`/api/workflows/${id}/nodes/nope`);
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("NOT_FOUND");
    const bad = await get("/api/workflows/not-a-uuid");
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/workflow_id/);
    expect((await get("/api/no-such-endpoint")).status).toBe(404);
  });
});

describe("GET /api/workflows/:id/events", () => {
  it("returns committed events after a sequence, in order", async () => {
    const id = await chain("events");
    await passNode(f.stateManager, id, "a");
    const all = await get(`/api/workflows/${id}/events`);
    const sequences = all.body.events.map((e) => Number(e.sequence));
    expect(sequences).toEqual(sequences.map((_: number, i: number) => i + 1));
    expect(all.body.events[0]!.type).toBe("workflow.created");
    const later = await get(`/api/workflows/${id}/events?after=2&limit=2`);
    expect(later.body.events.map((e) => Number(e.sequence))).toEqual([3, 4]);
    expect(later.body.events.some((e) => e.nodeId === "a")).toBe(true);
  });

  it("answers 404 for an unknown workflow and 400 for a bad sequence", async () => {
    expect((await get(`/api/workflows/${UNKNOWN_ID}/events`)).status).toBe(404);
    const id = await chain("events-bad");
    expect((await get(`/api/workflows/${id}/events?after=-1`)).status).toBe(400);
    expect((await get(`/api/workflows/${id}/events?limit=5000`)).status).toBe(400);
  });
});

describe("POST /api/workflows/:id/actions/:action", () => {
  it("pauses, resumes and cancels with the StateManager's rules", async () => {
    const id = await chain("actions");
    await queueNode(f.stateManager, id, "a");
    const paused = await post(`/api/workflows/${id}/actions/pause`);
    expect(paused.status).toBe(200);
    expect(paused.body.workflow.status).toBe("WORKFLOW_STATUS_PAUSED");
    const resumed = await post(`/api/workflows/${id}/actions/resume`);
    expect(resumed.body.workflow.status).toBe("WORKFLOW_STATUS_RUNNING");
    const again = await post(`/api/workflows/${id}/actions/resume`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("FAILED_PRECONDITION");
    const cancelled = await post(`/api/workflows/${id}/actions/cancel`);
    expect(cancelled.body.workflow.status).toBe("WORKFLOW_STATUS_CANCELLED");
    expect(cancelled.body.workflow.nodes!.map((n) => n.status)).toEqual([
      "NODE_STATUS_CANCELLED",
      "NODE_STATUS_CANCELLED",
    ]);
    expect(await f.stateManager.getWorkflowStatus(id)).toBe(WorkflowStatus.CANCELLED);
  });

  it("retries a failed workflow", async () => {
    const id = await chain("retry");
    const started = await startNode(f.stateManager, id, "a");
    await f.stateManager.recordResult(id, "a", started.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "boom",
    });
    expect(await f.stateManager.getWorkflowStatus(id)).toBe(WorkflowStatus.FAILED);
    const retried = await post(`/api/workflows/${id}/actions/retry`);
    expect(retried.status).toBe(200);
    expect(retried.body.workflow.status).toBe("WORKFLOW_STATUS_RUNNING");
    expect(retried.body.workflow.nodes!.map((n) => n.status)).toEqual(["NODE_STATUS_PENDING", "NODE_STATUS_PENDING"]);
  });

  it("refuses an unknown action, an unknown workflow and a cross-site request, changing nothing", async () => {
    const id = await chain("refused");
    expect((await post(`/api/workflows/${id}/actions/explode`)).status).toBe(400);
    expect((await post(`/api/workflows/${UNKNOWN_ID}/actions/cancel`)).status).toBe(404);
    const forged = await post(`/api/workflows/${id}/actions/cancel`, { origin: "https://evil.example" });
    expect(forged.status).toBe(403);
    const sameSite = await post(`/api/workflows/${id}/actions/pause`, { origin: f.baseUrl });
    expect(sameSite.status).toBe(200);
    expect(await f.stateManager.getWorkflowStatus(id)).toBe(WorkflowStatus.PAUSED);
  });
});

describe("POST /api/workflows/:id/fork", () => {
  it("re-runs from a node in a new workflow, keeping the others' outputs, with a new input when given", async () => {
    const id = await chain("fork-me");
    await passNode(f.stateManager, id, "a", fromJson(ValueSchema, { done: "a" }));
    const started = await startNode(f.stateManager, id, "b");
    await f.stateManager.recordResult(id, "b", started.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "boom",
    });
    const forked = await send("POST", `/api/workflows/${id}/fork`, {
      fromNodeIds: ["b"],
      inputs: { b: { fixed: true } },
    });
    expect(forked.status).toBe(200);
    const wf = forked.body.workflow;
    expect(wf.id).not.toBe(id);
    expect(wf.labels).toMatchObject({ forked_from: id });
    expect(wf.nodes!.map((n) => [n.id, n.status, n.output ?? null, n.input])).toEqual([
      ["a", "NODE_STATUS_PASS", { done: "a" }, { task: "a" }],
      ["b", "NODE_STATUS_PENDING", null, { fixed: true }],
    ]);
    expect(await f.stateManager.getWorkflowStatus(id)).toBe(WorkflowStatus.FAILED);
  });

  it("refuses unknown nodes, a bad body, an unknown workflow and a cross-site request, changing nothing", async () => {
    const id = await chain("fork-refused");
    const count = async () => (await f.stateManager.listWorkflows({ pageSize: 500 })).workflows.length;
    const before = await count();
    const cases: [unknown, number, string][] = [
      [{ fromNodeIds: ["a", "nope"] }, 400, "from_node_ids[1]"],
      [{ fromNodeIds: [] }, 400, "from_node_ids"],
      [{ fromNodeIds: ["a"], inputs: { zzz: {} } }, 400, 'inputs["zzz"]'],
      [{ fromNodeIds: ["a"], colour: "red" }, 400, "colour"],
      ["{not json", 400, "body"],
    ];
    for (const [body, status, field] of cases) {
      const answer = await send("POST", `/api/workflows/${id}/fork`, body);
      expect(answer.status, JSON.stringify(body)).toBe(status);
      expect(answer.body.error.message).toContain(field);
    }
    expect((await send("POST", `/api/workflows/${UNKNOWN_ID}/fork`, { fromNodeIds: ["a"] })).status).toBe(404);
    const forged = await send(
      "POST",
      `/api/workflows/${id}/fork`,
      { fromNodeIds: ["a"] },
      {
        origin: "https://evil.example",
      },
    );
    expect(forged.status).toBe(403);
    expect(await count()).toBe(before);
  });
});

describe("POST /api/workflows/:id/nodes/:nodeId/signal", () => {
  /** A workflow `approve` (a wait node) -> `act`, with `approve` WAITING. */
  async function waiting(name: string): Promise<string> {
    const { workflow } = await f.stateManager.createWorkflow({
      name,
      nodes: [create(NodeSchema, { id: "approve", capability: "", wait: {} }), node("act", ["approve"])],
    });
    await waitFor(
      async () => {
        await f.stateManager.claimReadyNodes(500);
        return (await f.stateManager.getNode(workflow.id, "approve")).status === NodeStatus.WAITING;
      },
      { timeoutMs: 5_000, description: "approve to be WAITING" },
    );
    return workflow.id;
  }

  it("approves a WAITING node: PASS with the output JSON, its child ready to run", async () => {
    const id = await waiting("signal-approve");
    const answer = await send("POST", `/api/workflows/${id}/nodes/approve/signal`, {
      output: { approved: true, note: "ship it" },
      requestId: "dash-1",
    });
    expect(answer.status).toBe(200);
    expect(answer.body.completed).toBe(true);
    expect(answer.body.node).toMatchObject({
      id: "approve",
      status: "NODE_STATUS_PASS",
      output: { approved: true, note: "ship it" },
    });
    // The same request again is answered alike, changing nothing.
    const again = await send("POST", `/api/workflows/${id}/nodes/approve/signal`, {
      output: { approved: true, note: "ship it" },
      requestId: "dash-1",
    });
    expect(again.status).toBe(200);
    expect(again.body.node.status).toBe("NODE_STATUS_PASS");
    await queueNode(f.stateManager, id, "act");
  });

  it("rejects a WAITING node: FAIL with TASK_ERROR and the message, the workflow FAILED", async () => {
    const id = await waiting("signal-reject");
    const answer = await send("POST", `/api/workflows/${id}/nodes/approve/signal`, {
      reject: true,
      message: "plan too expensive",
    });
    expect(answer.status).toBe(200);
    expect(answer.body.node).toMatchObject({
      status: "NODE_STATUS_FAIL",
      error: { kind: "ERROR_KIND_TASK_ERROR", message: "plan too expensive" },
    });
    expect(await f.stateManager.getWorkflowStatus(id)).toBe(WorkflowStatus.FAILED);
  });

  it("keeps a signal sent before the node is ready (completed false, the node still PENDING)", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "signal-early",
      nodes: [node("plan"), create(NodeSchema, { id: "approve", capability: "", parentIds: ["plan"], wait: {} })],
    });
    const answer = await send("POST", `/api/workflows/${workflow.id}/nodes/approve/signal`, { output: "yes" });
    expect(answer.status).toBe(200);
    expect(answer.body.completed).toBe(false);
    expect(answer.body.node.status).toBe("NODE_STATUS_PENDING");
  });

  it("refuses a node without wait, a missing node, a second different signal, bad bodies and cross-site requests", async () => {
    const id = await waiting("signal-refused");
    const path = `/api/workflows/${id}/nodes/approve/signal`;
    const cases: [string, unknown, number, string][] = [
      [`/api/workflows/${id}/nodes/act/signal`, {}, 409, "has no wait"],
      [`/api/workflows/${id}/nodes/nope/signal`, {}, 404, "nope"],
      [`/api/workflows/${UNKNOWN_ID}/nodes/approve/signal`, {}, 404, UNKNOWN_ID],
      [`/api/workflows/not-a-uuid/nodes/approve/signal`, {}, 400, "workflow_id"],
      [path, { reject: true, edits: [{ type: "EDIT_TYPE_DELETE", nodeId: "act" }] }, 400, "edits"],
      [path, { colour: "red" }, 400, "colour"],
      [path, { nodeId: "act" }, 400, "path"],
      [path, "{not json", 400, "body"],
      [path, { message: "x".repeat(16_385), reject: true }, 400, "message"],
    ];
    for (const [target, body, status, text] of cases) {
      const answer = await send("POST", target, body);
      expect(answer.status, `${target} ${JSON.stringify(body).slice(0, 80)}`).toBe(status);
      expect(answer.body.error.message).toContain(text);
    }
    const forged = await send("POST", path, { output: 1 }, { origin: "https://evil.example" });
    expect(forged.status).toBe(403);
    const crossSite = await send("POST", path, { output: 1 }, { "sec-fetch-site": "cross-site" });
    expect(crossSite.status).toBe(403);
    expect((await f.stateManager.getNode(id, "approve")).status).toBe(NodeStatus.WAITING);
    expect((await send("POST", path, { output: 1 })).body.node.status).toBe("NODE_STATUS_PASS");
    const second = await send("POST", path, { output: 2 });
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe("FAILED_PRECONDITION");
  });
});

describe("/api/limits", () => {
  it("sets a limit from protobuf JSON, lists it with what it holds, and deletes it", async () => {
    const set = await send("POST", "/api/limits", {
      limit: { key: "tenant:dash", rate: 100000, period: "60s", unit: "tokens" },
    });
    expect(set.status).toBe(200);
    expect(set.body.limit).toMatchObject({
      key: "tenant:dash",
      rate: 100000,
      period: "60s",
      burst: 100000,
      unit: "tokens",
      configured: true,
      throttledTotal: 0,
    });
    const listed = await get("/api/limits");
    expect(listed.body.limits.find((l) => l.key === "tenant:dash")).toMatchObject({ available: 100000 });

    const deleted = await send("DELETE", `/api/limits/${encodeURIComponent("tenant:dash")}`);
    expect(deleted.status).toBe(200);
    expect((await get("/api/limits")).body.limits.some((l) => l.key === "tenant:dash")).toBe(false);
    const gone = await send("DELETE", `/api/limits/${encodeURIComponent("tenant:dash")}`);
    expect(gone.status).toBe(404);
    expect(gone.body.error.code).toBe("NOT_FOUND");
  });

  it("shows the nodes a cap holds back: running and waiting per key, held_by on the node", async () => {
    await send("POST", "/api/limits", { limit: { key: "model:dash", maxConcurrency: 1 } });
    const limitKeys = ["model:dash"];
    const { workflow } = await f.stateManager.createWorkflow({
      name: "capped",
      nodes: [node("x", [], "echo", { limitKeys }), node("y", [], "echo", { limitKeys, priority: 3 })],
    });
    await waitFor(
      async () => {
        await f.stateManager.claimReadyNodes(500);
        const limit = (await get("/api/limits")).body.limits.find((l) => l.key === "model:dash");
        return limit?.running === 1 && limit.waiting === "1";
      },
      { timeoutMs: 5_000, description: "one node to hold model:dash and the other to wait" },
    );
    const nodes = (await get(`/api/workflows/${workflow.id}`)).body.workflow.nodes!;
    const held = nodes.filter((n) => n.heldBy === "model:dash");
    expect(held).toHaveLength(1);
    expect(held[0]!.status).toBe("NODE_STATUS_PENDING");
    expect(nodes.find((n) => n.id === "y")).toMatchObject({ priority: 3, limitKeys });
    await f.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    await f.stateManager.deleteLimit("model:dash");
  });

  it("refuses bad limits naming the field, malformed JSON and cross-site requests, changing nothing", async () => {
    const cases: [unknown, string][] = [
      [{ limit: { key: "k", maxConcurrency: 1, colour: "red" } }, "colour"],
      [{ limit: { key: "k", rate: 0.5 } }, "limit.burst"],
      [{ limit: { key: "k" } }, "max_concurrency, rate or both"],
      [{ limit: { key: "k\u0007", maxConcurrency: 1 } }, "limit.key"],
      [{ limit: { key: "k", maxConcurrency: -1 } }, "limit.max_concurrency"],
      [{}, "limit"],
      ["{not json", "body"],
    ];
    for (const [body, field] of cases) {
      const { status, body: answer } = await send("POST", "/api/limits", body);
      expect(status, JSON.stringify(body)).toBe(400);
      expect(answer.error.code).toBe("INVALID_ARGUMENT");
      expect(answer.error.message).toContain(field);
    }
    const forged = await send(
      "POST",
      "/api/limits",
      { limit: { key: "k", maxConcurrency: 1 } },
      {
        origin: "https://evil.example",
      },
    );
    expect(forged.status).toBe(403);
    const forgedDelete = await send("DELETE", "/api/limits/k", undefined, { origin: "https://evil.example" });
    expect(forgedDelete.status).toBe(403);
    expect((await get("/api/limits")).body.limits.some((l) => l.key === "k")).toBe(false);
  });
});

describe("GET /api/workflows/:id/stream (Server-Sent Events)", () => {
  it("replays a finished workflow's events with id = sequence, then sends end and closes", async () => {
    const id = await chain("sse-finished");
    await passNode(f.stateManager, id, "a");
    await passNode(f.stateManager, id, "b");
    const expected = (await f.stateManager.listEvents(id, 0)).map((e) => String(e.sequence));
    const response = await fetch(`${f.baseUrl}/api/workflows/${id}/stream`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const { frames, ended } = await readSse(response);
    expect(ended).toBe(true);
    const events = frames.filter((x) => x.event === "message");
    expect(events.map((x) => x.id)).toEqual(expected);
    expect(events.map((x) => JSON.parse(x.data).sequence)).toEqual(expected);
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({
      type: "workflow.status_changed",
      workflowStatus: "WORKFLOW_STATUS_SUCCEEDED",
    });
    expect(frames.at(-1)!.event).toBe("end");
  });

  it("follows live events after `after` and ends after the terminal event", async () => {
    const id = await chain("sse-live");
    const after = (await f.stateManager.listEvents(id, 0)).length;
    const response = await fetch(`${f.baseUrl}/api/workflows/${id}/stream?after=${after}`);
    const reading = readSse(response);
    await passNode(f.stateManager, id, "a");
    await passNode(f.stateManager, id, "b");
    const { frames, ended } = await reading;
    expect(ended).toBe(true);
    const events = frames.filter((x) => x.event === "message").map((x) => JSON.parse(x.data));
    expect(Number(events[0].sequence)).toBe(after + 1);
    expect(events.filter((e) => e.type === "node.status_changed").map((e) => `${e.nodeId}:${e.nodeStatus}`)).toEqual([
      "a:NODE_STATUS_QUEUED",
      "a:NODE_STATUS_RUNNING",
      "a:NODE_STATUS_PASS",
      "b:NODE_STATUS_QUEUED",
      "b:NODE_STATUS_RUNNING",
      "b:NODE_STATUS_PASS",
    ]);
  });

  it("resumes after Last-Event-ID, as a reconnecting EventSource asks", async () => {
    const id = await chain("sse-resume");
    await passNode(f.stateManager, id, "a");
    await passNode(f.stateManager, id, "b");
    const total = (await f.stateManager.listEvents(id, 0)).length;
    const response = await fetch(`${f.baseUrl}/api/workflows/${id}/stream?after=1`, {
      headers: { "last-event-id": String(total - 2) },
    });
    const { frames } = await readSse(response);
    expect(frames.filter((x) => x.event === "message").map((x) => Number(x.id))).toEqual([total - 1, total]);
  });

  it("sends heartbeat comments while nothing happens", async () => {
    const id = await chain("sse-heartbeat");
    const after = (await f.stateManager.listEvents(id, 0)).length;
    const controller = new AbortController();
    const response = await fetch(`${f.baseUrl}/api/workflows/${id}/stream?after=${after}`, {
      signal: controller.signal,
    });
    const { frames } = await readSse(response, (got) => got.filter((x) => x.comment === "heartbeat").length >= 2);
    expect(frames.filter((x) => x.event === "message")).toEqual([]);
    controller.abort();
  });

  it("stops following when the client disconnects", async () => {
    const id = await chain("sse-disconnect");
    const controller = new AbortController();
    const response = await fetch(`${f.baseUrl}/api/workflows/${id}/stream`, { signal: controller.signal });
    await readSse(response, (got) => got.some((x) => x.event === "message"));
    expect(f.app.openStreams()).toBeGreaterThan(0);
    controller.abort();
    await waitFor(() => f.app.openStreams() === 0, { description: "the stream to stop" });
  });

  it("answers 404 before streaming for an unknown workflow", async () => {
    const { status, body } = await get(`/api/workflows/${UNKNOWN_ID}/stream`);
    expect(status).toBe(404);
    expect(body.error.code).toBe("NOT_FOUND");
  });
});

describe("web UI and Bull Board", () => {
  it("serves the pages, their modules and the layout library", async () => {
    const list = await get("/");
    expect(list.status).toBe(200);
    expect(list.type).toMatch(/text\/html/);
    expect(list.text).toContain("/assets/js/list-page.js");
    const page = await get(`/workflows/${UNKNOWN_ID}`);
    expect(page.text).toContain("/assets/js/workflow-page.js");
    const limits = await get("/limits");
    expect(limits.type).toMatch(/text\/html/);
    expect(limits.text).toContain("/assets/js/limits-page.js");
    for (const asset of [
      "/assets/js/workflow-page.js",
      "/assets/js/dag-view.js",
      "/assets/js/limits-page.js",
      "/assets/css/dashboard.css",
    ]) {
      expect((await get(asset)).status).toBe(200);
    }
    const elk = await fetch(`${f.baseUrl}/assets/vendor/elk.js`);
    expect(elk.status).toBe(200);
    expect(await elk.text()).toContain("ELK");
    expect((await get("/assets/nope.js")).status).toBe(404);
  });

  it("shows a capability queue created after start in Bull Board without a restart", async () => {
    const redis = createRedis(f.redisUrl);
    const queues = new NodeQueues(redis, f.queuePrefix);
    try {
      await queues.enqueue([
        {
          workflowId: UNKNOWN_ID,
          nodeId: "x",
          capability: "web.search",
          jobId: `${UNKNOWN_ID}/x/1`,
          retryPolicy: DEFAULT_RETRY_POLICY,
        },
      ]);
      const names = await waitFor(
        async () => {
          const { body } = await get("/queues/api/queues?activeQueue=web.search&page=1&jobsPerPage=10");
          const found = (body.queues ?? []).map((q) => q.name);
          return found.includes("web.search") && found;
        },
        { description: "Bull Board to list the new queue" },
      );
      expect(names).toContain("web.search");
      expect((await get("/queues")).status).toBe(200);
    } finally {
      await queues.close();
      redis.disconnect();
    }
  });
});

describe("GET /metrics", () => {
  /** The value of `trellis_dashboard_http_requests_total` with these labels now (0 before the first). */
  async function requests(route: string, code: string): Promise<number> {
    const body = await (await fetch(`${f.baseUrl}/metrics`)).text();
    const line = body
      .split("\n")
      .find((l) =>
        l.startsWith(
          `trellis_dashboard_http_requests_total{route="${route}",method="GET",code="${code}",app="dashboard"}`,
        ),
      );
    return line === undefined ? 0 : Number(line.split(" ").at(-1));
  }

  it("counts the dashboard's requests by route, method and code", async () => {
    const before = [await requests("api", "200"), await requests("api", "404"), await requests("ui", "200")];
    expect((await fetch(`${f.baseUrl}/api/workflows`)).status).toBe(200);
    expect((await fetch(`${f.baseUrl}/api/workflows/${UNKNOWN_ID}`)).status).toBe(404);
    expect((await fetch(`${f.baseUrl}/`)).status).toBe(200);
    await waitFor(
      async () =>
        (await requests("api", "200")) === before[0]! + 1 &&
        (await requests("api", "404")) === before[1]! + 1 &&
        (await requests("ui", "200")) >= before[2]! + 1,
      { description: "the requests to be counted" },
    );
    // The side server's own routes are not the dashboard's requests, and no label holds an id.
    const text = await (await fetch(`${f.baseUrl}/metrics`)).text();
    expect(text).not.toContain(UNKNOWN_ID);
    expect(text).not.toContain("/metrics");
  });
});
