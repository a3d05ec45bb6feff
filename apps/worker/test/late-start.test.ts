import { create, type JsonObject } from "@bufbuild/protobuf";
import {
  EditType,
  ExecutionStatus,
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowStatus,
  type Node,
} from "@trellis/proto";
import {
  createTestDatabase,
  startNodeServiceServer,
  waitFor,
  type NodeServiceServer,
  type TestDatabase,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestEngine, type TestEngine } from "./engine.js";

// A worker calls an unlimited node before writing its start (QUEUED -> RUNNING): a result within
// WORKER_START_AFTER_MS (a success, a failure, edits) is recorded with its start in one transaction; a longer call
// gets its start written then; a node with a limit is started before its call. `quick` nodes run on a worker with the default
// (200 ms), `held` ones on a worker whose starts are written only after a minute (so the start stays unwritten for
// as long as a test needs), `capped` ones have a limit.

let testDb: TestDatabase;
let nodeService: NodeServiceServer;
let engine: TestEngine;
/** Calls of `held` nodes (and `quick` ones whose input says so) wait here until released or aborted. */
const gates = new Map<string, () => void>();

function node(id: string, capability: string, input: JsonObject = {}): Node {
  return create(NodeSchema, { id, capability, input, retryPolicy: { maxAttempts: 3, initialBackoff: { nanos: 1e6 } } });
}

const finished = (workflowId: string, timeoutMs?: number) => engine.finished(workflowId, timeoutMs);

function callsOf(workflowId: string, nodeId: string) {
  return nodeService.calls.filter((c) => c.request.context?.workflowId === workflowId && c.request.node?.id === nodeId);
}

/** The node's events (type, status, data.from) with each one's transaction. */
async function eventsOf(workflowId: string, nodeId: string) {
  const { rows } = await testDb.pool.query<{ status: string; from: string; tx: string; attempt: number | null }>(
    `select node_status::text as status, data ->> 'from' as from, tx_id::text as tx, (data ->> 'attempt')::int as attempt
       from workflow_events where workflow_id = $1 and node_id = $2 order by sequence`,
    [workflowId, nodeId],
  );
  return rows;
}

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_late_start");
  nodeService = await startNodeServiceServer(async (request, _call, signal) => {
    const n = request.node!;
    const key = `${request.context!.workflowId}/${n.id}/${request.context!.attempt}`;
    if (n.capability === "held" || n.capability === "capped" || n.input?.hold === true) {
      await new Promise<void>((resolve) => {
        gates.set(key, resolve);
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    }
    if (n.input?.insert === true) {
      return {
        status: ExecutionStatus.SUCCESS,
        edits: [{ type: EditType.INSERT, node: { id: `${n.id}-child`, capability: "quick", parentIds: [n.id] } }],
      };
    }
    if (n.input?.fail === "task") return { status: ExecutionStatus.TASK_ERROR, errorMessage: "bad input" };
    if (n.input?.fail === "once" && request.context!.attempt === 1) {
      return { status: ExecutionStatus.INFRA_ERROR, errorMessage: "connection reset" };
    }
    return { status: ExecutionStatus.SUCCESS };
  });
  engine = await startTestEngine(testDb, nodeService.address);
  await engine.startWorker(["quick", "capped"], { concurrency: 4 });
  await engine.startWorker(["held"], { concurrency: 4, startAfterMs: 60_000 });
  await engine.stateManager.setLimit({
    key: "capability:capped",
    maxConcurrency: 10,
    rate: 0,
    periodMs: 1000,
    burst: 0,
    unit: "",
  });
});

afterAll(async () => {
  for (const release of gates.values()) release();
  await engine?.close();
  await nodeService?.close();
  await testDb?.drop();
});

