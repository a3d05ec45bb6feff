// Fault suite: Redis, which holds only what PostgreSQL can rebuild, is flushed, shut down, has its clients killed,
// and fills up (maxmemory with noeviction) while workflows run.
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import {
  type FaultStack,
  type PrivateRedis,
  fanInNodes,
  recordMeasurement,
  startFaultStack,
  startPrivateRedis,
  testNode,
  waitFor,
} from "@trellis/testing";
import { expectGaveUpWaiting } from "./startup-checks.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let redis: PrivateRedis;
let stack: FaultStack;

beforeAll(async () => {
  redis = await startPrivateRedis();
  stack = await startFaultStack({
    name: "fault_redis",
    redisUrl: redis.url,
    handler: async (request) => {
      if (request.node!.capability === "work") await new Promise((resolve) => setTimeout(resolve, 300));
      return { status: ExecutionStatus.SUCCESS };
    },
  });
  await Promise.all([stack.startScheduler(), stack.startWorker(["work", "echo"]), stack.startWorker(["work", "echo"])]);
}, 120_000);

afterAll(async () => {
  await stack?.close();
  await redis?.close();
});

/** Four workflows, each a fan-out of ten 300 ms nodes into a join and a chain of three. */
async function startLoad(): Promise<string[]> {
  const workflows = await Promise.all(
    Array.from({ length: 4 }, () =>
      stack.createWorkflow(
        fanInNodes(10, [
          testNode("c1", "work", ["join"]),
          testNode("c2", "echo", ["c1"]),
          testNode("c3", "work", ["c2"]),
        ]),
      ),
    ),
  );
  return workflows.map((w) => w.id);
}

/** Waits until some nodes of `ids` are running, so the fault lands mid-run. */
async function midRun(ids: readonly string[]): Promise<void> {
  await waitFor(async () => (await stack.countNodes(ids, "RUNNING")) > 0, { description: "nodes to be running" });
}

/** Every app is still up and ready (none crashed on the fault). */
async function appsReady(): Promise<void> {
  for (const app of stack.apps.processes) {
    expect(app.exitStatus, `${app.name} exited:\n${app.tail()}`).toBeNull();
    await app.waitReady(30_000);
  }
}

async function finishAndCheck(name: string, ids: readonly string[], faultAt: number): Promise<void> {
  const done = await stack.waitFinished(ids, 60_000);
  expect(done.map((w) => w.status)).toEqual(ids.map(() => WorkflowStatus.SUCCEEDED));
  recordMeasurement(name, { finishedAfterFaultMs: Date.now() - faultAt, boundMs: stack.recoveryBoundMs });
  await appsReady();
  await stack.expectInvariants({ workflowIds: ids });
}

describe("Redis faults: every unfinished workflow still finishes", () => {
  it("FLUSHALL mid-run", async () => {
    const ids = await startLoad();
    await midRun(ids);
    const admin = redis.client();
    await admin.flushall();
    await finishAndCheck("redis FLUSHALL mid-run", ids, Date.now());
  }, 120_000);

  it("SHUTDOWN NOSAVE, then a restart with nothing in it", async () => {
    const ids = await startLoad();
    await midRun(ids);
    await redis.shutdown();
    const downAt = Date.now();
    // The apps keep running without Redis; readiness says so.
    await waitFor(
      async () => {
        const ready = await Promise.all(
          stack.apps.processes.map((a) =>
            fetch(`http://127.0.0.1:${a.httpPort}/readyz`)
              .then((r) => r.status)
              .catch(() => 0),
          ),
        );
        return ready.every((status) => status === 503);
      },
      { description: "every app to report not ready while Redis is down" },
    );
    await redis.start();
    await finishAndCheck("redis SHUTDOWN NOSAVE + restart", ids, downAt);
  }, 120_000);

  it("CLIENT KILL of every connection", async () => {
    const ids = await startLoad();
    await midRun(ids);
    const admin = redis.client();
    const killed = Number(await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"));
    expect(killed).toBeGreaterThan(0);
    await finishAndCheck("redis CLIENT KILL", ids, Date.now());
  }, 120_000);

  it("maxmemory reached with noeviction: enqueueing fails, nothing is lost, work resumes once memory frees", async () => {
    const admin = redis.client();
    // 8 MiB of ballast, then a limit 4 MiB below what is used: every write that needs memory is refused (OOM), and
    // what finished jobs free is far too little to get under the limit.
    const chunk = "x".repeat(256 * 1024);
    for (let i = 0; i < 32; i++) await admin.set(`ballast:${i}`, chunk);
    const used = Number(/used_memory:(\d+)/.exec(await admin.info("memory"))![1]);
    await admin.config("SET", "maxmemory", String(used - 4 * 1024 * 1024));
    await expect(admin.set("probe", "x")).rejects.toThrow(/OOM/);
    const ids = await startLoad();
    const full = stack.apps.processes.find((p) => p.name.startsWith("scheduler"))!;
    await full.waitForLog((l) => /OOM/.test(JSON.stringify(l.err ?? "")), 15_000, "an enqueue refused with OOM");
    // Nothing is lost: every node is PENDING or QUEUED in PostgreSQL, whatever Redis refused.
    const { rows } = await stack.db.pool.query<{ status: string }>(
      "select distinct status from nodes where workflow_id = any($1::uuid[])",
      [ids],
    );
    expect(rows.every((r) => r.status === "PENDING" || r.status === "QUEUED")).toBe(true);
    // Redis stays full for a few reconcile rounds; the engine keeps trying and keeps its records straight.
    await new Promise((resolve) => setTimeout(resolve, 4 * stack.timings.reconcileIntervalMs));
    const freedAt = Date.now();
    await admin.del(...(await admin.keys("ballast:*")));
    await admin.config("SET", "maxmemory", "0");
    await finishAndCheck("redis maxmemory noeviction, then freed", ids, freedAt);
  }, 120_000);

  it("apps started before Redis wait with a logged backoff, then start; past STARTUP_TIMEOUT_MS they exit 1 with one line", async () => {
    await redis.shutdown();
    const patient = await Promise.all([
      stack.startScheduler({ ready: false }),
      stack.startWorker(["echo"], { ready: false }),
      stack.startDashboard({ ready: false }),
    ]);
    const impatient = await Promise.all([
      stack.startScheduler({ ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }),
      stack.startWorker(["echo"], { ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }),
      stack.startDashboard({ ready: false, env: { STARTUP_TIMEOUT_MS: "1500" } }),
    ]);
    await expectGaveUpWaiting(impatient, "Redis", 1500, ["scheduler", "worker", "dashboard"]);
    for (const app of patient) {
      await app.waitForLog((l) => l.dependency === "Redis" && l.attempt === 3, 15_000, "a third attempt at Redis");
      expect(app.exitStatus).toBeNull();
    }
    await redis.start();
    const upAt = Date.now();
    await Promise.all(patient.map((app) => app.waitReady(30_000)));
    recordMeasurement("apps started before Redis", { readyAfterStartMs: Date.now() - upAt });
    const ids = await startLoad();
    const done = await stack.waitFinished(ids, 60_000);
    expect(done.map((w) => w.status)).toEqual(ids.map(() => WorkflowStatus.SUCCEEDED));
  }, 120_000);
});
