import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  customType,
  doublePrecision,
  foreignKey,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

/** Workflow statuses as stored: the names of the protobuf enum without its prefix. */
export const workflowStatusEnum = pgEnum("workflow_status", [
  "PENDING",
  "RUNNING",
  "PAUSED",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
]);

/** Node statuses as stored: the names of the protobuf enum without its prefix. */
export const nodeStatusEnum = pgEnum("node_status", [
  "PENDING",
  "QUEUED",
  "RUNNING",
  "PASS",
  "FAIL",
  "SKIPPED",
  "CANCELLED",
  "WAITING",
]);

/** How one attempt of a node ended: passed, failed for good, went back to the queue, or was cancelled. */
export const attemptOutcomeEnum = pgEnum("attempt_outcome", [
  "PASS",
  "FAIL",
  "RETRY",
  "CANCELLED",
  "THROTTLED",
  "LEASE_LOST",
]);

/** Error kinds as stored. */
export const errorKindEnum = pgEnum("error_kind", ["TASK_ERROR", "INFRA_ERROR"]);

type Json = Record<string, unknown>;

/** PostgreSQL's 64-bit, never-wrapping transaction id (`xid8`), as a decimal string. */
const xid8 = customType<{ data: string; driverData: string }>({ dataType: () => "xid8" });

