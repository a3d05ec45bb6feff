import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  DEFAULT_LIMITS,
} from "@trellis/core";
import {
  EditType,
  ErrorKind,
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowStatus,
  type Node,
  type Workflow,
} from "@trellis/proto";
import { createTestDatabase, type TestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NewEvent, PgStateManager, createDatabase, createPool } from "../src/index.js";
import { queueGenOfJobId } from "@trellis/queue";

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_db");
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await testDb.drop();
});

function node(id: string, parentIds: string[] = [], capability = "echo"): Node {
  return create(NodeSchema, { id, capability, parentIds, input: { id } });
}

function success(output: number) {
  return { kind: "success" as const, output: fromJson(ValueSchema, output), edits: [] };
}

async function counts(): Promise<{ workflows: number; nodes: number; edges: number; events: number }> {
  const r = await testDb.pool.query(`
    select (select count(*) from workflows)::int as workflows, (select count(*) from nodes)::int as nodes,
           (select count(*) from node_edges)::int as edges, (select count(*) from workflow_events)::int as events`);
  return r.rows[0];
}

async function eventSequences(workflowId: string): Promise<number[]> {
  const r = await testDb.pool.query("select sequence from workflow_events where workflow_id = $1 order by sequence", [
    workflowId,
  ]);
  return r.rows.map((row) => Number(row.sequence));
}

function expectGapFree(sequences: number[]): void {
  expect(sequences).toEqual(sequences.map((_, i) => i + 1));
}

async function diamond(name = "diamond"): Promise<Workflow> {
  const { workflow } = await sm.createWorkflow({
    name,
    nodes: [node("d", ["b", "c"]), node("b", ["a"]), node("c", ["a"]), node("a")],
  });
  return workflow;
}

/** Claims, starts and passes every ready node of `workflowId` until nothing is ready. */
async function runReady(workflowId: string): Promise<string[]> {
  const ran: string[] = [];
  for (;;) {
    const claimed = (await sm.claimReadyNodes(100)).filter((q) => q.workflowId === workflowId);
    if (claimed.length === 0) return ran;
    for (const q of claimed) {
      const started = await sm.startNode(q.workflowId, q.nodeId);
      expect(started).not.toBeNull();
      await sm.recordResult(q.workflowId, q.nodeId, started!.lease, {
        kind: "success",
        output: fromJson(ValueSchema, { ran: q.nodeId }),
        edits: [],
      });
      ran.push(q.nodeId);
    }
  }
}

