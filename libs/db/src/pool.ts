import pg from "pg";
import { drizzle, type NodePgDatabase } from "drizzle-orm/node-postgres";
import { schema } from "./schema.js";

/** The Drizzle database type used throughout libs/db. */
export type Database = NodePgDatabase<typeof schema>;

/** Options of a PostgreSQL connection pool. */
export interface PoolOptions {
  /** Connections at most. @default 10 */
  max?: number;
  /** Name shown in pg_stat_activity. @default "trellis" */
  applicationName?: string;
}

/**
 * Creates a pg pool; connection errors are reported to `onError` instead of crashing the process, whether the
 * client was idle in the pool or checked out (in a transaction, between two statements).
 */
export function createPool(databaseUrl: string, options: PoolOptions = {}, onError?: (error: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.max ?? 10,
    application_name: options.applicationName ?? "trellis",
    connectionTimeoutMillis: 10_000,
  });
  pool.on("error", (error) => onError?.(error));
  // pg-pool listens for errors only on idle clients: a checked-out one whose connection drops (the server restarts,
  // pg_terminate_backend) between two statements emits 'error' with no listener, which kills the process. Its
  // statement fails anyway and the pool discards the broken client on release.
  pool.on("connect", (client) => {
    client.on("error", (error) => onError?.(error));
  });
  return pool;
}

/** Wraps a pg pool in Drizzle with the Trellis schema. */
export function createDatabase(pool: pg.Pool): Database {
  return drizzle(pool, { schema });
}

/** Returns the same URL pointing at another database of the server. */
export function withDatabaseName(databaseUrl: string, name: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** The database name of a connection URL. */
export function databaseNameOf(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, ""));
  if (!name) throw new Error(`DATABASE_URL names no database: ${databaseUrl}`);
  return name;
}

/**
 * Resolves once PostgreSQL at `databaseUrl` answers `select 1` on a throwaway connection, rejecting within about
 * `timeoutMs` otherwise. For the apps' start-up wait (with `waitForDependency` of @trellis/observability).
 */
export async function checkPostgres(databaseUrl: string, timeoutMs = 5_000): Promise<void> {
  const client = new pg.Client({
    connectionString: databaseUrl,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: "trellis-probe",
  });
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.query("select 1");
  } catch (error) {
    const where = new URL(databaseUrl);
    throw new Error(`PostgreSQL at ${where.host}${where.pathname} is not reachable: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The PostgreSQL URLs of an app's settings: every query's, and the direct one of its LISTEN (and locked) sessions. */
export interface PostgresUrls {
  /** `DATABASE_URL`: may be a transaction-pooling PgBouncer. */
  databaseUrl: string;
  /** `DATABASE_LISTEN_URL`: PostgreSQL itself. @default databaseUrl */
  databaseListenUrl?: string | undefined;
}

/**
 * The start-up checks of an app's PostgreSQL (for runApp's dependencies): DATABASE_URL, and DATABASE_LISTEN_URL too
 * when it names another server or port (PostgreSQL behind a PgBouncer DATABASE_URL).
 */
export function postgresDependencies(urls: PostgresUrls): { name: string; check: () => Promise<void> }[] {
  const checks = [{ name: "PostgreSQL", check: () => checkPostgres(urls.databaseUrl) }];
  const listenUrl = urls.databaseListenUrl;
  if (listenUrl !== undefined && listenUrl !== urls.databaseUrl) {
    checks.push({ name: "PostgreSQL (DATABASE_LISTEN_URL)", check: () => checkPostgres(listenUrl) });
  }
  return checks;
}