describe("a call made before its start is written", () => {
  it("a quick success writes QUEUED -> RUNNING and the PASS in one transaction", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({ name: "quick", nodes: [node("a", "quick")] });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    const [call] = callsOf(workflow.id, "a");
    // The NodeService sees the node as it is once started.
    expect(call!.request.node!.status).toBe(NodeStatus.RUNNING);
    expect(call!.request.node!.attempt).toBe(1);
    expect(call!.request.context!.attempt).toBe(1);
    const events = await eventsOf(workflow.id, "a");
    expect(events.map((e) => [e.status, e.from])).toEqual([
      ["QUEUED", "PENDING"],
      ["RUNNING", "QUEUED"],
      ["PASS", "RUNNING"],
    ]);
    expect(events[1]!.attempt).toBe(1);
    expect(events[1]!.tx).toBe(events[2]!.tx);
    const stored = await engine.stateManager.getNode(workflow.id, "a");
    expect(stored.attempt).toBe(1);
    const attempts = await engine.stateManager.listNodeAttempts(workflow.id, "a");
    expect(attempts.map((a) => [a.attempt, a.status])).toEqual([[1, "PASS"]]);
    // Started when the call began, before the PASS.
    const startedAt = Number(stored.startedAt!.seconds) * 1000 + stored.startedAt!.nanos / 1e6;
    const finishedAt = Number(stored.finishedAt!.seconds) * 1000 + stored.finishedAt!.nanos / 1e6;
    expect(startedAt).toBeLessThanOrEqual(finishedAt);
    expect(startedAt).toBeLessThanOrEqual(callsOf(workflow.id, "a")[0]!.receivedAt + 1);
  });

  it("a call that outlasts WORKER_START_AFTER_MS is RUNNING while it runs", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "lasting",
      nodes: [node("a", "quick", { hold: true })],
    });
    await waitFor(() => gates.has(`${workflow.id}/a/1`), { description: "the call in flight" });
    await waitFor(async () => (await engine.stateManager.getNode(workflow.id, "a")).status === NodeStatus.RUNNING, {
      description: "its start written while it runs",
    });
    gates.get(`${workflow.id}/a/1`)!();
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    const events = await eventsOf(workflow.id, "a");
    expect(events.map((e) => e.status)).toEqual(["QUEUED", "RUNNING", "PASS"]);
    expect(events[1]!.tx).not.toBe(events[2]!.tx);
  });

  it("a failure is recorded with its start: a TASK_ERROR fails attempt 1, an INFRA_ERROR is retried as attempt 2", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "failures",
      nodes: [node("bad", "quick", { fail: "task" }), node("flaky", "quick", { fail: "once" })],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.FAILED);
    const bad = done.nodes.find((n) => n.id === "bad")!;
    expect(bad.status).toBe(NodeStatus.FAIL);
    expect(bad.attempt).toBe(1);
    const badEvents = await eventsOf(workflow.id, "bad");
    expect(badEvents.map((e) => e.status)).toEqual(["QUEUED", "RUNNING", "FAIL"]);
    expect(badEvents[1]!.tx).toBe(badEvents[2]!.tx);
    const flaky = done.nodes.find((n) => n.id === "flaky")!;
    expect(flaky.status).toBe(NodeStatus.PASS);
    expect(flaky.attempt).toBe(2);
    expect(callsOf(workflow.id, "flaky").map((c) => c.request.context!.attempt)).toEqual([1, 2]);
    const flakyEvents = await eventsOf(workflow.id, "flaky");
    expect(flakyEvents.map((e) => e.status)).toEqual(["QUEUED", "RUNNING", "QUEUED", "RUNNING", "PASS"]);
    expect(flakyEvents[1]!.tx).toBe(flakyEvents[2]!.tx);
  });

  it("edits are recorded with the start, and their node runs", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "edits",
      nodes: [node("planner", "quick", { insert: true })],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done.nodes.map((n) => [n.id, n.status, n.attempt]).sort()).toEqual([
      ["planner", NodeStatus.PASS, 1],
      ["planner-child", NodeStatus.PASS, 1],
    ]);
    const events = await eventsOf(workflow.id, "planner");
    expect(events.map((e) => e.status)).toEqual(["QUEUED", "RUNNING", "PASS"]);
    expect(events[1]!.tx).toBe(events[2]!.tx);
  });

  it("CANCEL aborts it (the node was still QUEUED) and nothing is recorded", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({ name: "cancel", nodes: [node("a", "held")] });
    await waitFor(() => gates.has(`${workflow.id}/a/1`), { description: "the call in flight" });
    expect((await engine.stateManager.getNode(workflow.id, "a")).status).toBe(NodeStatus.QUEUED);
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    await waitFor(() => callsOf(workflow.id, "a")[0]!.cancelled, { description: "the call aborted" });
    const stored = await engine.stateManager.getNode(workflow.id, "a");
    expect(stored.status).toBe(NodeStatus.CANCELLED);
    expect(await engine.stateManager.listNodeAttempts(workflow.id, "a")).toEqual([]);
    expect((await eventsOf(workflow.id, "a")).map((e) => e.status)).toEqual(["QUEUED", "CANCELLED"]);
  });

  it("PAUSE aborts it (the node goes back to PENDING) and RESUME runs it again", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({ name: "pause", nodes: [node("a", "held")] });
    await waitFor(() => gates.has(`${workflow.id}/a/1`), { description: "the call in flight" });
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.PAUSE });
    await waitFor(() => callsOf(workflow.id, "a")[0]!.cancelled, { description: "the call aborted" });
    expect((await engine.stateManager.getNode(workflow.id, "a")).status).toBe(NodeStatus.PENDING);
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.RESUME });
    // The aborted call was never recorded: the second call is attempt 1 again.
    await waitFor(() => callsOf(workflow.id, "a").length === 2, { description: "the call made again" });
    expect(callsOf(workflow.id, "a")[1]!.request.context!.attempt).toBe(1);
    for (const release of gates.values()) release();
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done.nodes[0]!.attempt).toBe(1);
  });

  it("a node with a limit is started before its call", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({ name: "capped", nodes: [node("a", "capped")] });
    await waitFor(() => gates.has(`${workflow.id}/a/1`), { description: "the call in flight" });
    expect((await engine.stateManager.getNode(workflow.id, "a")).status).toBe(NodeStatus.RUNNING);
    gates.get(`${workflow.id}/a/1`)!();
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    const events = await eventsOf(workflow.id, "a");
    expect(events.map((e) => e.status)).toEqual(["QUEUED", "RUNNING", "PASS"]);
    expect(events[1]!.tx).not.toBe(events[2]!.tx);
  });
});
