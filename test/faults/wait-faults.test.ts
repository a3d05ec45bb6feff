// Fault suite: a node waiting for a signal, and one waiting for its start time, outlive every app and Redis.
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ExecutionStatus, NodeStatus, WorkflowStatus } from "@trellis/proto";
import { type ExecuteHandler, type FaultStack, startFaultStack, testNode, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const handler: ExecuteHandler = async (request) => ({
  status: ExecutionStatus.SUCCESS,
  output: fromJson(ValueSchema, { node: request.node!.id }),
});

let stack: FaultStack;

beforeAll(async () => {
  stack = await startFaultStack({ name: "fault_waits", handler });
});

afterAll(async () => {
  await stack?.close();
});

async function nodeStatus(workflowId: string, nodeId: string): Promise<string> {
  const { rows } = await stack.db.pool.query("select status from nodes where workflow_id = $1 and id = $2", [
    workflowId,
    nodeId,
  ]);
  return rows[0]?.status;
}

describe("waits under faults", () => {
  it("a wait survives scheduler, worker and api restarts and the loss of Redis; a signal then completes it", async () => {
    let api = await stack.startApi();
    let scheduler = await stack.startScheduler();
    let worker = await stack.startWorker(["echo"]);
    const notBefore = Date.now() + 5_000;
    const workflow = await stack.createWorkflow([
      testNode("plan", "echo"),
      testNode("approve", "", ["plan"], { wait: {} }),
      testNode("act", "echo", ["approve"]),
      testNode("later", "echo", [], { notBefore: timestampFromMs(notBefore) }),
    ]);
    await waitFor(async () => (await nodeStatus(workflow.id, "approve")) === "WAITING", {
      description: "approve to be WAITING",
    });
    expect(await nodeStatus(workflow.id, "later")).toBe("WAITING");
    // Every app goes, and every key of the stack in Redis with them.
    await scheduler.kill();
    await worker.kill();
    await api.app.kill();
    const keys = await stack.redis.keys(`${stack.queuePrefix}:*`);
    if (keys.length > 0) await stack.redis.del(...keys);
    expect(await nodeStatus(workflow.id, "approve")).toBe("WAITING");
    api = await stack.startApi();
    scheduler = await stack.startScheduler();
    worker = await stack.startWorker(["echo"]);
    const { node } = await api.client.signalNode(
      { workflowId: workflow.id, nodeId: "approve", output: fromJson(ValueSchema, { approved: true }) },
      { deadline: Date.now() + 10_000 },
    );
    expect(node?.status).toBe(NodeStatus.PASS);
    const [done] = await stack.waitFinished([workflow.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    // The timer fired after its time, not before, across the restarts.
    const later = done!.nodes.find((n) => n.id === "later")!;
    expect(timestampDate(later.startedAt!).getTime()).toBeGreaterThanOrEqual(notBefore - 1);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  });
});
