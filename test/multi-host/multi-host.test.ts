// Several hosts on a real network (issue 14): every app on a host of its own, each host a Linux network namespace
// (Debian's iproute2: `ip netns`, a veth link per host into one bridge in a switch namespace, addresses 10.77.0.0/24
// that exist only inside the namespaces made here). One host runs PostgreSQL and Redis, two run an api each, two a
// scheduler each, three a worker each, one the NodeService; the test sits on a host of its own (the gateway) and
// reaches the others over the bridge. Workflows run through it; then a worker host's link goes down mid-call, a
// scheduler host is cut off, an api host is cut off; the invariant checker passes after each. See docs/deploy.md
// "Several hosts". Needs root and `ip`: skipped with the reason otherwise, failing instead under CI.
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { withDatabaseName } from "@trellis/db";
import {
  type GrpcClient,
  NodeStatus,
  type Workflow,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type Node,
} from "@trellis/proto";
import {
  AppGroup,
  type AppLogLine,
  type AppProcess,
  type EngineTimings,
  Gateway,
  type NetHost,
  Network,
  type PrivatePostgres,
  type PrivateRedis,
  SideEffectLedger,
  type TestDatabase,
  createTestDatabase,
  fanInNodes,
  netnsSkipReason,
  privatePostgresSkipReason,
  recordMeasurement,
  recoveryBoundMs,
  startPrivatePostgres,
  startPrivateRedis,
  testNode,
  waitFor,
  waitForInvariants,
} from "@trellis/testing";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";

const skip = netnsSkipReason() ?? privatePostgresSkipReason();
if (skip) console.warn(`multi-host test skipped: ${skip}`);

/**
 * Short liveness settings (docs/guarantees.md "Recovery bounds"): a worker beats every 0.4 s and is dead once silent
 * for 3 s (the scheduler looks every 0.6 s); the reconciler runs every 0.5 s. A little looser than the fault suite's,
 * for nine processes on a busy 2-core machine.
 */
const TIMINGS: EngineTimings = {
  heartbeatMs: 400,
  workerStaleMs: 3_000,
  reconcileIntervalMs: 500,
  reconcileQueuedAfterMs: 1_000,
  pollMs: 200,
};
/** The liveness bound: a cut-off worker's nodes are back on their queue within this (then wait their backoff). */
const BOUND_MS = recoveryBoundMs(TIMINGS);

/** Host name -> last octet of its address in 10.77.0.0/24. */
const HOSTS = {
  db: 2,
  api1: 11,
  api2: 12,
  scheduler1: 21,
  scheduler2: 22,
  worker1: 31,
  worker2: 32,
  worker3: 33,
  nodeservice: 41,
  client: 100,
} as const;
type HostName = keyof typeof HOSTS;
const WORKERS = ["worker1", "worker2", "worker3"] as const;
const APIS = ["api1", "api2"] as const;

/**
 * How long the apps may take to start: nine Node.js processes at once take about 10 s on an idle 2-core machine,
 * far longer on a loaded one. Every wait of the test is on a condition, with a deadline this generous.
 */
const STARTUP_MS = 240_000;
/** Deadline of each test (they wait on conditions, each with its own generous deadline). */
const TEST_MS = 240_000;

const GRPC_PORT = 50051;
const NODE_SERVICE_PORT = 50052;
const HTTP_PORTS = { api: 9464, scheduler: 9465, worker: 9466 } as const;
const QUEUE_PREFIX = "trellis";

let net: Network;
let gateway: Gateway;
let pg: PrivatePostgres;
let redis: PrivateRedis;
let db: TestDatabase;
let redisClient: Redis;
const apps = new AppGroup();
const app = new Map<HostName, AppProcess>();
let nodeService: AppProcess;
const clients = new Map<(typeof APIS)[number], GrpcClient<typeof WorkflowService>>();
const openClients: GrpcClient<typeof WorkflowService>[] = [];
/** The NodeService host's side-effect ledger, as it last reported it. */
const ledger = new SideEffectLedger(true);

