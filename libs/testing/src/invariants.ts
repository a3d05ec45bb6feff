import { canTransitionNode } from "@trellis/core";
import { NodeStatus } from "@trellis/proto";
import { NodeQueues, type RedisConnection, jobIdFor } from "@trellis/queue";
import type pg from "pg";
import type { SideEffectLedger } from "./side-effect-ledger.js";
import { waitFor } from "./wait-for.js";

/** The settings the recovery bound follows from (the scheduler's and the worker's). */
export interface RecoverySettings {
  /** WORKER_STALE_MS of the scheduler: a worker silent this long is dead (checked every fifth of it). */
  workerStaleMs: number;
  /** RECONCILE_INTERVAL_MS of the scheduler. */
  reconcileIntervalMs: number;
  /** RECONCILE_QUEUED_AFTER_MS of the scheduler. */
  reconcileQueuedAfterMs: number;
}

/**
 * How long a node of a running workflow may sit QUEUED or RUNNING with no live job or lease, once the scheduler,
 * PostgreSQL and Redis are up:
 * - a RUNNING node whose worker died: the worker's last heartbeat is at most WORKER_STALE_MS old when it is
 *   declared dead, which the scheduler checks every fifth of WORKER_STALE_MS, putting the node back on its queue;
 * - a QUEUED node whose job was lost: it is looked at once queued for RECONCILE_QUEUED_AFTER_MS, by the next
 *   round at most RECONCILE_INTERVAL_MS later, which adds a new job.
 * The bound is the larger of the two: `max(1.2 x WORKER_STALE_MS, RECONCILE_QUEUED_AFTER_MS) + RECONCILE_INTERVAL_MS`.
 * (The node then waits its retry backoff, if any, before it runs: that wait is a live delayed job.)
 */
export function recoveryBoundMs(settings: RecoverySettings): number {
  return Math.max(settings.workerStaleMs * 1.2, settings.reconcileQueuedAfterMs) + settings.reconcileIntervalMs;
}

/** One broken promise found by {@link checkInvariants}. */
export interface InvariantViolation {
  invariant: "I1" | "I2" | "I3" | "I4" | "I5" | "I6";
  message: string;
}

/** What {@link checkInvariants} looks at. */
export interface InvariantOptions {
  /** A pool on the test's database. */
  pool: pg.Pool;
  /** Redis and the queue prefix of the apps under test; without them I1 and I5 are not checked. */
  redis?: RedisConnection | undefined;
  queuePrefix?: string | undefined;
  /** The settings of the apps under test, for I1's bound. */
  recovery: RecoverySettings;
  /** Time the round of the reconciler itself may take, added to the bound. @default 1000 */
  slackMs?: number;
  /** The test NodeService's ledger, when it deduplicates: each key's effect at most once (I2). */
  ledger?: SideEffectLedger | undefined;
  /** I3: every workflow must have finished. @default false (checked while work is still running) */
  requireFinished?: boolean;
  /** Only these workflows. @default every workflow of the database */
  workflowIds?: readonly string[] | undefined;
  /** Capabilities no worker serves on purpose: their jobs are left alone by I5. */
  unservedCapabilities?: readonly string[];
}

interface NodeRow {
  workflow_id: string;
  id: string;
  status: string;
  capability: string;
  parent_ids: string[];
  pending_parents: number;
  attempt: number;
  queue_gen: number;
  lease: string | null;
  /** How long the node's worker has been silent (its last heartbeat; null: no registered worker holds it). */
  worker_silent_ms: number | null;
  queued_ms: number | null;
  started_at: Date | null;
  finished_at: Date | null;
}

interface EventRow {
  workflow_id: string;
  sequence: number;
  type: string;
  node_id: string | null;
  workflow_status: string;
  node_status: string | null;
  data: Record<string, unknown>;
}

const TERMINAL_WORKFLOW = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const UNFINISHED_NODE = new Set(["PENDING", "QUEUED", "RUNNING", "WAITING"]);
const LIVE_JOB = new Set(["waiting", "delayed", "active", "prioritized", "waiting-children"]);

