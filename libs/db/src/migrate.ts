import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import { databaseNameOf, withDatabaseName } from "./pool.js";

/** Folder of the drizzle-kit migrations committed at the repository root. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL("../../../drizzle", import.meta.url));

/** Folder of the repeatable SQL (functions), applied after every migrate: see its README.md. */
export const REPEATABLE_SQL_FOLDER = fileURLToPath(new URL("../sql", import.meta.url));

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

/** The repeatable SQL files, in the order they are applied (by name); none when the folder does not exist. */
export async function repeatableSqlFiles(folder = REPEATABLE_SQL_FOLDER): Promise<string[]> {
  const names = await readdir(folder).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return [];
    throw error;
  });
  return names
    .filter((name) => name.endsWith(".sql"))
    .sort()
    .map((name) => join(folder, name));
}

/** Where runMigrations reads from (another version's folders, for the upgrade test). */
export interface MigrationFolders {
  /** The drizzle-kit migrations. @default MIGRATIONS_FOLDER */
  migrationsFolder?: string;
  /** The repeatable SQL, applied after the migrations. @default REPEATABLE_SQL_FOLDER */
  repeatableSqlFolder?: string;
}

/**
 * Creates the database if missing, applies every pending migration of `drizzle/`, then every repeatable SQL file
 * (the functions of the hot path, `CREATE OR REPLACE`) in one transaction; all under an advisory lock, so concurrent
 * starts apply them one at a time. Migrations are append-only; a function changes by editing its file.
 */
export async function runMigrations(
  databaseUrl: string,
  folders: MigrationFolders = {},
): Promise<{ created: boolean }> {
  const created = await ensureDatabase(databaseUrl);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    await migrate(drizzle(client), { migrationsFolder: folders.migrationsFolder ?? MIGRATIONS_FOLDER });
    await client.query("begin");
    try {
      for (const file of await repeatableSqlFiles(folders.repeatableSqlFolder)) {
        try {
          await client.query(await readFile(file, "utf8"));
        } catch (error) {
          throw new Error(`repeatable SQL ${file}: ${(error as Error).message}`, { cause: error });
        }
      }
      await client.query("commit");
    } catch (error) {
      await client.query("rollback");
      throw error;
    }
    await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
  } finally {
    await client.end();
  }
  return { created };
}
