// Upgrade test: a database made by the previous main (its migrations and SQL functions), with workflows left
// mid-run by its code (nodes QUEUED with no job, RUNNING under a dead worker's lease, PASS with ready children), is
// migrated by this code's runMigrations and run to the end by this code's scheduler and worker.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { PgStateManager, createDatabase, createPool, runMigrations, withDatabaseName } from "@trellis/db";
import { ExecutionStatus, NodeStatus, WorkflowStatus } from "@trellis/proto";
import { createRedis } from "@trellis/queue";
import { type SchedulerApp, readSchedulerSettings, startSchedulerApp } from "@trellis/scheduler";
import {
  type NodeServiceServer,
  type RecoverySettings,
  checkInvariants,
  createTestDatabase,
  describeViolations,
  startNodeServiceServer,
  testServerUrl,
  waitFor,
  waitForInvariants,
} from "@trellis/testing";
import { type WorkerApp, readWorkerSettings, startWorkerApp } from "@trellis/worker";
import pg from "pg";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The landed main this code upgrades from: its migrations (and repeatable SQL, when it has any) build the database.
 * Each session that lands bumps it to the main it started from. The mid-run state is written with that main's own
 * SQL (oldClaim, oldStart, oldPass): a bump may mean updating those calls to its tables and function signatures.
 */
const PREVIOUS_MAIN = "f9ef919";

/**
 * How many migrations PREVIOUS_MAIN had (bumped with it). Migrations are append-only, so when its commit cannot be
 * read (a shallow clone), its `drizzle/` is rebuilt from the first ones of this tree; its repeatable SQL cannot be,
 * so that fallback only holds while PREVIOUS_MAIN had none (f9ef919 has some: the test needs the history).
 */
const PREVIOUS_MAIN_MIGRATIONS = 11;

/** Whether PREVIOUS_MAIN had repeatable SQL (libs/db/sql), which only its commit can give. */
const PREVIOUS_MAIN_HAS_SQL = true;

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The capability of every node here; the test NodeService serves it. */
const CAPABILITY = "noop";

/** Each workflow: a diamond, a -> b, a -> c, (b, c) -> d. */
const DIAMOND: Record<string, string[]> = { a: [], b: ["a"], c: ["a"], d: ["b", "c"] };

/** A retry policy as the old code stored it (proto JSON): a lost attempt is retried after 50 ms, not 1 s. */
const RETRY_POLICY = { maxAttempts: 3, initialBackoff: "0.050s" };

/** Output of the nodes the old code passed: their children must be handed it. */
const OLD_OUTPUT = { passedBy: "previous main" };

/** Short settings: QUEUED nodes without a job and the old code's dead RUNNING nodes are recovered within a second or two. */
const TIMINGS: RecoverySettings & { pollMs: number; heartbeatMs: number } = {
  pollMs: 100,
  reconcileIntervalMs: 250,
  reconcileQueuedAfterMs: 500,
  workerStaleMs: 2_000,
  heartbeatMs: 200,
};

/** The four workflows the old code leaves mid-run, by role. */
type Role = "queued" | "running" | "ready" | "deep";
const ROLES: readonly Role[] = ["queued", "running", "ready", "deep"];

