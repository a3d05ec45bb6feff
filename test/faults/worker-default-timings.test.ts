// Fault suite: a worker killed mid-call with the engine's default liveness settings (heartbeat 1 s, WORKER_STALE_MS
// 5 s) and the default retry policy (1 s backoff). The recovery time is recorded (test-artifacts/measurements.jsonl,
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

let release: () => void = () => undefined;
const firstCallHeld = new Promise<void>((resolve) => {
  release = resolve;
});
let calls = 0;
let secondCallAt = 0;

const handler: ExecuteHandler = async () => {
  calls++;
  if (calls === 1) await firstCallHeld;
  else if (secondCallAt === 0) secondCallAt = Date.now();
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
  release();
  await stack?.close();
});

describe("a worker killed with the default liveness settings", () => {
  it("its node runs again on another worker (the time is recorded)", async () => {
    const first = await stack.startWorker(["llm"]);
    // The default retry policy: the lost attempt waits the default 1 s backoff.
    const workflow = await stack.createWorkflow([testNode("call", "llm", [], { retryPolicy: undefined })]);
    await waitFor(() => calls === 1, { description: "the first call to be in flight" });
    await stack.startWorker(["llm"]);
    const killedAt = Date.now();
    await first.kill();
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(calls).toBe(2);
    expect(done!.nodes[0]!.attempt).toBe(2);
    recordMeasurement("worker kill -9 mid-call, default liveness settings", {
      runsAgainAfterMs: secondCallAt - killedAt,
      workerStaleMs: 5_000,
      heartbeatMs: 1_000,
    });
    release();
  });
});
