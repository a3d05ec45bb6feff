import * as grpc from "@grpc/grpc-js";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema, durationFromMs, type Duration } from "@bufbuild/protobuf/wkt";
import {
  EditType,
  ErrorKind,
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
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startTestEngine, type TestEngine } from "./engine.js";

let testDb: TestDatabase;
let nodeService: NodeServiceServer;
let engine: TestEngine;

function node(
  id: string,
  parentIds: string[] = [],
  capability = "echo",
  extra: { retryPolicy?: { maxAttempts: number; initialBackoff: Duration } } = {},
): Node {
  return create(NodeSchema, { id, capability, parentIds, input: { id }, ...extra });
}

/** The default NodeService: echoes its node id and parents; `fail` fails; `sleep` waits until cancelled. */
function defaultHandler(): Parameters<typeof startNodeServiceServer>[0] {
  return async (request, _call, signal) => {
    const n = request.node!;
    switch (n.capability) {
      case "fail":
        return { status: ExecutionStatus.TASK_ERROR, errorMessage: "boom" };
      case "sleep":
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        return { status: ExecutionStatus.SUCCESS };
      default:
        return {
          status: ExecutionStatus.SUCCESS,
          output: fromJson(ValueSchema, {
            id: n.id,
            parents: Object.fromEntries(
              Object.entries(request.context?.parentOutputs ?? {}).map(([k, v]) => [k, toJson(ValueSchema, v)]),
            ),
          }),
        };
    }
  };
}

const finished = (workflowId: string, timeoutMs?: number) => engine.finished(workflowId, timeoutMs);

function callsFor(workflowId: string) {
  return nodeService.calls.filter((c) => c.request.context?.workflowId === workflowId);
}

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_orch");
  nodeService = await startNodeServiceServer(defaultHandler());
  engine = await startTestEngine(testDb, nodeService.address);
  await engine.startWorker(["echo", "fail", "sleep", "flaky", "plan"], { concurrency: 4 });
});

afterAll(async () => {
  await engine?.close();
  await nodeService?.close();
  await testDb?.drop();
});

beforeEach(() => {
  nodeService.setHandler(defaultHandler());
});