function host(name: HostName): NetHost {
  return net.host(name);
}

/** Starts an app on its host, with settings pointing at the other hosts' addresses. */
function startOn(name: HostName, kind: "api" | "scheduler" | "worker", env: Record<string, string>): AppProcess {
  const h = host(name);
  const port = HTTP_PORTS[kind];
  const proc = apps.start({
    app: kind,
    name,
    prefix: h.prefix,
    readyz: gateway.readyz(h, port),
    env: {
      DATABASE_URL: withDatabaseName(pg.networkUrl, db.name),
      REDIS_URL: redis.url,
      QUEUE_PREFIX,
      LOG_LEVEL: "info",
      STARTUP_TIMEOUT_MS: "60000",
      HTTP_ADDR: `0.0.0.0:${port}`,
      ...env,
    },
  });
  app.set(name, proc);
  return proc;
}

/** A typed WorkflowService client of the api on `name`, through the gateway (a new connection each time). */
async function apiClient(name: (typeof APIS)[number]): Promise<GrpcClient<typeof WorkflowService>> {
  const target = await gateway.grpcTarget(`${host(name).address}:${GRPC_PORT}`);
  const client = createGrpcClient(WorkflowService, target, grpc.credentials.createInsecure());
  openClients.push(client);
  return client;
}

function api(name: (typeof APIS)[number]): GrpcClient<typeof WorkflowService> {
  return clients.get(name)!;
}

const deadline = (ms = 10_000) => ({ deadline: Date.now() + ms });

/** CreateWorkflow through the api on `via`; a refused call is retried with its request_id (exactly one workflow). */
async function createVia(via: (typeof APIS)[number], nodes: Node[], name: string): Promise<Workflow> {
  const requestId = `${name}-${Math.random().toString(36).slice(2, 10)}`;
  return waitFor(async () => (await api(via).createWorkflow({ name, nodes, requestId }, deadline())).workflow, {
    timeoutMs: 45_000,
    intervalMs: 250,
    description: `CreateWorkflow ${name} through ${via}`,
  });
}

/** What the apps said lately (warnings, errors), for a failing wait. */
function diagnose(): string {
  const lines: string[] = [];
  for (const proc of apps.processes) {
    const state = proc.exitStatus ? `exited ${JSON.stringify(proc.exitStatus)}` : "running";
    const problems = proc.lines.filter((l) => !l.startsWith("{") || /"level":(40|50|60)/.test(l));
    lines.push(`--- ${proc.name} (${state}):`, ...problems.slice(-6).map((l) => l.slice(0, 400)));
  }
  return lines.join("\n");
}

/** Waits until every workflow has finished (read from PostgreSQL over its socket); returns their statuses. */
async function waitFinished(ids: readonly string[], timeoutMs = 60_000): Promise<Map<string, string>> {
  const statuses = new Map<string, string>();
  try {
    await waitFor(
      async () => {
        const { rows } = await db.pool.query<{ id: string; status: string }>(
          "select id, status::text as status from workflows where id = any($1::uuid[])",
          [ids],
        );
        for (const r of rows) statuses.set(r.id, r.status);
        return rows.length === ids.length && rows.every((r) => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(r.status));
      },
      { timeoutMs, intervalMs: 200, description: `${ids.length} workflows to finish` },
    );
  } catch (error) {
    const { rows } = await db.pool.query<{ status: string; n: number }>(
      "select status::text as status, count(*)::int as n from nodes where workflow_id = any($1::uuid[]) group by 1",
      [ids],
    );
    throw new Error(
      `${(error as Error).message}\nnodes: ${rows.map((r) => `${r.status} ${r.n}`).join(", ")}\n${diagnose()}`,
    );
  }
  return statuses;
}

