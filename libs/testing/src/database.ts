import pg from "pg";
import { createDatabase, createPool, runMigrations, withDatabaseName, type Database } from "@trellis/db";

/** A migrated database of its own for one test file, dropped by `drop()`. */
export interface TestDatabase {
  url: string;
  name: string;
  pool: pg.Pool;
  db: Database;
  drop(): Promise<void>;
}

/** The server tests create their databases on: TEST_DATABASE_URL, else the local default. */
export function testServerUrl(): string {
  return process.env.TEST_DATABASE_URL ?? "postgres://postgres:postgres@127.0.0.1:5432/postgres";
}

/**
 * Creates and migrates a fresh, uniquely named database; each test file calls this once. `serverUrl` picks another
 * server than {@link testServerUrl} (a private one a test stops and starts).
 */
export async function createTestDatabase(prefix = "trellis_test", serverUrl = testServerUrl()): Promise<TestDatabase> {
  const name = `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const url = withDatabaseName(serverUrl, name);
  await runMigrations(url);
  const pool = createPool(url, { max: 10, applicationName: name });
  const db = createDatabase(pool);
  return {
    url,
    name,
    pool,
    db,
    async drop() {
      await pool.end();
      const admin = new pg.Client({ connectionString: withDatabaseName(url, "postgres") });
      await admin.connect();
      try {
        await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}
