import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ErrorKind, NodeSchema, WorkflowStatus, type Node } from "@trellis/proto";
import { FAULT_TIMINGS, checkInvariants, createTestDatabase, type TestDatabase } from "@trellis/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager, type NodeResult, type QueuedNode, type StartedNode } from "../src/index.js";

// Flow control in PostgreSQL (libs/db/sql/040_claim.sql and the functions it names): what the claim queues and
// holds, what a THROTTLED answer pauses, and what usage and budgets do. Time is moved by editing the rows' clocks
// (refilled_at, throttled_until), never by waiting.

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_flow");
  sm = new PgStateManager(testDb.db);
});

afterEach(async () => {
  await testDb.pool.query("truncate workflows cascade; delete from limits");
});

afterAll(async () => {
  await testDb.drop();
});

function node(id: string, capability: string, parentIds: string[] = []): Node {
  return create(NodeSchema, { id, capability, parentIds, input: { id } });
}

const success = (output: number, usage?: Record<string, number>): NodeResult => ({
  kind: "success",
  output: fromJson(ValueSchema, output),
  edits: [],
  ...(usage ? { usage } : {}),
});

/** A workflow of `count` independent nodes n0..n{count-1}; keys and priorities set on the stored rows. */
async function independent(
  count: number,
  capability: string,
  options: { keys?: string[]; priorities?: number[]; budget?: Record<string, number> } = {},
): Promise<string> {
  const { workflow } = await sm.createWorkflow({
    name: "flow",
    nodes: Array.from({ length: count }, (_, i) => node(`n${i}`, capability)),
  });
  if (options.keys) {
    await testDb.pool.query("update nodes set limit_keys = $2 where workflow_id = $1", [workflow.id, options.keys]);
  }
  for (const [i, priority] of (options.priorities ?? []).entries()) {
    await testDb.pool.query("update nodes set priority = $3 where workflow_id = $1 and id = $2", [
      workflow.id,
      `n${i}`,
      priority,
    ]);
  }
  if (options.budget) {
    await testDb.pool.query("update workflows set budget = $2 where id = $1", [workflow.id, options.budget]);
  }
  return workflow.id;
}

async function setLimit(
  key: string,
  limit: { maxConcurrency?: number; rate?: number; periodMs?: number; burst?: number; unit?: string },
): Promise<void> {
  const burst = limit.burst ?? limit.rate ?? 0;
  await testDb.pool.query(
    `insert into limits (key, max_concurrency, rate, period_ms, burst, unit, tokens)
     values ($1, $2, $3, $4, $5, $6, $5)`,
    [key, limit.maxConcurrency ?? 0, limit.rate ?? 0, limit.periodMs ?? 1000, burst, limit.unit ?? ""],
  );
}

async function claimAll(): Promise<QueuedNode[]> {
  return sm.claimReadyNodes(500);
}

async function statuses(workflowId: string): Promise<Record<string, { status: string; heldBy: string | null }>> {
  const { rows } = await testDb.pool.query<{ id: string; status: string; held_by: string | null }>(
    "select id, status, held_by from nodes where workflow_id = $1 order by id",
    [workflowId],
  );
  return Object.fromEntries(rows.map((r) => [r.id, { status: r.status, heldBy: r.held_by }]));
}

async function eventsOf(
  workflowId: string,
  type: string,
): Promise<{ node_id: string; data: Record<string, unknown> }[]> {
  const { rows } = await testDb.pool.query(
    "select node_id, data from workflow_events where workflow_id = $1 and type = $2 order by sequence",
    [workflowId, type],
  );
  return rows;
}

async function startAndPass(q: QueuedNode, usage?: Record<string, number>): Promise<StartedNode> {
  const started = await sm.startNode(q.workflowId, q.nodeId);
  expect(started).not.toBeNull();
  expect(await sm.recordResult(q.workflowId, q.nodeId, started!.lease, success(1, usage))).toMatchObject({
    outcome: "passed",
  });
  return started!;
}

