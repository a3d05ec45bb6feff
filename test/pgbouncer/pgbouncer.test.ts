// PgBouncer (issue 14): api, scheduler and worker run every query through Debian's pgbouncer in transaction pooling
// mode (DATABASE_URL), and hold their LISTEN connections and the event relay's locked session on PostgreSQL directly
// (DATABASE_LISTEN_URL). A lifecycle runs that way: a chain with a fan-out, a node retried, an edit of a running
// workflow, a failed workflow RETRYed, a cancel, WatchWorkflow streams; then the invariant checker.
import { spawnSync } from "node:child_process";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { EditType, ExecutionStatus, type WorkflowEvent, WorkflowAction, WorkflowStatus } from "@trellis/proto";
import type { GrpcClient, WorkflowService } from "@trellis/proto";
import {
  type FaultStack,
  type PrivatePgBouncer,
  REPO_ROOT,
  pgbouncerSkipReason,
  startFaultStack,
  startPrivatePgBouncer,
  testNode,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const skipReason = pgbouncerSkipReason();
if (skipReason !== undefined) process.stderr.write(`test/pgbouncer: skipped: ${skipReason}\n`);

let stack: FaultStack;
let bouncer: PrivatePgBouncer;
let api: GrpcClient<typeof WorkflowService>;
/** Settings of every app here: queries through pgbouncer, LISTEN and the relay's lock on PostgreSQL directly. */
let viaBouncer: Record<string, string>;

/** While set, `fail` nodes fail (TASK_ERROR); cleared before the RETRY. */
let failing = true;
/** `hold` nodes run until this resolves (or their call is cancelled). */
let release: () => void = () => undefined;
const released = new Promise<void>((resolve) => {
  release = resolve;
});

describe.skipIf(skipReason !== undefined)("the apps through PgBouncer in transaction pooling mode", () => {
  beforeAll(async () => {
    stack = await startFaultStack({
      name: "pgbouncer",
      logLevel: "warn",
      handler: async (request, _call, signal) => {
        const node = request.node!;
        const output = fromJson(ValueSchema, { node: node.id });
        switch (node.capability) {
          case "flaky":
            // The first attempt fails as an infrastructure error: the node's retry policy runs it again.
            if (request.context!.attempt === 1) {
              return { status: ExecutionStatus.INFRA_ERROR, errorMessage: "first attempt fails" };
            }
            return { status: ExecutionStatus.SUCCESS, output };
          case "fail":
            if (failing) return { status: ExecutionStatus.TASK_ERROR, errorMessage: "failing on purpose" };
            return { status: ExecutionStatus.SUCCESS, output };
          case "hold":
            await Promise.race([released, new Promise((resolve) => signal.addEventListener("abort", resolve))]);
            if (signal.aborted) return { status: ExecutionStatus.INFRA_ERROR, errorMessage: "cancelled" };
            return { status: ExecutionStatus.SUCCESS, output };
          default:
            await new Promise((resolve) => setTimeout(resolve, 30));
            return { status: ExecutionStatus.SUCCESS, output };
        }
      },
    });
    bouncer = await startPrivatePgBouncer({ serverUrl: stack.db.url, poolMode: "transaction", defaultPoolSize: 10 });
    viaBouncer = { DATABASE_URL: bouncer.url, DATABASE_LISTEN_URL: stack.db.url };
    // Started without waiting, then given two minutes each to be ready: a loaded machine starts three apps slowly.
    const [started, ...others] = await Promise.all([
      stack.startApi({ env: viaBouncer, ready: false }),
      stack.startScheduler({
        env: { ...viaBouncer, EVENTS_REDIS_STREAM: `${stack.queuePrefix}:events` },
        ready: false,
      }),
      stack.startWorker(["work", "flaky", "fail", "hold"], { env: viaBouncer, ready: false }),
    ]);
    await Promise.all([started.app, ...others].map((app) => app.waitReady(120_000)));
    api = started.client;
  }, 240_000);

  afterAll(async () => {
    await stack?.close();
    await bouncer?.close();
  });

  it("pgbouncer pools the test database in transaction mode", async () => {
    const pools = await bouncer.admin("SHOW POOLS");
    expect(pools.find((p) => p.database === stack.db.name)).toMatchObject({ pool_mode: "transaction" });
  });

  it("runs a chain with a fan-out, a retry, an edit, a RETRY after failure and a cancel; watchers see every event", async () => {
    const opts = () => ({ deadline: Date.now() + 20_000 });
    // A chain a -> b0..b3 (fan-out) -> join -> c (fails once, retried) -> d.
    const fan = ["b0", "b1", "b2", "b3"];
    const chain = (
      await api.createWorkflow(
        {
          name: "pgbouncer-chain",
          nodes: [
            testNode("a", "work"),
            ...fan.map((id) => testNode(id, "work", ["a"])),
            testNode("join", "work", fan),
            testNode("c", "flaky", ["join"]),
            testNode("d", "work", ["c"]),
          ],
        },
        opts(),
      )
    ).workflow!;
    const chainEvents = watch(chain.id);
    // Edited while its first node runs: x is inserted after h, and y after x.
    const edited = (await api.createWorkflow({ name: "pgbouncer-edit", nodes: [testNode("h", "hold")] }, opts()))
      .workflow!;
    const editedEvents = watch(edited.id);
    // Fails (no retries), then is RETRYed once the NodeService stops failing.
    const retried = (
      await api.createWorkflow(
        {
          name: "pgbouncer-retry",
          nodes: [testNode("f", "fail", [], { retryPolicy: { maxAttempts: 1 } }), testNode("g", "work", ["f"])],
        },
        opts(),
      )
    ).workflow!;
    // Cancelled while its node runs.
    const cancelled = (
      await api.createWorkflow(
        { name: "pgbouncer-cancel", nodes: [testNode("k", "hold"), testNode("l", "work", ["k"])] },
        opts(),
      )
    ).workflow!;

    await waitFor(async () => (await stack.countNodes([edited.id, cancelled.id], "RUNNING")) === 2, {
      timeoutMs: 20_000,
      description: "both hold nodes to run",
    });
    const afterEdit = (
      await api.editWorkflow(
        {
          workflowId: edited.id,
          edits: [
            { type: EditType.INSERT, node: testNode("x", "work", ["h"]) },
            { type: EditType.INSERT, node: testNode("y", "work", ["x"]) },
          ],
        },
        opts(),
      )
    ).workflow!;
    expect(afterEdit.nodes.map((n) => n.id).sort()).toEqual(["h", "x", "y"]);

    // RUNNING is committed before the worker's call leaves: wait for the call itself, or there is nothing to watch.
    const cancelCall = await waitFor(
      () => stack.nodeService.calls.find((c) => c.request.context?.workflowId === cancelled.id),
      { timeoutMs: 20_000, description: "the held call to reach the NodeService" },
    );
    const afterCancel = (await api.updateWorkflow({ workflowId: cancelled.id, action: WorkflowAction.CANCEL }, opts()))
      .workflow!;
    expect(afterCancel.status).toBe(WorkflowStatus.CANCELLED);
    // The worker hears the cancellation (LISTEN on its direct connection, or its heartbeat) and aborts the call.
    await waitFor(() => cancelCall.cancelled === true, { timeoutMs: 20_000, description: "the held call cancelled" });

    const [failed] = await stack.waitFinished([retried.id], 30_000);
    expect(failed!.status).toBe(WorkflowStatus.FAILED);
    failing = false;
    const reopened = (await api.updateWorkflow({ workflowId: retried.id, action: WorkflowAction.RETRY }, opts()))
      .workflow!;
    expect(reopened.status).not.toBe(WorkflowStatus.FAILED);

    release();
    const ids = [chain.id, edited.id, retried.id, cancelled.id];
    const done = await stack.waitFinished(ids, 60_000);
    expect(done.map((w) => w.status)).toEqual([
      WorkflowStatus.SUCCEEDED,
      WorkflowStatus.SUCCEEDED,
      WorkflowStatus.SUCCEEDED,
      WorkflowStatus.CANCELLED,
    ]);
    const c = (await api.getNode({ workflowId: chain.id, nodeId: "c" }, opts())).attempts;
    expect(c.map((attempt) => attempt.status)).toEqual(["RETRY", "PASS"]);
    expect(done[1]!.nodes.filter((n) => n.id !== "h").map((n) => n.id)).toEqual(["x", "y"]);

    // WatchWorkflow streamed each workflow's whole history live, in order, ending at its terminal event.
    for (const [workflowId, streamed] of [
      [chain.id, await chainEvents],
      [edited.id, await editedEvents],
    ] as const) {
      const stored = await stack.stateManager.listEvents(workflowId, 0, 10_000);
      expect(streamed.map((e) => Number(e.sequence))).toEqual(stored.map((e) => Number(e.sequence)));
      expect(streamed.map((e) => Number(e.sequence))).toEqual(streamed.map((_, i) => i + 1));
      expect(streamed.at(-1)!.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    }
    // The RETRYed workflow's stream shows it FAILED, then reopened, then SUCCEEDED.
    const statuses = (await watch(retried.id)).map((e) => e.workflowStatus);
    expect(statuses).toContain(WorkflowStatus.FAILED);
    expect(statuses.lastIndexOf(WorkflowStatus.FAILED)).toBeLessThan(statuses.length - 1);
    expect(statuses.at(-1)).toBe(WorkflowStatus.SUCCEEDED);

    for (const app of stack.apps.processes) expect(app.exitStatus, `${app.name}:\n${app.tail()}`).toBeNull();
    await stack.expectInvariants({ workflowIds: ids });
  }, 120_000);

  it("sends the queries through pgbouncer and only the LISTEN and relay sessions to PostgreSQL directly", async () => {
    // An idle pool closes its connections after 10 s: a call gives the api's one to look at.
    await api.listWorkflows({ pageSize: 1 }, { deadline: Date.now() + 20_000 });
    const clients = await bouncer.admin("SHOW CLIENTS");
    const names = new Set(clients.filter((c) => c.database === stack.db.name).map((c) => String(c.application_name)));
    expect([...names].filter((n) => n.startsWith("trellis-")).sort()).toEqual([
      "trellis-api",
      "trellis-scheduler",
      "trellis-worker",
    ]);
    const stats = await bouncer.admin("SHOW STATS");
    expect(Number(stats.find((s) => s.database === stack.db.name)?.total_xact_count)).toBeGreaterThan(100);
    const { rows } = await stack.db.pool.query<{ application_name: string; n: number }>(
      `select application_name, count(*)::int as n from pg_stat_activity
        where datname = $1 and application_name in ('trellis-listener', 'trellis-event-relay')
        group by application_name order by application_name`,
      [stack.db.name],
    );
    // api, scheduler and worker each LISTEN on one direct connection; the relay holds its lock on another.
    expect(rows).toEqual([
      { application_name: "trellis-event-relay", n: 1 },
      { application_name: "trellis-listener", n: 3 },
    ]);
    // The relay's session-level advisory lock is held by its direct session (through a transaction pool it would
    // be left on whichever server connection ran the statement).
    const locks = await stack.db.pool.query<{ n: number }>(
      `select count(*)::int as n from pg_locks l join pg_stat_activity a on a.pid = l.pid
        where l.locktype = 'advisory' and l.granted and a.datname = $1 and a.application_name = 'trellis-event-relay'`,
      [stack.db.name],
    );
    expect(locks.rows[0]!.n).toBe(1);
  });

  it("npm run migrate uses DATABASE_LISTEN_URL (its session-level lock must not go through pgbouncer)", () => {
    const run = spawnSync(process.execPath, ["--import", "tsx", "libs/db/src/migrate-cli.ts"], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...viaBouncer },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
    const direct = new URL(stack.db.url);
    expect(run.stdout).toContain(`applied migrations on ${direct.host}/${stack.db.name}`);
  });

  /** Follows a workflow with WatchWorkflow from its first event until the stream ends. */
  function watch(workflowId: string): Promise<WorkflowEvent[]> {
    return new Promise((resolve, reject) => {
      const events: WorkflowEvent[] = [];
      const stream = api.watchWorkflow({ workflowId }, { deadline: Date.now() + 90_000 });
      stream.on("data", (event: WorkflowEvent) => events.push(event));
      stream.on("error", reject);
      stream.on("end", () => resolve(events));
    });
  }
});