describe("a workflow runs to its end through the queues and the NodeService", () => {
  it("runs a diamond in order and hands each node its parents' outputs", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "diamond",
      nodes: [node("a"), node("b", ["a"]), node("c", ["a"]), node("d", ["b", "c"])],
      input: { topic: "trellis" },
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    const calls = callsFor(workflow.id);
    const order = calls.map((c) => c.request.node!.id);
    expect(order[0]).toBe("a");
    expect(order[3]).toBe("d");
    const d = calls.find((c) => c.request.node!.id === "d")!.request;
    expect(Object.keys(d.context!.parentOutputs).sort()).toEqual(["b", "c"]);
    expect(d.context!.workflowInput).toEqual({ topic: "trellis" });
    expect(d.context!.idempotencyKey).toBe(`${workflow.id}/d`);
    expect(d.context!.attempt).toBe(1);
    expect(d.node!.status).toBe(NodeStatus.RUNNING);
    expect(done.nodes.find((n) => n.id === "d")!.output).toBeDefined();
  });

  it("runs a fan-out in parallel, up to the worker's concurrency", async () => {
    let inFlight = 0;
    let peak = 0;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    nodeService.setHandler(async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await gate;
      inFlight--;
      return { status: ExecutionStatus.SUCCESS };
    });
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "fan-out",
      nodes: Array.from({ length: 10 }, (_, i) => node(`n${i}`)),
    });
    await waitFor(() => inFlight === 4, { description: "4 calls in flight" });
    release();
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    expect(peak).toBe(4);
  });

  it("fails on TASK_ERROR once, skips descendants, and lets an independent branch pass", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "task-error",
      nodes: [node("bad", [], "fail"), node("after", ["bad"]), node("free"), node("free2", ["free"])],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.FAILED);
    const byId = new Map(done.nodes.map((n) => [n.id, n]));
    expect(byId.get("bad")!.status).toBe(NodeStatus.FAIL);
    expect(byId.get("bad")!.error).toMatchObject({ kind: ErrorKind.TASK_ERROR, message: "boom" });
    expect(byId.get("bad")!.attempt).toBe(1);
    expect(byId.get("after")!.status).toBe(NodeStatus.SKIPPED);
    expect(byId.get("free2")!.status).toBe(NodeStatus.PASS);
    expect(callsFor(workflow.id).filter((c) => c.request.node!.id === "bad")).toHaveLength(1);
  });

  it("retries INFRA_ERROR with backoff and the same idempotency key, then passes", async () => {
    nodeService.setHandler((request) =>
      request.context!.attempt < 3
        ? { status: ExecutionStatus.INFRA_ERROR, errorMessage: "runtime busy" }
        : { status: ExecutionStatus.SUCCESS },
    );
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "infra",
      nodes: [node("f", [], "flaky", { retryPolicy: { maxAttempts: 3, initialBackoff: durationFromMs(50) } })],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    const calls = callsFor(workflow.id);
    expect(calls.map((c) => c.request.context!.attempt)).toEqual([1, 2, 3]);
    expect(new Set(calls.map((c) => c.request.context!.idempotencyKey))).toEqual(new Set([`${workflow.id}/f`]));
    expect(calls[2]!.receivedAt - calls[1]!.receivedAt).toBeGreaterThanOrEqual(100);
    expect(done.nodes[0]!.attempt).toBe(3);
    const events = await engine.stateManager.listEvents(workflow.id, 0);
    expect(events.filter((e) => e.type === "node.retry_scheduled")).toHaveLength(2);
  });

  it("fails with INFRA_ERROR when attempts run out, and treats a failed call as INFRA_ERROR", async () => {
    nodeService.setHandler(() => {
      throw { code: grpc.status.UNAVAILABLE, details: "runtime down" };
    });
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "infra-exhausted",
      nodes: [node("f", [], "flaky", { retryPolicy: { maxAttempts: 2, initialBackoff: durationFromMs(20) } })],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.FAILED);
    expect(done.nodes[0]!.error?.kind).toBe(ErrorKind.INFRA_ERROR);
    expect(done.nodes[0]!.error?.message).toMatch(/UNAVAILABLE: runtime down/);
    expect(callsFor(workflow.id)).toHaveLength(2);
  });

  it("applies a planner's edits: the graph grows and the join sees the new parents", async () => {
    nodeService.setHandler((request) => {
      const n = request.node!;
      if (n.capability === "plan") {
        return {
          status: ExecutionStatus.SUCCESS,
          edits: [
            { type: EditType.INSERT, node: node("t1", [n.id]) },
            { type: EditType.INSERT, node: node("t2", [n.id]) },
            { type: EditType.UPDATE, node: node("join", ["plan", "t1", "t2"]), updateMask: { paths: ["parent_ids"] } },
          ],
        };
      }
      return {
        status: ExecutionStatus.SUCCESS,
        output: fromJson(ValueSchema, { parents: Object.keys(request.context!.parentOutputs).sort() }),
      };
    });
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "planner",
      nodes: [node("plan", [], "plan"), node("join", ["plan"])],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done.nodes.map((n) => n.id)).toEqual(["plan", "t1", "t2", "join"]);
    const join = done.nodes.find((n) => n.id === "join")!;
    expect(toJson(ValueSchema, join.output!)).toEqual({ parents: ["plan", "t1", "t2"] });
  });

  it("fails a planner whose edits are invalid and applies none of them", async () => {
    nodeService.setHandler(() => ({
      status: ExecutionStatus.SUCCESS,
      edits: [
        { type: EditType.INSERT, node: node("ok") },
        { type: EditType.INSERT, node: node("bad", ["ghost"]) },
      ],
    }));
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "bad-plan",
      nodes: [node("plan", [], "plan")],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.FAILED);
    expect(done.nodes.map((n) => n.id)).toEqual(["plan"]);
    expect(done.nodes[0]!.error).toMatchObject({ kind: ErrorKind.TASK_ERROR });
    expect(done.nodes[0]!.error!.message).toMatch(/ghost/);
  });

  it("cancels: stops dispatch and cancels the running call", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "cancel",
      nodes: [node("long", [], "sleep"), node("next", ["long"])],
    });
    await waitFor(() => callsFor(workflow.id).length === 1, { description: "the sleep call" });
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    await waitFor(() => callsFor(workflow.id)[0]!.cancelled, { description: "the call to be cancelled" });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.CANCELLED);
    expect(done.nodes.every((n) => n.status === NodeStatus.CANCELLED)).toBe(true);
    expect(callsFor(workflow.id)).toHaveLength(1);
  });

  it("pauses (nothing new is dispatched) and resumes", async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    nodeService.setHandler(async (request) => {
      if (request.node!.id === "first") await gate;
      return { status: ExecutionStatus.SUCCESS };
    });
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "pause",
      nodes: [node("first"), node("second", ["first"])],
    });
    await waitFor(() => callsFor(workflow.id).length === 1, { description: "first call" });
    // A call's start is written once it has run WORKER_START_AFTER_MS: from then on it is RUNNING, and finishes.
    await waitFor(async () => (await engine.stateManager.getNode(workflow.id, "first")).status === NodeStatus.RUNNING, {
      description: "first RUNNING",
    });
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.PAUSE });
    release();
    await waitFor(async () => (await engine.stateManager.getNode(workflow.id, "first")).status === NodeStatus.PASS);
    // The scheduler polls every 200 ms; two reconcile/poll cycles pass without "second" being dispatched.
    await engine.scheduler.scheduler.pass();
    expect((await engine.stateManager.getNode(workflow.id, "second")).status).toBe(NodeStatus.PENDING);
    expect((await engine.stateManager.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.PAUSED);
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.RESUME });
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    expect(callsFor(workflow.id)).toHaveLength(2);
  });

  it("retries a failed workflow: re-runs only the failed node and what it had skipped", async () => {
    let failing = true;
    nodeService.setHandler((request) =>
      request.node!.id === "flaky-step" && failing
        ? { status: ExecutionStatus.TASK_ERROR, errorMessage: "not yet" }
        : { status: ExecutionStatus.SUCCESS },
    );
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "retry-workflow",
      nodes: [node("ok"), node("flaky-step", ["ok"]), node("after", ["flaky-step"]), node("side")],
    });
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.FAILED);
    failing = false;
    nodeService.calls.length = 0;
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.RETRY });
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    expect(callsFor(workflow.id).map((c) => c.request.node!.id)).toEqual(["flaky-step", "after"]);
  });
});

