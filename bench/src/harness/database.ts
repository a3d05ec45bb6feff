import { execFile } from "node:child_process";
import { promisify } from "node:util";
import pg from "pg";
import { runMigrations, withDatabaseName } from "@trellis/db";
import { type Deadline, waitFor } from "./deadline.js";

/**
 * Prefix of every SQL statement the bench itself sends to a bench database, so its own statements can be told
 * apart from the engine's in pg_stat_statements.
 */
export const BENCH_SQL = "/* trellis-bench */";

/** The PostgreSQL server benches run on: BENCH_DATABASE_URL (any database of it), else the local default. */
export function benchServerUrl(): string {
  return process.env.BENCH_DATABASE_URL ?? "postgres://postgres:postgres@127.0.0.1:5432/postgres";
}

/** Runs one statement on the `postgres` database of `serverUrl`'s server (the bench's by default), with a throwaway connection. */
export async function onAdminDatabase<T extends pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
  serverUrl = benchServerUrl(),
): Promise<T[]> {
  const client = new pg.Client({ connectionString: withDatabaseName(serverUrl, "postgres") });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/**
 * Creates and migrates a fresh database `name` (with `runMigrations` of @trellis/db) on `serverUrl`'s server (the
 * bench's by default); returns its URL.
 */
export async function createBenchDatabase(name: string, serverUrl = benchServerUrl()): Promise<string> {
  const url = withDatabaseName(serverUrl, name);
  await runMigrations(url);
  return url;
}

/** Drops database `name` of `serverUrl`'s server (the bench's by default), disconnecting whoever is still on it. */
export async function dropBenchDatabase(name: string, serverUrl = benchServerUrl()): Promise<void> {
  await onAdminDatabase(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`, [], serverUrl);
}

/** A database's cumulative counters from pg_stat_database. */
export interface DatabaseStats {
  xact_commit: number;
  xact_rollback: number;
  tup_inserted: number;
  tup_updated: number;
  tup_deleted: number;
}

/**
 * Reads database `name`'s counters from pg_stat_database, on a fresh connection to the server's `postgres`
 * database: a new backend has no cached statistics snapshot (and pg_stat_clear_snapshot() makes sure), and the
 * read adds no transaction to `name`'s own counters.
 */
export async function databaseStats(name: string): Promise<DatabaseStats> {
  const client = new pg.Client({
    connectionString: withDatabaseName(benchServerUrl(), "postgres"),
    application_name: "trellis-bench-stats",
  });
  await client.connect();
  try {
    await client.query("select pg_stat_clear_snapshot()");
    const { rows } = await client.query<Record<keyof DatabaseStats, string>>(
      `select xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted
         from pg_stat_database where datname = $1`,
      [name],
    );
    const row = rows[0];
    if (!row) throw new Error(`pg_stat_database has no row for ${name}`);
    return {
      xact_commit: Number(row.xact_commit),
      xact_rollback: Number(row.xact_rollback),
      tup_inserted: Number(row.tup_inserted),
      tup_updated: Number(row.tup_updated),
      tup_deleted: Number(row.tup_deleted),
    };
  } finally {
    await client.end();
  }
}

/** Facts about the PostgreSQL server that bear on the figures. */
export interface PostgresInfo {
  version: string;
  fsync: string;
  synchronous_commit: string;
  shared_buffers: string;
  max_connections: string;
  shared_preload_libraries: string;
}

/** Reads the server's version and the settings that bear on the figures. */
export async function postgresInfo(): Promise<PostgresInfo> {
  const settings = [
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "max_connections",
    "shared_preload_libraries",
  ];
  const rows = await onAdminDatabase<{ name: string; setting: string }>(
    "select name, current_setting(name) as setting from unnest($1::text[]) as name",
    [settings],
  );
  const value = (name: string) => rows.find((r) => r.name === name)?.setting ?? "";
  return {
    version: value("server_version"),
    fsync: value("fsync"),
    synchronous_commit: value("synchronous_commit"),
    shared_buffers: value("shared_buffers"),
    max_connections: value("max_connections"),
    shared_preload_libraries: value("shared_preload_libraries"),
  };
}

/** Whether pg_stat_statements can be used, and why not when it cannot. */
export interface PgStatStatementsStatus {
  loaded: boolean;
  reason: string;
}

/** Whether `shared_preload_libraries` holds pg_stat_statements (the view needs it) and the extension is installed. */
export async function pgStatStatementsStatus(): Promise<PgStatStatementsStatus> {
  const [row] = await onAdminDatabase<{ libs: string; available: boolean }>(
    `select current_setting('shared_preload_libraries') as libs,
            exists (select 1 from pg_available_extensions where name = 'pg_stat_statements') as available`,
  );
  if (!row?.available) return { loaded: false, reason: "the pg_stat_statements extension is not installed" };
  const loaded = splitLibraries(row.libs).includes("pg_stat_statements");
  return loaded
    ? { loaded, reason: "" }
    : {
        loaded,
        reason:
          "pg_stat_statements is not in shared_preload_libraries (run the bench once with " +
          "--enable-pg-stat-statements, which adds it and restarts PostgreSQL)",
      };
}

function splitLibraries(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim().replace(/^"|"$/g, ""))
    .filter((s) => s.length > 0);
}

const execFileAsync = promisify(execFile);

/**
 * Adds pg_stat_statements to `shared_preload_libraries` (ALTER SYSTEM) and restarts PostgreSQL with
 * `pg_ctlcluster <version> <cluster> restart` (Debian's tooling; the cluster comes from `cluster_name`).
 * Disconnects every client of the server: only done when asked with --enable-pg-stat-statements.
 */
export async function enablePgStatStatements(deadline: Deadline): Promise<void> {
  const [row] = await onAdminDatabase<{ libs: string; cluster: string }>(
    "select current_setting('shared_preload_libraries') as libs, current_setting('cluster_name') as cluster",
  );
  const libs = splitLibraries(row?.libs ?? "");
  if (!libs.includes("pg_stat_statements")) {
    const value = [...libs, "pg_stat_statements"].join(",");
    await onAdminDatabase(`alter system set shared_preload_libraries = ${pg.escapeLiteral(value)}`);
  }
  const [version, cluster] = (row?.cluster ?? "").split("/");
  if (!version || !cluster) {
    throw new Error(
      "shared_preload_libraries now includes pg_stat_statements, but PostgreSQL must be restarted and its " +
        "cluster_name does not say how (expected <version>/<cluster>): restart it yourself and rerun",
    );
  }
  try {
    await execFileAsync("pg_ctlcluster", [version, cluster, "restart"], { timeout: deadline.remainingMs() });
  } catch (error) {
    throw new Error(
      `could not restart PostgreSQL with pg_ctlcluster ${version} ${cluster} restart ` +
        `(${(error as Error).message}); restart it yourself and rerun`,
    );
  }
  await waitFor("PostgreSQL to accept connections after its restart", deadline, async () => {
    try {
      await onAdminDatabase("select 1");
      return true;
    } catch {
      return undefined;
    }
  });
  const status = await pgStatStatementsStatus();
  if (!status.loaded) throw new Error(`pg_stat_statements is still not loaded after the restart: ${status.reason}`);
}
