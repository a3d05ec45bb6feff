import { create } from "@bufbuild/protobuf";
import { PgEventRelayStore, PgStateManager, type RelayPosition } from "@trellis/db";
import { NodeSchema } from "@trellis/proto";
import { createRedis } from "@trellis/queue";
import {
  beginEventTransaction,
  createTestDatabase,
  insertWorkflows,
  promtoolCheckMetrics,
  promtoolSkipReason,
  startPrivateRedis,
  type TestDatabase,
  waitFor,
  writeEvents,
} from "@trellis/testing";
import type { Redis } from "ioredis";
import { Writable } from "node:stream";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startSchedulerApp } from "../src/app.js";
import { EventRelay, type EventRelayStore } from "../src/event-relay.js";

const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
// Every stream key and BullMQ prefix of this file starts with this, and is deleted at the end.
const keyPrefix = `trellis-relay-test-${Math.random().toString(36).slice(2, 10)}`;
let keyCount = 0;

let testDb: TestDatabase;
let redis: Redis;
const running: EventRelay[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_event_relay");
  redis = createRedis(redisUrl);
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((relay) => relay.stop()));
});

afterAll(async () => {
  const keys = await redis.keys(`${keyPrefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  await testDb.drop();
});

/**
 * A stream key of its own for one test, whose stored cursor is put after every event so far (the earlier tests'), so
 * its stream gets only what the test writes. Tests of this file run one after another, each awaiting its writes.
 */
async function newStreamKey(): Promise<string> {
  keyCount++;
  const streamKey = `${keyPrefix}-${keyCount}`;
  await testDb.pool.query(
    `insert into event_relay_cursors (stream_key, tx_id, workflow_id, sequence)
     select $1, tx_id, workflow_id, sequence from workflow_events
      order by tx_id desc, workflow_id desc, sequence desc limit 1`,
    [streamKey],
  );
  return streamKey;
}

/** Log lines kept in memory. */
class Lines extends Writable {
  readonly records: { level: number; msg: string }[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    for (const line of chunk.toString().split("\n")) if (line) this.records.push(JSON.parse(line));
    callback();
  }
}

interface RelayUnderTest {
  relay: EventRelay;
  registry: Registry;
  logs: Lines;
}

function startRelay(
  streamKey: string,
  options: { batchSize?: number; url?: string; wrapStore?: (store: EventRelayStore) => EventRelayStore } = {},
): RelayUnderTest {
  const logs = new Lines();
  const registry = new Registry();
  const store = new PgEventRelayStore({ databaseUrl: testDb.url, streamKey });
  const relayRedis = createRedis(options.url ?? redisUrl, { maxRetriesPerRequest: 1 });
  relayRedis.on("error", () => undefined);
  const relay = new EventRelay({
    store: options.wrapStore ? options.wrapStore(store) : store,
    redis: relayRedis,
    streamKey,
    logger: pino({ level: "info" }, logs),
    registry,
    pollMs: 50,
    lockRetryMs: 100,
    batchSize: options.batchSize ?? 1_000,
  });
  relay.start();
  running.push(relay);
  return { relay, registry, logs };
}

async function stopRelay(relay: EventRelay): Promise<void> {
  running.splice(running.indexOf(relay), 1);
  await relay.stop();
}

/** One stream entry, parsed. */
interface Entry {
  workflowId: string;
  sequence: number;
  type: string;
  nodeId: string;
  workflowStatus: string;
  nodeStatus: string;
  time: string;
  data: unknown;
}

async function readStream(streamKey: string, client: Redis = redis): Promise<Entry[]> {
  const entries = await client.xrange(streamKey, "-", "+");
  return entries.map(([, fields]) => {
    const f = new Map<string, string>();
    for (let i = 0; i < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
    return {
      workflowId: f.get("workflow_id")!,
      sequence: Number(f.get("sequence")),
      type: f.get("type")!,
      nodeId: f.get("node_id")!,
      workflowStatus: f.get("workflow_status")!,
      nodeStatus: f.get("node_status")!,
      time: f.get("time")!,
      data: JSON.parse(f.get("data")!),
    };
  });
}

/** `workflowId/sequence` of every committed event of these workflows. */
async function committedEvents(workflowIds: readonly string[]): Promise<string[]> {
  const { rows } = await testDb.pool.query<{ id: string }>(
    `select workflow_id || '/' || sequence as id from workflow_events
      where workflow_id = any($1::uuid[]) order by workflow_id, sequence`,
    [workflowIds],
  );
  return rows.map((r) => r.id);
}

/** Waits until the stream holds at least `count` entries, and returns them. */
async function streamOfAtLeast(streamKey: string, count: number, client: Redis = redis): Promise<Entry[]> {
  return waitFor(
    async () => {
      const entries = await readStream(streamKey, client);
      return entries.length >= count && entries;
    },
    { timeoutMs: 20_000, description: `${count} entries in ${streamKey}` },
  );
}

const idOf = (e: Entry) => `${e.workflowId}/${e.sequence}`;

/** Each workflow's entries come in sequence order, from 1 with no gaps and no repeats. */
function expectEachWorkflowInOrder(entries: readonly Entry[]): void {
  const byWorkflow = new Map<string, number[]>();
  for (const e of entries) byWorkflow.set(e.workflowId, [...(byWorkflow.get(e.workflowId) ?? []), e.sequence]);
  for (const sequences of byWorkflow.values()) expect(sequences).toEqual(sequences.map((_, i) => i + 1));
}

/** A deterministic pseudo-random generator (LCG), so a failing run can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

/** `count` transactions at once, each writing 1 or 2 events to each of 1 to 3 of the workflows. */
async function writeConcurrently(workflowIds: readonly string[], count: number, seed: number): Promise<void> {
  const next = random(seed);
  await Promise.all(
    Array.from({ length: count }, () => {
      const picked = workflowIds.filter(() => next() < 2 / workflowIds.length);
      const ids = picked.length > 0 ? picked : [workflowIds[Math.floor(next() * workflowIds.length)]!];
      return writeEvents(testDb.pool, ids, 1 + Math.floor(next() * 2));
    }),
  );
}

async function metricValue(registry: Registry, name: string): Promise<number> {
  return (await registry.getSingleMetric(name)!.get()).values[0]?.value ?? Number.NaN;
}

describe("EventRelay", () => {
  it("publishes the events of many concurrent transactions once each, every workflow's in sequence order", async () => {
    const streamKey = await newStreamKey();
    const { relay, registry } = startRelay(streamKey, { batchSize: 100 });
    const workflows = await insertWorkflows(testDb.pool, 12);
    await writeConcurrently(workflows, 300, 1);
    const expected = await committedEvents(workflows);
    const entries = await streamOfAtLeast(streamKey, expected.length);

    expect(entries.map(idOf).sort()).toEqual([...expected].sort());
    expectEachWorkflowInOrder(entries);
    expect(entries[0]).toMatchObject({ type: "test.event", nodeId: "", workflowStatus: "RUNNING", nodeStatus: "" });
    expect(new Date(entries[0]!.time).toISOString()).toBe(entries[0]!.time);
    expect(entries[0]!.data).toEqual({ tx: expect.any(String) });
    await waitFor(async () => (await metricValue(registry, "trellis_events_relayed_total")) === expected.length);
    expect(relay.lagSeconds()).toBe(0);
  });

  it("continues from the stored cursor when stopped mid-way and started again, losing and repeating nothing", async () => {
    const streamKey = await newStreamKey();
    const workflows = await insertWorkflows(testDb.pool, 6);
    const first = startRelay(streamKey, { batchSize: 20 });
    const writing = writeConcurrently(workflows, 200, 2);
    await streamOfAtLeast(streamKey, 40);
    await stopRelay(first.relay);
    const afterStop = (await readStream(streamKey)).length;
    await writing;
    await writeConcurrently(workflows, 50, 3);
    expect(await readStream(streamKey)).toHaveLength(afterStop);
    expect(afterStop).toBeLessThan((await committedEvents(workflows)).length);

    startRelay(streamKey, { batchSize: 20 });
    const expected = await committedEvents(workflows);
    const entries = await streamOfAtLeast(streamKey, expected.length);
    expect(entries.map(idOf).sort()).toEqual([...expected].sort());
    expectEachWorkflowInOrder(entries);
  });

  it("publishes again only the batch whose cursor was not stored", async () => {
    const streamKey = await newStreamKey();
    const workflows = await insertWorkflows(testDb.pool, 3);
    await writeConcurrently(workflows, 20, 4);
    const expected = await committedEvents(workflows);
    const saves: { failed: RelayPosition | null } = { failed: null };
    // As if the process died between the XADD and the cursor's store: the store fails once, after the XADD.
    const { logs } = startRelay(streamKey, {
      batchSize: 10,
      wrapStore: (store) => ({
        get holdsLock() {
          return store.holdsLock;
        },
        tryLock: () => store.tryLock(),
        loadCursor: () => store.loadCursor(),
        readBatch: (after, limit) => store.readBatch(after, limit),
        reset: () => store.reset(),
        async saveCursor(position) {
          if (saves.failed) return store.saveCursor(position);
          saves.failed = position;
          throw new Error("connection lost before the cursor was stored");
        },
      }),
    });
    await waitFor(() => saves.failed !== null, { description: "a failed cursor store" });
    const failedId = `${saves.failed!.workflowId}/${saves.failed!.sequence}`;
    const entries = await waitFor(
      async () => {
        const all = await readStream(streamKey);
        const failedCount = all.map(idOf).indexOf(failedId) + 1;
        return failedCount > 0 && all.length >= expected.length + failedCount && all;
      },
      { description: "every event, and the failed batch again" },
    );
    expect(logs.records.some((r) => r.level === 40 && r.msg.includes("PostgreSQL failed"))).toBe(true);

    // The batch whose cursor was not stored comes again, right after itself; every other event once.
    const ids = entries.map(idOf);
    const failedBatch = ids.slice(0, ids.indexOf(failedId) + 1);
    expect(failedBatch.length).toBeLessThanOrEqual(10);
    expect(ids.slice(failedBatch.length, 2 * failedBatch.length)).toEqual(failedBatch);
    expect(ids.slice(failedBatch.length).sort()).toEqual([...expected].sort());
    expect(ids).toHaveLength(expected.length + failedBatch.length);
    expectEachWorkflowInOrder(entries.slice(failedBatch.length));
  });

  it("lets one of two relays on the same stream publish, and the other take over when it stops", async () => {
    const streamKey = await newStreamKey();
    const workflows = await insertWorkflows(testDb.pool, 4);
    const a = startRelay(streamKey, { batchSize: 50 });
    const b = startRelay(streamKey, { batchSize: 50 });
    await writeConcurrently(workflows, 100, 5);
    let expected = await committedEvents(workflows);
    let entries = await streamOfAtLeast(streamKey, expected.length);
    expect(entries.map(idOf).sort()).toEqual([...expected].sort());
    expect([a.relay.publishing, b.relay.publishing].filter(Boolean)).toHaveLength(1);
    const [publisher, standby] = a.relay.publishing ? [a, b] : [b, a];
    expect(await metricValue(standby.registry, "trellis_events_relayed_total")).toBe(0);

    await stopRelay(publisher.relay);
    await writeConcurrently(workflows, 100, 6);
    expected = await committedEvents(workflows);
    entries = await streamOfAtLeast(streamKey, expected.length);
    expect(standby.relay.publishing).toBe(true);
    expect(entries.map(idOf).sort()).toEqual([...expected].sort());
    expectEachWorkflowInOrder(entries);
  });

  it("waits for an open transaction whose id is older than committed events, then publishes all in order", async () => {
    const streamKey = await newStreamKey();
    const { relay } = startRelay(streamKey);
    const workflows = await insertWorkflows(testDb.pool, 3);
    await writeEvents(testDb.pool, workflows);
    const before = await streamOfAtLeast(streamKey, 3);

    const open = await beginEventTransaction(testDb.pool);
    await open.write([workflows[0]!]);
    await writeEvents(testDb.pool, [workflows[1]!, workflows[2]!], 2);
    await writeEvents(testDb.pool, [workflows[2]!], 1);
    // A round saw committed events held back by the open transaction, and published none of them.
    await waitFor(() => relay.lagSeconds() > 0, { description: "events held back" });
    expect(await readStream(streamKey)).toHaveLength(before.length);

    await open.commit();
    const expected = await committedEvents(workflows);
    const entries = await streamOfAtLeast(streamKey, expected.length);
    expect(entries.map(idOf).sort()).toEqual([...expected].sort());
    expectEachWorkflowInOrder(entries);
    await waitFor(() => relay.lagSeconds() === 0, { description: "caught up" });
  });

  it("keeps retrying through a Redis outage and publishes what was committed meanwhile", async () => {
    const privateRedis = await startPrivateRedis();
    try {
      const streamKey = await newStreamKey();
      const { relay, logs } = startRelay(streamKey, { url: privateRedis.url });
      const workflows = await insertWorkflows(testDb.pool, 2);
      await writeEvents(testDb.pool, workflows);
      await streamOfAtLeast(streamKey, 2, privateRedis.client());

      await privateRedis.shutdown();
      const duringOutage = [...(await writeEvents(testDb.pool, workflows, 3))];
      await waitFor(() => logs.records.some((r) => r.level === 40 && r.msg.includes("Redis failed")), {
        description: "a warning about Redis",
      });
      await waitFor(() => relay.lagSeconds() > 0);

      // The restarted server is empty: what it gets is exactly what was committed while it was down.
      await privateRedis.start();
      const entries = await streamOfAtLeast(streamKey, duringOutage.length, privateRedis.client());
      expect(entries.map(idOf).sort()).toEqual(duringOutage.map((e) => `${e.workflowId}/${e.sequence}`).sort());
      expect(relay.publishing).toBe(true);
    } finally {
      await privateRedis.close();
    }
  });
});

describe("scheduler app with EVENTS_REDIS_STREAM", () => {
  it("relays the engine's events as they commit (woken by NOTIFY), and releases the lock on close", async () => {
    const streamKey = await newStreamKey();
    const registry = new Registry();
    const app = await startSchedulerApp(
      {
        databaseUrl: testDb.url,
        redisUrl,
        queuePrefix: `${keyPrefix}-queues`,
        logLevel: "silent",
        http: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
        pollMs: 200,
        batchSize: 100,
        reconcileIntervalMs: 60_000,
        reconcileQueuedAfterMs: 60_000,
        workerStaleMs: 60_000,
        dbPoolSize: 2,
        // Only a NOTIFY can wake it within the test's deadline.
        eventRelay: { streamKey, maxLen: 1_000, pollMs: 60_000 },
      },
      { logger: pino({ level: "silent" }), registry },
    );
    try {
      expect(app.eventRelay).not.toBeNull();
      await waitFor(() => app.eventRelay?.publishing);
      const stateManager = new PgStateManager(testDb.db);
      const { workflow } = await stateManager.createWorkflow({
        name: "relayed",
        nodes: [create(NodeSchema, { id: "a", capability: "echo" })],
      });
      const entries = await waitFor(
        async () => {
          const mine = (await readStream(streamKey)).filter((e) => e.workflowId === workflow.id);
          return mine.some((e) => e.nodeStatus === "QUEUED") && mine;
        },
        { description: "the workflow's events up to its node's QUEUED" },
      );
      expect(entries.map((e) => [e.sequence, e.type, e.nodeId, e.workflowStatus, e.nodeStatus])).toEqual([
        [1, "workflow.created", "", "PENDING", ""],
        [2, "workflow.status_changed", "", "RUNNING", ""],
        [3, "node.status_changed", "a", "RUNNING", "QUEUED"],
      ]);
      expect(entries[0]!.data).toEqual({ nodeCount: 1 });
      // The counter moves once XADD has answered, a moment after a reader can see the entries.
      await waitFor(async () => (await metricValue(registry, "trellis_events_relayed_total")) >= 3, {
        description: "trellis_events_relayed_total to count the 3 events",
      });
      expect(await registry.metrics()).toMatch(/^trellis_event_relay_lag_seconds \d/m);
      if (promtoolSkipReason() === undefined) {
        const check = promtoolCheckMetrics(await registry.metrics());
        expect(check.output).toBe("");
        expect(check.code).toBe(0);
      }
    } finally {
      await app.close();
    }
    const next = new PgEventRelayStore({ databaseUrl: testDb.url, streamKey });
    try {
      expect(await next.tryLock()).toBe(true);
    } finally {
      await next.reset();
    }
  });
});