describe("eager local start", () => {
  it("runs a chain's next node in the same transaction as its parent's PASS, without a queue round trip", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "chain",
      nodes: [node("a"), node("b", ["a"]), node("c", ["b"]), node("d", ["c"])],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(callsFor(workflow.id).map((c) => c.request.node!.id)).toEqual(["a", "b", "c", "d"]);
    const events = await engine.stateManager.listEvents(workflow.id, 0);
    const timeOf = (nodeId: string, status: NodeStatus) =>
      events.find((e) => e.nodeId === nodeId && e.nodeStatus === status && e.type === "node.status_changed")!.time;
    // One transaction (one now()): the parent's PASS, the child queued, the child started for this worker.
    for (const [parent, child] of [
      ["a", "b"],
      ["b", "c"],
      ["c", "d"],
    ] as const) {
      expect(timeOf(child, NodeStatus.QUEUED)).toEqual(timeOf(parent, NodeStatus.PASS));
      expect(timeOf(child, NodeStatus.RUNNING)).toEqual(timeOf(parent, NodeStatus.PASS));
    }
  });

  it("leaves a child of another capability to its own queue, so each capability's concurrency holds", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "two-capabilities",
      nodes: [node("a"), node("b", ["a"], "flaky")],
    });
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    const events = await engine.stateManager.listEvents(workflow.id, 0);
    const eventOf = (nodeId: string, status: NodeStatus) =>
      events.find((e) => e.nodeId === nodeId && e.nodeStatus === status && e.type === "node.status_changed")!;
    // Queued in the parent's transaction (eager dispatch), started by its own job in a later one.
    expect(eventOf("b", NodeStatus.QUEUED).sequence).toBe(eventOf("a", NodeStatus.PASS).sequence + 1n);
    expect(eventOf("b", NodeStatus.RUNNING).time).not.toEqual(eventOf("a", NodeStatus.PASS).time);
  });

  it("retries a locally started node that fails with INFRA_ERROR under a job of its own", async () => {
    let failures = 0;
    nodeService.setHandler(async (request) => {
      if (request.node!.id === "b" && failures === 0) {
        failures++;
        return { status: ExecutionStatus.INFRA_ERROR, errorMessage: "flaky" };
      }
      return { status: ExecutionStatus.SUCCESS };
    });
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "local-retry",
      nodes: [
        node("a"),
        node("b", ["a"], "echo", { retryPolicy: { maxAttempts: 3, initialBackoff: durationFromMs(50) } }),
      ],
    });
    const done = await finished(workflow.id);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done.nodes.find((n) => n.id === "b")!.attempt).toBe(2);
    const retry = (await engine.stateManager.listEvents(workflow.id, 0)).find((e) => e.type === "node.retry_scheduled");
    expect(retry?.nodeId).toBe("b");
  });
});

