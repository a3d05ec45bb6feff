// `npm run migrate`: applies drizzle/ migrations, creating the database if missing. It connects to
// DATABASE_LISTEN_URL (the direct connection; DATABASE_URL when unset): the migrations run under a session-level
// advisory lock, which a transaction-pooling PgBouncer would hand to another client between two statements.
import { configOrExit, readCommonSettings } from "@trellis/config";
import { runMigrations } from "./migrate.js";

const settings = configOrExit(() => readCommonSettings(process.env), "migrate");
const url = settings.databaseListenUrl;
try {
  const { created } = await runMigrations(url);
  const where = new URL(url);
  console.log(
    `trellis migrate: ${created ? "created database and applied" : "applied"} migrations on ${where.host}${where.pathname}`,
  );
} catch (error) {
  const where = new URL(url);
  console.error(`trellis migrate: cannot migrate ${where.host}${where.pathname}: ${(error as Error).message}`);
  process.exit(1);
}