function key(workflowId: string, nodeId: string): string {
  return `${workflowId}/${nodeId}`;
}

/**
 * Checks the five promises of Trellis against the database (and Redis) as they are now:
 * - I1 nothing lost: no node of an unfinished workflow is QUEUED with no live job, or RUNNING with a lapsed lease,
 *   for longer than {@link recoveryBoundMs} (+ slack);
 * - I2 nothing recorded twice: at most one ending per node attempt (the events and `node_attempts` agree), and at
 *   most one effect per idempotency key in the ledger;
 * - I3 everything ends: every workflow finished (only with `requireFinished`);
 * - I4 no corruption: edges match `parent_ids` and point at existing nodes, no cycle, no node started before its
 *   parents passed, `pending_parents` right, every node move an event names allowed by the state machine of
 *   @trellis/core, event sequences gap-free and ending in the current statuses,
 *   statuses consistent between nodes and their workflow;
 * - I5 queue agrees with the database: every waiting, delayed or active job is the current job of a node that is
 *   QUEUED (or RUNNING, for an active job);
 * - I6 never over a cap: for each limit with a max_concurrency, the attempts of the nodes holding its key
 *   (node_attempts' started_at to ended_at, and the RUNNING nodes from their start) never overlap more than the cap
 *   at any instant, and the nodes holding it now (QUEUED or RUNNING) are no more than the cap.
 * Returns every violation found (none: all hold).
 */
export async function checkInvariants(options: InvariantOptions): Promise<InvariantViolation[]> {
  // One snapshot of the database: read piecemeal while the apps run, tables would disagree with each other.
  const client = await options.pool.connect();
  try {
    await client.query("begin transaction isolation level repeatable read read only");
    const violations = await check(client, options);
    await client.query("commit");
    return violations;
  } finally {
    client.release();
  }
}

