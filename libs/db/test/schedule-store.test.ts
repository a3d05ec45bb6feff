import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from "@trellis/core";
import { CreateWorkflowRequestSchema, type Schedule, ScheduleSchema } from "@trellis/proto";
import { type TestDatabase, createTestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PgStateManager } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_schedules");
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await testDb?.drop();
});

beforeEach(async () => {
  await testDb.pool.query("delete from schedules");
  await testDb.pool.query("delete from workflows");
});

function schedule(init: { id?: string; cron?: string; timezone?: string; paused?: boolean } = {}): Schedule {
  return create(ScheduleSchema, {
    id: "nightly",
    cron: "0 7 * * *",
    timezone: "Europe/Paris",
    workflow: create(CreateWorkflowRequestSchema, {
      name: "nightly report",
      nodes: [{ id: "a", capability: "echo" }],
      labels: { team: "data" },
    }),
    ...init,
  });
}

/** Makes a schedule due: its next tick is `agoMs` in the past. */
async function makeDue(id: string, agoMs = 1_000): Promise<Date> {
  const { rows } = await testDb.pool.query<{ next_run_at: Date }>(
    "update schedules set next_run_at = date_trunc('milliseconds', now() - make_interval(secs => $2 / 1000.0)) where id = $1 returning next_run_at",
    [id, agoMs],
  );
  return rows[0]!.next_run_at;
}

async function row(id: string) {
  const { rows } = await testDb.pool.query("select * from schedules where id = $1", [id]);
  return rows[0];
}

async function workflowCount(): Promise<number> {
  return (await testDb.pool.query<{ n: number }>("select count(*)::int as n from workflows")).rows[0]!.n;
}

describe("CRUD", () => {
  it("stores a schedule with its next tick in its time zone, and lists it", async () => {
    const before = Date.now();
    const stored = await sm.createSchedule(schedule());
    expect(stored).toMatchObject({ id: "nightly", cron: "0 7 * * *", timezone: "Europe/Paris", paused: false });
    expect(stored.workflow?.name).toBe("nightly report");
    const next = timestampDate(stored.nextRunAt!);
    expect(next.getTime()).toBeGreaterThan(before);
    // 07:00 in Paris: 06:00 UTC in winter, 05:00 UTC in summer.
    expect([5, 6]).toContain(next.getUTCHours());
    expect(next.getUTCMinutes()).toBe(0);
    expect((await sm.listSchedules()).map((s) => s.id)).toEqual(["nightly"]);
    expect(await sm.createSchedule(schedule({ id: "utc", timezone: "" }))).toMatchObject({ timezone: "UTC" });
  });

  it("refuses a duplicate id with ALREADY_EXISTS and an invalid one with INVALID_ARGUMENT, storing nothing", async () => {
    await sm.createSchedule(schedule());
    await expect(sm.createSchedule(schedule({ cron: "*/5 * * * *" }))).rejects.toThrow(AlreadyExistsError);
    expect((await row("nightly")).cron).toBe("0 7 * * *");
    const bad = schedule({ id: "bad" });
    bad.workflow!.nodes[0]!.capability = "";
    await expect(sm.createSchedule(bad)).rejects.toThrow("schedule.workflow.nodes[0].capability: required");
    await expect(sm.createSchedule(schedule({ id: "bad", timezone: "Mars/Olympus" }))).rejects.toThrow(
      InvalidArgumentError,
    );
    expect((await sm.listSchedules()).map((s) => s.id)).toEqual(["nightly"]);
  });

  it("updates cron, time zone, workflow and paused; pausing hides next_run_at, resuming plans from now", async () => {
    await sm.createSchedule(schedule());
    const paused = await sm.updateSchedule("nightly", { paused: true });
    expect(paused.paused).toBe(true);
    expect(paused.nextRunAt).toBeUndefined();
    await makeDue("nightly", 86_400_000);
    const resumed = await sm.updateSchedule("nightly", { paused: false });
    expect(timestampDate(resumed.nextRunAt!).getTime()).toBeGreaterThan(Date.now());
    const changed = await sm.updateSchedule("nightly", {
      cron: "30 2 * * *",
      timezone: "Europe/Berlin",
      workflow: create(CreateWorkflowRequestSchema, { name: "v2", nodes: [{ id: "b", capability: "echo" }] }),
    });
    expect(changed).toMatchObject({ cron: "30 2 * * *", timezone: "Europe/Berlin" });
    expect(changed.workflow?.name).toBe("v2");
    await expect(sm.updateSchedule("nightly", { cron: "0 0 31 2 *" })).rejects.toThrow(/^schedule\.cron: /);
    await expect(sm.updateSchedule("missing", { paused: true })).rejects.toThrow(NotFoundError);
    expect(await sm.deleteSchedule("nightly")).toBe(true);
    expect(await sm.deleteSchedule("nightly")).toBe(false);
  });
});

