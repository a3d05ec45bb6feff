// Fault suite: the scheduler dies (kill -9) between claiming nodes and enqueueing them; two schedulers and three
// workers share one database and one Redis.
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import { NodeQueues, createRedis } from "@trellis/queue";
import {
  type FaultStack,
  type PrivateRedis,
  recordMeasurement,
  startFaultStack,
  startPrivateRedis,
  testNode,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let redis: PrivateRedis;
let stack: FaultStack;

beforeAll(async () => {
  // Its own Redis: the test pauses its clients' writes, which must not touch anyone else's.
  redis = await startPrivateRedis();
  stack = await startFaultStack({
    name: "fault_scheduler",
    redisUrl: redis.url,
    handler: () => ({ status: ExecutionStatus.SUCCESS }),
  });
});

afterAll(async () => {
  await stack?.close();
  await redis?.close();
});

async function countByStatus(workflowId: string): Promise<Record<string, number>> {
  const { rows } = await stack.db.pool.query<{ status: string; n: number }>(
    "select status, count(*)::int as n from nodes where workflow_id = $1 group by status",
    [workflowId],
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

describe("schedulers under faults", () => {
  it("kill -9 between claim and enqueue: a new scheduler re-adds the lost jobs and every node runs once", async () => {
    const scheduler = await stack.startScheduler({ env: { SCHEDULER_BATCH_SIZE: "50" } });
    // Writes to Redis hang: the scheduler commits its first claim in PostgreSQL, then blocks in addBulk.
    const admin = redis.client();
    await admin.call("CLIENT", "PAUSE", "20000", "WRITE");
    const workflow = await stack.createWorkflow(Array.from({ length: 300 }, (_, i) => testNode(`n${i}`, "echo")));
    await waitFor(async () => ((await countByStatus(workflow.id)).QUEUED ?? 0) > 0, {
      description: "the scheduler to claim a batch",
    });
    await scheduler.kill();
    await admin.call("CLIENT", "UNPAUSE");
    const claimed = (await countByStatus(workflow.id)).QUEUED ?? 0;
    const queues = new NodeQueues(createRedis(redis.url), stack.queuePrefix);
    const jobs = await queues.queue("echo").getJobCounts("waiting", "delayed", "active");
    // Claimed and committed, never enqueued: only the reconciler can bring these back.
    expect(claimed).toBe(50);
    expect((jobs.waiting ?? 0) + (jobs.delayed ?? 0) + (jobs.active ?? 0)).toBe(0);
    await queues.close();

    await stack.startWorker(["echo"]);
    const restarted = await stack.startScheduler({ env: { SCHEDULER_BATCH_SIZE: "50" } });
    const readyAt = Date.now();
    const readded = await restarted.waitForLog((l) => l.msg === "re-added jobs missing from Redis", 15_000);
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    recordMeasurement("scheduler kill -9 mid-batch", {
      claimedWithoutJobs: claimed,
      jobsReaddedAfterRestartMs: Date.parse(String(readded.time)) - readyAt,
      readdedNodes: Number(readded.nodes),
      boundMs: stack.recoveryBoundMs,
    });
    expect([...stack.ledger.calls.values()].every((n) => n === 1)).toBe(true);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
    await stack.apps.stopAll();
  }, 90_000);

  it("two schedulers and three workers: no node is claimed or run twice", async () => {
    await Promise.all([
      stack.startScheduler({ env: { LOG_LEVEL: "debug" } }),
      stack.startScheduler({ env: { LOG_LEVEL: "debug" } }),
      stack.startWorker(["echo", "other"]),
      stack.startWorker(["echo", "other"]),
      stack.startWorker(["echo", "other"]),
    ]);
    const before = stack.ledger.calls.size;
    const shapes = Array.from({ length: 20 }, (_, w) => {
      switch (w % 3) {
        case 0:
          return [
            testNode("root", "echo"),
            ...Array.from({ length: 30 }, (_, i) => testNode(`f${i}`, i % 2 ? "echo" : "other", ["root"])),
          ];
        case 1:
          return Array.from({ length: 8 }, (_, i) => testNode(`c${i}`, "echo", i ? [`c${i - 1}`] : []));
        default:
          return [
            testNode("a", "echo"),
            testNode("b", "other", ["a"]),
            testNode("c", "echo", ["a"]),
            testNode("d", "other", ["b", "c"]),
          ];
      }
    });
    const workflows = await Promise.all(shapes.map((nodes) => stack.createWorkflow(nodes)));
    const ids = workflows.map((w) => w.id);
    const done = await stack.waitFinished(ids, 60_000);
    expect(done.every((w) => w.status === WorkflowStatus.SUCCEEDED)).toBe(true);
    const total = shapes.reduce((n, s) => n + s.length, 0);
    expect(stack.ledger.calls.size - before).toBe(total);
    expect(done.flatMap((w) => w.nodes).every((n) => n.attempt === 1)).toBe(true);
    const claimedBy = stack.apps.processes
      .filter((p) => p.name.startsWith("scheduler") && p.exitStatus === null)
      .map((p) => p.logs().reduce((n, l) => n + (typeof l.queued === "number" ? l.queued : 0), 0));
    recordMeasurement("two schedulers, three workers", { nodes: total, claimedByEach: claimedBy.join("/") });
    await stack.expectInvariants({ workflowIds: ids });
  }, 90_000);
});