describe("concurrency caps", () => {
  it("queues no more nodes holding a key than its cap, holds the rest PENDING with one node.held event each", async () => {
    const wf = await independent(10, "cap.a", { keys: ["model:x"] });
    await setLimit("model:x", { maxConcurrency: 3 });
    const first = await claimAll();
    expect(first).toHaveLength(3);
    const held = Object.values(await statuses(wf)).filter((s) => s.status === "PENDING");
    expect(held).toHaveLength(7);
    expect(held.every((s) => s.heldBy === "model:x")).toBe(true);
    expect(await claimAll()).toHaveLength(0);
    const events = await eventsOf(wf, "node.held");
    expect(events).toHaveLength(7);
    expect(events[0]!.data).toEqual({ key: "model:x", reason: "concurrency" });
    // A QUEUED node holds its slot until it ends: starting it frees nothing, its PASS frees one.
    const started = await sm.startNode(first[0]!.workflowId, first[0]!.nodeId);
    expect(await claimAll()).toHaveLength(0);
    await sm.recordResult(wf, first[0]!.nodeId, started!.lease, success(1));
    expect(await claimAll()).toHaveLength(1);
    // Held again by the same key: no second node.held event for the same nodes.
    expect(await eventsOf(wf, "node.held")).toHaveLength(7);
  });

  it("applies the implicit capability key to every node of the capability", async () => {
    await independent(4, "cap.b");
    await independent(4, "cap.other");
    await setLimit("capability:cap.b", { maxConcurrency: 2 });
    const claimed = await claimAll();
    expect(claimed.filter((q) => q.capability === "cap.b")).toHaveLength(2);
    expect(claimed.filter((q) => q.capability === "cap.other")).toHaveLength(4);
  });

  it("holds back only the nodes of a key at its cap (no head-of-line blocking)", async () => {
    const a = await independent(20, "cap.c", { keys: ["tenant:a"] });
    const b = await independent(3, "cap.c", { keys: ["tenant:b"] });
    await setLimit("tenant:a", { maxConcurrency: 1 });
    await setLimit("tenant:b", { maxConcurrency: 5 });
    const claimed = await claimAll();
    expect(claimed.filter((q) => q.workflowId === a)).toHaveLength(1);
    expect(claimed.filter((q) => q.workflowId === b)).toHaveLength(3);
  });

  it("needs every key of a node to allow", async () => {
    const wf = await independent(3, "cap.d", { keys: ["k:1", "k:2"] });
    await setLimit("k:1", { maxConcurrency: 5 });
    await setLimit("k:2", { maxConcurrency: 1 });
    expect(await claimAll()).toHaveLength(1);
    const held = Object.values(await statuses(wf)).filter((s) => s.status === "PENDING");
    expect(held.map((s) => s.heldBy)).toEqual(["k:2", "k:2"]);
  });

  it("starts the waiting nodes of higher priority first, round robin across workflows at equal priority", async () => {
    const low = await independent(3, "cap.e", { keys: ["p:k"], priorities: [0, 0, 0] });
    const high = await independent(3, "cap.e", { keys: ["p:k"], priorities: [7, 7, 7] });
    await setLimit("p:k", { maxConcurrency: 1 });
    const order: string[] = [];
    let [q] = await claimAll();
    while (q) {
      order.push(q.workflowId === high ? "high" : "low");
      expect(q.priority ?? 0).toBe(q.workflowId === high ? 7 : 0);
      await startAndPass(q);
      [q] = await claimAll();
    }
    expect(order).toEqual(["high", "high", "high", "low", "low", "low"]);
    expect((await sm.getWorkflow(low)).status).toBe(WorkflowStatus.SUCCEEDED);
  });

  it("hands a limited child of a PASS to the claim instead of queueing it eagerly", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "chain",
      nodes: [node("a", "cap.f"), node("b", "cap.f", ["a"])],
    });
    await testDb.pool.query("update nodes set limit_keys = '{chain:k}' where workflow_id = $1 and id = 'b'", [
      workflow.id,
    ]);
    await setLimit("chain:k", { maxConcurrency: 1 });
    const [a] = await claimAll();
    const started = await sm.startNode(workflow.id, a!.nodeId);
    const recorded = await sm.recordResults(
      [{ workflowId: workflow.id, nodeId: "a", lease: started!.lease, result: success(1) }],
      { dispatch: true },
    );
    expect(recorded.dispatched).toEqual([]);
    expect((await statuses(workflow.id)).b!.status).toBe("PENDING");
    const [b] = await claimAll();
    expect(b?.nodeId).toBe("b");
  });

  it("releases what a deleted limit held back", async () => {
    const wf = await independent(4, "cap.g", { keys: ["del:k"] });
    await setLimit("del:k", { maxConcurrency: 1 });
    expect(await claimAll()).toHaveLength(1);
    await testDb.pool.query(
      "begin; select trellis_lock_limits(); select trellis_release_held('del:k'); delete from limits where key = 'del:k'; commit",
    );
    expect(await claimAll()).toHaveLength(3);
    expect(Object.values(await statuses(wf)).every((s) => s.heldBy === null)).toBe(true);
  });
});