describe("ticks", () => {
  it("creates one labelled workflow per due tick and moves next_run_at past now", async () => {
    await sm.createSchedule(schedule({ cron: "* * * * *" }));
    expect((await sm.runDueSchedules(10)).ticks).toEqual([]);
    const tick = await makeDue("nightly");
    const { ticks, nextDueInMs } = await sm.runDueSchedules(10);
    expect(ticks).toHaveLength(1);
    expect(ticks[0]).toMatchObject({ scheduleId: "nightly", created: true });
    expect(ticks[0]!.tick.toISOString()).toBe(tick.toISOString());
    expect(nextDueInMs).toBeGreaterThan(0);
    const workflow = await sm.getWorkflow(ticks[0]!.workflowId!);
    expect(workflow.name).toBe("nightly report");
    expect(workflow.labels).toEqual({ team: "data", schedule: "nightly" });
    const { rows } = await testDb.pool.query("select request_id from workflows where id = $1", [workflow.id]);
    expect(rows[0].request_id).toBe(`schedule/nightly/${tick.toISOString()}`);
    const after = await row("nightly");
    expect(after.last_workflow_id).toBe(workflow.id);
    expect(after.next_run_at.getTime()).toBeGreaterThan(Date.now());
    // Nothing more is due.
    expect((await sm.runDueSchedules(10)).ticks).toEqual([]);
    expect(await workflowCount()).toBe(1);
  });

  it("a tick run again (same next_run_at) creates nothing new: the request id finds the first workflow", async () => {
    await sm.createSchedule(schedule({ cron: "* * * * *" }));
    const tick = await makeDue("nightly");
    const first = (await sm.runDueSchedules(10)).ticks[0]!;
    await testDb.pool.query("update schedules set next_run_at = $2 where id = $1", ["nightly", tick]);
    const again = (await sm.runDueSchedules(10)).ticks[0]!;
    expect(again).toMatchObject({ workflowId: first.workflowId, created: false });
    expect(await workflowCount()).toBe(1);
  });

  it("runs missed ticks once: a schedule due for days creates one workflow, then waits for the next tick", async () => {
    await sm.createSchedule(schedule({ cron: "*/5 * * * *" }));
    await makeDue("nightly", 3 * 86_400_000);
    expect((await sm.runDueSchedules(10)).ticks).toHaveLength(1);
    expect((await sm.runDueSchedules(10)).ticks).toHaveLength(0);
    expect(await workflowCount()).toBe(1);
  });

  it("a tick whose workflow CreateWorkflow now refuses creates nothing and moves on", async () => {
    await sm.createSchedule(schedule({ cron: "* * * * *" }));
    // As if the limits had been lowered since: the stored workflow is no longer accepted.
    await testDb.pool.query(`update schedules set workflow = '{"name": "x", "nodes": []}'::jsonb`);
    await makeDue("nightly");
    const [tick] = (await sm.runDueSchedules(10)).ticks;
    expect(tick).toMatchObject({ scheduleId: "nightly", workflowId: null, created: false });
    expect(tick!.refused).toBe("nodes: at least one node is required");
    expect(tick!.nextRunAt.getTime()).toBeGreaterThan(Date.now());
    expect(await workflowCount()).toBe(0);
  });

  it("skips paused schedules and rows another transaction holds", async () => {
    await sm.createSchedule(schedule({ id: "p", cron: "* * * * *", paused: true }));
    await sm.createSchedule(schedule({ id: "held", cron: "* * * * *" }));
    await makeDue("p");
    await makeDue("held");
    const client = await testDb.pool.connect();
    try {
      await client.query("begin");
      await client.query("select * from schedules where id = 'held' for update");
      expect((await sm.runDueSchedules(10)).ticks).toEqual([]);
      await client.query("rollback");
    } finally {
      client.release();
    }
    expect((await sm.runDueSchedules(10)).ticks.map((t) => t.scheduleId)).toEqual(["held"]);
    expect(await workflowCount()).toBe(1);
  });
});
