import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { EditType, ErrorKind, NodeEditSchema, NodeSchema, type Node } from "@trellis/proto";
import { queueGenOfJobId } from "@trellis/queue";
import { createTestDatabase, type TestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgStateManager, type ResultToRecord } from "../src/index.js";

// Parity: every state change has one implementation, so the same results give the same rows and events whether
// they are recorded one by one, in a batch of successes, or in one batch mixed with errors and edits.

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_parity");
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await testDb.drop();
});

function node(id: string, parentIds: string[] = []): Node {
  return create(NodeSchema, { id, capability: "echo", parentIds, input: { id } });
}

/** plain -> child; planner (inserts "inserted" under itself); failing -> skipped; flaky (retried); lone. */
const GRAPH = [
  node("plain"),
  node("child", ["plain"]),
  node("planner"),
  node("failing"),
  node("skipped", ["failing"]),
  node("flaky"),
  node("lone"),
];

type Result = ResultToRecord["result"];

const RESULTS: Record<string, Result> = {
  plain: { kind: "success", output: fromJson(ValueSchema, { n: 1 }), edits: [] },
  planner: {
    kind: "success",
    output: fromJson(ValueSchema, "planned"),
    edits: [create(NodeEditSchema, { type: EditType.INSERT, node: node("inserted", ["planner"]) })],
  },
  failing: { kind: "error", errorKind: ErrorKind.TASK_ERROR, message: "bad input" },
  flaky: { kind: "error", errorKind: ErrorKind.INFRA_ERROR, message: "connection reset" },
  lone: { kind: "success", output: undefined, edits: [] },
};

/** A workflow with every node of RESULTS RUNNING; returns its id and the results to record under their leases. */
async function running(name: string): Promise<{ id: string; items: ResultToRecord[] }> {
  const { workflow } = await sm.createWorkflow({ name, nodes: GRAPH });
  const claimed = (await sm.claimReadyNodes(1_000)).filter((n) => n.workflowId === workflow.id);
  const started = await sm.startNodes(claimed.map((n) => ({ workflowId: workflow.id, nodeId: n.nodeId })));
  const leaseOf = new Map(started.map((s) => [s!.node.id, s!.lease]));
  const items = Object.entries(RESULTS).map(([nodeId, result]) => ({
    workflowId: workflow.id,
    nodeId,
    lease: leaseOf.get(nodeId)!,
    result,
  }));
  return { id: workflow.id, items };
}

/** Everything the results wrote, without ids, times and sequence numbers; events as a sorted list. */
async function snapshot(workflowId: string) {
  const nodes = await testDb.pool.query(
    `select id, status, output, error_kind, error_message, attempt, pending_parents, queue_gen, lease is null as free
       from nodes where workflow_id = $1 order by id`,
    [workflowId],
  );
  const attempts = await testDb.pool.query(
    "select node_id, attempt, outcome from node_attempts where workflow_id = $1 order by node_id, attempt",
    [workflowId],
  );
  const events = await testDb.pool.query(
    `select sequence, type, node_id, workflow_status, node_status, data from workflow_events
      where workflow_id = $1 order by sequence`,
    [workflowId],
  );
  const workflow = await testDb.pool.query("select status, event_seq from workflows where id = $1", [workflowId]);
  const sequences = events.rows.map((e) => Number(e.sequence));
  return {
    workflow: { status: workflow.rows[0].status, gapFree: sequences.every((s, i) => s === i + 1) },
    lastSequence: Number(workflow.rows[0].event_seq),
    nodes: nodes.rows,
    attempts: attempts.rows,
    events: events.rows.map(({ sequence: _, ...e }) => JSON.stringify(e)).sort(),
  };
}

