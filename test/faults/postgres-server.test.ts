// Fault suite: PostgreSQL itself stops and starts (a private server, never the shared one): mid-run, and before the
// apps start.
import * as grpc from "@grpc/grpc-js";
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import {
  type FaultStack,
  fanInNodes,
  type PrivatePostgres,
  privatePostgresSkipReason,
  recordMeasurement,
  startFaultStack,
  startPrivatePostgres,
  testNode,
  waitFor,
} from "@trellis/testing";
import { expectGaveUpWaiting } from "./startup-checks.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const skip = privatePostgresSkipReason();
let pg: PrivatePostgres;
let stack: FaultStack;

beforeAll(async () => {
  if (skip) return;
  pg = await startPrivatePostgres();
  stack = await startFaultStack({
    name: "fault_pg_server",
    serverUrl: pg.serverUrl,
    handler: async (request) => {
      if (request.node!.capability === "work") await new Promise((resolve) => setTimeout(resolve, 200));
      if (request.node!.capability === "long") await new Promise((resolve) => setTimeout(resolve, 7_000));
      return { status: ExecutionStatus.SUCCESS };
    },
  });
}, 120_000);

afterAll(async () => {
  if (pg && !skip) await pg.start().catch(() => undefined);
  await stack?.close();
  await pg?.close();
});

function codeOf(error: unknown): string {
  return grpc.status[(error as grpc.ServiceError).code] ?? String(error);
}

describe.skipIf(skip)("PostgreSQL stops and starts", () => {
  it("mid-run: the api answers UNAVAILABLE meanwhile, nothing half-written, everything finishes after", async () => {
    const [{ client: api }] = await Promise.all([
      stack.startApi(),
      stack.startScheduler(),
      stack.startWorker(["work", "echo"]),
    ]);
    const workflows = await Promise.all(
      Array.from({ length: 3 }, () => stack.createWorkflow(fanInNodes(8, [testNode("last", "work", ["join"])]))),
    );
    const ids = workflows.map((w) => w.id);
    await waitFor(async () => (await stack.countNodes(ids, "PASS")) > 0, { description: "some nodes to pass" });
    await pg.stop("fast");
    const downAt = Date.now();
    const deadline = () => Date.now() + 5_000;
    // Reads and writes are refused as UNAVAILABLE (retryable), never INTERNAL.
    await expect(api.getWorkflow({ workflowId: ids[0]! }, { deadline: deadline() })).rejects.toSatisfy(
      (e) => codeOf(e) === "UNAVAILABLE",
    );
    const create = {
      name: "during-outage",
      requestId: "created-during-outage",
      nodes: [testNode("a", "echo"), testNode("b", "echo", ["a"])],
    };
    await expect(api.createWorkflow(create, { deadline: deadline() })).rejects.toSatisfy(
      (e) => codeOf(e) === "UNAVAILABLE",
    );
    // Down for a few reconcile rounds and lease renewals: no app gives up.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    for (const app of stack.apps.processes) expect(app.exitStatus, `${app.name}:\n${app.tail()}`).toBeNull();
    await pg.start();
    const upAt = Date.now();

    // The create that failed left nothing behind: retried with the same request_id, it makes exactly one workflow.
    const created = await waitFor(() => api.createWorkflow(create, { deadline: deadline() }).catch(() => undefined), {
      timeoutMs: 15_000,
      description: "the api to answer again",
    });
    const apiBackMs = Date.now() - upAt;
    const again = await api.createWorkflow(create, { deadline: deadline() });
    expect(again.workflow!.id).toBe(created.workflow!.id);
    const { rows } = await stack.db.pool.query<{ n: number }>(
      "select count(*)::int as n from workflows where request_id = 'created-during-outage'",
    );
    expect(rows[0]!.n).toBe(1);

    const all = [...ids, created.workflow!.id];
    const done = await stack.waitFinished(all, 60_000);
    expect(done.map((w) => w.status)).toEqual(all.map(() => WorkflowStatus.SUCCEEDED));
    recordMeasurement("postgres stop/start mid-run", {
      downMs: upAt - downAt,
      apiAnsweringAfterStartMs: apiBackMs,
      finishedAfterStartMs: Date.now() - upAt,
    });
    await stack.expectInvariants({ workflowIds: all });
    await stack.apps.stopAll();
  }, 120_000);

  it("an outage longer than WORKER_STALE_MS: the running node is not taken from its live worker and runs once", async () => {
    await Promise.all([stack.startScheduler(), stack.startWorker(["long"])]);
    const workflow = await stack.createWorkflow([testNode("long", "long")]);
    const key = `${workflow.id}/long`;
    await waitFor(() => stack.ledger.calls.get(key) === 1, { description: "the long call to be in flight" });
    await pg.stop("fast");
    // Longer than WORKER_STALE_MS (2 s in the fault suite): no heartbeat can be written meanwhile.
    await new Promise((resolve) => setTimeout(resolve, stack.timings.workerStaleMs + 1_500));
    await pg.start();
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(stack.ledger.calls.get(key)).toBe(1);
    expect(done!.nodes[0]!.attempt).toBe(1);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
    await stack.apps.stopAll();
  }, 120_000);

  it("apps started before PostgreSQL wait with a logged backoff, then start; past STARTUP_TIMEOUT_MS they exit 1 with one line", async () => {
    await pg.stop("fast");
    const patient = await Promise.all([
      stack.startScheduler({ ready: false }),
      stack.startWorker(["echo"], { ready: false }),
      stack.startApi({ ready: false }).then((a) => a.app),
      stack.startDashboard({ ready: false }),
    ]);
    const impatient = await Promise.all([
      stack.startScheduler({ ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }),
      stack.startWorker(["echo"], { ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }),
      stack.startApi({ ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }).then((a) => a.app),
      stack.startDashboard({ ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }),
    ]);
    await expectGaveUpWaiting(impatient, "PostgreSQL", 1500, ["scheduler", "worker", "api", "dashboard"]);
    for (const app of patient) {
      // Each failed attempt is logged with the delay before the next, which grows.
      const waits = await waitFor(
        () => {
          const lines = app.logs().filter((l) => l.dependency === "PostgreSQL" && typeof l.retryInMs === "number");
          return lines.length >= 3 && lines;
        },
        { timeoutMs: 15_000, description: `${app.name} to log three attempts` },
      );
      expect(Number(waits[2]!.retryInMs)).toBeGreaterThan(Number(waits[0]!.retryInMs));
      expect(app.exitStatus).toBeNull();
    }
    await pg.start();
    const upAt = Date.now();
    await Promise.all(patient.map((app) => app.waitReady(30_000)));
    recordMeasurement("apps started before PostgreSQL", { readyAfterStartMs: Date.now() - upAt });
    const workflow = await stack.createWorkflow([testNode("a", "echo"), testNode("b", "echo", ["a"])]);
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
  }, 120_000);
});