describe("rates", () => {
  it("queues one node per token and refills the bucket with time", async () => {
    await independent(12, "rate.a", { keys: ["r:k"] });
    await setLimit("r:k", { rate: 5, periodMs: 1000, burst: 5 });
    expect(await claimAll()).toHaveLength(5);
    expect(await claimAll()).toHaveLength(0);
    const { rows: heldEvents } = await testDb.pool.query<{ data: { reason: string; until: string } }>(
      "select data from workflow_events where type = 'node.held' limit 1",
    );
    const data = heldEvents[0]!.data;
    expect(data.reason).toBe("rate");
    expect(Date.parse(data.until)).toBeGreaterThan(Date.now() - 5_000);
    // 0.6 s later: 3 tokens.
    await testDb.pool.query("update limits set refilled_at = refilled_at - interval '600 milliseconds'");
    expect(await claimAll()).toHaveLength(3);
    // A long time later: the bucket is full at its burst, no more.
    await testDb.pool.query("update limits set refilled_at = refilled_at - interval '1 hour'");
    expect(await claimAll()).toHaveLength(4);
  });

  it("debits a usage-counted bucket after the call and holds the key while it is empty", async () => {
    const wf = await independent(3, "rate.b", { keys: ["tok:k"] });
    await setLimit("tok:k", { rate: 100, periodMs: 60_000, burst: 100, unit: "tokens" });
    const claimed = await claimAll();
    expect(claimed).toHaveLength(3);
    await startAndPass(claimed[0]!, { tokens: 150, cost_usd: 0.25 });
    const { rows } = await testDb.pool.query("select tokens from limits where key = 'tok:k'");
    expect(Number(rows[0].tokens)).toBeLessThan(-49);
    const wf2 = await independent(2, "rate.b", { keys: ["tok:k"] });
    expect(await claimAll()).toHaveLength(0);
    expect(Object.values(await statuses(wf2)).map((s) => s.heldBy)).toEqual(["tok:k", "tok:k"]);
    expect((await sm.getWorkflow(wf)).status).toBe(WorkflowStatus.RUNNING);
  });
});

describe("THROTTLED", () => {
  it("puts the node back under a new job without counting the attempt, and pauses its keys", async () => {
    const wf = await independent(3, "thr.a", { keys: ["model:t"] });
    const claimed = await claimAll();
    expect(claimed).toHaveLength(3);
    const started = await sm.startNode(wf, "n0");
    const recorded = await sm.recordResults([
      {
        workflowId: wf,
        nodeId: "n0",
        lease: started!.lease,
        result: { kind: "throttled", retryAfterMs: 30_000, message: "429 too many requests", usage: { tokens: 5 } },
      },
    ]);
    expect(recorded.outcomes).toEqual([{ outcome: "throttled", retryAfterMs: 30_000 }]);
    expect(recorded.dispatched).toHaveLength(1);
    expect(recorded.dispatched[0]).toMatchObject({ nodeId: "n0", delayMs: 30_000 });
    expect(recorded.dispatched[0]!.jobId).not.toBe(claimed.find((q) => q.nodeId === "n0")!.jobId);
    const { rows: n0 } = await testDb.pool.query(
      "select status, attempt, attempt_base from nodes where workflow_id = $1 and id = 'n0'",
      [wf],
    );
    expect(n0[0]).toEqual({ status: "QUEUED", attempt: 1, attempt_base: 1 });
    const { rows: paused } = await testDb.pool.query(
      "select key, configured, throttled_total from limits where throttled_until > now() order by key",
    );
    expect(paused).toEqual([
      { key: "capability:thr.a", configured: false, throttled_total: "1" },
      { key: "model:t", configured: false, throttled_total: "1" },
    ]);
    const { rows: attempts } = await testDb.pool.query(
      "select outcome, usage, error_message from node_attempts where workflow_id = $1",
      [wf],
    );
    expect(attempts).toEqual([{ outcome: "THROTTLED", usage: { tokens: 5 }, error_message: "429 too many requests" }]);
    expect(await eventsOf(wf, "node.throttled")).toHaveLength(1);
    const [throttledAttempt] = await sm.listNodeAttempts(wf, "n0");
    expect(throttledAttempt).toMatchObject({ attempt: 1, status: "THROTTLED", usage: { tokens: 5 } });
    expect(throttledAttempt!.error?.message).toBe("429 too many requests");
    // The key's other queued nodes are not started while it is paused: held back PENDING.
    expect(await sm.startNode(wf, "n1")).toBeNull();
    expect((await statuses(wf)).n1).toEqual({ status: "PENDING", heldBy: "capability:thr.a" });
    expect(await claimAll()).toHaveLength(0);
    // Once the pause ends the row goes and the held nodes are claimed again.
    await testDb.pool.query("update limits set throttled_until = now() - interval '1 second'");
    expect((await claimAll()).map((q) => q.nodeId)).toEqual(["n1"]);
    expect((await testDb.pool.query("select count(*)::int as n from limits")).rows[0].n).toBe(0);
    // The next attempt of n0 is its attempt 2, and still its first against its retry policy.
    const again = await sm.startNode(wf, "n0");
    expect(again?.attempt).toBe(2);
  });
});