const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const queuePrefix = `u${Math.random().toString(36).slice(2, 10)}`;
const dbName = `trellis_upgrade_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
const databaseUrl = withDatabaseName(testServerUrl(), dbName);
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

let oldCodeDir: string | undefined;
let databaseCreated = false;
let pool: pg.Pool | undefined;
let nodeService: NodeServiceServer | undefined;
let scheduler: SchedulerApp | undefined;
let worker: WorkerApp | undefined;
const workflowIds = {} as Record<Role, string>;

function git(args: string[]): Buffer {
  return execFileSync("git", ["-C", REPO_ROOT, ...args], { maxBuffer: 256 * 1024 * 1024, stdio: "pipe" });
}

/**
 * Extracts `drizzle/` (and `libs/db/sql/` when it has one) of PREVIOUS_MAIN into a temporary folder; without the
 * commit in the history, rebuilds its `drizzle/` from this tree's first PREVIOUS_MAIN_MIGRATIONS migrations.
 */
function materialisePreviousMain(): string {
  const dir = mkdtempSync(join(tmpdir(), "trellis-upgrade-"));
  try {
    git(["rev-parse", "--verify", "--quiet", `${PREVIOUS_MAIN}^{commit}`]);
  } catch (error) {
    const why = (error as { stderr?: Buffer }).stderr?.toString().trim() || (error as Error).message;
    if (PREVIOUS_MAIN_HAS_SQL) {
      throw new Error(
        `upgrade test: commit ${PREVIOUS_MAIN} (PREVIOUS_MAIN) is not in the history of ${REPO_ROOT} (${why || "not found"}), ` +
          "and its repeatable SQL cannot be rebuilt from this tree: run it in a full clone (git fetch --unshallow)",
      );
    }
    console.warn(
      `upgrade test: commit ${PREVIOUS_MAIN} (PREVIOUS_MAIN) is not in the history of ${REPO_ROOT} (${why || "not found"}); ` +
        `rebuilding its drizzle/ from the first ${PREVIOUS_MAIN_MIGRATIONS} migrations of this tree`,
    );
    rebuildPreviousMigrations(dir);
    return dir;
  }
  const paths = ["drizzle"];
  if (git(["ls-tree", "-d", "--name-only", PREVIOUS_MAIN, "libs/db/sql"]).toString().trim() !== "") {
    paths.push("libs/db/sql");
  }
  const archive = git(["archive", "--format=tar", PREVIOUS_MAIN, ...paths]);
  execFileSync("tar", ["-x", "-C", dir], { input: archive, stdio: ["pipe", "pipe", "pipe"] });
  return dir;
}

/** Writes into `dir`/drizzle this tree's first PREVIOUS_MAIN_MIGRATIONS migrations and a journal of just those. */
function rebuildPreviousMigrations(dir: string): void {
  const source = join(REPO_ROOT, "drizzle");
  const journal = JSON.parse(readFileSync(join(source, "meta", "_journal.json"), "utf8")) as {
    entries: { idx: number; tag: string }[];
  };
  const entries = journal.entries.filter((e) => e.idx < PREVIOUS_MAIN_MIGRATIONS);
  mkdirSync(join(dir, "drizzle", "meta"), { recursive: true });
  writeFileSync(join(dir, "drizzle", "meta", "_journal.json"), JSON.stringify({ ...journal, entries }, null, 2));
  for (const e of entries) copyFileSync(join(source, `${e.tag}.sql`), join(dir, "drizzle", `${e.tag}.sql`));
}

/** Inserts a PENDING diamond workflow as the old createWorkflow wrote it: its row, nodes, edges and first event. */
async function insertWorkflow(db: pg.Pool, name: string): Promise<string> {
  const id = crypto.randomUUID();
  await db.query(
    `insert into workflows (id, name, status, input, labels, event_seq) values ($1, $2, 'PENDING', '{}', '{}', 1)`,
    [id, name],
  );
  await db.query(
    `insert into workflow_events (workflow_id, sequence, type, node_id, workflow_status, node_status, data)
     values ($1, 1, 'workflow.created', null, 'PENDING', null, $2)`,
    [id, JSON.stringify({ nodeCount: Object.keys(DIAMOND).length })],
  );
  for (const [nodeId, parents] of Object.entries(DIAMOND)) {
    await db.query(
      `insert into nodes (workflow_id, id, name, capability, status, parent_ids, pending_parents, input, retry_policy)
       values ($1, $2, $2, $3, 'PENDING', $4::text[], $5, $6, $7)`,
      [id, nodeId, CAPABILITY, parents, parents.length, JSON.stringify({ node: nodeId }), JSON.stringify(RETRY_POLICY)],
    );
    for (const parent of parents) {
      await db.query("insert into node_edges (workflow_id, parent_id, child_id) values ($1, $2, $3)", [
        id,
        parent,
        nodeId,
      ]);
    }
  }
  return id;
}

/** The old scheduler's claim: every ready node QUEUED (no job is ever added: that scheduler is gone). */
async function oldClaim(db: pg.Pool): Promise<string[]> {
  const { rows } = await db.query<{ body: { workflow_id: string; id: string } }>(
    "select body from trellis_claim_ready_nodes(100) where kind = 'queued'",
  );
  return rows.map((r) => `${r.body.workflow_id}/${r.body.id}`).sort();
}

/**
 * The old worker's start: QUEUED -> RUNNING for a worker session registered as the old worker did (it never beats
 * again: the new scheduler finds it dead); returns each node's lease.
 */
async function oldStart(db: pg.Pool, nodes: [string, string][]): Promise<Map<string, string>> {
  const { rows: registered } = await db.query<{ session: string }>(
    `insert into workers (id, capabilities) values ('previous-main-worker', '{${CAPABILITY}}')
     on conflict (id) do update set heartbeat_at = now() returning session`,
  );
  const { rows } = await db.query<{ body: { node: { workflow_id: string; id: string; lease: string } } }>(
    `select body from trellis_start_nodes($1::uuid[], $2::text[], $3::integer[], $4::uuid) where kind = 'node'`,
    [nodes.map(([w]) => w), nodes.map(([, n]) => n), nodes.map(() => null), registered[0]!.session],
  );
  expect(rows).toHaveLength(nodes.length);
  return new Map(rows.map((r) => [`${r.body.node.workflow_id}/${r.body.node.id}`, r.body.node.lease]));
}

/** The old worker's PASS without eager dispatch: the children that become ready are left to the scheduler. */
async function oldPass(db: pg.Pool, workflowId: string, nodeId: string, lease: string): Promise<void> {
  const { rows } = await db.query<{ kind: string }>(
    "select kind from trellis_pass_nodes($1::uuid[], $2::text[], $3::uuid[], $4::jsonb[], false, '{}', null, '{}')",
    [[workflowId], [nodeId], [lease], [JSON.stringify(OLD_OUTPUT)]],
  );
  expect(rows.filter((r) => r.kind === "pass")).toHaveLength(1);
}

async function nodeStatuses(db: pg.Pool): Promise<Record<string, string>> {
  const { rows } = await db.query<{ workflow_id: string; id: string; status: string }>(
    "select workflow_id, id, status::text as status from nodes",
  );
  const roleOf = new Map(ROLES.map((role) => [workflowIds[role], role]));
  return Object.fromEntries(
    rows.map((r) => [`${roleOf.get(r.workflow_id)}/${r.id}`, r.status] as const).sort(([x], [y]) => x.localeCompare(y)),
  );
}

/**
 * The public schema as a comparable value: columns, constraints, indexes, triggers, enum labels and functions (with
 * a digest of their bodies), each sorted.
 */
async function schemaOf(db: pg.Pool): Promise<Record<string, string[]>> {
  const queries: Record<string, string> = {
    columns: `select table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable
                     || ' default=' || coalesce(column_default, '') as line
                from information_schema.columns where table_schema = 'public'`,
    constraints: `select c.conrelid::regclass::text || '.' || c.conname || ' ' || pg_get_constraintdef(c.oid) as line
                    from pg_constraint c join pg_namespace n on n.oid = c.connamespace where n.nspname = 'public'`,
    indexes: "select indexdef as line from pg_indexes where schemaname = 'public'",
    triggers: `select pg_get_triggerdef(t.oid) as line from pg_trigger t join pg_class r on r.oid = t.tgrelid
                 join pg_namespace n on n.oid = r.relnamespace where n.nspname = 'public' and not t.tgisinternal`,
    enums: `select t.typname || ' ' || string_agg(e.enumlabel, ',' order by e.enumsortorder) as line
              from pg_type t join pg_enum e on e.enumtypid = t.oid join pg_namespace n on n.oid = t.typnamespace
             where n.nspname = 'public' group by t.typname`,
    functions: `select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
                       || pg_get_function_result(p.oid) || ' ' || md5(pg_get_functiondef(p.oid)) as line
                  from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'`,
  };
  const schema: Record<string, string[]> = {};
  for (const [name, query] of Object.entries(queries)) {
    schema[name] = (await db.query<{ line: string }>(query)).rows.map((r) => r.line).sort();
  }
  return schema;
}