/** One row per workflow; `event_seq` is the sequence of its last committed event. */
export const workflows = pgTable(
  "workflows",
  {
    id: uuid("id").primaryKey(),
    name: text("name").notNull(),
    status: workflowStatusEnum("status").notNull(),
    input: jsonb("input").$type<Json>().notNull().default({}),
    labels: jsonb("labels").$type<Record<string, string>>().notNull().default({}),
    requestId: text("request_id"),
    eventSeq: bigint("event_seq", { mode: "number" }).notNull().default(0),
    createdAt: timestamp("created_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    finishedAt: timestamp("finished_at", { withTimezone: true, precision: 3 }),
    /** The sum of every attempt's usage, by unit ("tokens", "cost_usd", ...). */
    usage: jsonb("usage").$type<Record<string, number>>().notNull().default({}),
    /** Spending limits by unit: when usage reaches one the workflow is PAUSED (workflow.budget_exceeded). */
    budget: jsonb("budget").$type<Record<string, number>>().notNull().default({}),
    /**
     * The W3C traceparent of the workflow's span (OpenTelemetry), parent of its node attempts' spans wherever they
     * run; null while tracing is off.
     */
    traceParent: text("trace_parent"),
  },
  (t) => [
    uniqueIndex("workflows_request_id_key").on(t.requestId),
    index("workflows_created_at_id_idx").on(t.createdAt.desc(), t.id.desc()),
    index("workflows_status_created_at_idx").on(t.status, t.createdAt.desc(), t.id.desc()),
    // jsonb_path_ops: one entry per key and value together, so `labels @> {"k": "v"}` (the only label test) reads
    // the posting list of that pair alone, where jsonb_ops intersected the key's (every workflow with it) and the
    // value's.
    index("workflows_labels_path_idx").using("gin", t.labels.op("jsonb_path_ops")),
    index("workflows_active_idx").on(t.id).where(sql`${t.status} in ('PENDING', 'RUNNING')`),
    // Retention: finished workflows oldest first (finished_at is set exactly while the status is a finished one).
    index("workflows_finished_at_idx").on(t.finishedAt).where(sql`${t.finishedAt} is not null`),
  ],
);

/** One row per node. `pending_parents` counts parents not yet PASS; `lease` fences the worker holding it. */
export const nodes = pgTable(
  "nodes",
  {
    workflowId: uuid("workflow_id")
      .notNull()
      .references(() => workflows.id, { onDelete: "cascade" }),
    id: text("id").notNull(),
    name: text("name").notNull(),
    capability: text("capability").notNull(),
    status: nodeStatusEnum("status").notNull(),
    parentIds: text("parent_ids").array().notNull().default([]),
    pendingParents: integer("pending_parents").notNull().default(0),
    input: jsonb("input").$type<Json>().notNull().default({}),
    output: jsonb("output"),
    errorKind: errorKindEnum("error_kind"),
    errorMessage: text("error_message"),
    attempt: integer("attempt").notNull().default(0),
    /** `attempt` when the workflow was last RETRYed: attempts of the current run are attempt - attempt_base. */
    attemptBase: integer("attempt_base").notNull().default(0),
    /** RetryPolicy in its protobuf JSON form, as the caller gave it (defaults applied at use). */
    retryPolicy: jsonb("retry_policy").$type<Json>(),
    /** Per-attempt timeout in milliseconds, as the caller gave it (null: the default). */
    timeoutMs: integer("timeout_ms"),
    labels: jsonb("labels").$type<Record<string, string>>().notNull().default({}),
    /** Incremented each time the node is put on a queue; part of its deterministic job id. */
    queueGen: integer("queue_gen").notNull().default(0),
    /** Fencing token of the attempt running now: a result counts only while the node still holds it. */
    lease: uuid("lease"),
    /**
     * The session (`workers.session`) of the worker running the node: liveness is per worker, so a node is lost
     * when that session's heartbeat lapses, with no write per running node. Null for nodes started by workers of
     * before migration 0005, which renewed `lease_expires_at` instead.
     */
    workerSession: uuid("worker_session"),
    leaseExpiresAt: timestamp("lease_expires_at", { withTimezone: true, precision: 3 }),
    queuedAt: timestamp("queued_at", { withTimezone: true, precision: 3 }),
    /** Set when the node was reported as queued with no live worker serving its capability. */
    unroutableAt: timestamp("unroutable_at", { withTimezone: true, precision: 3 }),
    createdAt: timestamp("created_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    startedAt: timestamp("started_at", { withTimezone: true, precision: 3 }),
    finishedAt: timestamp("finished_at", { withTimezone: true, precision: 3 }),
    /** 0..10: among ready nodes of one capability, higher is queued (and taken from its queue) first. */
    priority: smallint("priority").notNull().default(0),
    /** Flow-control keys besides the implicit "capability:<capability>". */
    limitKeys: text("limit_keys").array().notNull().default([]),
    /**
     * For a ready (PENDING) node that a limit holds back: the key that held it last. The scheduler claims such nodes
     * key by key (libs/db/sql/040_claim.sql), the others without looking at limits.
     */
    heldBy: text("held_by"),
    /** The node's Wait in its protobuf JSON form: completed by SignalNode (or its timeout), not by a NodeService. */
    wait: jsonb("wait").$type<Json>(),
    /** A ready node is WAITING until then. */
    notBefore: timestamp("not_before", { withTimezone: true, precision: 3 }),
    /** For a WAITING node: when the scheduler looks at it again (its not_before, or its wait's timeout). */
    wakeAt: timestamp("wake_at", { withTimezone: true, precision: 3 }),
    /** The node whose edits inserted this one ('' for the original graph or an API edit). */
    insertedBy: text("inserted_by").notNull().default(""),
    /**
     * A SignalNode received for the node: kept while it is not yet WAITING (a signal may come before the node is
     * ready), and its request_id answers a repeated call. Protobuf JSON of the request's output, reject, message,
     * edits and request_id.
     */
    signal: jsonb("signal").$type<Json>(),
  },
  (t) => [
    primaryKey({ columns: [t.workflowId, t.id] }),
    index("nodes_held_idx")
      .on(t.capability, t.priority.desc())
      .where(sql`${t.heldBy} is not null and ${t.status} = 'PENDING'`),
    index("nodes_held_keys_idx")
      .using("gin", t.limitKeys)
      .where(sql`${t.heldBy} is not null and ${t.status} = 'PENDING'`),
    index("nodes_holding_idx").on(t.capability).where(sql`${t.status} in ('QUEUED', 'RUNNING')`),
    index("nodes_wake_idx").on(t.wakeAt).where(sql`${t.wakeAt} is not null`),
    index("nodes_holding_keys_idx")
      .using("gin", t.limitKeys)
      .where(sql`${t.status} in ('QUEUED', 'RUNNING') and ${t.limitKeys} <> '{}'`),
    // Ready and not held back by a limit: what the scheduler claims without looking at limits.
    index("nodes_ready_unheld_idx")
      .on(t.workflowId)
      .where(sql`${t.status} = 'PENDING' and ${t.pendingParents} = 0 and ${t.heldBy} is null`),
    index("nodes_in_flight_idx").on(t.status, t.queuedAt).where(sql`${t.status} in ('QUEUED', 'RUNNING')`),
    index("nodes_running_session_idx").on(t.workerSession).where(sql`${t.status} = 'RUNNING'`),
  ],
);

/** Parent -> child edges, indexed both ways. */
export const nodeEdges = pgTable(
  "node_edges",
  {
    workflowId: uuid("workflow_id")
      .notNull()
      .references(() => workflows.id, { onDelete: "cascade" }),
    parentId: text("parent_id").notNull(),
    childId: text("child_id").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.workflowId, t.parentId, t.childId] }),
    index("node_edges_child_idx").on(t.workflowId, t.childId),
  ],
);

