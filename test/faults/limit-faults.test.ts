// Fault suite: a concurrency cap holds across three workers of 16 slots each while a worker dies (kill -9) and the
// scheduler is replaced mid-run; a THROTTLED provider sees one probe per pause, not a storm.
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ExecutionStatus, WorkflowStatus } from "@trellis/proto";
import { type ExecuteHandler, type FaultStack, startFaultStack, testNode, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CAP = 3;

/** Calls of "llm" nodes in the NodeService right now, and the most seen at once (the provider's view of the cap). */
let active = 0;
let peak = 0;
/** Calls of "flaky" nodes, by time of arrival, and whether the provider answered THROTTLED. */
const flaky: { at: number; throttled: boolean }[] = [];
let throttleUntil = 0;

const handler: ExecuteHandler = async (request) => {
  const node = request.node!;
  const output = fromJson(ValueSchema, { node: node.id });
  switch (node.capability) {
    case "llm": {
      active++;
      peak = Math.max(peak, active);
      try {
        // A model call: long enough for the workers' 48 slots to be asked for many more than the cap at once.
        await new Promise((resolve) => setTimeout(resolve, 40 + Math.random() * 60));
      } finally {
        active--;
      }
      return { status: ExecutionStatus.SUCCESS, output, usage: { tokens: 10 } };
    }
    case "flaky": {
      // The provider refuses everything for 300 ms after a refusal, then takes calls again.
      const now = Date.now();
      if (flaky.length === 0 || now < throttleUntil) {
        if (flaky.length === 0) throttleUntil = now + 300;
        flaky.push({ at: now, throttled: true });
        return { status: ExecutionStatus.THROTTLED, retryAfter: { nanos: 300_000_000 }, errorMessage: "429" };
      }
      flaky.push({ at: now, throttled: false });
      return { status: ExecutionStatus.SUCCESS, output };
    }
    default:
      return { status: ExecutionStatus.SUCCESS, output };
  }
};

let stack: FaultStack;

beforeAll(async () => {
  stack = await startFaultStack({ name: "fault_limits", handler });
});

afterAll(async () => {
  await stack?.close();
});

describe("flow control under faults", () => {
  it(`never more than ${CAP} RUNNING nodes hold a capped key, through a worker's kill -9 and a new scheduler`, async () => {
    const { client } = await stack.startApi();
    await client.setLimit({ limit: { key: "model:x", maxConcurrency: CAP } });
    const scheduler = await stack.startScheduler();
    const env = { WORKER_CONCURRENCY: "16" };
    const victim = await stack.startWorker(["llm", "echo"], { env });
    await stack.startWorker(["llm", "echo"], { env });
    await stack.startWorker(["llm", "echo"], { env });
    const workflows = [];
    for (let w = 0; w < 3; w++) {
      workflows.push(
        await stack.createWorkflow([
          ...Array.from({ length: 15 }, (_, i) => testNode(`m${i}`, "llm", [], { limitKeys: ["model:x"] })),
          ...Array.from({ length: 15 }, (_, i) => testNode(`e${i}`, "echo")),
        ]),
      );
    }
    const ids = workflows.map((w) => w.id);
    // The unlimited nodes are not held up behind the capped ones.
    await waitFor(async () => (await stack.countNodes(ids, "PASS")) >= 45, {
      description: "the echo nodes to pass",
      timeoutMs: 30_000,
    });
    await waitFor(async () => (await stack.countNodes(ids, "RUNNING")) > 0, { description: "a capped node running" });
    expect(peak).toBeLessThanOrEqual(CAP);
    await victim.kill();
    await scheduler.kill();
    await stack.startScheduler();
    const done = await stack.waitFinished(ids, stack.recoveryBoundMs + 60_000);
    expect(done.map((w) => w.status)).toEqual(ids.map(() => WorkflowStatus.SUCCEEDED));
    expect(done.map((w) => w.usage.tokens)).toEqual(ids.map(() => expect.any(Number)));
    // I6 (never over the cap, from every attempt's start and end) with I1-I5.
    await stack.expectInvariants({ workflowIds: ids });
  });

  it("a THROTTLED answer pauses the key: no call of its nodes until retry_after, then they run", async () => {
    const workflow = await stack.createWorkflow(
      Array.from({ length: 8 }, (_, i) => testNode(`f${i}`, "flaky", [], { limitKeys: ["provider:p"] })),
    );
    // One slot: without the pause the worker would call the next node at once, inside the provider's refusal.
    await stack.startWorker(["flaky"], { env: { WORKER_CONCURRENCY: "1" } });
    const [done] = await stack.waitFinished([workflow.id], 60_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    // One probe met the refusal; every other call came after the pause it announced.
    const refused = flaky.filter((c) => c.throttled);
    expect(refused).toHaveLength(1);
    expect(flaky.filter((c) => !c.throttled)).toHaveLength(8);
    expect(flaky.slice(1).every((c) => c.at >= refused[0]!.at + 300)).toBe(true);
    // The throttled attempt did not count against the retry policy.
    const { rows } = await stack.db.pool.query(
      "select outcome, count(*)::int as n from node_attempts where workflow_id = $1 group by outcome order by outcome",
      [workflow.id],
    );
    expect(rows).toEqual([
      { outcome: "PASS", n: 8 },
      { outcome: "THROTTLED", n: 1 },
    ]);
    await stack.expectInvariants({ workflowIds: [workflow.id] });
  });
});
