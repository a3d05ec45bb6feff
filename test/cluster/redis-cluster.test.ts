// Redis Cluster: the apps on a real local cluster (three masters with one replica each, Debian's redis-server),
// REDIS_URL=redis+cluster://... Each capability's queue is hash-tagged into one slot, and different capabilities land
// on different masters; live output chunks work across slots; a master killed (SIGKILL) mid-run fails over to its
// replica and every workflow still finishes, with the invariants holding.
import { create } from "@bufbuild/protobuf";
import {
  ExecutionStatus,
  NodeStatus,
  OutputChunkSchema,
  type WorkflowEvent,
  WorkflowEventSchema,
  WorkflowStatus,
} from "@trellis/proto";
import {
  ChunkPublisher,
  NodeQueues,
  type RedisConnection,
  chunkStreamKey,
  connectRedis,
  followWithChunks,
  mastersOf,
} from "@trellis/queue";
import {
  type FaultStack,
  type PrivateRedisCluster,
  recordMeasurement,
  startFaultStack,
  startPrivateRedisCluster,
  testNode,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * Capabilities whose hash tags fall in the slot ranges of the three masters `redis-cli --cluster create` makes
 * (0-5460, 5461-10922, 10923-16383): web.search 2524, work 6132, llm.chat 7669, echo 14438.
 */
const CAPABILITIES = ["work", "echo", "web.search", "llm.chat"] as const;

let cluster: PrivateRedisCluster;
let stack: FaultStack;

beforeAll(async () => {
  cluster = await startPrivateRedisCluster();
  stack = await startFaultStack({
    name: "redis_cluster",
    redisUrl: cluster.url,
    handler: async (request) => {
      const capability = request.node!.capability;
      await new Promise((resolve) => setTimeout(resolve, capability === "work" ? 300 : 50));
      return { status: ExecutionStatus.SUCCESS };
    },
  });
  // Readiness waited for with a longer bound than the stack's: five apps starting on a busy 2-core machine.
  const apps = await Promise.all([
    stack.startScheduler({ ready: false }),
    stack.startWorker([...CAPABILITIES], { ready: false }),
    stack.startWorker([...CAPABILITIES], { ready: false }),
    stack.startApi({ ready: false }).then((api) => api.app),
    stack.startDashboard({ ready: false }),
  ]);
  for (const app of apps) await app.waitReady(120_000);
}, 300_000);

afterAll(async () => {
  await stack?.close();
  await cluster?.close();
});

/** A workflow touching every capability: four "work" nodes, joined by "echo", then "web.search" and "llm.chat". */
function clusterWorkflowNodes() {
  return [
    ...["w0", "w1", "w2", "w3"].map((id) => testNode(id, "work")),
    testNode("join", "echo", ["w0", "w1", "w2", "w3"]),
    testNode("search", "web.search", ["join"]),
    testNode("answer", "llm.chat", ["search"]),
  ];
}

describe("Redis Cluster: queues, live output and a master failover", () => {
  it("hash-tags each capability's queue into one slot, and spreads the capabilities over the masters", async () => {
    const ids = await Promise.all(
      Array.from({ length: 3 }, async () => (await stack.createWorkflow(clusterWorkflowNodes())).id),
    );
    const done = await stack.waitFinished(ids, 60_000);
    expect(done.map((w) => w.status)).toEqual(ids.map(() => WorkflowStatus.SUCCEEDED));

    // Every key under the prefix, read from every master: each queue's keys share the slot of `{capability}`.
    const admin = cluster.client();
    await admin.connect().catch(() => undefined);
    const keysByMaster = new Map<string, string[]>();
    for (const node of mastersOf(admin)) {
      const keys = await node.keys(`${stack.queuePrefix}:*`);
      keysByMaster.set(`${node.options.host}:${node.options.port}`, keys);
    }
    const placement: Record<string, { slot: number; master: string; keys: number }> = {};
    for (const capability of CAPABILITIES) {
      const slot = await cluster.keySlot(`{${capability}}`);
      const master = (await cluster.masterOf(slot)).address;
      const queueKeys = [...keysByMaster.values()]
        .flat()
        .filter((k) => k.startsWith(`${stack.queuePrefix}:{${capability}}:`));
      // The queue exists (its meta key at least), and all of it is on the master of its slot.
      expect(queueKeys, `keys of the ${capability} queue`).toContain(`${stack.queuePrefix}:{${capability}}:meta`);
      for (const key of queueKeys) {
        expect(await cluster.keySlot(key), `CLUSTER KEYSLOT ${key}`).toBe(slot);
        expect(keysByMaster.get(master), `${key} on ${master}`).toContain(key);
      }
      placement[capability] = { slot, master, keys: queueKeys.length };
    }
    // Different capabilities, different slots, and the four queues over all three masters.
    expect(new Set(Object.values(placement).map((p) => p.slot)).size).toBe(CAPABILITIES.length);
    expect(new Set(Object.values(placement).map((p) => p.master)).size).toBe(3);
    recordMeasurement("redis cluster queue placement", {
      ...Object.fromEntries(Object.entries(placement).map(([c, p]) => [`slot ${c}`, p.slot])),
      masters: new Set(Object.values(placement).map((p) => p.master)).size,
    });

    // Discovery (the dashboard's Bull Board, the queue gauges) scans every master and finds every capability.
    const queues = new NodeQueues(stack.redis, stack.queuePrefix);
    expect(queues.hashTagged).toBe(true);
    expect(await queues.discover()).toEqual([...CAPABILITIES].sort());
    await queues.close();
    await stack.expectInvariants({ workflowIds: ids });
  }, 120_000);

  it("publishes and follows live output chunks: one XREAD over a workflow's streams, interrupted when a node starts", async () => {
    const redis = connectRedis(cluster.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    redis.on("error", () => undefined);
    await redis.connect();
    try {
      await followOnCluster(redis);
    } finally {
      redis.disconnect();
    }
  }, 60_000);

  it("reads a stream that starts while the follower is still finding its workflow's master", async () => {
    const redis = connectRedis(cluster.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    redis.on("error", () => undefined);
    await redis.connect();
    const stop = new AbortController();
    try {
      const workflowId = "00000000-0000-4000-8000-00000000c1a7";
      const feed = new EventFeed();
      // b starts while the follower asks CLUSTER KEYSLOT before its first read (the lookup's round trip to Redis).
      const command = redis as unknown as { cluster: (...args: unknown[]) => Promise<unknown> };
      const keyslot = command.cluster.bind(redis);
      let bStarted = false;
      command.cluster = (...args) => {
        if (!bStarted && String(args[0]).toUpperCase() === "KEYSLOT") {
          bStarted = true;
          feed.push(nodeEvent(workflowId, 2, "b", NodeStatus.RUNNING, 1));
        }
        return keyslot(...args);
      };
      const seen: string[] = [];
      const following = (async () => {
        for await (const event of followWithChunks({
          redis,
          queuePrefix: stack.queuePrefix,
          workflowId,
          events: feed,
          nodes: new Map(),
          signal: stop.signal,
          // Nothing else ends the first read early: b's chunk is read only if b's stream is in it.
          blockMs: 120_000,
        })) {
          if (event.type === "node.output_chunk") seen.push(`${event.nodeId}:${event.chunk?.text}`);
        }
      })();
      feed.push(nodeEvent(workflowId, 1, "a", NodeStatus.RUNNING, 1));
      await waitFor(() => bStarted, { timeoutMs: 20_000, description: "the follower to look up its slot" });
      const publisher = new ChunkPublisher({
        redis,
        queuePrefix: stack.queuePrefix,
        retentionMs: 60_000,
        maxPerAttempt: 1_000,
        maxBytesPerAttempt: 1_000_000,
        logger: { warn: () => {}, info: () => {} },
      });
      publisher.open({ workflowId, nodeId: "b", attempt: 1 }).push(create(OutputChunkSchema, { text: "first" }));
      await publisher.flush();
      await waitFor(() => seen.includes("b:first"), { timeoutMs: 20_000, description: "b's chunk" });
      stop.abort();
      await following;
    } finally {
      stop.abort();
      redis.disconnect();
    }
  }, 60_000);

  it("a master killed mid-run fails over to its replica, and every workflow still finishes", async () => {
    const ids = await Promise.all(
      Array.from({ length: 8 }, async () => (await stack.createWorkflow(clusterWorkflowNodes())).id),
    );
    await waitFor(async () => (await stack.countNodes(ids, "RUNNING")) > 0, { description: "nodes to be running" });
    // The master of the busiest queue ("work"), and the replica that should take its slots.
    const slot = await cluster.keySlot(`{work}`);
    const master = await cluster.masterOf(slot);
    const replica = (await cluster.nodes()).find((n) => n.masterId === master.id);
    expect(replica, `a replica of ${master.address}`).toBeDefined();
    const server = cluster.servers.find((s) => s.port === master.port)!;
    await server.kill();
    const killedAt = Date.now();

    // Failover: the replica is promoted, the cluster serves every slot again.
    await waitFor(async () => (await cluster.masterOf(slot)).address === replica!.address, {
      timeoutMs: 30_000,
      intervalMs: 100,
      description: `${replica!.address} to take over slot ${slot} from ${master.address}`,
    });
    await cluster.waitHealthy(30_000);
    const failedOverMs = Date.now() - killedAt;

    const done = await stack.waitFinished(ids, 90_000);
    expect(done.map((w) => w.status)).toEqual(ids.map(() => WorkflowStatus.SUCCEEDED));
    recordMeasurement("redis cluster master SIGKILL mid-run", {
      failedOverMs,
      finishedAfterKillMs: Date.now() - killedAt,
      boundMs: stack.recoveryBoundMs,
    });
    for (const app of stack.apps.processes) {
      expect(app.exitStatus, `${app.name} exited:\n${app.tail()}`).toBeNull();
      await app.waitReady(30_000);
    }
    await stack.expectInvariants({ workflowIds: ids }, 30_000);

    // Work goes on on the new master.
    const after = (await stack.createWorkflow(clusterWorkflowNodes())).id;
    const [finished] = await stack.waitFinished([after], 60_000);
    expect(finished!.status).toBe(WorkflowStatus.SUCCEEDED);
  }, 180_000);
});

/** Durable events pushed by the test, iterated by the follower. */
class EventFeed implements AsyncIterable<WorkflowEvent> {
  private readonly items: WorkflowEvent[] = [];
  private ended = false;
  private wake: (() => void) | null = null;

  push(event: WorkflowEvent): void {
    this.items.push(event);
    this.wake?.();
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WorkflowEvent> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = null;
    }
  }
}

function nodeEvent(workflowId: string, sequence: number, nodeId: string, status: NodeStatus, attempt: number) {
  return create(WorkflowEventSchema, {
    workflowId,
    sequence: BigInt(sequence),
    nodeId,
    type: "node.status_changed",
    nodeStatus: status,
    workflowStatus: WorkflowStatus.RUNNING,
    data: { attempt },
  });
}

async function followOnCluster(redis: RedisConnection): Promise<void> {
  const prefix = stack.queuePrefix;
  const workflowId = "00000000-0000-4000-8000-00000000c1a5";
  const otherWorkflowId = "00000000-0000-4000-8000-00000000c1a6";
  const nodes = ["a", "b", "c"];
  // A workflow's streams share its slot (one XREAD reads them); another workflow's are elsewhere.
  const slots = await Promise.all(
    nodes.map((nodeId) => cluster.keySlot(chunkStreamKey(prefix, { workflowId, nodeId, attempt: 1 }, true))),
  );
  expect(new Set(slots).size).toBe(1);
  expect(
    await cluster.keySlot(chunkStreamKey(prefix, { workflowId: otherWorkflowId, nodeId: "a", attempt: 1 }, true)),
  ).not.toBe(slots[0]);

  const publisher = new ChunkPublisher({
    redis,
    queuePrefix: prefix,
    retentionMs: 60_000,
    maxPerAttempt: 1_000,
    maxBytesPerAttempt: 1_000_000,
    logger: { warn: () => {}, info: () => {} },
  });
  const feed = new EventFeed();
  const seen: string[] = [];
  const arrived = new Map<string, number>();
  const following = (async () => {
    for await (const event of followWithChunks({
      redis,
      queuePrefix: prefix,
      workflowId,
      events: feed,
      nodes: new Map(),
      signal: new AbortController().signal,
      drainMs: 10_000,
      // A read that nothing interrupts waits this long: a new stream's chunk read well before it shows that CLIENT
      // UNBLOCK reached the master, whatever the machine's load (no bound on the latency itself).
      blockMs: 120_000,
    })) {
      if (event.type === "node.output_chunk") {
        const label = `${event.nodeId}:${event.chunk?.text}`;
        seen.push(label);
        arrived.set(label, Date.now());
      }
    }
  })();

  let sequence = 0;
  const attempts = new Map<string, ReturnType<ChunkPublisher["open"]>>();
  const latencies: number[] = [];
  for (const nodeId of nodes) {
    // A node starts while the follower blocks on the others' streams: its stream joins the read at once.
    feed.push(nodeEvent(workflowId, ++sequence, nodeId, NodeStatus.RUNNING, 1));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const attempt = publisher.open({ workflowId, nodeId, attempt: 1 });
    attempts.set(nodeId, attempt);
    // Written in the same batch as another workflow's chunks (another slot: another pipeline).
    const other = publisher.open({ workflowId: otherWorkflowId, nodeId, attempt: 1 });
    const sentAt = Date.now();
    attempt.push(create(OutputChunkSchema, { channel: "tokens", text: "first" }));
    other.push(create(OutputChunkSchema, { channel: "tokens", text: "elsewhere" }));
    other.end();
    await publisher.flush();
    await waitFor(() => arrived.has(`${nodeId}:first`), {
      timeoutMs: 20_000,
      description: `${nodeId}'s first chunk (its stream added to the blocked read)`,
    });
    latencies.push(arrived.get(`${nodeId}:first`)! - sentAt);
  }
  for (const nodeId of nodes) {
    const attempt = attempts.get(nodeId)!;
    attempt.push(create(OutputChunkSchema, { channel: "tokens", text: "last" }));
    attempt.end();
  }
  await publisher.flush();
  for (const nodeId of nodes) feed.push(nodeEvent(workflowId, ++sequence, nodeId, NodeStatus.PASS, 1));
  feed.end();
  await following;

  expect(seen.filter((s) => s.startsWith("a:"))).toEqual(["a:first", "a:last"]);
  expect(seen.filter((s) => s.startsWith("b:"))).toEqual(["b:first", "b:last"]);
  expect(seen.filter((s) => s.startsWith("c:"))).toEqual(["c:first", "c:last"]);
  // The other workflow's chunks were written too, on their own master.
  const otherKey = chunkStreamKey(prefix, { workflowId: otherWorkflowId, nodeId: "a", attempt: 1 }, true);
  expect(await redis.xlen(otherKey)).toBe(2);
  recordMeasurement("redis cluster chunk follow latency", {
    minMs: Math.min(...latencies),
    maxMs: Math.max(...latencies),
  });
}
