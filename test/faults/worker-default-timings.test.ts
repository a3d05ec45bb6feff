// Fault suite: a worker killed mid-call with the engine's default liveness settings (heartbeat 1 s, WORKER_STALE_MS
// 5 s) and the default retry policy (1 s backoff): once its start is written (the worker's session covers it), and
// before (its job's BullMQ lock covers it). The recovery time is recorded (test-artifacts/measurements.jsonl,
// docs/guarantees.md); the test asserts only what is deterministic: the node runs again, on the other worker, and
// its effect is applied once.
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import {
  type ExecuteHandler,
  type FaultStack,
  recordMeasurement,
  startFaultStack,
  testNode,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** Each capability's calls: the first waits until released, the time of the second is kept. */
class HeldFirstCall {
  calls = 0;
  secondCallAt = 0;
  release: () => void = () => undefined;
  private readonly held = new Promise<void>((resolve) => {
    this.release = resolve;
  });

  async call(): Promise<void> {
    this.calls++;
    if (this.calls === 1) await this.held;
    else if (this.secondCallAt === 0) this.secondCallAt = Date.now();
  }
}

const byCapability = { llm: new HeldFirstCall(), unstarted: new HeldFirstCall() };

const handler: ExecuteHandler = async (request) => {
  await byCapability[request.node!.capability as keyof typeof byCapability].call();
  return { status: ExecutionStatus.SUCCESS };
};

let stack: FaultStack;

beforeAll(async () => {
  stack = await startFaultStack({
    name: "fault_worker_defaults",
    handler,
    // The apps' defaults for liveness; the reconciler's defaults do not take part in a dead worker's recovery.
    timings: { workerStaleMs: 5_000, heartbeatMs: 1_000 },
  });
  await stack.startScheduler();
});

afterAll(async () => {
  for (const held of Object.values(byCapability)) held.release();
  await stack?.close();
});

describe("a worker killed with the default liveness settings", () => {
  it("its node runs again on another worker (the time is recorded)", async () => {
    const held = byCapability.llm;
    const first = await stack.startWorker(["llm"]);
    // The default retry policy: the lost attempt waits the default 1 s backoff.
    const workflow = await stack.createWorkflow([testNode("call", "llm", [], { retryPolicy: undefined })]);
    await waitFor(() => held.calls === 1, { description: "the first call to be in flight" });
    // Past WORKER_START_AFTER_MS the start is written: the node is RUNNING under the worker's session.
    await waitFor(async () => (await stack.countNodes([workflow.id], "RUNNING")) === 1, {
      description: "the call's start to be written",
    });
    await stack.startWorker(["llm"]);
    const killedAt = Date.now();
    await first.kill();
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(held.calls).toBe(2);
    expect(done!.nodes[0]!.attempt).toBe(2);
    recordMeasurement("worker kill -9 mid-call, default liveness settings", {
      runsAgainAfterMs: held.secondCallAt - killedAt,
      workerStaleMs: 5_000,
      heartbeatMs: 1_000,
    });
    held.release();
  });

  it("a node called before its start was written runs again once BullMQ finds its job stalled", async () => {
    const held = byCapability.unstarted;
    // The start is never written while the call lasts: the node stays QUEUED under its job.
    const env = { WORKER_START_AFTER_MS: "60000" };
    const first = await stack.startWorker(["unstarted"], { env });
    const workflow = await stack.createWorkflow([testNode("call", "unstarted", [], { retryPolicy: undefined })]);
    await waitFor(() => held.calls === 1, { description: "the first call to be in flight" });
    expect(await stack.countNodes([workflow.id], "QUEUED")).toBe(1);
    await stack.startWorker(["unstarted"], { env });
    const killedAt = Date.now();
    await first.kill();
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(held.calls).toBe(2);
    // The lost call's attempt was never written: the one that passed is the first on record.
    expect(done!.nodes[0]!.attempt).toBe(1);
    recordMeasurement("worker kill -9 mid-call before the start was written, default liveness settings", {
      runsAgainAfterMs: held.secondCallAt - killedAt,
      heartbeatMs: 1_000,
    });
    held.release();
  });
});