async function check(pool: pg.PoolClient, options: InvariantOptions): Promise<InvariantViolation[]> {
  const violations: InvariantViolation[] = [];
  const add = (invariant: InvariantViolation["invariant"], message: string) => violations.push({ invariant, message });
  const scope = options.workflowIds ? [...options.workflowIds] : null;

  const workflows = (
    await pool.query<{ id: string; status: string; event_seq: string }>(
      "select id, status, event_seq from workflows where $1::uuid[] is null or id = any($1::uuid[])",
      [scope],
    )
  ).rows;
  const workflowStatus = new Map(workflows.map((w) => [w.id, w.status]));
  const nodes = (
    await pool.query<NodeRow>(
      `select workflow_id, id, status, capability, parent_ids, pending_parents, attempt, queue_gen, lease,
              (select (extract(epoch from (clock_timestamp() - w.heartbeat_at)) * 1000)::float8
                 from workers w where w.session = nodes.worker_session) as worker_silent_ms,
              case when queued_at is null then null
                   else (extract(epoch from (clock_timestamp() - queued_at)) * 1000)::float8 end as queued_ms,
              started_at, finished_at
         from nodes where $1::uuid[] is null or workflow_id = any($1::uuid[])`,
      [scope],
    )
  ).rows;
  const nodeByKey = new Map(nodes.map((n) => [key(n.workflow_id, n.id), n]));
  const nodesOf = new Map<string, NodeRow[]>();
  for (const n of nodes) {
    const list = nodesOf.get(n.workflow_id) ?? [];
    list.push(n);
    nodesOf.set(n.workflow_id, list);
  }
  const events = (
    await pool.query<EventRow>(
      `select workflow_id, sequence::int as sequence, type, node_id, workflow_status, node_status, data
         from workflow_events where $1::uuid[] is null or workflow_id = any($1::uuid[])
        order by workflow_id, sequence`,
      [scope],
    )
  ).rows;
  const eventsOf = new Map<string, EventRow[]>();
  for (const e of events) {
    const list = eventsOf.get(e.workflow_id) ?? [];
    list.push(e);
    eventsOf.set(e.workflow_id, list);
  }
  const edges = (
    await pool.query<{ workflow_id: string; parent_id: string; child_id: string }>(
      "select workflow_id, parent_id, child_id from node_edges where $1::uuid[] is null or workflow_id = any($1::uuid[])",
      [scope],
    )
  ).rows;
  const attempts = (
    await pool.query<{ workflow_id: string; node_id: string; attempt: number; outcome: string }>(
      "select workflow_id, node_id, attempt, outcome from node_attempts where $1::uuid[] is null or workflow_id = any($1::uuid[])",
      [scope],
    )
  ).rows;

  // ---------------------------------------------------------------- I3
  if (options.requireFinished) {
    for (const w of workflows) {
      if (!TERMINAL_WORKFLOW.has(w.status)) add("I3", `workflow ${w.id} is still ${w.status}`);
    }
  }

  // ---------------------------------------------------------------- I1 and I5
  if (options.redis && options.queuePrefix) {
    const queues = new NodeQueues(options.redis, options.queuePrefix);
    try {
      const boundMs = recoveryBoundMs(options.recovery) + (options.slackMs ?? 1_000);
      const active = nodes.filter(
        (n) =>
          (n.status === "QUEUED" || n.status === "RUNNING") &&
          !TERMINAL_WORKFLOW.has(workflowStatus.get(n.workflow_id) ?? ""),
      );
      const queued = active.filter((n) => n.status === "QUEUED");
      const states = await queues.jobStates(
        queued.map((n) => ({ capability: n.capability, jobId: jobIdFor(n.workflow_id, n.id, n.queue_gen) })),
      );
      queued.forEach((n, i) => {
        const state = states[i] ?? "unknown";
        if (!LIVE_JOB.has(state) && (n.queued_ms ?? 0) > boundMs) {
          add("I1", `node ${key(n.workflow_id, n.id)} QUEUED ${Math.round(n.queued_ms ?? 0)} ms with job ${state}`);
        }
      });
      for (const n of active.filter((x) => x.status === "RUNNING")) {
        const silent = n.worker_silent_ms ?? Number.POSITIVE_INFINITY;
        if (n.lease === null || silent > boundMs) {
          add("I1", `node ${key(n.workflow_id, n.id)} RUNNING under a worker silent for ${Math.round(silent)} ms`);
        }
      }

      const unserved = new Set(options.unservedCapabilities ?? []);
      for (const capability of await queues.discover()) {
        if (unserved.has(capability)) continue;
        const jobs = await queues.queue(capability).getJobs(["waiting", "prioritized", "delayed", "active"]);
        for (const job of jobs) {
          if (!job?.id) continue;
          const state = await job.getState();
          const slash = job.id.lastIndexOf("/");
          const nodeKey = job.id.slice(0, slash);
          const gen = Number(job.id.slice(slash + 1));
          if (scope && !scope.includes(nodeKey.slice(0, nodeKey.indexOf("/")))) continue;
          const node = nodeByKey.get(nodeKey);
          if (!node) {
            add("I5", `${state} job ${job.id} has no node`);
            continue;
          }
          const current = node.queue_gen === gen;
          const fits =
            state === "active" ? node.status === "QUEUED" || node.status === "RUNNING" : node.status === "QUEUED";
          if (!current || !fits) {
            add("I5", `${state} job ${job.id} but node is ${node.status} at queue generation ${node.queue_gen}`);
          }
        }
      }
    } finally {
      await queues.close();
    }
  }

  // ---------------------------------------------------------------- I2
  const attemptsOf = new Map<string, { attempt: number; outcome: string }[]>();
  for (const a of attempts) {
    const list = attemptsOf.get(key(a.workflow_id, a.node_id)) ?? [];
    list.push(a);
    attemptsOf.set(key(a.workflow_id, a.node_id), list);
  }
  for (const [workflowId, list] of eventsOf) {
    // Events of a node id since it was last (re)created: an edit may delete a node and insert another of its id.
    const endings = new Map<string, Map<number, number>>();
    for (const e of list) {
      if (!e.node_id) continue;
      const k = key(workflowId, e.node_id);
      if (e.type === "node.deleted") {
        endings.delete(k);
        continue;
      }
      const attempt = typeof e.data.attempt === "number" ? e.data.attempt : null;
      const ends =
        e.type === "node.retry_scheduled" ||
        e.type === "node.throttled" ||
        (e.type === "node.status_changed" &&
          (e.node_status === "PASS" ||
            (e.node_status === "FAIL" && (e.data.from === "RUNNING" || e.data.from === "WAITING")) ||
            (e.node_status === "CANCELLED" && e.data.from === "RUNNING")));
      if (!ends) continue;
      const perAttempt = endings.get(k) ?? new Map<number, number>();
      // A cancellation names no attempt: it ends the node's current one.
      const a = attempt ?? nodeByKey.get(k)?.attempt ?? -1;
      perAttempt.set(a, (perAttempt.get(a) ?? 0) + 1);
      endings.set(k, perAttempt);
    }
    for (const [k, perAttempt] of endings) {
      for (const [attempt, count] of perAttempt) {
        if (count > 1) add("I2", `node ${k} attempt ${attempt} ended ${count} times in events`);
      }
      const rows = attemptsOf.get(k) ?? [];
      const ended = [...perAttempt.values()].reduce((s, n) => s + n, 0);
      if (nodeByKey.has(k) && rows.length !== ended) {
        add("I2", `node ${k}: ${ended} attempt endings in events but ${rows.length} rows in node_attempts`);
      }
    }
  }
  for (const n of nodes) {
    if (n.status !== "PASS") continue;
    const rows = attemptsOf.get(key(n.workflow_id, n.id)) ?? [];
    const passes = rows.filter((r) => r.outcome === "PASS");
    if (passes.length !== 1 || passes[0]?.attempt !== n.attempt) {
      add("I2", `PASS node ${key(n.workflow_id, n.id)} at attempt ${n.attempt} has ${passes.length} PASS attempt rows`);
    }
  }
  if (options.ledger) {
    for (const k of options.ledger.duplicates()) {
      add("I2", `idempotency key ${k}: effect applied ${options.ledger.effects.get(k)} times`);
    }
  }

  // ---------------------------------------------------------------- I4
  const edgesOf = new Map<string, Set<string>>();
  for (const e of edges) {
    if (!nodeByKey.has(key(e.workflow_id, e.parent_id)) || !nodeByKey.has(key(e.workflow_id, e.child_id))) {
      add("I4", `dangling edge ${e.parent_id} -> ${e.child_id} in workflow ${e.workflow_id}`);
    }
    const k = key(e.workflow_id, e.child_id);
    const set = edgesOf.get(k) ?? new Set<string>();
    set.add(e.parent_id);
    edgesOf.set(k, set);
  }
  for (const n of nodes) {
    const k = key(n.workflow_id, n.id);
    const fromEdges = edgesOf.get(k) ?? new Set<string>();
    const declared = new Set(n.parent_ids);
    if (fromEdges.size !== declared.size || [...declared].some((p) => !fromEdges.has(p))) {
      add("I4", `node ${k}: parent_ids [${n.parent_ids}] but edges from [${[...fromEdges]}]`);
    }
    const parents = n.parent_ids.map((p) => nodeByKey.get(key(n.workflow_id, p)));
    if (parents.some((p) => p === undefined)) add("I4", `node ${k} names a parent that does not exist`);
    if (n.status === "PENDING") {
      const notPassed = parents.filter((p) => p && p.status !== "PASS").length;
      if (n.pending_parents !== notPassed) {
        add("I4", `node ${k}: pending_parents ${n.pending_parents}, but ${notPassed} parents are not PASS`);
      }
    }
    if (n.status === "PASS" || n.status === "RUNNING") {
      for (const p of parents) {
        if (!p) continue;
        if (p.status !== "PASS") add("I4", `node ${k} is ${n.status} but its parent ${p.id} is ${p.status}`);
        else if (p.finished_at && n.started_at && n.started_at < p.finished_at) {
          add("I4", `node ${k} started before its parent ${p.id} finished`);
        }
      }
    }
    if (n.status === "RUNNING" && n.lease === null) add("I4", `node ${k} is RUNNING without a lease`);
    if (!UNFINISHED_NODE.has(n.status) && n.lease !== null) add("I4", `node ${k} is ${n.status} but holds a lease`);
  }
  for (const [workflowId, list] of nodesOf) {
    if (hasCycle(list)) add("I4", `workflow ${workflowId} has a cycle`);
    const status = workflowStatus.get(workflowId);
    const unfinished = list.filter((n) => UNFINISHED_NODE.has(n.status)).length;
    if (status === "SUCCEEDED" && list.some((n) => n.status !== "PASS")) {
      add("I4", `workflow ${workflowId} SUCCEEDED with nodes not PASS`);
    }
    if ((status === "FAILED" || status === "CANCELLED") && unfinished > 0) {
      add("I4", `workflow ${workflowId} is ${status} with ${unfinished} unfinished nodes`);
    }
    if (status === "FAILED" && !list.some((n) => n.status === "FAIL")) {
      add("I4", `workflow ${workflowId} FAILED with no FAIL node`);
    }
  }
  for (const w of workflows) {
    const list = eventsOf.get(w.id) ?? [];
    const seq = Number(w.event_seq);
    const gapFree = list.length === seq && list.every((e, i) => e.sequence === i + 1);
    if (!gapFree) add("I4", `workflow ${w.id}: events are not 1..${seq} (${list.length} events)`);
    const last = list[list.length - 1];
    if (last && last.workflow_status !== w.status) {
      add("I4", `workflow ${w.id} is ${w.status} but its last event says ${last.workflow_status}`);
    }
    // Every move an event names is one the node state machine of @trellis/core allows: the SQL functions that make
    // the moves are held to that table here.
    for (const e of list) {
      const from = e.data?.from;
      if (e.type !== "node.status_changed" || !e.node_id || !e.node_status || typeof from !== "string") continue;
      const fromStatus = NodeStatus[from as keyof typeof NodeStatus];
      const toStatus = NodeStatus[e.node_status as keyof typeof NodeStatus];
      if (fromStatus === undefined || toStatus === undefined || !canTransitionNode(fromStatus, toStatus)) {
        add("I4", `node ${key(w.id, e.node_id)} moved ${from} -> ${e.node_status} (event ${e.sequence})`);
      }
    }
    // Each node's last event that carries a status names its current status.
    const lastStatus = new Map<string, string>();
    for (const e of list) if (e.node_id && e.node_status) lastStatus.set(e.node_id, e.node_status);
    for (const [nodeId, status] of lastStatus) {
      const node = nodeByKey.get(key(w.id, nodeId));
      if (node && node.status !== status) {
        add("I4", `node ${key(w.id, nodeId)} is ${node.status} but its last event says ${status}`);
      }
    }
    // Every node that ran passed through its parents' PASS first, in event order.
    const passSeq = new Map<string, number>();
    for (const e of list) {
      // A fork's kept node is PASS from its node.copied event (it ran in the workflow it was forked from).
      if (e.node_id && e.type === "node.copied") passSeq.set(e.node_id, e.sequence);
      if (!e.node_id || e.type !== "node.status_changed") continue;
      if (e.node_status === "PASS") passSeq.set(e.node_id, e.sequence);
      if (e.node_status === "RUNNING") {
        const node = nodeByKey.get(key(w.id, e.node_id));
        for (const p of node?.parent_ids ?? []) {
          const passed = passSeq.get(p);
          if (node?.status === "PASS" && (passed === undefined || passed > e.sequence)) {
            add("I4", `node ${key(w.id, e.node_id)} ran (event ${e.sequence}) before its parent ${p} passed`);
          }
        }
      }
    }
  }

  // ---------------------------------------------------------------- I6
  const caps = await pool.query<{ key: string; cap: number; peak: number; at: Date | null; holding: number }>(
    `with l as (select key, max_concurrency as cap from limits where configured and max_concurrency > 0),
          holder as (select l.key, n.workflow_id, n.id, n.status, n.started_at
                       from l join nodes n
                         on case when l.key like 'capability:%' then n.capability = substr(l.key, 12)
                                 else n.limit_keys @> array[l.key] end
                      where $1::uuid[] is null or n.workflow_id = any($1::uuid[])),
          iv as (select h.key, a.started_at as s, a.ended_at as e
                   from holder h join node_attempts a on a.workflow_id = h.workflow_id and a.node_id = h.id
                  where a.started_at is not null
                 union all
                 select h.key, h.started_at, 'infinity'::timestamptz from holder h
                  where h.status = 'RUNNING' and h.started_at is not null),
          pts as (select key, s as t, 1 as d from iv union all select key, e, -1 from iv),
          run as (select key, t, sum(d) over (partition by key order by t, d rows unbounded preceding) as c from pts),
          peak as (select distinct on (key) key, c as peak, t as at from run order by key, c desc, t)
     select l.key, l.cap, coalesce(p.peak, 0)::int as peak, p.at,
            (select count(*) from holder h where h.key = l.key and h.status in ('QUEUED', 'RUNNING'))::int as holding
       from l left join peak p on p.key = l.key`,
    [scope],
  );
  for (const c of caps.rows) {
    if (c.peak > c.cap)
      add("I6", `limit ${c.key}: ${c.peak} nodes RUNNING at once at ${c.at?.toISOString()} (cap ${c.cap})`);
    if (c.holding > c.cap) add("I6", `limit ${c.key}: ${c.holding} nodes QUEUED or RUNNING hold it now (cap ${c.cap})`);
  }
  return violations;
}

