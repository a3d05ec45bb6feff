import { fileURLToPath } from "node:url";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import { databaseNameOf, withDatabaseName } from "./pool.js";

/** Folder of the drizzle-kit migrations committed at the repository root. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL("../../../drizzle", import.meta.url));

// Any constant shared by every Trellis migrator: concurrent starts apply migrations one at a time.
const MIGRATION_LOCK_KEY = 7_310_525_117;

/** Creates the database named in `databaseUrl` when it does not exist (races with other creators are fine). */
export async function ensureDatabase(databaseUrl: string): Promise<boolean> {
  const name = databaseNameOf(databaseUrl);
  const admin = new pg.Client({ connectionString: withDatabaseName(databaseUrl, "postgres") });
  await admin.connect();
  try {
    const found = await admin.query("select 1 from pg_database where datname = $1", [name]);
    if (found.rowCount) return false;
    try {
      await admin.query(`create database ${pg.escapeIdentifier(name)}`);
      return true;
    } catch (error) {
      // 42P04 duplicate_database, 23505 unique_violation: another process created it first.
      const code = (error as { code?: string }).code;
      if (code === "42P04" || code === "23505") return false;
      throw error;
    }
  } finally {
    await admin.end();
  }
}

/** Creates the database if missing and applies every pending migration of `drizzle/`, under an advisory lock. */
export async function runMigrations(databaseUrl: string): Promise<{ created: boolean }> {
  const created = await ensureDatabase(databaseUrl);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    await migrate(drizzle(client), { migrationsFolder: MIGRATIONS_FOLDER });
    await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
  } finally {
    await client.end();
  }
  return { created };
}