/** What the old code leaves behind, per workflow and node. */
const MID_RUN: Record<string, string> = {
  "deep/a": "PASS",
  "deep/b": "RUNNING",
  "deep/c": "QUEUED",
  "deep/d": "PENDING",
  "queued/a": "QUEUED",
  "queued/b": "PENDING",
  "queued/c": "PENDING",
  "queued/d": "PENDING",
  "ready/a": "PASS",
  "ready/b": "PENDING",
  "ready/c": "PENDING",
  "ready/d": "PENDING",
  "running/a": "RUNNING",
  "running/b": "PENDING",
  "running/c": "PENDING",
  "running/d": "PENDING",
};

beforeAll(async () => {
  oldCodeDir = materialisePreviousMain();

  const admin = new pg.Client({ connectionString: withDatabaseName(databaseUrl, "postgres") });
  await admin.connect();
  try {
    await admin.query(`create database ${pg.escapeIdentifier(dbName)}`);
    databaseCreated = true;
  } finally {
    await admin.end();
  }
  // The previous main's migrations and repeatable SQL (when it had any), applied by today's runner: the steps are the
  // same (migrations under the migrators' lock, then the SQL files in name order in one transaction).
  await runMigrations(databaseUrl, {
    migrationsFolder: join(oldCodeDir, "drizzle"),
    repeatableSqlFolder: join(oldCodeDir, "libs", "db", "sql"),
  });
  pool = createPool(databaseUrl, { max: 5, applicationName: dbName });

  // The old code at work, then gone: its scheduler claimed, its worker started nodes and passed some, and died.
  for (const role of ROLES) workflowIds[role] = await insertWorkflow(pool, `upgrade-${role}`);
  const w = workflowIds;
  expect(await oldClaim(pool)).toEqual(ROLES.map((role) => `${w[role]}/a`).sort());
  const leases = await oldStart(pool, [
    [w.running, "a"],
    [w.ready, "a"],
    [w.deep, "a"],
  ]);
  await oldPass(pool, w.deep, "a", leases.get(`${w.deep}/a`)!);
  expect(await oldClaim(pool)).toEqual([`${w.deep}/b`, `${w.deep}/c`].sort());
  await oldStart(pool, [[w.deep, "b"]]);
  await oldPass(pool, w.ready, "a", leases.get(`${w.ready}/a`)!);
  expect(await nodeStatuses(pool)).toEqual(MID_RUN);
});