/** The NodeService host's JSON lines with this message. */
function nodeServiceLines(msg: string): AppLogLine[] {
  return nodeService.logs().filter((l) => l.msg === msg);
}

/** Copies the NodeService host's ledger counts into `ledger` (for I2). */
function syncLedger(): void {
  for (const l of nodeServiceLines("ledger")) {
    const key = String(l.key);
    ledger.calls.set(key, Number(l.calls));
    ledger.effects.set(key, Number(l.effects));
    ledger.replays.set(key, Number(l.replays));
  }
}

/** I1-I5 over these workflows (every one finished), with the apps' settings for I1's bound. */
async function expectInvariants(workflowIds: readonly string[]): Promise<void> {
  syncLedger();
  await waitForInvariants(
    {
      pool: db.pool,
      redis: redisClient,
      queuePrefix: QUEUE_PREFIX,
      recovery: TIMINGS,
      ledger,
      requireFinished: true,
      workflowIds,
    },
    60_000,
  );
}

/** The worker addresses (what the NodeService sees as the peer of a call). */
function workerAddresses(): Set<string> {
  return new Set(WORKERS.map((w) => host(w).address));
}

function peerAddress(line: AppLogLine): string {
  const peer = String(line.peer);
  return peer.slice(0, peer.lastIndexOf(":"));
}

/** `work` nodes w0..w(n-1) of `ms` each, joined by an echo node `join`. */
function workNodes(width: number, ms: number): Node[] {
  return fanInNodes(width).map((n) => {
    if (n.capability === "work") n.input = { ms };
    return n;
  });
}

