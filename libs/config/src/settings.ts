import { readFileSync } from "node:fs";
import { ConfigError } from "./config-error.js";
import {
  type Env,
  type LogLevel,
  type ReadSettingFile,
  readInt,
  readLogLevel,
  readOptionalString,
  readSettingFile,
  readString,
  readUrl,
} from "./readers.js";
import { parseRedisUrl } from "./redis-url.js";

/** Where the apps find PostgreSQL when `DATABASE_URL` is unset. */
export const DEFAULT_DATABASE_URL = "postgres://postgres:postgres@localhost:5432/trellis";

/** Where the apps find Redis when `REDIS_URL` is unset. */
export const DEFAULT_REDIS_URL = "redis://localhost:6379";

/** The BullMQ prefix when `QUEUE_PREFIX` is unset. */
export const DEFAULT_QUEUE_PREFIX = "trellis";

/** Protocols accepted in `DATABASE_URL`. */
export const DATABASE_URL_PROTOCOLS = ["postgres:", "postgresql:"];

/** What a queue prefix may contain: BullMQ rejects `:` in names, and Redis keys are built from it. */
export const QUEUE_PREFIX_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

/** Settings every app reads. */
export interface CommonSettings {
  /**
   * `DATABASE_URL`: the PostgreSQL connection string of every query, each in a transaction of its own or autocommit,
   * so it may point at PgBouncer in transaction pooling mode. @default DEFAULT_DATABASE_URL
   */
  databaseUrl: string;
  /**
   * `DATABASE_LISTEN_URL`: a direct connection to PostgreSQL (not through a transaction-pooling PgBouncer) for what
   * holds session state: the LISTEN connections, the scheduler's event relay (a session-level advisory lock) and
   * migrations. @default DATABASE_URL
   */
  databaseListenUrl: string;
  /** `LOG_LEVEL`. @default "info" */
  logLevel: LogLevel;
}

/** Reads `DATABASE_URL`, `DATABASE_LISTEN_URL` and `LOG_LEVEL`. */
export function readCommonSettings(env: Env): CommonSettings {
  const databaseUrl = readUrl(env, "DATABASE_URL", DEFAULT_DATABASE_URL, DATABASE_URL_PROTOCOLS);
  return {
    databaseUrl,
    databaseListenUrl: readUrl(env, "DATABASE_LISTEN_URL", databaseUrl, DATABASE_URL_PROTOCOLS),
    logLevel: readLogLevel(env),
  };
}

/** Settings of the apps that use Redis through BullMQ (scheduler, worker, dashboard). */
export interface RedisSettings {
  /**
   * `REDIS_URL`: one server (`redis://`, `rediss://`) or a Redis Cluster (`redis+cluster://host:port,host:port`,
   * `rediss+cluster://`); see parseRedisUrl. @default DEFAULT_REDIS_URL
   */
  redisUrl: string;
  /** `QUEUE_PREFIX`: BullMQ prefix, so several deployments can share one Redis. @default "trellis" */
  queuePrefix: string;
  /**
   * `REDIS_TLS_CA`: the PEM CA bundle a `rediss://` server's (or every `rediss+cluster://` node's) certificate must
   * chain to, read at start (a URL cannot carry it). @default unset (the system's CAs, when the URL is rediss://)
   */
  redisTls?: RedisTlsSettings | undefined;
}

/** TLS material for Redis, as Node's `tls.connect` takes it. */
export interface RedisTlsSettings {
  /** PEM CA bundle. */
  ca: Buffer;
}

/** Reads `REDIS_URL`, `QUEUE_PREFIX` and `REDIS_TLS_CA` (the file it names, with `readFile`). */
export function readRedisSettings(env: Env, readFile: ReadSettingFile = readFileSync): RedisSettings {
  const queuePrefix = readString(env, "QUEUE_PREFIX", DEFAULT_QUEUE_PREFIX);
  if (!QUEUE_PREFIX_PATTERN.test(queuePrefix)) {
    throw ConfigError.invalid(
      "QUEUE_PREFIX",
      `must be 1 to 64 of A-Z a-z 0-9 _ . - (no ":"), got ${JSON.stringify(queuePrefix)}`,
    );
  }
  const redisUrl = readString(env, "REDIS_URL", DEFAULT_REDIS_URL);
  const target = parseRedisUrl(redisUrl);
  const caPath = readOptionalString(env, "REDIS_TLS_CA");
  if (caPath === undefined) return { redisUrl, queuePrefix };
  if (!target.tls) throw ConfigError.invalid("REDIS_TLS_CA", "needs a rediss:// or rediss+cluster:// REDIS_URL");
  return { redisUrl, queuePrefix, redisTls: { ca: readSettingFile("REDIS_TLS_CA", caPath, readFile) } };
}

/** How long an app waits for PostgreSQL and Redis at start when `STARTUP_TIMEOUT_MS` is unset. */
export const DEFAULT_STARTUP_TIMEOUT_MS = 30_000;

/** Settings of the start-up path of the apps that need PostgreSQL (and Redis). */
export interface StartupSettings {
  /**
   * `STARTUP_TIMEOUT_MS`: how long the app waits for PostgreSQL and Redis at start, retrying with a logged backoff,
   * before it exits 1 with one line. 0 tries once. @default 30000
   */
  startupTimeoutMs: number;
}

/** Reads `STARTUP_TIMEOUT_MS`. */
export function readStartupSettings(env: Env): StartupSettings {
  return {
    startupTimeoutMs: readInt(env, "STARTUP_TIMEOUT_MS", DEFAULT_STARTUP_TIMEOUT_MS, { min: 0, max: 3_600_000 }),
  };
}