afterAll(async () => {
  await worker?.close();
  await scheduler?.close();
  await nodeService?.close();
  await pool?.end();
  const redis = createRedis(redisUrl);
  try {
    const keys = await redis.keys(`${queuePrefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
  if (databaseCreated) {
    const admin = new pg.Client({ connectionString: withDatabaseName(databaseUrl, "postgres") });
    await admin.connect();
    try {
      await admin.query(`drop database if exists ${pg.escapeIdentifier(dbName)} with (force)`);
    } finally {
      await admin.end();
    }
  }
  if (oldCodeDir) rmSync(oldCodeDir, { recursive: true, force: true });
});

describe(`upgrade from the previous main (${PREVIOUS_MAIN})`, () => {
  it("migrates the previous main's database with this code's runMigrations, twice", async () => {
    // The second finds no migration to apply and applies the repeatable SQL again.
    expect(await runMigrations(databaseUrl)).toEqual({ created: false });
    expect(await runMigrations(databaseUrl)).toEqual({ created: false });
    expect(await nodeStatuses(pool!)).toEqual(MID_RUN);
  });

  it("leaves the schema a fresh database gets (no landed migration edited, no old function left over)", async () => {
    const fresh = await createTestDatabase("trellis_upgrade_fresh");
    try {
      const [upgraded, expected] = await Promise.all([schemaOf(pool!), schemaOf(fresh.pool)]);
      expect(upgraded).toEqual(expected);
    } finally {
      await fresh.drop();
    }
  });

  it("runs the workflows the previous main left mid-run to the end", async () => {
    const db = pool!;
    nodeService = await startNodeServiceServer((request) => ({
      status: ExecutionStatus.SUCCESS,
      output: fromJson(ValueSchema, { node: request.node!.id }),
    }));
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      QUEUE_PREFIX: queuePrefix,
      LOG_LEVEL: "silent",
      HTTP_ADDR: "127.0.0.1:0",
    };
    scheduler = await startSchedulerApp(
      {
        ...readSchedulerSettings(env),
        pollMs: TIMINGS.pollMs,
        batchSize: 100,
        reconcileIntervalMs: TIMINGS.reconcileIntervalMs,
        reconcileQueuedAfterMs: TIMINGS.reconcileQueuedAfterMs,
        workerStaleMs: TIMINGS.workerStaleMs,
        dbPoolSize: 4,
      },
      { logger, registry: new Registry() },
    );
    worker = await startWorkerApp(
      {
        ...readWorkerSettings({ ...env, WORKER_CAPABILITIES: CAPABILITY }),
        concurrency: 8,
        nodeServiceAddr: nodeService.address,
        heartbeatMs: TIMINGS.heartbeatMs,
        workerId: `${queuePrefix}-worker`,
        dbPoolSize: 10,
      },
      { logger, registry: new Registry() },
    );

    const ids = ROLES.map((role) => workflowIds[role]);
    const stateManager = new PgStateManager(createDatabase(db));
    try {
      await waitFor(
        async () => {
          const statuses = await Promise.all(ids.map((id) => stateManager.getWorkflowStatus(id)));
          return statuses.every((s) => s === WorkflowStatus.SUCCEEDED);
        },
        { timeoutMs: 15_000, intervalMs: 100, description: "every upgraded workflow to succeed" },
      );
    } catch (error) {
      const violations = await checkInvariants({ pool: db, recovery: TIMINGS, workflowIds: ids });
      throw new Error(
        `${(error as Error).message}\nnodes: ${JSON.stringify(await nodeStatuses(db))}\n${describeViolations(violations)}`,
      );
    }

    const redis = createRedis(redisUrl);
    try {
      await waitForInvariants(
        { pool: db, redis, queuePrefix, recovery: TIMINGS, requireFinished: true, workflowIds: ids },
        10_000,
      );
    } finally {
      redis.disconnect();
    }

    for (const role of ROLES) {
      const workflow = await stateManager.getWorkflow(workflowIds[role]);
      expect(workflow.status, role).toBe(WorkflowStatus.SUCCEEDED);
      expect(workflow.nodes.map((n) => [n.id, n.status]).sort(), role).toEqual(
        Object.keys(DIAMOND).map((id) => [id, NodeStatus.PASS]),
      );

      const { rows } = await db.query<{ event_seq: string }>("select event_seq from workflows where id = $1", [
        workflowIds[role],
      ]);
      const events = await stateManager.listEvents(workflowIds[role], 0, 1_000);
      expect(
        events.map((e) => Number(e.sequence)),
        `${role}: events gap-free`,
      ).toEqual(Array.from({ length: Number(rows[0]!.event_seq) }, (_, i) => i + 1));
      expect(events[0]?.type).toBe("workflow.created");
      expect(events.at(-1)?.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    }

    // The new code ran exactly the nodes the old code had not passed, and handed them the old code's outputs.
    const calls = nodeService.calls.map((c) => {
      const role = ROLES.find((r) => workflowIds[r] === c.request.context?.workflowId);
      return { key: `${role}/${c.request.node!.id}`, context: c.request.context! };
    });
    const passedByOldCode = Object.keys(MID_RUN).filter((key) => MID_RUN[key] === "PASS");
    expect(new Set(calls.map((c) => c.key))).toEqual(
      new Set(Object.keys(MID_RUN).filter((key) => !passedByOldCode.includes(key))),
    );
    for (const key of ["ready/b", "ready/c", "deep/b", "deep/c"]) {
      const call = calls.find((c) => c.key === key)!;
      expect(toJson(ValueSchema, call.context.parentOutputs.a!), key).toEqual(OLD_OUTPUT);
    }
  });
});