describe.skipIf(skip !== undefined)("several hosts on a real network (network namespaces)", () => {
  beforeAll(async () => {
    const startedAt = Date.now();
    net = Network.create();
    for (const [name, octet] of Object.entries(HOSTS)) net.addHost(name, octet);
    gateway = Gateway.start(host("client"));
    const dbHost = host("db");
    [pg, redis] = await Promise.all([startPrivatePostgres({ host: dbHost }), startPrivateRedis({ host: dbHost })]);
    // The test's own connections use the servers' Unix sockets; the apps use 10.77.0.2 over the bridge.
    db = await createTestDatabase("trellis_multihost", pg.serverUrl);
    redisClient = redis.client();

    nodeService = apps.start({
      entry: "test/multi-host/node-service-host.ts",
      name: "nodeservice",
      prefix: host("nodeservice").prefix,
      stdin: true,
      env: { NODE_SERVICE_LISTEN_ADDR: `0.0.0.0:${NODE_SERVICE_PORT}` },
    });
    for (const name of APIS) {
      startOn(name, "api", { GRPC_ADDR: `${host(name).address}:${GRPC_PORT}` });
    }
    for (const name of ["scheduler1", "scheduler2"] as const) {
      startOn(name, "scheduler", {
        SCHEDULER_POLL_MS: String(TIMINGS.pollMs),
        RECONCILE_INTERVAL_MS: String(TIMINGS.reconcileIntervalMs),
        RECONCILE_QUEUED_AFTER_MS: String(TIMINGS.reconcileQueuedAfterMs),
        WORKER_STALE_MS: String(TIMINGS.workerStaleMs),
      });
    }
    for (const name of WORKERS) {
      startOn(name, "worker", {
        WORKER_CAPABILITIES: "echo,work,held",
        WORKER_CONCURRENCY: "4",
        WORKER_ID: name,
        WORKER_HEARTBEAT_MS: String(TIMINGS.heartbeatMs),
        NODE_SERVICE_ADDR: `${host("nodeservice").address}:${NODE_SERVICE_PORT}`,
      });
    }
    await Promise.all([
      ...[...app.values()].map((proc) => proc.waitReady(STARTUP_MS)),
      nodeService
        .waitForLog(
          (l) => l.msg === "listening" || nodeService.exitStatus !== null,
          STARTUP_MS,
          "the NodeService to listen",
        )
        .then(() => {
          if (nodeService.exitStatus) throw new Error(`the NodeService host exited:\n${nodeService.tail()}`);
        }),
    ]);
    for (const name of APIS) clients.set(name, await apiClient(name));
    recordMeasurement("multi-host: hosts made and every app ready", { setupMs: Date.now() - startedAt });
  }, STARTUP_MS + 60_000);

  afterAll(async () => {
    for (const client of openClients.splice(0)) client.close();
    // Links back up, so every app can say goodbye to PostgreSQL and Redis.
    for (const h of net?.all ?? []) if (!h.isUp) h.restore();
    await apps.stopAll(5_000);
    gateway?.close();
    redisClient?.disconnect();
    await db?.pool.end().catch(() => undefined);
    await redis?.close();
    await pg?.close();
    net?.destroy();
  }, 60_000);

  it(
    "runs workflows created through both api addresses on the three worker hosts",
    async () => {
      const created: Workflow[] = [];
      for (let i = 0; i < 6; i++) created.push(await createVia(APIS[i % 2]!, workNodes(4, 100), `spread-${i}`));
      const ids = created.map((w) => w.id);
      const statuses = await waitFinished(ids);
      expect([...statuses.values()]).toEqual(ids.map(() => "SUCCEEDED"));

      // Every ExecuteNode came over the network from a worker host.
      const calls = nodeServiceLines("call").filter((l) => ids.some((id) => String(l.key).startsWith(`${id}/`)));
      expect(calls.length).toBeGreaterThanOrEqual(ids.length * 5);
      const peers = new Set(calls.map(peerAddress));
      for (const peer of peers) expect(workerAddresses()).toContain(peer);
      recordMeasurement("multi-host: worker hosts that ran the first workflows", { workerHosts: peers.size });
      await expectInvariants(ids);
    },
    TEST_MS,
  );

  it(
    "a worker host's link goes down mid-call: its nodes run elsewhere, its late result is refused",
    async () => {
      const wf = await createVia("api1", [testNode("x", "held"), ...workNodes(4, 300)].map(addXToJoin), "cut-worker");
      const key = `${wf.id}/x`;
      const firstCall = await nodeService.waitForLog(
        (l) => l.msg === "call" && l.key === key && l.first === true,
        60_000,
        "the first call of x",
      );
      const victim = net.hostAt(peerAddress(firstCall))!;
      expect(WORKERS as readonly string[]).toContain(victim.name);
      const victimApp = app.get(victim.name as HostName)!;
      // Past WORKER_START_AFTER_MS its start is written: x is RUNNING under the victim's session, which the cut
      // makes lapse (a call cut before that is QUEUED under its job, and comes back through BullMQ instead).
      await waitFor(
        async () => {
          const { rows } = await db.pool.query<{ status: string }>(
            "select status::text as status from nodes where workflow_id = $1 and id = 'x'",
            [wf.id],
          );
          return rows[0]?.status === "RUNNING";
        },
        { timeoutMs: 10_000, description: "x's start to be written" },
      );

      victim.cut();
      const cutAt = Date.now();
      // Declared dead once silent for WORKER_STALE_MS, its node is queued again and runs on another worker host.
      const rerun = await nodeService.waitForLog(
        (l) => l.msg === "call" && l.key === key && l.first === false,
        BOUND_MS + 30_000,
        "x to run again on another worker",
      );
      const rerunMs = Number(rerun.time) - cutAt;
      expect(peerAddress(rerun)).not.toBe(victim.address);
      expect(workerAddresses()).toContain(peerAddress(rerun));
      expect(rerun.attempt).toBe(2);
      const statuses = await waitFinished([wf.id]);
      expect(statuses.get(wf.id)).toBe("SUCCEEDED");
      const { rows: registered } = await db.pool.query<{ id: string }>("select id from workers order by id");
      expect(registered.map((r) => r.id)).not.toContain(victim.name);

      // The link comes back and the NodeService answers the cut-off worker's call (a TASK_ERROR): too late.
      victim.restore();
      nodeService.send(`release ${key}`);
      await victimApp.waitForLog(
        (l) => l.workflow_id === wf.id && l.node_id === "x" && l.attempt === 1 && /lease was lost/.test(String(l.msg)),
        60_000,
        "the cut-off worker's result of x to be refused",
      );
      const answered = nodeServiceLines("answered").find((l) => l.key === key);

      const { rows: nodes } = await db.pool.query<{ status: string; attempt: number; output: unknown }>(
        "select status::text as status, attempt, output, error_message from nodes where workflow_id = $1 and id = 'x'",
        [wf.id],
      );
      expect(nodes[0]).toMatchObject({
        status: "PASS",
        attempt: 2,
        output: { node: "x", attempt: 2 },
        error_message: null,
      });
      const { rows: attempts } = await db.pool.query<{ attempt: number; outcome: string; worker_id: string | null }>(
        "select attempt, outcome::text as outcome, worker_id from node_attempts where workflow_id = $1 and node_id = 'x' order by attempt",
        [wf.id],
      );
      expect(attempts.map((a) => [a.attempt, a.outcome])).toEqual([
        [1, "RETRY"],
        [2, "PASS"],
      ]);
      expect(attempts[1]!.worker_id).not.toBe(victim.name);
      // Nothing of the late answer reached the events: x passed once, and no event carries its message.
      const { rows: events } = await db.pool.query<{ type: string; node_status: string | null; data: unknown }>(
        "select type, node_status::text as node_status, data from workflow_events where workflow_id = $1 and node_id = 'x' order by sequence",
        [wf.id],
      );
      expect(events.filter((e) => e.node_status === "PASS")).toHaveLength(1);
      expect(events.filter((e) => e.node_status === "FAIL")).toHaveLength(0);
      expect(JSON.stringify(events)).not.toContain("late result");
      const workflow = (await api("api2").getWorkflow({ workflowId: wf.id }, deadline())).workflow!;
      expect(workflow.status).toBe(WorkflowStatus.SUCCEEDED);
      const x = workflow.nodes.find((n) => n.id === "x")!;
      expect(x.status).toBe(NodeStatus.PASS);
      expect(toJson(ValueSchema, x.output!)).toEqual({ node: "x", attempt: 2 });

      // The worker host is back: it registers again under a new session and is ready.
      await waitFor(
        async () => {
          const { rows } = await db.pool.query("select 1 from workers where id = $1", [victim.name]);
          return rows.length === 1;
        },
        { timeoutMs: 60_000, intervalMs: 200, description: `${victim.name} to register again` },
      );
      await victimApp.waitReady(60_000);
      recordMeasurement("multi-host: worker host link down mid-call", {
        rerunMs,
        boundMs: BOUND_MS,
        workerStaleMs: TIMINGS.workerStaleMs,
        heartbeatMs: TIMINGS.heartbeatMs,
        lateAnswerReachedWorker: answered !== undefined && answered.cancelled === false,
      });
      await expectInvariants([wf.id]);
    },
    TEST_MS,
  );

  it(
    "a scheduler host is cut off: the other scheduler carries on",
    async () => {
      const before: Workflow[] = [];
      for (let i = 0; i < 4; i++) before.push(await createVia(APIS[i % 2]!, workNodes(3, 300), `before-cut-${i}`));
      await waitFor(
        async () => {
          const { rows } = await db.pool.query<{ n: number }>(
            "select count(*)::int as n from nodes where workflow_id = any($1::uuid[]) and status in ('RUNNING', 'PASS')",
            [before.map((w) => w.id)],
          );
          return rows[0]!.n > 0;
        },
        { timeoutMs: 30_000, description: "the first workflows to be under way" },
      );
      const cutOff = host("scheduler1");
      cutOff.cut();
      const after: Workflow[] = [];
      for (let i = 0; i < 4; i++) after.push(await createVia(APIS[i % 2]!, workNodes(3, 100), `after-cut-${i}`));
      const ids = [...before, ...after].map((w) => w.id);
      const statuses = await waitFinished(ids);
      expect([...statuses.values()]).toEqual(ids.map(() => "SUCCEEDED"));

      // The new workflows' first nodes were queued by scheduler2; the cut-off scheduler committed nothing of them.
      const queuedBy = (name: HostName, workflowId: string) =>
        app
          .get(name)!
          .logs()
          .some((l) => l.event === "node.status_changed" && l.node_status === "QUEUED" && l.workflow_id === workflowId);
      for (const w of after) {
        expect(queuedBy("scheduler2", w.id)).toBe(true);
        expect(
          app
            .get("scheduler1")!
            .logs()
            .some((l) => l.workflow_id === w.id),
        ).toBe(false);
      }

      cutOff.restore();
      await app.get("scheduler1")!.waitReady(60_000);
      const later: Workflow[] = [];
      for (let i = 0; i < 2; i++) later.push(await createVia(APIS[i % 2]!, workNodes(2, 100), `after-restore-${i}`));
      const laterIds = later.map((w) => w.id);
      expect([...(await waitFinished(laterIds)).values()]).toEqual(laterIds.map(() => "SUCCEEDED"));
      await expectInvariants([...ids, ...laterIds]);
    },
    TEST_MS,
  );

  it(
    "the api hosts answer behind either address, and one answers while the other is cut off",
    async () => {
      const viaOne = await createVia("api1", workNodes(2, 50), "via-api1");
      const viaTwo = await createVia("api2", workNodes(2, 50), "via-api2");
      await waitFinished([viaOne.id, viaTwo.id]);
      for (const [via, wf] of [
        ["api2", viaOne],
        ["api1", viaTwo],
      ] as const) {
        const got = (await api(via).getWorkflow({ workflowId: wf.id }, deadline())).workflow!;
        expect(got.id).toBe(wf.id);
        expect(got.status).toBe(WorkflowStatus.SUCCEEDED);
      }
      for (const via of APIS) {
        const listed = await api(via).listWorkflows({ pageSize: 100 }, deadline());
        const ids = listed.workflows.map((w) => w.id);
        expect(ids).toContain(viaOne.id);
        expect(ids).toContain(viaTwo.id);
      }

      const cutOff = host("api1");
      cutOff.cut();
      const whileCut = await createVia("api2", workNodes(2, 50), "while-api1-cut");
      await waitFinished([whileCut.id]);
      expect((await api("api2").getWorkflow({ workflowId: whileCut.id }, deadline())).workflow!.status).toBe(
        WorkflowStatus.SUCCEEDED,
      );
      // Behind the cut link nothing answers: the call runs out of its deadline (or finds no route).
      const unreachable = await (await apiClient("api1"))
        .getWorkflow({ workflowId: whileCut.id }, deadline(1_500))
        .then(
          () => null,
          (error: grpc.ServiceError) => error.code,
        );
      expect([grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE]).toContain(unreachable);

      cutOff.restore();
      const fresh = await apiClient("api1");
      const got = await waitFor(
        async () => (await fresh.getWorkflow({ workflowId: whileCut.id }, deadline(2_000))).workflow,
        { timeoutMs: 60_000, intervalMs: 250, description: "api1 to answer again" },
      );
      expect(got.status).toBe(WorkflowStatus.SUCCEEDED);
      clients.set("api1", fresh);
      await expectInvariants([viaOne.id, viaTwo.id, whileCut.id]);
    },
    TEST_MS,
  );
});

/** In the cut-worker workflow, `join` waits for x too. */
function addXToJoin(node: Node): Node {
  if (node.id === "join") node.parentIds = [...node.parentIds, "x"];
  return node;
}
