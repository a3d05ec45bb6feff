import { create } from "@bufbuild/protobuf";
import {
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
} from "@trellis/proto";
import { DEFAULT_RETRY_POLICY } from "@trellis/core";
import { NodeQueues, createRedis } from "@trellis/queue";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStack, startTestStack } from "./stack.js";

let testDb: TestDatabase;
let stack: TestStack;
let client: GrpcClient<typeof WorkflowService>;
let redis: Redis;
let queues: NodeQueues;
// Generous: a loaded 2-core machine answers late, and these bound only how long a failure takes to show.
const deadline = () => ({ deadline: Date.now() + 15_000 });
/** A job no worker took: BullMQ's `wait` list, or `prioritized` for a job added with a priority. */
const isWaiting = (state: string) => state === "waiting" || state === "prioritized";

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_cancel_jobs");
  stack = await startTestStack(testDb);
  client = createGrpcClient(WorkflowService, stack.apiAddr);
  redis = createRedis(stack.redisUrl);
  queues = new NodeQueues(redis, stack.queuePrefix);
});

afterAll(async () => {
  await queues?.close();
  redis?.disconnect();
  client?.close();
  await stack?.close();
  await testDb?.drop();
});

/** Creates a workflow whose nodes wait for capabilities no worker serves; returns its id once they are QUEUED. */
async function queuedForNobody(name: string, capabilities: string[]): Promise<string> {
  const { workflow } = await client.createWorkflow(
    { name, nodes: capabilities.map((capability, i) => create(NodeSchema, { id: `n${i}`, capability })) },
    deadline(),
  );
  const id = workflow!.id;
  await waitFor(
    async () =>
      (await client.getWorkflow({ workflowId: id }, deadline())).workflow!.nodes.every(
        (n) => n.status === NodeStatus.QUEUED,
      ),
    { timeoutMs: 20_000, description: "the nodes to be queued" },
  );
  return id;
}

describe("CANCEL of a workflow", () => {
  it("removes its queued jobs from Redis (a capability no worker serves keeps them in wait otherwise)", async () => {
    const id = await queuedForNobody("cancel-jobs", ["nobody.serves", "nobody.either", "nobody.serves"]);
    const jobs = [
      { capability: "nobody.serves", jobId: `${id}/n0/1` },
      { capability: "nobody.either", jobId: `${id}/n1/1` },
      { capability: "nobody.serves", jobId: `${id}/n2/1` },
    ];
    await waitFor(async () => (await queues.jobStates(jobs)).every(isWaiting), {
      timeoutMs: 20_000,
      description: "the jobs to wait in Redis",
    });

    const { workflow } = await client.updateWorkflow({ workflowId: id, action: WorkflowAction.CANCEL }, deadline());
    expect(workflow?.status).toBe(WorkflowStatus.CANCELLED);
    await waitFor(async () => (await queues.jobStates(jobs)).every((s) => s === "unknown"), {
      timeoutMs: 20_000,
      description: "the cancelled workflow's jobs to leave Redis",
    });
    for (const job of jobs) expect(await queues.queue(job.capability).getJob(job.jobId)).toBeUndefined();
    for (const capability of ["nobody.serves", "nobody.either"]) {
      const counts = await queues.queue(capability).getJobCounts("wait", "prioritized", "delayed", "active");
      expect(counts).toEqual({ wait: 0, prioritized: 0, delayed: 0, active: 0 });
    }
  }, 90_000);

  it("leaves the jobs of other workflows", async () => {
    const kept = await queuedForNobody("kept", ["nobody.keeps"]);
    const cancelled = await queuedForNobody("cancelled", ["nobody.keeps"]);
    await client.updateWorkflow({ workflowId: cancelled, action: WorkflowAction.CANCEL }, deadline());
    const [cancelledJob, keptJob] = [
      { capability: "nobody.keeps", jobId: `${cancelled}/n0/1` },
      { capability: "nobody.keeps", jobId: `${kept}/n0/1` },
    ];
    await waitFor(async () => (await queues.jobStates([cancelledJob]))[0] === "unknown", {
      timeoutMs: 20_000,
      description: "the cancelled workflow's job to leave Redis",
    });
    expect((await queues.jobStates([keptJob])).every(isWaiting)).toBe(true);
  }, 90_000);

  it("a job added after the cancel committed (its notification already handled) is removed by the reconciler", async () => {
    const kept = await queuedForNobody("late-kept", ["nobody.late"]);
    const cancelled = await queuedForNobody("late-cancelled", ["nobody.late"]);
    const [lateJob, keptJob] = [
      { capability: "nobody.late", jobId: `${cancelled}/n0/1` },
      { capability: "nobody.late", jobId: `${kept}/n0/1` },
    ];
    await client.updateWorkflow({ workflowId: cancelled, action: WorkflowAction.CANCEL }, deadline());
    await waitFor(async () => (await queues.jobStates([lateJob]))[0] === "unknown", {
      timeoutMs: 20_000,
      description: "the cancelled workflow's job to leave Redis",
    });
    // The race: a scheduler that claimed the node before the cancel adds its job only now.
    await queues.enqueue([
      {
        workflowId: cancelled,
        nodeId: "n0",
        capability: "nobody.late",
        jobId: lateJob.jobId,
        retryPolicy: DEFAULT_RETRY_POLICY,
      },
    ]);
    expect(isWaiting((await queues.jobStates([lateJob]))[0]!)).toBe(true);
    await waitFor(async () => (await queues.jobStates([lateJob]))[0] === "unknown", {
      timeoutMs: 20_000,
      description: "the reconciler to remove the late job",
    });
    expect((await queues.jobStates([keptJob])).every(isWaiting)).toBe(true);
  }, 90_000);
});