/**
 * The events outbox: written in the same transaction as the change each describes.
 *
 * `tx_id` is the event's position for the Redis Stream relay (event-relay-store.ts): the id of the transaction that
 * wrote it, raised to the previous event's of the same workflow when that one is larger, so it never decreases along
 * a workflow's sequence. An event whose `tx_id` is below the oldest running transaction id is committed, and no
 * event committed later can have a smaller one: the relay reads in (tx_id, workflow_id, sequence) order up to there.
 */
export const workflowEvents = pgTable(
  "workflow_events",
  {
    workflowId: uuid("workflow_id")
      .notNull()
      .references(() => workflows.id, { onDelete: "cascade" }),
    sequence: bigint("sequence", { mode: "number" }).notNull(),
    type: text("type").notNull(),
    nodeId: text("node_id"),
    workflowStatus: workflowStatusEnum("workflow_status").notNull(),
    nodeStatus: nodeStatusEnum("node_status"),
    data: jsonb("data").$type<Json>().notNull().default({}),
    time: timestamp("time", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    txId: xid8("tx_id").notNull().default(sql`pg_current_xact_id()`),
  },
  (t) => [
    primaryKey({ columns: [t.workflowId, t.sequence] }),
    index("workflow_events_relay_idx").on(t.txId, t.workflowId, t.sequence),
  ],
);

/** Where each Redis Stream relay got to: the last event it published, in (tx_id, workflow_id, sequence) order. */
export const eventRelayCursors = pgTable("event_relay_cursors", {
  streamKey: text("stream_key").primaryKey(),
  txId: xid8("tx_id").notNull(),
  workflowId: uuid("workflow_id").notNull(),
  sequence: bigint("sequence", { mode: "number" }).notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
});

/**
 * One row per ended attempt of a node (RUNNING -> PASS, FAIL, back to QUEUED, or CANCELLED), written in the
 * transaction that ends it. The primary key is what makes "at most one terminal transition per attempt" a property
 * of the schema: a second ending of the same attempt, whatever code path tries it, is a unique violation and its
 * transaction rolls back. Rows go with their node (an edit may delete a PENDING node and insert another of that id).
 */
export const nodeAttempts = pgTable(
  "node_attempts",
  {
    workflowId: uuid("workflow_id").notNull(),
    nodeId: text("node_id").notNull(),
    attempt: integer("attempt").notNull(),
    outcome: attemptOutcomeEnum("outcome").notNull(),
    endedAt: timestamp("ended_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    startedAt: timestamp("started_at", { withTimezone: true, precision: 3 }),
    errorKind: errorKindEnum("error_kind"),
    errorMessage: text("error_message"),
    /** The worker that ran the attempt (null when it had gone before the attempt ended). */
    workerId: text("worker_id"),
    /** What the attempt spent, as its NodeService reported. */
    usage: jsonb("usage").$type<Record<string, number>>().notNull().default({}),
  },
  (t) => [
    primaryKey({ columns: [t.workflowId, t.nodeId, t.attempt] }),
    foreignKey({ columns: [t.workflowId, t.nodeId], foreignColumns: [nodes.workflowId, nodes.id] }).onDelete("cascade"),
  ],
);

/**
 * Live workers and the capabilities they serve, kept fresh by a heartbeat. `session` is new each time a worker
 * process registers: the nodes it starts carry it, and a session whose heartbeat lapsed is dead for good (its row
 * is deleted with its nodes re-queued; a worker that finds its row gone registers again under a new session).
 */
export const workers = pgTable(
  "workers",
  {
    id: text("id").primaryKey(),
    session: uuid("session").notNull().defaultRandom(),
    capabilities: text("capabilities").array().notNull(),
    hostname: text("hostname").notNull().default(""),
    startedAt: timestamp("started_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    heartbeatAt: timestamp("heartbeat_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [index("workers_heartbeat_idx").on(t.heartbeatAt), uniqueIndex("workers_session_idx").on(t.session)],
);

/**
 * Flow-control state per key: a limit set with SetLimit (`configured`), or only the pause a THROTTLED answer put on
 * a key without one. The token bucket (`tokens` at `refilled_at`) is refilled lazily by whoever reads it under the
 * row's lock: the scheduler's claim, a usage debit.
 */
export const limits = pgTable("limits", {
  key: text("key").primaryKey(),
  configured: boolean("configured").notNull().default(true),
  maxConcurrency: integer("max_concurrency").notNull().default(0),
  rate: doublePrecision("rate").notNull().default(0),
  periodMs: integer("period_ms").notNull().default(1000),
  burst: doublePrecision("burst").notNull().default(0),
  unit: text("unit").notNull().default(""),
  tokens: doublePrecision("tokens").notNull().default(0),
  refilledAt: timestamp("refilled_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  throttledUntil: timestamp("throttled_until", { withTimezone: true, precision: 3 }),
  throttledTotal: bigint("throttled_total", { mode: "number" }).notNull().default(0),
  createdAt: timestamp("created_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
});

/**
 * Cron schedules: each tick creates one workflow from `workflow` (a CreateWorkflowRequest in its protobuf JSON form).
 * `next_run_at` is the next tick in `timezone`; the scheduler that takes a due row (FOR UPDATE SKIP LOCKED) creates
 * the tick's workflow and moves `next_run_at` on in one transaction.
 */
export const schedules = pgTable(
  "schedules",
  {
    id: text("id").primaryKey(),
    cron: text("cron").notNull(),
    timezone: text("timezone").notNull().default("UTC"),
    workflow: jsonb("workflow").$type<Json>().notNull(),
    paused: boolean("paused").notNull().default(false),
    nextRunAt: timestamp("next_run_at", { withTimezone: true, precision: 3 }).notNull(),
    lastRunAt: timestamp("last_run_at", { withTimezone: true, precision: 3 }),
    lastWorkflowId: uuid("last_workflow_id"),
    createdAt: timestamp("created_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [index("schedules_due_idx").on(t.nextRunAt).where(sql`not ${t.paused}`)],
);

/** Every table, for drizzle(). */
export const schema = {
  workflows,
  nodes,
  nodeEdges,
  workflowEvents,
  nodeAttempts,
  workers,
  eventRelayCursors,
  limits,
  schedules,
};