function hasCycle(list: readonly NodeRow[]): boolean {
  const indegree = new Map(list.map((n) => [n.id, 0]));
  const children = new Map<string, string[]>();
  for (const n of list) {
    for (const p of n.parent_ids) {
      if (!indegree.has(p)) continue;
      indegree.set(n.id, (indegree.get(n.id) ?? 0) + 1);
      const c = children.get(p) ?? [];
      c.push(n.id);
      children.set(p, c);
    }
  }
  const ready = [...indegree].filter(([, d]) => d === 0).map(([id]) => id);
  let seen = 0;
  while (ready.length > 0) {
    const id = ready.pop()!;
    seen++;
    for (const c of children.get(id) ?? []) {
      const d = (indegree.get(c) ?? 0) - 1;
      indegree.set(c, d);
      if (d === 0) ready.push(c);
    }
  }
  return seen !== list.length;
}

/** Formats violations, at most `max` of them, one a line. */
export function describeViolations(violations: readonly InvariantViolation[], max = 25): string {
  const lines = violations.slice(0, max).map((v) => `${v.invariant}: ${v.message}`);
  if (violations.length > max) lines.push(`... and ${violations.length - max} more`);
  return lines.join("\n");
}

/** Throws, listing them, unless every invariant holds now. */
export async function assertInvariants(options: InvariantOptions): Promise<void> {
  const violations = await checkInvariants(options);
  if (violations.length > 0) throw new Error(`invariants violated:\n${describeViolations(violations)}`);
}

/**
 * Waits until every invariant holds (the queue may take a moment to drop stale jobs after a fault), failing with
 * the violations of the last check after `timeoutMs`.
 */
export async function waitForInvariants(options: InvariantOptions, timeoutMs = 15_000): Promise<void> {
  let last: InvariantViolation[] = [];
  try {
    await waitFor(
      async () => {
        last = await checkInvariants(options);
        return last.length === 0;
      },
      { timeoutMs, intervalMs: 250, description: "the invariants to hold" },
    );
  } catch {
    throw new Error(`invariants still violated after ${timeoutMs} ms:\n${describeViolations(last)}`);
  }
}
