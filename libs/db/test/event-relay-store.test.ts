import {
  beginEventTransaction,
  createTestDatabase,
  insertWorkflows,
  type TestDatabase,
  waitFor,
  writeEvents,
} from "@trellis/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PgEventRelayStore, RELAY_ORIGIN, type RelayEvent, type RelayPosition } from "../src/index.js";

let testDb: TestDatabase;
const stores: PgEventRelayStore[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_relay_store");
});

afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.reset()));
});

afterAll(async () => {
  await testDb.drop();
});

function store(streamKey = `stream-${Math.random().toString(36).slice(2)}`): PgEventRelayStore {
  const s = new PgEventRelayStore({ databaseUrl: testDb.url, streamKey });
  stores.push(s);
  return s;
}

function positionOf(event: RelayEvent): RelayPosition {
  return { txId: event.txId, workflowId: event.workflowId, sequence: event.sequence };
}

/** Everything readable after `from`, in relay order, a batch of `limit` at a time. */
async function readAll(s: PgEventRelayStore, from: RelayPosition = RELAY_ORIGIN, limit = 1_000): Promise<RelayEvent[]> {
  const all: RelayEvent[] = [];
  let cursor = from;
  for (;;) {
    const { events } = await s.readBatch(cursor, limit);
    all.push(...events);
    if (events.length < limit) return all;
    cursor = positionOf(events.at(-1)!);
  }
}

/**
 * readAll once every committed event of the database is readable: a transaction left open elsewhere on the server
 * (another test file) holds events back for a moment.
 */
async function readAllCommitted(s: PgEventRelayStore, limit = 1_000): Promise<RelayEvent[]> {
  const { rows } = await testDb.pool.query<{ n: number }>("select count(*)::int as n from workflow_events");
  const expected = rows[0]!.n;
  return waitFor(
    async () => {
      const all = await readAll(s, RELAY_ORIGIN, limit);
      return all.length === expected ? all : false;
    },
    { description: `${expected} events readable` },
  );
}

function sequencesOf(events: readonly RelayEvent[], workflowId: string): number[] {
  return events.filter((e) => e.workflowId === workflowId).map((e) => e.sequence);
}

describe("PgEventRelayStore", () => {
  it("starts a new stream key at the origin and never moves its cursor backwards", async () => {
    const s = store();
    expect(await s.tryLock()).toBe(true);
    expect(await s.loadCursor()).toEqual(RELAY_ORIGIN);
    const ahead = { txId: "900", workflowId: "00000000-0000-0000-0000-000000000002", sequence: 3 };
    await s.saveCursor(ahead);
    await s.saveCursor({ txId: "900", workflowId: ahead.workflowId, sequence: 2 });
    await s.saveCursor({ txId: "899", workflowId: "ffffffff-0000-0000-0000-000000000000", sequence: 9 });
    expect(await s.loadCursor()).toEqual(ahead);
  });

  it("lets one connection at a time hold a stream key's lock, and frees it when that connection closes", async () => {
    const a = store("shared-key");
    const b = store("shared-key");
    const other = store("other-key");
    expect(await a.tryLock()).toBe(true);
    expect(await b.tryLock()).toBe(false);
    expect(await other.tryLock()).toBe(true);
    await expect(b.loadCursor()).rejects.toThrow(/does not hold its lock/);
    await a.reset();
    expect(a.holdsLock).toBe(false);
    expect(await b.tryLock()).toBe(true);
  });

  it("reads a workflow's events in sequence order when a transaction with a smaller id writes the workflow last", async () => {
    const [first, second] = (await insertWorkflows(testDb.pool, 2)).sort();
    await writeEvents(testDb.pool, [first!, second!]);
    // `older` takes its id, then locks `first`; `newer` (a larger id) writes `second` and commits; then `older`
    // writes `second` too, after newer's events: with tx_id = the writer's id, its event would sort before them.
    const older = await beginEventTransaction(testDb.pool);
    await older.write([first!]);
    const newer = await beginEventTransaction(testDb.pool);
    await newer.write([second!], 2);
    await newer.commit();
    await older.write([second!], 2);
    await older.commit();
    expect(BigInt(older.txId)).toBeLessThan(BigInt(newer.txId));

    const s = store();
    await s.tryLock();
    const events = await readAllCommitted(s);
    expect(sequencesOf(events, first!)).toEqual([1, 2]);
    expect(sequencesOf(events, second!)).toEqual([1, 2, 3, 4, 5]);
    const txOf = (sequence: number) => events.find((e) => e.workflowId === second && e.sequence === sequence)!.txId;
    expect(txOf(4)).toBe(newer.txId);
    expect(txOf(5)).toBe(newer.txId);
    // Read a batch of one at a time, the same order comes out.
    expect((await readAllCommitted(s, 1)).map(positionOf)).toEqual(events.map(positionOf));
  });

  it("reads nothing past an open transaction's events until it ends, and says since when it holds events back", async () => {
    const [held, busy] = await insertWorkflows(testDb.pool, 2);
    const s = store();
    await s.tryLock();
    const before = await readAllCommitted(s);
    const cursor = before.length > 0 ? positionOf(before.at(-1)!) : RELAY_ORIGIN;

    const open = await beginEventTransaction(testDb.pool);
    await open.write([held!]);
    await writeEvents(testDb.pool, [busy!], 3);
    const whileOpen = await s.readBatch(cursor, 1_000);
    expect(whileOpen.events).toEqual([]);
    expect(whileOpen.heldBackSince).toBeInstanceOf(Date);

    await open.commit();
    const after = await waitFor(
      async () => {
        const batch = await s.readBatch(cursor, 1_000);
        return batch.events.length === 4 && batch;
      },
      { description: "the four events" },
    );
    expect(after.events.map((e) => [e.workflowId, e.sequence])).toEqual([
      [held, 1],
      [busy, 1],
      [busy, 2],
      [busy, 3],
    ]);
    expect(after.events[0]).toMatchObject({
      type: "test.event",
      nodeId: null,
      workflowStatus: "RUNNING",
      nodeStatus: null,
    });
    expect(after.events[0]!.data).toEqual({ tx: open.txId });
  });

  it("orders transaction ids as numbers, not as text", async () => {
    const [a, b] = await insertWorkflows(testDb.pool, 2);
    await testDb.pool.query(
      `insert into workflow_events (workflow_id, sequence, type, workflow_status, tx_id)
       values ($1, 1, 'test.event', 'RUNNING', '10'), ($2, 1, 'test.event', 'RUNNING', '9')`,
      [a, b],
    );
    const s = store();
    await s.tryLock();
    const { events } = await s.readBatch(RELAY_ORIGIN, 2);
    expect(events.map((e) => [e.txId, e.workflowId])).toEqual([
      ["9", b],
      ["10", a],
    ]);
  });
});