describe("recording results", () => {
  it("writes the same rows and events alone, batched, and mixed with errors and edits", async () => {
    const alone = await running("alone");
    for (const item of alone.items) await sm.recordResults([item], { dispatch: true });

    // Successes in one batch (the one-statement path), the others in a second batch.
    const split = await running("split");
    const isPlain = (i: ResultToRecord) => i.result.kind === "success" && i.result.edits.length === 0;
    await sm.recordResults(split.items.filter(isPlain), { dispatch: true });
    await sm.recordResults(
      split.items.filter((i) => !isPlain(i)),
      { dispatch: true },
    );

    const mixed = await running("mixed");
    const recorded = await sm.recordResults(mixed.items, { dispatch: true });
    expect(recorded.outcomes.map((o) => o.outcome)).toEqual(["passed", "passed", "failed", "retry", "passed"]);
    expect(recorded.dispatched.map((n) => n.nodeId).sort()).toEqual(["child", "inserted"]);

    const [a, s, m] = [await snapshot(alone.id), await snapshot(split.id), await snapshot(mixed.id)];
    expect(a.workflow).toEqual({ status: "RUNNING", gapFree: true });
    expect(s).toEqual(a);
    expect(m).toEqual(a);
    // What the rows say, once: the planner's node was inserted and queued, the failure skipped its child.
    const statusOf = Object.fromEntries(a.nodes.map((n) => [n.id, n.status]));
    expect(statusOf).toEqual({
      child: "QUEUED",
      failing: "FAIL",
      flaky: "QUEUED",
      inserted: "QUEUED",
      lone: "PASS",
      plain: "PASS",
      planner: "PASS",
      skipped: "SKIPPED",
    });
  });

  it("writes the same rows and events for a success recorded with its start as for a start, then a PASS", async () => {
    const session = await sm.registerWorker("parity-worker", ["echo"], "localhost");
    const successes = Object.entries(RESULTS).filter(([, r]) => r.kind === "success" && r.edits.length === 0);
    const queued = async (name: string) => {
      const { workflow } = await sm.createWorkflow({ name, nodes: GRAPH });
      const claimed = (await sm.claimReadyNodes(1_000)).filter((n) => n.workflowId === workflow.id);
      return { id: workflow.id, genOf: new Map(claimed.map((n) => [n.nodeId, queueGenOfJobId(n.jobId)!])) };
    };
    // Started first (its own transaction), then passed.
    const separate = await queued("separate");
    const started = await sm.startNodes(
      successes.map(([nodeId]) => ({ workflowId: separate.id, nodeId, queueGen: separate.genOf.get(nodeId) })),
      session,
    );
    await sm.recordResults(
      successes.map(([nodeId, result], i) => ({ workflowId: separate.id, nodeId, lease: started[i]!.lease, result })),
      { dispatch: true, workerSession: session, capabilities: ["echo"] },
    );
    // Read, called, and recorded with the start in one transaction.
    const together = await queued("together");
    const read = await sm.readQueued(
      successes.map(([nodeId]) => ({ workflowId: together.id, nodeId, queueGen: together.genOf.get(nodeId) })),
    );
    expect(read.map((r) => r?.kind)).toEqual(successes.map(() => "call"));
    const { outcomes } = await sm.recordResults(
      successes.map(([nodeId, result]) => ({
        workflowId: together.id,
        nodeId,
        lease: "",
        result,
        unstarted: { queueGen: together.genOf.get(nodeId)!, startedAt: new Date() },
      })),
      { dispatch: true, workerSession: session, capabilities: ["echo"] },
    );
    expect(outcomes.map((o) => o.outcome)).toEqual(successes.map(() => "passed"));
    const [a, b] = [await snapshot(separate.id), await snapshot(together.id)];
    expect(b).toEqual(a);
    expect(a.attempts.map((r) => [r.node_id, r.attempt, r.outcome])).toEqual(
      successes.map(([nodeId]) => [nodeId, 1, "PASS"]).sort(),
    );
    // A stale generation (the node was queued again since the read) records nothing.
    const again = await queued("stale");
    const { outcomes: stale } = await sm.recordResults(
      [
        {
          workflowId: again.id,
          nodeId: "lone",
          lease: "",
          result: RESULTS.lone!,
          unstarted: { queueGen: again.genOf.get("lone")! + 1, startedAt: new Date() },
        },
      ],
      { dispatch: true, workerSession: session, capabilities: ["echo"] },
    );
    expect(stale.map((o) => o.outcome)).toEqual(["stale"]);
    expect((await sm.getNode(again.id, "lone")).attempt).toBe(0);
  });

  it("records a result once when it is given twice in a batch, on either path", async () => {
    for (const mixWithError of [false, true]) {
      const { id, items } = await running(`twice-${mixWithError}`);
      const plain = items.find((i) => i.nodeId === "lone")!;
      const batch = mixWithError ? [plain, plain, items.find((i) => i.nodeId === "flaky")!] : [plain, plain];
      const { outcomes } = await sm.recordResults(batch, { dispatch: true });
      expect(outcomes.slice(0, 2).map((o) => o.outcome)).toEqual(["passed", "stale"]);
      const attempts = await testDb.pool.query(
        "select count(*)::int as n from node_attempts where workflow_id = $1 and node_id = 'lone'",
        [id],
      );
      expect(attempts.rows[0].n).toBe(1);
    }
  });
});
