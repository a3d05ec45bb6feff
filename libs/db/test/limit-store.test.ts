import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError, type LimitSpec } from "@trellis/core";
import { NodeSchema } from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CHANNELS, type LimitState, PgStateManager } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_limits");
  sm = new PgStateManager(testDb.db);
});

afterAll(async () => {
  await testDb?.drop();
});

beforeEach(async () => {
  await testDb.pool.query("delete from limits");
  await testDb.pool.query("delete from workflows");
});

function spec(init: Partial<LimitSpec>): LimitSpec {
  return { key: "model:gpt-4o", maxConcurrency: 0, rate: 0, periodMs: 1000, burst: 0, unit: "", ...init };
}

/** A rate so slow that the bucket does not visibly refill during a test: one unit a day. */
const DAILY = { rate: 1, periodMs: 86_400_000 };

async function limitRows(): Promise<Record<string, unknown>[]> {
  return (await testDb.pool.query("select key, configured, tokens, burst from limits order by key")).rows;
}

/**
 * A workflow whose nodes are put by hand in the states the counts look at: a (QUEUED) and b (RUNNING) hold their
 * keys; c and d wait PENDING, held back by a limit; e is ready and not held; f is finished.
 */
async function populated(): Promise<string> {
  const nodes = [
    { id: "a", capability: "llm", limitKeys: ["model:x"] },
    { id: "b", capability: "llm", limitKeys: ["model:x", "tenant:t"] },
    { id: "c", capability: "echo", limitKeys: ["tenant:t"] },
    { id: "d", capability: "llm", limitKeys: [] },
    { id: "e", capability: "llm", limitKeys: ["model:x"] },
    { id: "f", capability: "llm", limitKeys: ["model:x", "tenant:t"] },
  ].map((n) => create(NodeSchema, n));
  const { workflow } = await sm.createWorkflow({ name: "counted", nodes });
  const set = (id: string, assignments: string) =>
    testDb.pool.query(`update nodes set ${assignments} where workflow_id = $1 and id = $2`, [workflow.id, id]);
  await set("a", "status = 'QUEUED', queue_gen = 1");
  await set("b", "status = 'RUNNING', queue_gen = 1, attempt = 1");
  await set("c", "held_by = 'tenant:t'");
  await set("d", "held_by = 'capability:llm'");
  await set("f", "status = 'PASS', finished_at = now()");
  return workflow.id;
}

async function heldBy(workflowId: string): Promise<Record<string, string | null>> {
  const { rows } = await testDb.pool.query("select id, held_by from nodes where workflow_id = $1 order by id", [
    workflowId,
  ]);
  return Object.fromEntries(rows.map((r) => [r.id, r.held_by]));
}

function byKey(states: LimitState[]): Record<string, LimitState> {
  return Object.fromEntries(states.map((s) => [s.key, s]));
}

describe("setLimit", () => {
  it("stores a new limit with a full bucket (burst 0 means the rate) and returns its live state", async () => {
    const state = await sm.setLimit(spec({ rate: 5, periodMs: 60_000, unit: "tokens" }));
    expect(state).toMatchObject({
      key: "model:gpt-4o",
      configured: true,
      maxConcurrency: 0,
      rate: 5,
      periodMs: 60_000,
      burst: 5,
      unit: "tokens",
      throttledUntil: null,
      running: 0,
      waiting: 0,
      throttledTotal: 0,
    });
    expect(state.available).toBeCloseTo(5, 6);
    const capOnly = await sm.setLimit(spec({ key: "capability:llm.chat", maxConcurrency: 3 }));
    expect(capOnly).toMatchObject({ maxConcurrency: 3, rate: 0, burst: 0, available: null });
    expect((await sm.listLimits()).map((l) => l.key)).toEqual(["capability:llm.chat", "model:gpt-4o"]);
  });

  it("keeps a replaced bucket's level, clamped to the new burst; a bucket that had no rate starts full", async () => {
    await sm.setLimit(spec({ ...DAILY, burst: 10 }));
    await testDb.pool.query("update limits set tokens = 4, refilled_at = now() where key = 'model:gpt-4o'");
    expect((await sm.setLimit(spec({ ...DAILY, burst: 3 }))).available).toBeCloseTo(3, 3);
    expect((await sm.setLimit(spec({ ...DAILY, burst: 20, maxConcurrency: 2 }))).available).toBeCloseTo(3, 3);

    await sm.setLimit(spec({ key: "k", maxConcurrency: 1 }));
    expect((await sm.setLimit(spec({ key: "k", ...DAILY, burst: 7 }))).available).toBeCloseTo(7, 3);

    // A key that only a THROTTLED answer paused gets its first bucket full, and keeps the pause.
    await testDb.pool.query(`insert into limits (key, configured, throttled_until, throttled_total)
                             values ('tenant:t', false, now() + interval '1 hour', 2)`);
    const configured = await sm.setLimit(spec({ key: "tenant:t", ...DAILY, burst: 4 }));
    expect(configured.available).toBeCloseTo(4, 3);
    expect(configured.throttledUntil!.getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
    expect(configured.throttledTotal).toBe(2);
  });

  it("refuses an invalid limit, naming the field, and writes nothing", async () => {
    const bad: [Partial<LimitSpec>, string][] = [
      [{ maxConcurrency: 1, key: "" }, "limit.key"],
      [{ maxConcurrency: -1 }, "limit.max_concurrency"],
      [{ rate: Number.NaN }, "limit.rate"],
      [{ rate: 1, periodMs: 0 }, "limit.period"],
      [{ rate: 2, burst: 0.5 }, "limit.burst"],
      [{ rate: 1, unit: "a\u0000" }, "limit.unit"],
      [{}, "limit"],
    ];
    for (const [init, field] of bad) {
      const error = await sm.setLimit(spec(init)).catch((e: unknown) => e);
      expect(error, field).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).field).toBe(field);
    }
    expect(await limitRows()).toEqual([]);
  });

  it("wakes the scheduler after commit", async () => {
    const listener = new pg.Client({ connectionString: testDb.url });
    await listener.connect();
    try {
      const heard: string[] = [];
      listener.on("notification", (n) => heard.push(n.channel));
      await listener.query(`listen ${CHANNELS.ready}`);
      await sm.setLimit(spec({ maxConcurrency: 1 }));
      await waitFor(() => heard.length === 1, { timeoutMs: 5_000 });
      await sm.deleteLimit("model:gpt-4o");
      await waitFor(() => heard.length === 2, { timeoutMs: 5_000 });
      expect(heard).toEqual([CHANNELS.ready, CHANNELS.ready]);
    } finally {
      await listener.end();
    }
  });
});

