// `npm run migrate`: applies drizzle/ migrations to DATABASE_URL, creating the database if missing.
import { configOrExit, readCommonSettings } from "@trellis/config";
import { runMigrations } from "./migrate.js";

const settings = configOrExit(() => readCommonSettings(process.env), "migrate");
try {
  const { created } = await runMigrations(settings.databaseUrl);
  const where = new URL(settings.databaseUrl);
  console.log(
    `trellis migrate: ${created ? "created database and applied" : "applied"} migrations on ${where.host}${where.pathname}`,
  );
} catch (error) {
  const where = new URL(settings.databaseUrl);
  console.error(`trellis migrate: cannot migrate ${where.host}${where.pathname}: ${(error as Error).message}`);
  process.exit(1);
}
