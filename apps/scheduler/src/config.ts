import {
  type Env,
  type RedisTlsSettings,
  type HostPort,
  type LogLevel,
  readCommonSettings,
  readHostPort,
  readInt,
  readOptionalString,
  readRedisSettings,
} from "@trellis/config";
import { type RetentionSettings, readRetentionSettings } from "./retention.js";

/** Settings of the Redis Stream event relay. */
export interface EventRelaySettings {
  /** `EVENTS_REDIS_STREAM`: the stream's key. */
  streamKey: string;
  /** `EVENTS_REDIS_STREAM_MAXLEN`: approximate length the stream is trimmed to. @default 1000000 */
  maxLen: number;
  /** `EVENTS_RELAY_POLL_MS`: safety-net poll under LISTEN/NOTIFY. @default 1000 */
  pollMs: number;
}

/** Settings of the scheduler app, read once at start. */
export interface SchedulerSettings {
  databaseUrl: string;
  /**
   * `DATABASE_LISTEN_URL`: PostgreSQL itself, for the LISTEN connection and the event relay's session (its advisory
   * lock), when `DATABASE_URL` is a transaction-pooling PgBouncer. @default DATABASE_URL
   */
  databaseListenUrl?: string | undefined;
  redisUrl: string;
  /** REDIS_TLS_CA, for a rediss:// REDIS_URL. @default unset */
  redisTls?: RedisTlsSettings | undefined;
  queuePrefix: string;
  logLevel: LogLevel;
  http: HostPort;
  /** Safety-net poll under LISTEN/NOTIFY. @default 1000 */
  pollMs: number;
  /** Nodes claimed per statement. @default 500 */
  batchSize: number;
  /** Reconciler period. @default 30000 */
  reconcileIntervalMs: number;
  /** A QUEUED node is checked for a missing job only after this long. @default 10000 */
  reconcileQueuedAfterMs: number;
  /**
   * A worker whose heartbeat is older than this is dead: it no longer counts as serving its capabilities, and the
   * nodes it was running go back to their queues (checked every fifth of it). @default 5000
   */
  workerStaleMs: number;
  /** Connections of the scheduler's pool. @default 5 */
  dbPoolSize: number;
  /** The Redis Stream event relay; off when undefined (`EVENTS_REDIS_STREAM` unset). @default undefined */
  eventRelay?: EventRelaySettings;
  /** Deletion of old finished workflows (`RETENTION_DAYS`, default 30); off when undefined. @default undefined */
  retention?: RetentionSettings | undefined;
}

/** Reads the scheduler's settings from the environment. */
export function readSchedulerSettings(env: Env): SchedulerSettings {
  const common = readCommonSettings(env);
  const redis = readRedisSettings(env);
  const streamKey = readOptionalString(env, "EVENTS_REDIS_STREAM");
  // Read even when the relay is off, so a mistake in them is reported at once rather than when it is turned on.
  const maxLen = readInt(env, "EVENTS_REDIS_STREAM_MAXLEN", 1_000_000, { min: 1, max: 1_000_000_000 });
  const relayPollMs = readInt(env, "EVENTS_RELAY_POLL_MS", 1_000, { min: 10, max: 60_000 });
  return {
    ...common,
    ...redis,
    http: readHostPort(env, "HTTP_ADDR", ":9465"),
    pollMs: readInt(env, "SCHEDULER_POLL_MS", 1_000, { min: 10, max: 60_000 }),
    batchSize: readInt(env, "SCHEDULER_BATCH_SIZE", 500, { min: 1, max: 10_000 }),
    reconcileIntervalMs: readInt(env, "RECONCILE_INTERVAL_MS", 30_000, { min: 100, max: 3_600_000 }),
    reconcileQueuedAfterMs: readInt(env, "RECONCILE_QUEUED_AFTER_MS", 10_000, { min: 0, max: 3_600_000 }),
    workerStaleMs: readInt(env, "WORKER_STALE_MS", 5_000, { min: 500, max: 3_600_000 }),
    dbPoolSize: readInt(env, "SCHEDULER_DB_POOL_SIZE", 5, { min: 1, max: 100 }),
    eventRelay: streamKey === undefined ? undefined : { streamKey, maxLen, pollMs: relayPollMs },
    retention: readRetentionSettings(env),
  };
}