describe("listLimits", () => {
  it("counts QUEUED and RUNNING holders as running and held PENDING nodes as waiting, per key", async () => {
    await populated();
    await sm.setLimit(spec({ key: "model:x", maxConcurrency: 5 }));
    await sm.setLimit(spec({ key: "tenant:t", rate: 10 }));
    await sm.setLimit(spec({ key: "capability:llm", maxConcurrency: 2 }));
    await sm.setLimit(spec({ key: "capability:echo", maxConcurrency: 2 }));
    await sm.setLimit(spec({ key: "unused", maxConcurrency: 2 }));
    const limits = byKey(await sm.listLimits());
    expect(Object.keys(limits)).toEqual(["capability:echo", "capability:llm", "model:x", "tenant:t", "unused"]);
    const counts = Object.fromEntries(
      Object.values(limits).map((l) => [l.key, { running: l.running, waiting: l.waiting }]),
    );
    expect(counts).toEqual({
      "capability:echo": { running: 0, waiting: 1 },
      "capability:llm": { running: 2, waiting: 1 },
      "model:x": { running: 2, waiting: 0 },
      "tenant:t": { running: 1, waiting: 1 },
      unused: { running: 0, waiting: 0 },
    });
    expect(limits["tenant:t"]!.available).toBeCloseTo(10, 0);
    expect(limits["model:x"]!.available).toBeNull();
  });

  it("lists a key only a THROTTLED answer paused while the pause lasts, and no expired pause", async () => {
    await testDb.pool.query(`insert into limits (key, configured, throttled_until, throttled_total)
                             values ('model:paused', false, now() + interval '1 minute', 1),
                                    ('model:over', false, now() - interval '1 second', 3)`);
    await sm.setLimit(spec({ key: "model:set", maxConcurrency: 1 }));
    await testDb.pool.query(
      "update limits set throttled_until = now() - interval '1 second', throttled_total = 4 where key = 'model:set'",
    );
    const limits = await sm.listLimits();
    expect(limits.map((l) => [l.key, l.configured, l.throttledUntil !== null, l.throttledTotal])).toEqual([
      ["model:paused", false, true, 1],
      ["model:set", true, false, 4],
    ]);
  });
});

describe("deleteLimit", () => {
  it("removes the limit and releases the PENDING nodes held back that hold its key; false when there is none", async () => {
    const workflowId = await populated();
    await sm.setLimit(spec({ key: "tenant:t", maxConcurrency: 1 }));
    await sm.setLimit(spec({ key: "capability:llm", maxConcurrency: 1 }));
    expect(await sm.deleteLimit("tenant:t")).toBe(true);
    expect(await heldBy(workflowId)).toEqual({ a: null, b: null, c: null, d: "capability:llm", e: null, f: null });
    expect((await sm.listLimits()).map((l) => l.key)).toEqual(["capability:llm"]);
    expect(await sm.deleteLimit("tenant:t")).toBe(false);
    expect(await sm.deleteLimit("capability:llm")).toBe(true);
    expect((await heldBy(workflowId)).d).toBeNull();
    expect(await limitRows()).toEqual([]);
  });

  it("keeps a running THROTTLED pause of the key as an unconfigured row, and does not delete a pause alone", async () => {
    await sm.setLimit(spec({ maxConcurrency: 1 }));
    await testDb.pool.query("update limits set throttled_until = now() + interval '1 hour' where key = 'model:gpt-4o'");
    expect(await sm.deleteLimit("model:gpt-4o")).toBe(true);
    const [left] = await sm.listLimits();
    expect(left).toMatchObject({ key: "model:gpt-4o", configured: false, maxConcurrency: 0, rate: 0 });
    expect(left!.throttledUntil).not.toBeNull();
    expect(await sm.deleteLimit("model:gpt-4o")).toBe(false);
    expect(await limitRows()).toHaveLength(1);
  });

  it("refuses a malformed key, naming the field", async () => {
    await expect(sm.deleteLimit("")).rejects.toThrow("key: required");
    await expect(sm.deleteLimit("capability:")).rejects.toThrow(InvalidArgumentError);
  });
});
