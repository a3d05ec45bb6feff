import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { EditType, ErrorKind, NodeEditSchema, NodeSchema, NodeStatus, type Node } from "@trellis/proto";
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

  it("writes the same rows and events for results recorded with their start as for a start, then the results", async () => {
    const session = await sm.registerWorker("parity-worker", ["echo"], "localhost");
    const successes = Object.entries(RESULTS).filter(([, r]) => r.kind === "success" && r.edits.length === 0);
    const queued = async (name: string) => {
      const { workflow } = await sm.createWorkflow({ name, nodes: GRAPH });
      const claimed = (await sm.claimReadyNodes(1_000)).filter((n) => n.workflowId === workflow.id);
      return { id: workflow.id, genOf: new Map(claimed.map((n) => [n.nodeId, queueGenOfJobId(n.jobId)!])) };
    };
    const options = { dispatch: true, workerSession: session, capabilities: ["echo"] };
    /** Started first (its own transaction), then recorded. */
    const separately = async (name: string, results: [string, Result][]) => {
      const wf = await queued(name);
      const started = await sm.startNodes(
        results.map(([nodeId]) => ({ workflowId: wf.id, nodeId, queueGen: wf.genOf.get(nodeId) })),
        session,
      );
      await sm.recordResults(
        results.map(([nodeId, result], i) => ({ workflowId: wf.id, nodeId, lease: started[i]!.lease, result })),
        options,
      );
      return wf.id;
    };
    /** Read, called, and recorded with the start in one transaction. */
    const together = async (name: string, results: [string, Result][]) => {
      const wf = await queued(name);
      const read = await sm.readQueued(
        results.map(([nodeId]) => ({ workflowId: wf.id, nodeId, queueGen: wf.genOf.get(nodeId) })),
      );
      expect(read.map((r) => r?.kind)).toEqual(results.map(() => "call"));
      const { outcomes } = await sm.recordResults(
        results.map(([nodeId, result]) => ({
          workflowId: wf.id,
          nodeId,
          lease: "",
          result,
          unstarted: { queueGen: wf.genOf.get(nodeId)!, startedAt: new Date() },
        })),
        options,
      );
      return { id: wf.id, outcomes: outcomes.map((o) => o.outcome) };
    };
    // Successes alone (the PASS function runs the start), and every kind of result (the mixed transaction does).
    const plain = await together("together", successes);
    expect(plain.outcomes).toEqual(successes.map(() => "passed"));
    const a = await snapshot(await separately("separate", successes));
    expect(await snapshot(plain.id)).toEqual(a);
    expect(a.attempts.map((r) => [r.node_id, r.attempt, r.outcome])).toEqual(
      successes.map(([nodeId]) => [nodeId, 1, "PASS"]).sort(),
    );
    const all = Object.entries(RESULTS);
    const mixed = await together("together mixed", all);
    expect(mixed.outcomes).toEqual(["passed", "passed", "failed", "retry", "passed"]);
    const m = await snapshot(await separately("separate mixed", all));
    expect(await snapshot(mixed.id)).toEqual(m);
    expect(m.nodes.find((n) => n.id === "inserted")?.status).toBe("QUEUED");
    // A stale generation (the node was queued again since the read) records nothing: a success's (the PASS
    // function's start) nor a failure's (the mixed transaction's).
    const again = await queued("stale");
    for (const nodeId of ["lone", "failing"]) {
      const { outcomes: stale } = await sm.recordResults(
        [
          {
            workflowId: again.id,
            nodeId,
            lease: "",
            result: RESULTS[nodeId]!,
            unstarted: { queueGen: again.genOf.get(nodeId)! + 1, startedAt: new Date() },
          },
        ],
        options,
      );
      expect(stale.map((o) => o.outcome)).toEqual(["stale"]);
      const node = await sm.getNode(again.id, nodeId);
      expect([node.status, node.attempt]).toEqual([NodeStatus.QUEUED, 0]);
    }
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
