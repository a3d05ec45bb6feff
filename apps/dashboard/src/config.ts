import {
  type Env,
  type RedisTlsSettings,
  type HostPort,
  type LogLevel,
  readCommonSettings,
  readBool,
  readHostPort,
  readInt,
  readOptionalString,
  readRedisSettings,
} from "@trellis/config";
import { readFileSync } from "node:fs";
import { parseTokenFile } from "@trellis/api";
import { type DashboardTokenSettings, readDashboardTokenSettings } from "./token-auth.js";

/** Settings of the dashboard app, read once at start. */
export interface DashboardSettings {
  databaseUrl: string;
  /**
   * `DATABASE_LISTEN_URL`: PostgreSQL itself, for the event streams' LISTEN connection, when `DATABASE_URL` is a
   * transaction-pooling PgBouncer. @default DATABASE_URL
   */
  databaseListenUrl?: string | undefined;
  redisUrl: string;
  /** REDIS_TLS_CA, for a rediss:// REDIS_URL. @default unset */
  redisTls?: RedisTlsSettings | undefined;
  queuePrefix: string;
  logLevel: LogLevel;
  http: HostPort;
  /** Basic-auth user for the whole dashboard, Bull Board included (with DASHBOARD_PASSWORD). */
  user: string | undefined;
  password: string | undefined;
  /** The api's tokens (`API_TOKENS_FILE`, `API_TOKEN`): sign-in with them, by role and labels (docs/security.md). */
  tokens?: DashboardTokenSettings | undefined;
  /**
   * `DASHBOARD_QUEUE_ACTIONS`: Bull Board's write actions (retry, promote, remove, clean, pause jobs and queues); off,
   * it is read-only, since a job changed behind the StateManager's back is a node out of step. @default false
   */
  queueActions?: boolean | undefined;
  /**
   * `WORKER_STALE_MS`: a worker whose heartbeat is older is not live (the scheduler's setting of the same name; the
   * Workers page and the unroutable banner judge by it). @default 5000
   */
  workerStaleMs?: number | undefined;
}

/** Reads the dashboard's settings from the environment. */
export function readDashboardSettings(env: Env): DashboardSettings {
  return {
    ...readCommonSettings(env),
    ...readRedisSettings(env),
    http: readHostPort(env, "HTTP_ADDR", ":3000"),
    user: readOptionalString(env, "DASHBOARD_USER"),
    password: readOptionalString(env, "DASHBOARD_PASSWORD"),
    tokens: readDashboardTokenSettings(env, (path) => readFileSync(path, "utf8"), parseTokenFile),
    queueActions: readBool(env, "DASHBOARD_QUEUE_ACTIONS", false),
    workerStaleMs: readInt(env, "WORKER_STALE_MS", 5_000, { min: 500, max: 3_600_000 }),
  };
}