describe("per-worker liveness", () => {
  it("releases a running node of its session that it does not hold: the attempt ends and the node is queued again", async () => {
    const worker = engine.workers[0]!;
    // A capability no worker pulls, so the node waits QUEUED for the test to start it.
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "orphan",
      nodes: [node("orphan", [], "nobody")],
    });
    await waitFor(async () => (await engine.stateManager.getNode(workflow.id, "orphan")).status === NodeStatus.QUEUED, {
      description: "the node to be queued",
    });
    // Started under the worker's session, but not by the worker: as after a result the worker could not record.
    expect(await engine.stateManager.startNode(workflow.id, "orphan", worker.workerSession)).not.toBeNull();
    const released = await waitFor(
      async () => {
        const n = await engine.stateManager.getNode(workflow.id, "orphan");
        return n.status === NodeStatus.QUEUED && n.attempt === 1 && n;
      },
      { description: "the worker to release the node" },
    );
    expect(released.error?.message).toBe("the worker could not record the attempt's result");
    await engine.stateManager.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
  });
});

describe("exactly-once recording", () => {
  it("drops a duplicate delivery of the same job and refuses a late result", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({ name: "dup", nodes: [node("a")] });
    await finished(workflow.id);
    const eventsBefore = await engine.stateManager.listEvents(workflow.id, 0);
    // Re-deliver the job by hand: its node is PASS, so the worker drops it without a call.
    const { NodeQueues, createRedis } = await import("@trellis/queue");
    const redis = createRedis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379");
    const queues = new NodeQueues(redis, engine.queuePrefix);
    const callsBefore = callsFor(workflow.id).length;
    await queues.enqueue([
      {
        workflowId: workflow.id,
        nodeId: "a",
        capability: "echo",
        jobId: `${workflow.id}/a/dup`,
        retryPolicy: { maxAttempts: 1, initialBackoffMs: 1, maxBackoffMs: 1, retryTaskErrors: false },
      },
    ]);
    await waitFor(
      async () => (await queues.jobStates([{ capability: "echo", jobId: `${workflow.id}/a/dup` }]))[0] === "unknown",
      {
        description: "the duplicate job to be consumed",
      },
    );
    await queues.close();
    redis.disconnect();
    expect(callsFor(workflow.id)).toHaveLength(callsBefore);
    expect(await engine.stateManager.listEvents(workflow.id, 0)).toEqual(eventsBefore);
  });

  it("runs 500 nodes with two schedulers and two workers: each executed once, all PASS", async () => {
    const second = await engine.startScheduler();
    await engine.startWorker(["echo"], { concurrency: 8 });
    const nodes = Array.from({ length: 500 }, (_, i) => node(`n${i}`, i >= 100 ? [`n${i % 100}`] : []));
    const { workflow } = await engine.stateManager.createWorkflow({ name: "five-hundred", nodes });
    const done = await finished(workflow.id, 60_000);
    expect(done.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done.nodes.every((n) => n.status === NodeStatus.PASS && n.attempt === 1)).toBe(true);
    const ids = callsFor(workflow.id).map((c) => c.request.node!.id);
    expect(ids).toHaveLength(500);
    expect(new Set(ids).size).toBe(500);
    await second.close();
  });
});

describe("capability routing", () => {
  it("keeps a node of a capability no worker serves QUEUED, reports it, and runs it once a worker appears", async () => {
    const { workflow } = await engine.stateManager.createWorkflow({
      name: "unroutable",
      nodes: [node("lonely", [], "web.search")],
    });
    await waitFor(
      async () => (await engine.stateManager.listEvents(workflow.id, 0)).some((e) => e.type === "node.unroutable"),
      { description: "node.unroutable event" },
    );
    expect((await engine.stateManager.getNode(workflow.id, "lonely")).status).toBe(NodeStatus.QUEUED);
    await engine.startWorker(["web.search"]);
    expect((await finished(workflow.id)).status).toBe(WorkflowStatus.SUCCEEDED);
    const events = await engine.stateManager.listEvents(workflow.id, 0);
    expect(events.filter((e) => e.type === "node.unroutable")).toHaveLength(1);
  });
});
