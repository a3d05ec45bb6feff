import { CommitListener } from "../harness/commit-listener.js";
import type { BenchContext } from "../harness/context.js";
import { Deadline } from "../harness/deadline.js";
import type { ResourceUsage } from "../harness/monitor.js";
import { firstCallByNode } from "../harness/node-service-client.js";
import { noopStackOptions, withEngineStack } from "../harness/stack.js";
import {
  NOOP_CAPABILITY,
  PLAN_CAPABILITY,
  assertAllPassed,
  createWorkflow,
  waitWorkflowsSucceeded,
} from "../harness/workflows.js";

/** One W4 run. Times in milliseconds, from the planner's ExecuteNode response being sent. */
export interface W4Result {
  inserted: number;
  /**
   * -> the transaction recording the planner's PASS with its edits committed: the earlier of the bench seeing its
   * NOTIFY and the first inserted node's start transaction beginning (`started_at`: its job is only enqueued after
   * that commit).
   */
  apply_ms: number;
  /** `workflow.edited` event time (the `now()` of that transaction, its start) -> its commit. */
  apply_tx_ms: number;
  /** -> the first inserted node's ExecuteNode received. */
  first_inserted_started_ms: number;
  /** -> the workflow's last transaction (SUCCEEDED) committed. */
  finish_ms: number;
  /** CPU per process and PostgreSQL wait states over the workload. */
  resources: ResourceUsage;
}

/**
 * W4 edits: a workflow `plan -> join`, where the planner's response inserts `inserted` no-op nodes under it and
 * rewires `join` to wait for all of them (one UPDATE of parent_ids). Times from the planner's response sent to
 * the edits committed (with its PASS), to the first inserted node running and to the workflow finished; checks
 * that the join ran after every inserted node.
 */
export async function runW4(ctx: BenchContext, label: string): Promise<W4Result> {
  const inserted = ctx.sizes.w4.inserted;
  const options = noopStackOptions(ctx, label);
  return withEngineStack({ ...options, capabilities: [...options.capabilities, PLAN_CAPABILITY] }, async (stack) => {
    const deadline = new Deadline(Math.max(60_000, inserted * 60), `${label} (W4)`);
    const listener = await CommitListener.start(stack.databaseUrl);
    try {
      const monitor = await stack.monitor({ "node-service": ctx.nodeService.pid });
      const created = await createWorkflow(
        stack,
        "w4-edits",
        [
          {
            id: "plan",
            capability: PLAN_CAPABILITY,
            input: { count: inserted, join: "join", capability: NOOP_CAPABILITY },
          },
          { id: "join", capability: NOOP_CAPABILITY, parentIds: ["plan"] },
        ],
        deadline,
      );
      await waitWorkflowsSucceeded(stack, 1, deadline, 20);
      const resources = await monitor.stop();
      await assertAllPassed(stack, inserted + 2);
      const calls = firstCallByNode(await ctx.nodeService.calls(created.id));
      const plan = calls.get("plan");
      const join = calls.get("join");
      if (!plan || !join) throw new Error("the NodeService has no call for the planner or the join");
      const insertedCalls = [...calls.values()].filter((c) => c.nodeId.startsWith("task-"));
      if (insertedCalls.length !== inserted) {
        throw new Error(`expected ${inserted} inserted nodes to run, saw ${insertedCalls.length}`);
      }
      const lastInserted = Math.max(...insertedCalls.map((c) => c.respondedAt));
      if (join.receivedAt < lastInserted) throw new Error("the join ran before every inserted node had finished");
      const [events] = await stack.query<{
        pass_seq: string;
        edited_ms: string;
        last_seq: string;
        started_ms: string;
      }>(
        `select (select sequence from workflow_events
                    where workflow_id = $1 and node_id = 'plan' and node_status = 'PASS') as pass_seq,
                  (select extract(epoch from time) * 1000 from workflow_events
                    where workflow_id = $1 and type = 'workflow.edited') as edited_ms,
                  (select event_seq from workflows where id = $1) as last_seq,
                  (select extract(epoch from min(started_at)) * 1000 from nodes
                    where workflow_id = $1 and id like 'task-%') as started_ms`,
        [created.id],
      );
      if (!events?.pass_seq || !events.edited_ms) throw new Error("no PASS or workflow.edited event for the planner");
      const notified = listener.commitTime(created.id, Number(events.pass_seq));
      const finished = listener.commitTime(created.id, Number(events.last_seq));
      if (notified === undefined || finished === undefined) throw new Error("a commit notification was not seen");
      const applied = Math.min(notified, Number(events.started_ms));
      return {
        inserted,
        apply_ms: applied - plan.respondedAt,
        apply_tx_ms: applied - Number(events.edited_ms),
        first_inserted_started_ms: Math.min(...insertedCalls.map((c) => c.receivedAt)) - plan.respondedAt,
        finish_ms: finished - plan.respondedAt,
        resources,
      };
    } finally {
      await listener.close();
    }
  });
}
