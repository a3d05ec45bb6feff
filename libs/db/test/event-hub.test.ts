import { ErrorKind, WorkflowAction, WorkflowStatus, type WorkflowEvent } from "@trellis/proto";
import { createChainWorkflow, createTestDatabase, passReadyNodes, waitFor, type TestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager, WorkflowEventHub } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;
let hub: WorkflowEventHub;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_events");
  sm = new PgStateManager(testDb.db);
  // A slow fallback poll proves that followers are woken by NOTIFY, not by polling.
  hub = new WorkflowEventHub({ stateManager: sm, databaseUrl: testDb.url, fallbackPollMs: 60_000 });
  await hub.start();
});

afterAll(async () => {
  await hub.close();
  await testDb.drop();
});

const createChain = (name: string) => createChainWorkflow(sm, name);
const step = (workflowId: string) => passReadyNodes(sm, workflowId);

async function collect(
  workflowId: string,
  after: number,
  into: WorkflowEvent[],
  signal = new AbortController().signal,
) {
  for await (const event of hub.follow(workflowId, after, signal)) into.push(event);
  return into;
}

describe("WorkflowEventHub.follow", () => {
  it("replays the complete ordered stream of a finished workflow and ends on its terminal event", async () => {
    const id = await createChain("finished");
    await step(id);
    await step(id);
    const events = await collect(id, 0, []);
    expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
    const last = events[events.length - 1]!;
    expect(last.type).toBe("workflow.status_changed");
    expect(last.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    expect(await sm.listEvents(id, 0)).toEqual(events);
  });

  it("follows a running workflow live, for two watchers at once, and resumes from a sequence", async () => {
    const id = await createChain("live");
    const first: WorkflowEvent[] = [];
    const second: WorkflowEvent[] = [];
    const a = collect(id, 0, first);
    const b = collect(id, 0, second);
    await waitFor(() => first.length === 1 && second.length === 1, { description: "workflow.created for both" });
    await step(id);
    await waitFor(() => first.some((e) => e.nodeId === "a" && e.type === "node.status_changed" && e.nodeStatus === 4), {
      description: "node a PASS event, live",
    });
    await step(id);
    await Promise.all([a, b]);
    expect(second).toEqual(first);
    const resumed = await collect(id, 3, []);
    expect(resumed).toEqual(first.slice(3));
  });

  it("ends at once for a finished workflow with nothing after the sequence, and stops on abort", async () => {
    const id = await createChain("abort");
    await step(id);
    await step(id);
    const all = await collect(id, 0, []);
    expect(await collect(id, all.length, [])).toEqual([]);

    const running = await createChain("abort-running");
    const controller = new AbortController();
    const got: WorkflowEvent[] = [];
    const following = collect(running, 0, got, controller.signal);
    await waitFor(() => got.length === 1);
    controller.abort();
    await following;
    expect(got).toHaveLength(1);
  });

  it("includes every event of the terminal transaction (each node CANCELLED after the workflow's CANCELLED)", async () => {
    const id = await createChain("cancel");
    await sm.updateWorkflow(id, { action: WorkflowAction.CANCEL });
    const events = await collect(id, 0, []);
    expect(events.map((e) => e.type)).toEqual([
      "workflow.created",
      "workflow.status_changed",
      "node.status_changed",
      "node.status_changed",
    ]);
  });

  it("replays through a FAILED workflow that was RETRYed and follows it to its new end", async () => {
    const id = await createChain("retried");
    const [a] = (await sm.claimReadyNodes(100)).filter((x) => x.workflowId === id);
    const started = await sm.startNode(id, a!.nodeId);
    await sm.recordResult(id, "a", started!.lease, { kind: "error", errorKind: ErrorKind.TASK_ERROR, message: "no" });
    expect((await sm.getWorkflow(id)).status).toBe(WorkflowStatus.FAILED);
    await sm.updateWorkflow(id, { action: WorkflowAction.RETRY });
    const got: WorkflowEvent[] = [];
    const following = collect(id, 0, got);
    await waitFor(() =>
      got.some(
        (e) => e.workflowStatus === WorkflowStatus.RUNNING && e.type === "workflow.status_changed" && e.sequence > 3n,
      ),
    );
    await step(id);
    await step(id);
    await following;
    expect(got.at(-1)!.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
  });

  it("rejects an unknown workflow with NOT_FOUND", async () => {
    await expect(collect(crypto.randomUUID(), 0, [])).rejects.toThrow(/not found/);
  });
});
