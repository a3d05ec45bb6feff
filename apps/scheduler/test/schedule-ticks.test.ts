// Cron schedules run by the real scheduler processes: two schedulers at once, kill -9 and restarts, pause. No test
// waits for a clock: each makes its schedules due by moving next_run_at into the past, as a missed tick would be.
import { create } from "@bufbuild/protobuf";
import { CreateWorkflowRequestSchema, ExecutionStatus, ScheduleSchema, WorkflowStatus } from "@trellis/proto";
import { type FaultStack, startFaultStack, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";

let stack: FaultStack;

beforeAll(async () => {
  stack = await startFaultStack({
    name: "trellis_schedule_ticks",
    handler: () => ({ status: ExecutionStatus.SUCCESS }),
  });
});

afterAll(async () => {
  await stack?.close();
});

beforeEach(async () => {
  await stack.apps.stopAll();
  await stack.db.pool.query("delete from schedules");
  await stack.db.pool.query("delete from workflows");
});

/**
 * Stores a schedule running one echo node, made due by hand: its cron fires once a year (New Year's midnight in
 * Berlin), so no tick of its own comes in the middle of a test (every minute did, at a minute's turn).
 */
async function yearly(id: string, paused = false): Promise<void> {
  await stack.stateManager.createSchedule(
    create(ScheduleSchema, {
      id,
      cron: "0 0 1 1 *",
      timezone: "Europe/Berlin",
      paused,
      workflow: create(CreateWorkflowRequestSchema, {
        name: `tick of ${id}`,
        nodes: [{ id: "a", capability: "echo" }],
      }),
    }),
  );
}

/** Moves the schedules' next tick `agoMs` into the past and wakes the schedulers; returns the ticks (ms). */
async function makeDue(ids: readonly string[], agoMs = 1_000): Promise<Map<string, number>> {
  const { rows } = await stack.db.pool.query<{ id: string; ms: number }>(
    `update schedules set next_run_at = date_trunc('milliseconds', now() - make_interval(secs => $2 / 1000.0))
      where id = any($1::text[])
      returning id, extract(epoch from next_run_at)::float8 * 1000 as ms`,
    [ids, agoMs],
  );
  await stack.db.pool.query("select pg_notify('trellis_schedules', '')");
  return new Map(rows.map((r) => [r.id, r.ms]));
}

/** Waits until none of these schedules is due any more (each has ticked). */
async function waitTicked(ids: readonly string[]): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await stack.db.pool.query<{ n: number }>(
        "select count(*)::int as n from schedules where id = any($1::text[]) and next_run_at <= now()",
        [ids],
      );
      return rows[0]!.n === 0;
    },
    { timeoutMs: 15_000, description: `${ids.length} schedules to tick` },
  );
}

/** Workflows created by schedules: request id and the schedule label. */
async function scheduledWorkflows(): Promise<{ id: string; request_id: string; schedule: string }[]> {
  const { rows } = await stack.db.pool.query<{ id: string; request_id: string; schedule: string }>(
    "select id, request_id, labels->>'schedule' as schedule from workflows order by request_id",
  );
  return rows;
}

const tickIso = (ms: number) => new Date(ms).toISOString();

describe("schedule ticks in the scheduler", () => {
  it("two schedulers, one killed -9 and replaced between rounds: exactly one workflow per tick", async () => {
    // More due schedules than one pass takes (50): both schedulers take batches of the same round at once.
    const ids = Array.from({ length: 120 }, (_, i) => `s${String(i).padStart(3, "0")}`);
    for (const id of ids) await yearly(id);
    let first = await stack.startScheduler();
    const second = await stack.startScheduler();
    const schedulers = [first, second];
    const expected = new Set<string>();
    let lastTicks = new Map<string, number>();
    for (let round = 0; round < 4; round++) {
      // A different tick each round: 1 s, 2 s, ... in the past.
      const ticks = await makeDue(ids, 1_000 * (round + 1));
      for (const [id, ms] of ticks) expected.add(`schedule/${id}/${tickIso(ms)}`);
      lastTicks = ticks;
      await waitTicked(ids);
      if (round === 1) {
        await first.kill();
        first = await stack.startScheduler();
        schedulers.push(first);
      }
    }
    const workflows = await scheduledWorkflows();
    expect(workflows.map((w) => w.request_id).sort()).toEqual([...expected].sort());
    expect(workflows).toHaveLength(ids.length * 4);
    for (const w of workflows) expect(w.request_id.startsWith(`schedule/${w.schedule}/`)).toBe(true);
    // No tick was logged as created by two scheduler processes (a killed one may not have flushed its last lines).
    const logged = schedulers.map((app) =>
      app
        .logs()
        .filter((l) => l.msg === "schedule tick" && l.created === true)
        .map((l) => `${String(l.schedule)}/${String(l.tick)}`),
    );
    const all = logged.flat();
    expect(new Set(all).size).toBe(all.length);
    // How the ticks were shared varies from run to run (either scheduler may take a whole round); not asserted.
    console.log(`ticks per scheduler process: ${logged.map((l) => l.length).join(", ")}`);
    // Each schedule points at the workflow of its last tick.
    const byRequestId = new Map(workflows.map((w) => [w.request_id, w.id]));
    const { rows } = await stack.db.pool.query<{ id: string; last_workflow_id: string }>(
      "select id, last_workflow_id from schedules",
    );
    for (const r of rows) {
      expect(r.last_workflow_id).toBe(byRequestId.get(`schedule/${r.id}/${tickIso(lastTicks.get(r.id)!)}`));
    }
  }, 120_000);

  it("a schedule missed while no scheduler ran ticks once when one starts, and its workflow runs", async () => {
    await yearly("nightly");
    const ticks = await makeDue(["nightly"], 3 * 86_400_000);
    await stack.startWorker(["echo"]);
    const scheduler = await stack.startScheduler();
    await waitTicked(["nightly"]);
    const workflows = await scheduledWorkflows();
    expect(workflows.map((w) => w.request_id)).toEqual([`schedule/nightly/${tickIso(ticks.get("nightly")!)}`]);
    const [done] = await stack.waitFinished([workflows[0]!.id], 30_000);
    expect(done!.status).toBe(WorkflowStatus.SUCCEEDED);
    expect(done!.labels).toMatchObject({ schedule: "nightly" });
    // The ticks of the three days in between are not replayed: the next is in the future.
    const { rows } = await stack.db.pool.query<{ future: boolean }>(
      "select next_run_at > now() as future from schedules where id = 'nightly'",
    );
    expect(rows[0]!.future).toBe(true);
    // A restart finds nothing due: no second workflow.
    await scheduler.stop();
    await stack.startScheduler();
    await makeDue(["nightly"], 500);
    await waitTicked(["nightly"]);
    expect(await scheduledWorkflows()).toHaveLength(2);
  }, 90_000);

  it("a paused schedule creates nothing; resumed, it ticks again", async () => {
    await yearly("paused", true);
    await yearly("control");
    await stack.startScheduler();
    // The paused schedule is due first: a pass that runs the control has looked at it too.
    await makeDue(["paused"], 5_000);
    await makeDue(["control"], 1_000);
    await waitTicked(["control"]);
    expect((await scheduledWorkflows()).map((w) => w.schedule)).toEqual(["control"]);
    await stack.stateManager.updateSchedule("paused", { paused: false });
    await makeDue(["paused"]);
    await waitTicked(["paused"]);
    expect((await scheduledWorkflows()).map((w) => w.schedule).sort()).toEqual(["control", "paused"]);
  }, 60_000);
});
