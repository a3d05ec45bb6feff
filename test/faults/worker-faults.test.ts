// Fault suite: a worker dies (kill -9) or freezes (kill -STOP past its lease) in the middle of ExecuteNode.
import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ExecutionStatus, NodeStatus, WorkflowStatus } from "@trellis/proto";
import {
  type AppProcess,
  type ExecuteHandler,
  type FaultStack,
  recordMeasurement,
  startFaultStack,
  testNode,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** First deliveries of a "held" node wait here until the test releases them. */
const held = new Map<string, () => void>();
const releases = new Map<string, Promise<void>>();

function hold(key: string): Promise<void> {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  held.set(key, release);
  releases.set(key, gate);
  return gate;
}

/**
 * slow: the first delivery of a key waits for the test, then, like a real agent runtime, finishes its work (the
 * effect) even though the caller went away; later deliveries pass at once.
 * held: the first delivery of a key waits for the test, then answers TASK_ERROR (a late result that must not count);
 * later deliveries pass at once. echo: passes at once.
 */
const handler: ExecuteHandler = async (request) => {
  const node = request.node!;
  const key = request.context!.idempotencyKey;
  const output = fromJson(ValueSchema, { node: node.id, attempt: request.context!.attempt });
  switch (node.capability) {
    case "slow":
      if (!releases.has(key)) await hold(key);
      return { status: ExecutionStatus.SUCCESS, output };
    case "held":
      if (!releases.has(key)) {
        await hold(key);
        return {
          status: ExecutionStatus.TASK_ERROR,
          errorMessage: `late result of attempt ${request.context!.attempt}`,
        };
      }
      return { status: ExecutionStatus.SUCCESS, output };
    default:
      return { status: ExecutionStatus.SUCCESS, output };
  }
};

let stack: FaultStack;

beforeAll(async () => {
  stack = await startFaultStack({ name: "fault_worker", handler });
  await stack.startScheduler();
});

afterAll(async () => {
  for (const release of held.values()) release();
  await stack?.close();
});

describe("a worker that dies or freezes mid-ExecuteNode", () => {
  it("kill -9: its nodes run again on another worker within the recovery bound, each effect applied once", async () => {
    const first = await stack.startWorker(["slow", "echo"]);
    const fanOut = ["s1", "s2", "s3", "s4"].map((id) => testNode(id, "slow"));
    const workflow = await stack.createWorkflow([
      ...fanOut,
      testNode("join", "echo", ["s1", "s2", "s3", "s4"]),
      testNode("after", "echo", ["join"]),
    ]);
    const keys = ["s1", "s2", "s3", "s4"].map((id) => `${workflow.id}/${id}`);
    await waitFor(() => keys.every((k) => held.has(k)), { description: "the four slow calls to be in flight" });
    const second = await stack.startWorker(["slow", "echo"]);
    const killedAt = Date.now();
    await first.kill();
    // The NodeService finishes the work it had started: each effect is applied, its answer has nowhere to go.
    for (const k of keys) held.get(k)!();

    const [done] = await stack.waitFinished([workflow.id], stack.recoveryBoundMs + 15_000);
    const recoveredMs = Date.now() - killedAt;
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    // Delivered twice (at least once), recorded once, applied once: the key is the same for every delivery.
    for (const id of ["s1", "s2", "s3", "s4"]) {
      const key = `${workflow.id}/${id}`;
      expect(stack.ledger.calls.get(key)).toBe(2);
      expect(stack.ledger.effects.get(key)).toBe(1);
      expect(stack.ledger.replays.get(key)).toBe(1);
      const node = done!.nodes.find((n) => n.id === id)!;
      expect(node.attempt).toBe(2);
      // The recorded output is the first effect's, whichever delivery's answer won.
      expect(toJson(ValueSchema, node.output!)).toEqual({ node: id, attempt: 1 });
    }
    recordMeasurement("worker kill -9 mid-call", {
      recoveredMs,
      boundMs: stack.recoveryBoundMs,
      workerStaleMs: stack.timings.workerStaleMs,
      reconcileIntervalMs: stack.timings.reconcileIntervalMs,
    });
    await stack.expectInvariants({ workflowIds: [workflow.id] });
    await second.stop();
  });

  it("kill -STOP past its lease, then -CONT: the late result is refused, the re-run's result stands", async () => {
    const frozen: AppProcess = await stack.startWorker(["held", "echo"]);
    const workflow = await stack.createWorkflow([testNode("x", "held"), testNode("y", "echo", ["x"])]);
    const key = `${workflow.id}/x`;
    await waitFor(() => held.has(key), { description: "the first delivery of x to be held" });
    await stack.startWorker(["held", "echo"]);
    frozen.signal("SIGSTOP");
    const stoppedAt = Date.now();

    const [done] = await stack.waitFinished([workflow.id], stack.recoveryBoundMs + 15_000);
    recordMeasurement("worker kill -STOP past its lease", {
      recoveredMs: Date.now() - stoppedAt,
      boundMs: stack.recoveryBoundMs,
    });
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);

    // Now the frozen worker wakes up holding the answer of attempt 1 (a TASK_ERROR): it must change nothing.
    held.get(key)!();
    frozen.signal("SIGCONT");
    await frozen.waitForLog(
      (l) => l.node_id === "x" && l.workflow_id === workflow.id && /lease was lost/.test(String(l.msg)),
      15_000,
      "the stale result to be refused",
    );
    const x = await stack.stateManager.getNode(workflow.id, "x");
    expect(x.status).toBe(NodeStatus.PASS);
    expect(x.attempt).toBe(2);
    expect(x.error).toBeUndefined();
    expect(toJson(ValueSchema, x.output!)).toEqual({ node: "x", attempt: 2 });
    expect(await stack.stateManager.getWorkflowStatus(workflow.id)).toBe(WorkflowStatus.SUCCEEDED);
    const attempts = await stack.db.pool.query(
      "select attempt, outcome from node_attempts where workflow_id = $1 and node_id = 'x' order by attempt",
      [workflow.id],
    );
    expect(attempts.rows).toEqual([
      { attempt: 1, outcome: "RETRY" },
      { attempt: 2, outcome: "PASS" },
    ]);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
    await frozen.stop();
  });
});