describe("usage and budgets", () => {
  it("sums usage per workflow and per attempt, errors included", async () => {
    const wf = await independent(2, "use.a");
    const claimed = await claimAll();
    await startAndPass(claimed.find((q) => q.nodeId === "n0")!, { tokens: 10, cost_usd: 0.5 });
    const started = await sm.startNode(wf, "n1");
    await sm.recordResult(wf, "n1", started!.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "bad",
      usage: { tokens: 5 },
    });
    const { rows } = await testDb.pool.query("select usage from workflows where id = $1", [wf]);
    expect(rows[0].usage).toEqual({ tokens: 15, cost_usd: 0.5 });
    const attempts = await testDb.pool.query(
      "select node_id, outcome, usage, error_kind from node_attempts where workflow_id = $1 order by node_id",
      [wf],
    );
    expect(attempts.rows).toEqual([
      { node_id: "n0", outcome: "PASS", usage: { tokens: 10, cost_usd: 0.5 }, error_kind: null },
      { node_id: "n1", outcome: "FAIL", usage: { tokens: 5 }, error_kind: "TASK_ERROR" },
    ]);
  });

  it("pauses a workflow whose usage reaches its budget, before its children are dispatched", async () => {
    const { workflow } = await sm.createWorkflow({
      name: "budget",
      nodes: [node("a", "use.b"), node("b", "use.b", ["a"]), node("c", "use.b")],
    });
    await testDb.pool.query(`update workflows set budget = '{"tokens": 100}' where id = $1`, [workflow.id]);
    const claimed = await claimAll();
    const a = claimed.find((q) => q.nodeId === "a")!;
    const started = await sm.startNode(workflow.id, "a");
    const recorded = await sm.recordResults(
      [{ workflowId: workflow.id, nodeId: "a", lease: started!.lease, result: success(1, { tokens: 120 }) }],
      { dispatch: true },
    );
    expect(recorded.outcomes[0]).toMatchObject({ outcome: "passed" });
    expect(recorded.dispatched).toEqual([]);
    expect(a).toBeDefined();
    const wf = await sm.getWorkflow(workflow.id);
    expect(wf.status).toBe(WorkflowStatus.PAUSED);
    const exceeded = await eventsOf(workflow.id, "workflow.budget_exceeded");
    expect(exceeded).toEqual([{ node_id: null, data: { unit: "tokens", usage: 120, budget: 100 } }]);
    // The queued sibling went back to PENDING; nothing is claimed while PAUSED.
    const s = await statuses(workflow.id);
    expect(s.a!.status).toBe("PASS");
    expect(s.b!.status).toBe("PENDING");
    expect(s.c!.status).toBe("PENDING");
    expect(await claimAll()).toHaveLength(0);
  });
});

describe("invariant I6 (never over a cap)", () => {
  it("holds for attempts that follow each other and reports attempts that overlap past the cap", async () => {
    const wf = await independent(3, "inv.a", { keys: ["inv:k"] });
    await setLimit("inv:k", { maxConcurrency: 1 });
    // Three attempts one after the other (an end at the very instant of the next start does not overlap).
    await testDb.pool.query(
      `insert into node_attempts (workflow_id, node_id, attempt, outcome, started_at, ended_at)
       values ($1, 'n0', 1, 'PASS', '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z'),
              ($1, 'n1', 1, 'PASS', '2026-01-01T00:00:01Z', '2026-01-01T00:00:02Z')`,
      [wf],
    );
    const i6 = async () =>
      (await checkInvariants({ pool: testDb.pool, recovery: FAULT_TIMINGS, workflowIds: [wf] })).filter(
        (v) => v.invariant === "I6",
      );
    expect(await i6()).toEqual([]);
    await testDb.pool.query(
      `insert into node_attempts (workflow_id, node_id, attempt, outcome, started_at, ended_at)
       values ($1, 'n2', 1, 'PASS', '2026-01-01T00:00:01.5Z', '2026-01-01T00:00:03Z')`,
      [wf],
    );
    expect((await i6()).map((v) => v.message)).toEqual([
      "limit inv:k: 2 nodes RUNNING at once at 2026-01-01T00:00:01.500Z (cap 1)",
    ]);
  });
});