describe("createWorkflow / getWorkflow", () => {
  it("stores the DAG and returns nodes in topological order with defaults applied", async () => {
    const wf = await diamond();
    expect(wf.status).toBe(WorkflowStatus.PENDING);
    const ids = wf.nodes.map((n) => n.id);
    expect(ids.indexOf("a")).toBeLessThan(ids.indexOf("b"));
    expect(ids.indexOf("b")).toBeLessThan(ids.indexOf("d"));
    expect(ids.indexOf("c")).toBeLessThan(ids.indexOf("d"));
    const d = wf.nodes.find((n) => n.id === "d")!;
    expect(d.name).toBe("d");
    expect(d.status).toBe(NodeStatus.PENDING);
    expect(d.parentIds).toEqual(["b", "c"]);
    expect(d.input).toEqual({ id: "d" });
    expect(d.workflowId).toBe(wf.id);
    const again = await sm.getWorkflow(wf.id);
    expect(again.nodes.map((n) => n.id)).toEqual(ids);
    expectGapFree(await eventSequences(wf.id));
  });

  it("answers CreateWorkflow with exactly what GetWorkflow reads back", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "as-stored",
      labels: { team: "x" },
      input: { topic: "graphs", n: 1.5, list: [1, "two", null], nested: { ok: true } },
      nodes: [
        create(NodeSchema, {
          id: "z-join",
          name: "Join",
          capability: "llm.chat",
          parentIds: ["m", "a"],
          labels: { k: "v" },
          retryPolicy: { maxAttempts: 5, initialBackoff: { seconds: 2n } },
          timeout: { seconds: 90n },
        }),
        node("m", ["a"]),
        node("a"),
        node("b"),
      ],
    });
    expect(workflow).toEqual(await sm.getWorkflow(workflow.id));
  });

  it("is idempotent on request_id", async () => {
    const first = await sm.createWorkflow({ name: "idem", nodes: [node("a")], requestId: "req-1" });
    const second = await sm.createWorkflow({ name: "other", nodes: [node("z")], requestId: "req-1" });
    expect(first.created).toBe(true);
    expect(second.created).toBe(false);
    expect(second.workflow.id).toBe(first.workflow.id);
    expect(second.workflow.nodes.map((n) => n.id)).toEqual(["a"]);
  });

  it("returns the same workflow to concurrent creates with one request_id", async () => {
    const results = await Promise.all(
      Array.from({ length: 5 }, () => sm.createWorkflow({ name: "race", nodes: [node("a")], requestId: "req-race" })),
    );
    expect(new Set(results.map((r) => r.workflow.id)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
  });

  it("rejects an invalid DAG with the field named and writes nothing", async () => {
    const before = await counts();
    await expect(sm.createWorkflow({ name: "bad", nodes: [node("a", ["ghost"])] })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(sm.createWorkflow({ name: "cycle", nodes: [node("a", ["b"]), node("b", ["a"])] })).rejects.toThrow(
      /cycle/,
    );
    await expect(sm.createWorkflow({ name: "bad", nodes: [node("a", ["ghost"])] })).rejects.toThrow(
      /nodes\[0\]\.parent_ids\[0\]/,
    );
    expect(await counts()).toEqual(before);
  });

  it("leaves nothing behind when the insert fails midway", async () => {
    const before = await counts();
    // A NUL character passes validation but PostgreSQL refuses it in text, failing the node insert.
    await expect(
      sm.createWorkflow({
        name: "nul",
        nodes: [node("a"), create(NodeSchema, { id: "b", capability: "echo", name: "x\u0000y" })],
      }),
    ).rejects.toThrow();
    expect(await counts()).toEqual(before);
  });

  it("enforces the node limit with RESOURCE_EXHAUSTED", async () => {
    const small = new PgStateManager(testDb.db, { limits: { ...DEFAULT_LIMITS, maxNodes: 2 } });
    await expect(small.createWorkflow({ name: "big", nodes: [node("a"), node("b"), node("c")] })).rejects.toThrow(
      ResourceExhaustedError,
    );
  });

  it("answers NOT_FOUND for an unknown workflow and INVALID_ARGUMENT for a malformed id", async () => {
    await expect(sm.getWorkflow(crypto.randomUUID())).rejects.toThrow(NotFoundError);
    await expect(sm.getWorkflow("nope")).rejects.toThrow(InvalidArgumentError);
  });

  it("round-trips a 10,000-node workflow", async () => {
    const many = Array.from({ length: 10_000 }, (_, i) => node(`n${i}`, i === 0 ? [] : [`n${Math.floor(i / 2)}`]));
    const { workflow } = await sm.createWorkflow({ name: "wide", nodes: many });
    expect(workflow.nodes).toHaveLength(10_000);
    const position = new Map(workflow.nodes.map((n, i) => [n.id, i]));
    for (const n of workflow.nodes)
      for (const p of n.parentIds) expect(position.get(p)!).toBeLessThan(position.get(n.id)!);
  });
});

describe("listWorkflows", () => {
  it("walks every page newest first without overlap or loss, with status and label filters", async () => {
    const created: string[] = [];
    for (let i = 0; i < 23; i++) {
      const { workflow } = await sm.createWorkflow({
        name: `page-${i}`,
        nodes: [node("a")],
        labels: { suite: "paging", parity: i % 2 === 0 ? "even" : "odd" },
      });
      created.push(workflow.id);
    }
    const seen: string[] = [];
    let token = "";
    do {
      const page = await sm.listWorkflows({ pageSize: 5, pageToken: token, labelSelector: { suite: "paging" } });
      expect(page.workflows.length).toBeLessThanOrEqual(5);
      for (const w of page.workflows) expect(w.nodes).toHaveLength(0);
      seen.push(...page.workflows.map((w) => w.id));
      token = page.nextPageToken;
    } while (token);
    expect(seen).toEqual([...created].reverse());

    const odd = await sm.listWorkflows({ pageSize: 500, labelSelector: { suite: "paging", parity: "odd" } });
    expect(odd.workflows).toHaveLength(11);
    await sm.updateWorkflow(created[0]!, { action: WorkflowAction.CANCEL });
    const cancelled = await sm.listWorkflows({
      pageSize: 500,
      status: WorkflowStatus.CANCELLED,
      labelSelector: { suite: "paging" },
    });
    expect(cancelled.workflows.map((w) => w.id)).toEqual([created[0]]);
  });

  it("rejects a forged page token and an out-of-range page size", async () => {
    await expect(sm.listWorkflows({ pageSize: 5, pageToken: "garbage" })).rejects.toThrow(/page_token/);
    await expect(sm.listWorkflows({ pageSize: 0 })).rejects.toThrow(/page_size/);
    await expect(sm.listWorkflows({ pageSize: 501 })).rejects.toThrow(/page_size/);
  });
});

describe("nodes and edits", () => {
  it("creates, reads and updates a node", async () => {
    const wf = await diamond("nodes");
    const created = await sm.createNode(wf.id, node("e", ["d"], "llm.mock"));
    expect(created.status).toBe(NodeStatus.PENDING);
    const updated = await sm.updateNode(wf.id, create(NodeSchema, { id: "e", capability: "web.search", name: "Eve" }), {
      paths: ["capability", "name"],
    } as never);
    expect(updated.capability).toBe("web.search");
    expect(updated.name).toBe("Eve");
    expect((await sm.getNode(wf.id, "e")).parentIds).toEqual(["d"]);
    await expect(sm.getNode(wf.id, "zzz")).rejects.toThrow(NotFoundError);
    expectGapFree(await eventSequences(wf.id));
  });

  it("applies a valid batch atomically and rejects an invalid one without any change", async () => {
    const wf = await diamond("edits");
    const after = await sm.applyNodeEdits(wf.id, [
      { type: EditType.INSERT, node: node("x", ["a"]) },
      { type: EditType.INSERT, node: node("y", ["x"]) },
      { type: EditType.UPDATE, node: node("d", ["b", "c", "y"]), updateMask: { paths: ["parent_ids"] } },
    ] as never);
    expect(after.nodes.map((n) => n.id)).toContain("y");
    expect(after.nodes.find((n) => n.id === "d")!.parentIds).toEqual(["b", "c", "y"]);

    const before = await counts();
    const snapshot = await sm.getWorkflow(wf.id);
    await expect(
      sm.applyNodeEdits(wf.id, [
        { type: EditType.INSERT, node: node("z", ["a"]) },
        { type: EditType.UPDATE, node: node("a", ["d"]), updateMask: { paths: ["parent_ids"] } },
      ] as never),
    ).rejects.toThrow(/cycle/);
    await expect(sm.applyNodeEdits(wf.id, [{ type: EditType.DELETE, nodeId: "x" }] as never)).rejects.toThrow(
      /still a parent/,
    );
    expect(await counts()).toEqual(before);
    expect(await sm.getWorkflow(wf.id)).toEqual(snapshot);
  });

  it("serialises concurrent batches: both valid batches apply, a conflicting one is rejected whole", async () => {
    const wf = await diamond("concurrent");
    const results = await Promise.allSettled([
      sm.applyNodeEdits(wf.id, [{ type: EditType.INSERT, node: node("p1", ["a"]) }] as never),
      sm.applyNodeEdits(wf.id, [{ type: EditType.INSERT, node: node("p2", ["a"]) }] as never),
    ]);
    expect(results.every((r) => r.status === "fulfilled")).toBe(true);
    // Both insert "q": exactly one wins, the other is rejected with nothing half-applied.
    const conflict = await Promise.allSettled([
      sm.applyNodeEdits(wf.id, [
        { type: EditType.INSERT, node: node("q", ["p1"]) },
        { type: EditType.INSERT, node: node("only-first", ["q"]) },
      ] as never),
      sm.applyNodeEdits(wf.id, [
        { type: EditType.INSERT, node: node("q", ["p2"]) },
        { type: EditType.INSERT, node: node("only-second", ["q"]) },
      ] as never),
    ]);
    expect(conflict.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const ids = (await sm.getWorkflow(wf.id)).nodes.map((n) => n.id);
    expect(ids.includes("only-first") !== ids.includes("only-second")).toBe(true);
    expectGapFree(await eventSequences(wf.id));
  });

  it("refuses to edit a RUNNING node or a finished workflow", async () => {
    const { workflow } = await sm.createWorkflow({ name: "running-edit", nodes: [node("a"), node("b", ["a"])] });
    const claimed = (await sm.claimReadyNodes(1000)).find((q) => q.workflowId === workflow.id)!;
    await sm.startNode(workflow.id, claimed.nodeId);
    await expect(
      sm.updateNode(workflow.id, node("a", [], "other"), { paths: ["capability"] } as never),
    ).rejects.toThrow(FailedPreconditionError);
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    await expect(sm.createNode(workflow.id, node("c"))).rejects.toThrow(FailedPreconditionError);
  });
});

describe("claiming, running and recording", () => {
  it("runs a diamond in order and finishes the workflow SUCCEEDED with gap-free events", async () => {
    const wf = await diamond("run");
    const ran = await runReady(wf.id);
    expect(ran[0]).toBe("a");
    expect(ran[ran.length - 1]).toBe("d");
    const done = await sm.getWorkflow(wf.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done.finishedAt).toBeDefined();
    expect(done.nodes.every((n) => n.status === NodeStatus.PASS && n.attempt === 1)).toBe(true);
    expectGapFree(await eventSequences(wf.id));
  });

  it("hands a node its parents' outputs and the workflow input", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "outputs",
      nodes: [node("a"), node("b", ["a"])],
      input: { topic: "x" },
    });
    const [a] = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
    const startedA = await sm.startNode(workflow.id, a!.nodeId);
    await sm.recordResult(workflow.id, "a", startedA!.lease, {
      kind: "success",
      output: fromJson(ValueSchema, { answer: 42 }),
      edits: [],
    });
    const [b] = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
    const startedB = await sm.startNode(workflow.id, b!.nodeId);
    expect(startedB!.workflowInput).toEqual({ topic: "x" });
    expect(Object.keys(startedB!.parentOutputs)).toEqual(["a"]);
    expect(startedB!.node.status).toBe(NodeStatus.RUNNING);
    expect(startedB!.attempt).toBe(1);
  });

  it("writes the documented events along the hot path (claim, start, pass with dispatch, settle) and hands them to onEvents", async () => {
    const observed: NewEvent[] = [];
    const watched = new PgStateManager(testDb.db, { onEvents: (events) => observed.push(...events) });
    const { workflow } = await watched.createWorkflow({ name: "hot-path", nodes: [node("a"), node("b", ["a"])] });
    const [a] = (await watched.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
    const startedA = await watched.startNode(workflow.id, a!.nodeId);
    const recorded = await watched.recordResults(
      [{ workflowId: workflow.id, nodeId: "a", lease: startedA!.lease, result: success(1) }],
      { dispatch: true },
    );
    expect(recorded.dispatched.map((q) => q.nodeId)).toEqual(["b"]);
    const startedB = await watched.startNode(workflow.id, "b");
    await watched.recordResults([{ workflowId: workflow.id, nodeId: "b", lease: startedB!.lease, result: success(2) }]);
    const stored = (await watched.listEvents(workflow.id, 0)).map((e) => ({
      seq: Number(e.sequence),
      type: e.type,
      node: e.nodeId,
      wf: WorkflowStatus[e.workflowStatus],
      status: NodeStatus[e.nodeStatus],
      data: e.data,
    }));
    const cap = { capability: "echo" };
    expect(stored).toEqual([
      { seq: 1, type: "workflow.created", node: "", wf: "PENDING", status: "UNSPECIFIED", data: { nodeCount: 2 } },
      {
        seq: 2,
        type: "workflow.status_changed",
        node: "",
        wf: "RUNNING",
        status: "UNSPECIFIED",
        data: { from: "PENDING" },
      },
      {
        seq: 3,
        type: "node.status_changed",
        node: "a",
        wf: "RUNNING",
        status: "QUEUED",
        data: { from: "PENDING", ...cap },
      },
      {
        seq: 4,
        type: "node.status_changed",
        node: "a",
        wf: "RUNNING",
        status: "RUNNING",
        data: { from: "QUEUED", attempt: 1, ...cap },
      },
      {
        seq: 5,
        type: "node.status_changed",
        node: "a",
        wf: "RUNNING",
        status: "PASS",
        data: { from: "RUNNING", attempt: 1, ...cap },
      },
      {
        seq: 6,
        type: "node.status_changed",
        node: "b",
        wf: "RUNNING",
        status: "QUEUED",
        data: { from: "PENDING", ...cap },
      },
      {
        seq: 7,
        type: "node.status_changed",
        node: "b",
        wf: "RUNNING",
        status: "RUNNING",
        data: { from: "QUEUED", attempt: 1, ...cap },
      },
      {
        seq: 8,
        type: "node.status_changed",
        node: "b",
        wf: "RUNNING",
        status: "PASS",
        data: { from: "RUNNING", attempt: 1, ...cap },
      },
      {
        seq: 9,
        type: "workflow.status_changed",
        node: "",
        wf: "SUCCEEDED",
        status: "UNSPECIFIED",
        data: { from: "RUNNING" },
      },
    ]);
    // What the hooks (log lines, metrics) saw is what was stored, once each, in order.
    expect(
      observed.filter((e) => e.workflowId === workflow.id).map((e) => [e.sequence, e.type, e.nodeId ?? ""]),
    ).toEqual(stored.map((e) => [e.seq, e.type, e.node]));
    expect((await watched.getWorkflow(workflow.id)).finishedAt).toBeDefined();
  });

  it("notifies trellis_events with the last sequence of every claim, start and result", async () => {
    const listener = await testDb.pool.connect();
    const payloads: string[] = [];
    listener.on("notification", (n) => {
      if (n.channel === "trellis_events" && n.payload) payloads.push(n.payload);
    });
    try {
      await listener.query("listen trellis_events");
      const { workflow } = await sm.createWorkflow({ name: "notify", nodes: [node("a")] });
      const [claimed] = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
      const last = async () => Number((await eventSequences(workflow.id)).at(-1));
      const afterClaim = await last();
      await waitFor(() => payloads.includes(`${workflow.id}:${afterClaim}`), { description: "the claim's NOTIFY" });
      const started = await sm.startNode(workflow.id, claimed!.nodeId);
      const afterStart = await last();
      await waitFor(() => payloads.includes(`${workflow.id}:${afterStart}`), { description: "the start's NOTIFY" });
      await sm.recordResult(workflow.id, "a", started!.lease, {
        kind: "success",
        output: fromJson(ValueSchema, 1),
        edits: [],
      });
      const afterPass = await last();
      expect(afterPass).toBeGreaterThan(afterStart);
      await waitFor(() => payloads.includes(`${workflow.id}:${afterPass}`), { description: "the result's NOTIFY" });
    } finally {
      listener.release();
    }
  });

  it("starts a node only from a job of its current queue generation", async () => {
    const { workflow } = await sm.createWorkflow({ name: "queue-gen", nodes: [node("a")] });
    const [claimed] = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
    const oldGen = queueGenOfJobId(claimed!.jobId)!;
    // The reconciler found the job lost and gave the node a new one (a new generation).
    const [requeued] = await sm.requeueNodes([claimed!]);
    const newGen = queueGenOfJobId(requeued!.jobId)!;
    expect(newGen).toBe(oldGen + 1);
    const [stale] = await sm.startNodes([{ workflowId: workflow.id, nodeId: "a", queueGen: oldGen }]);
    expect(stale).toBeNull();
    expect((await sm.getNode(workflow.id, "a")).status).toBe(NodeStatus.QUEUED);
    const [current] = await sm.startNodes([{ workflowId: workflow.id, nodeId: "a", queueGen: newGen }]);
    expect(current?.attempt).toBe(1);
  });

  it("never hands the same node to two concurrent claimers", async () => {
    const many = Array.from({ length: 300 }, (_, i) => node(`n${i}`));
    const { workflow } = await sm.createWorkflow({ name: "claim-race", nodes: many });
    const other = createPool(testDb.url, { max: 4 });
    const sm2 = new PgStateManager(createDatabase(other));
    try {
      const claimedBy = await Promise.all(
        [sm, sm2, sm, sm2].map(async (m) => {
          const got: string[] = [];
          for (;;) {
            const batch = (await m.claimReadyNodes(25)).filter((q) => q.workflowId === workflow.id);
            if (batch.length === 0) return got;
            got.push(...batch.map((q) => q.nodeId));
          }
        }),
      );
      const all = claimedBy.flat();
      expect(all).toHaveLength(300);
      expect(new Set(all).size).toBe(300);
      expectGapFree(await eventSequences(workflow.id));
    } finally {
      await other.end();
    }
  });

  it("fails a node on TASK_ERROR, skips its descendants and lets an independent branch finish", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "fail",
      nodes: [node("bad"), node("child", ["bad"]), node("grandchild", ["child"]), node("solo")],
    });
    const claimed = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
    expect(claimed.map((q) => q.nodeId).sort()).toEqual(["bad", "solo"]);
    const bad = await sm.startNode(workflow.id, "bad");
    const solo = await sm.startNode(workflow.id, "solo");
    const failed = await sm.recordResult(workflow.id, "bad", bad!.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "nope",
    });
    expect(failed).toMatchObject({ outcome: "failed", workflowStatus: WorkflowStatus.RUNNING });
    const mid = await sm.getWorkflow(workflow.id);
    expect(mid.nodes.find((n) => n.id === "grandchild")!.status).toBe(NodeStatus.SKIPPED);
    const passed = await sm.recordResult(workflow.id, "solo", solo!.lease, {
      kind: "success",
      output: undefined,
      edits: [],
    });
    expect(passed).toMatchObject({ outcome: "passed", workflowStatus: WorkflowStatus.FAILED });
    const end = await sm.getWorkflow(workflow.id);
    expect(end.nodes.find((n) => n.id === "bad")!.error).toMatchObject({ kind: ErrorKind.TASK_ERROR, message: "nope" });

    // RETRY re-opens only the failed node and what it skipped.
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.RETRY });
    const ran = await runReady(workflow.id);
    expect(ran).toEqual(["bad", "child", "grandchild"]);
    expect((await sm.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    expectGapFree(await eventSequences(workflow.id));
  });

  it("schedules retries for INFRA_ERROR up to max_attempts, then fails with INFRA_ERROR", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "retry",
      nodes: [create(NodeSchema, { id: "f", capability: "flaky", retryPolicy: { maxAttempts: 2 } })],
    });
    await sm.claimReadyNodes(1000);
    const first = await sm.startNode(workflow.id, "f");
    const r1 = await sm.recordResult(workflow.id, "f", first!.lease, {
      kind: "error",
      errorKind: ErrorKind.INFRA_ERROR,
      message: "unavailable",
    });
    expect(r1).toEqual({ outcome: "retry", delayMs: 1000, attempt: 1 });
    expect((await sm.getNode(workflow.id, "f")).status).toBe(NodeStatus.QUEUED);
    const second = await sm.startNode(workflow.id, "f");
    expect(second!.attempt).toBe(2);
    const r2 = await sm.recordResult(workflow.id, "f", second!.lease, {
      kind: "error",
      errorKind: ErrorKind.INFRA_ERROR,
      message: "unavailable",
    });
    expect(r2).toMatchObject({ outcome: "failed", errorKind: ErrorKind.INFRA_ERROR });
    expect((await sm.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.FAILED);
  });

  it("records a result exactly once: a stale lease or a duplicate changes nothing", async () => {
    const { workflow } = await sm.createWorkflow({ name: "stale", nodes: [node("a")] });
    await sm.claimReadyNodes(1000);
    const started = await sm.startNode(workflow.id, "a");
    expect(await sm.startNode(workflow.id, "a")).toBeNull();
    const ok = await sm.recordResult(workflow.id, "a", started!.lease, {
      kind: "success",
      output: undefined,
      edits: [],
    });
    expect(ok.outcome).toBe("passed");
    const before = await eventSequences(workflow.id);
    const dup = await sm.recordResult(workflow.id, "a", started!.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "late",
    });
    expect(dup).toEqual({ outcome: "stale" });
    expect(
      await sm.recordResult(workflow.id, "a", crypto.randomUUID(), { kind: "success", output: undefined, edits: [] }),
    ).toEqual({
      outcome: "stale",
    });
    expect(await eventSequences(workflow.id)).toEqual(before);
    expect((await sm.getNode(workflow.id, "a")).status).toBe(NodeStatus.PASS);
  });

  it("applies a planner's edits with its PASS, and fails it on invalid edits with nothing applied", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "planner",
      nodes: [node("plan", [], "plan"), node("join", ["plan"])],
    });
    await sm.claimReadyNodes(1000);
    const p = await sm.startNode(workflow.id, "plan");
    await sm.recordResult(workflow.id, "plan", p!.lease, {
      kind: "success",
      output: undefined,
      edits: [
        { type: EditType.INSERT, node: node("t1", ["plan"]) },
        { type: EditType.INSERT, node: node("t2", ["plan"]) },
        { type: EditType.UPDATE, node: node("join", ["plan", "t1", "t2"]), updateMask: { paths: ["parent_ids"] } },
      ] as never,
    });
    const claimed = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id).map((q) => q.nodeId);
    expect(claimed.sort()).toEqual(["t1", "t2"]);
    expect((await sm.getNode(workflow.id, "join")).parentIds).toEqual(["plan", "t1", "t2"]);

    const { workflow: wf2 } = await sm.createWorkflow({ name: "bad-planner", nodes: [node("plan", [], "plan")] });
    await sm.claimReadyNodes(1000);
    const p2 = await sm.startNode(wf2.id, "plan");
    const outcome = await sm.recordResult(wf2.id, "plan", p2!.lease, {
      kind: "success",
      output: undefined,
      edits: [{ type: EditType.INSERT, node: node("t1", ["ghost"]) }] as never,
    });
    expect(outcome).toMatchObject({ outcome: "failed", errorKind: ErrorKind.TASK_ERROR });
    const after = await sm.getWorkflow(wf2.id);
    expect(after.nodes.map((n) => n.id)).toEqual(["plan"]);
    expect(after.nodes[0]!.error?.message).toMatch(/invalid edits: .*unknown node "ghost"/);
  });

  it("pauses (queued nodes return to PENDING), resumes and cancels with the right effects", async () => {
    const { workflow } = await sm.createWorkflow({ name: "control", nodes: [node("a"), node("b"), node("c", ["a"])] });
    await sm.claimReadyNodes(1000);
    const running = await sm.startNode(workflow.id, "a");
    const paused = await sm.updateWorkflow(workflow.id, { action: WorkflowAction.PAUSE });
    expect(paused.workflow.status).toBe(WorkflowStatus.PAUSED);
    expect(paused.removedJobIds.map((j) => j.jobId)).toEqual([`${workflow.id}/b/1`]);
    expect((await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id)).toHaveLength(0);
    await expect(sm.updateWorkflow(workflow.id, { action: WorkflowAction.PAUSE })).rejects.toThrow(
      FailedPreconditionError,
    );
    const resumed = await sm.updateWorkflow(workflow.id, { action: WorkflowAction.RESUME });
    expect(resumed.workflow.status).toBe(WorkflowStatus.RUNNING);
    const requeued = (await sm.claimReadyNodes(1000)).filter((q) => q.workflowId === workflow.id);
    expect(requeued.map((q) => [q.nodeId, q.jobId])).toEqual([["b", `${workflow.id}/b/2`]]);
    const cancelled = await sm.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    expect(cancelled.workflow.status).toBe(WorkflowStatus.CANCELLED);
    expect(cancelled.cancelledRunning).toEqual([{ nodeId: "a" }]);
    expect(cancelled.workflow.nodes.every((n) => n.status === NodeStatus.CANCELLED)).toBe(true);
    expect(
      await sm.recordResult(workflow.id, "a", running!.lease, { kind: "success", output: undefined, edits: [] }),
    ).toEqual({ outcome: "stale" });
    expectGapFree(await eventSequences(workflow.id));
  });

  it("reports the held leases that are lost without writing anything", async () => {
    const { workflow } = await sm.createWorkflow({ name: "leases", nodes: [node("a"), node("b")] });
    await sm.claimReadyNodes(1000);
    const a = await sm.startNode(workflow.id, "a");
    const b = await sm.startNode(workflow.id, "b");
    await sm.recordResult(workflow.id, "b", b!.lease, { kind: "success", output: undefined, edits: [] });
    const before = await testDb.pool.query("select xmin::text from nodes where workflow_id = $1 order by id", [
      workflow.id,
    ]);
    const lost = await sm.lostLeases([
      { workflowId: workflow.id, nodeId: "a", lease: a!.lease },
      { workflowId: workflow.id, nodeId: "b", lease: b!.lease },
    ]);
    expect(lost.map((l) => l.nodeId)).toEqual(["b"]);
    const after = await testDb.pool.query("select xmin::text from nodes where workflow_id = $1 order by id", [
      workflow.id,
    ]);
    expect(after.rows).toEqual(before.rows);
  });

  it("gives a lost worker's running nodes back (new job, attempt counted) and leaves a live worker's alone", async () => {
    const { workflow } = await sm.createWorkflow({ name: "liveness", nodes: [node("a"), node("b"), node("c")] });
    const claimed = await sm.claimReadyNodes(1000);
    const live = await sm.registerWorker(`live-${workflow.id}`, ["echo"], "host");
    const dying = await sm.registerWorker(`dying-${workflow.id}`, ["echo"], "host");
    await sm.startNode(workflow.id, "a", live);
    await sm.startNode(workflow.id, "b", dying);
    await sm.startNode(workflow.id, "c", null);
    // Every worker is alive: nothing is lost, however long the nodes run.
    expect(await sm.requeueLostNodes(60_000, 100)).toEqual([]);
    // The dying worker's heartbeat lapses (made old here instead of waiting for it).
    await testDb.pool.query("update workers set heartbeat_at = now() - interval '1 hour' where session = $1", [dying]);
    const lost = await sm.requeueLostNodes(60_000, 100);
    expect(lost.map((n) => n.nodeId)).toEqual(["b"]);
    const oldJob = claimed.find((n) => n.nodeId === "b")!.jobId;
    expect(queueGenOfJobId(lost[0]!.jobId)).toBe(queueGenOfJobId(oldJob)! + 1);
    expect(lost[0]!.delayMs).toBeGreaterThan(0);
    const got = await sm.getWorkflow(workflow.id);
    const statusOf = (id: string) => got.nodes.find((n) => n.id === id)!.status;
    expect([statusOf("a"), statusOf("b"), statusOf("c")]).toEqual([
      NodeStatus.RUNNING,
      NodeStatus.QUEUED,
      NodeStatus.RUNNING,
    ]);
    expect(got.nodes.find((n) => n.id === "b")!.error?.message).toMatch(/worker lost at attempt 1/);
    // The dead session is gone for good: its heartbeat says so, and the worker registers anew.
    expect(await sm.heartbeatWorker(`dying-${workflow.id}`, dying)).toBe(false);
    expect(await sm.heartbeatWorker(`live-${workflow.id}`, live)).toBe(true);
    const again = await sm.registerWorker(`dying-${workflow.id}`, ["echo"], "host");
    expect(again).not.toBe(dying);
    // A worker that shut down with a node still running loses it at once.
    await sm.removeWorker(`live-${workflow.id}`, live);
    expect((await sm.requeueLostNodes(60_000, 100)).map((n) => n.nodeId)).toEqual(["a"]);
    expectGapFree(await eventSequences(workflow.id));
  });

  it("lists a session's running nodes and releases them under new jobs; a stale lease changes nothing", async () => {
    const { workflow } = await sm.createWorkflow({ name: "release", nodes: [node("a"), node("b")] });
    const claimed = await sm.claimReadyNodes(1000);
    const session = await sm.registerWorker(`release-${workflow.id}`, ["echo"], "host");
    const a = await sm.startNode(workflow.id, "a", session);
    await sm.startNode(workflow.id, "b", null);
    const running = await sm.runningOf(session, 0);
    expect(running).toEqual([{ workflowId: workflow.id, nodeId: "a", lease: a!.lease }]);
    expect(await sm.runningOf(session, 60_000)).toEqual([]);
    const queued = await sm.releaseNodes(running, "could not record");
    expect(queued.map((q) => q.nodeId)).toEqual(["a"]);
    const oldJob = claimed.find((n) => n.workflowId === workflow.id && n.nodeId === "a")!.jobId;
    expect(queueGenOfJobId(queued[0]!.jobId)).toBe(queueGenOfJobId(oldJob)! + 1);
    expect(await sm.releaseNodes(running, "again")).toEqual([]);
    const got = await sm.getNode(workflow.id, "a");
    expect(got.status).toBe(NodeStatus.QUEUED);
    expect(got.error?.message).toBe("could not record");
  });

  it("hands each locally started child to the result it was started for, of that result's capability", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "local-start",
      nodes: [node("p1", [], "a"), node("p2", [], "b"), node("a1", ["p1", "p2"], "b"), node("b1", ["p1"], "a")],
    });
    const session = await sm.registerWorker(`local-${workflow.id}`, ["a", "b"], "host");
    await sm.claimReadyNodes(1000);
    const [p1, p2] = await sm.startNodes(
      [
        { workflowId: workflow.id, nodeId: "p1" },
        { workflowId: workflow.id, nodeId: "p2" },
      ],
      session,
    );
    const passed = { kind: "success" as const, output: undefined, edits: [] };
    const { outcomes, started, dispatched } = await sm.recordResults(
      [
        { workflowId: workflow.id, nodeId: "p1", lease: p1!.lease, result: passed, startLocal: true },
        { workflowId: workflow.id, nodeId: "p2", lease: p2!.lease, result: passed, startLocal: true },
      ],
      { dispatch: true, workerSession: session, capabilities: ["a", "b"] },
    );
    expect(outcomes.map((o) => o.outcome)).toEqual(["passed", "passed"]);
    expect(started.map((n) => n?.node.id)).toEqual(["b1", "a1"]);
    expect(started.map((n) => n?.node.capability)).toEqual(["a", "b"]);
    expect(dispatched).toEqual([]);
    // Without a worker session nothing is started locally: the children are queued for their jobs.
    const { workflow: other } = await sm.createWorkflow({ name: "no-session", nodes: [node("p"), node("c", ["p"])] });
    await sm.claimReadyNodes(1000);
    const p = await sm.startNode(other.id, "p");
    const recorded = await sm.recordResults(
      [{ workflowId: other.id, nodeId: "p", lease: p!.lease, result: passed, startLocal: true }],
      { dispatch: true, capabilities: ["echo"] },
    );
    expect(recorded.started).toEqual([null]);
    expect(recorded.dispatched.map((n) => n.nodeId)).toEqual(["c"]);
  });

  it("starts a node asked for by two jobs in one batch for the job of its current queue generation", async () => {
    const { workflow } = await sm.createWorkflow({ name: "two-jobs", nodes: [node("a")] });
    const [claimed] = (await sm.claimReadyNodes(1000)).filter((n) => n.workflowId === workflow.id);
    const [requeued] = await testDb.pool
      .query("update nodes set queue_gen = queue_gen + 1 where workflow_id = $1 returning queue_gen", [workflow.id])
      .then((r) => r.rows as { queue_gen: number }[]);
    const oldGen = queueGenOfJobId(claimed!.jobId)!;
    const results = await sm.startNodes([
      { workflowId: workflow.id, nodeId: "a", queueGen: oldGen },
      { workflowId: workflow.id, nodeId: "a", queueGen: requeued!.queue_gen },
    ]);
    expect(results.map((r) => r !== null)).toEqual([false, true]);
  });

  it("lists committed events after a sequence, in order", async () => {
    const wf = await diamond("events");
    await runReady(wf.id);
    const all = await sm.listEvents(wf.id, 0);
    expect(all[0]!.type).toBe("workflow.created");
    expect(all[all.length - 1]!.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    const tail = await sm.listEvents(wf.id, 3);
    expect(tail.map((e) => Number(e.sequence))).toEqual(all.slice(3).map((e) => Number(e.sequence)));
  });
});
