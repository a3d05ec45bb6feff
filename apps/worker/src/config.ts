import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import {
  ConfigError,
  type Env,
  type HostPort,
  type LogLevel,
  readCommonSettings,
  readHostPort,
  readInt,
  readList,
  readOptionalString,
  readRedisSettings,
  readString,
  type RedisTlsSettings,
  type ReadSettingFile,
  readSettingFile,
} from "@trellis/config";

import {
  DEFAULT_CHUNK_MAX_BYTES_PER_ATTEMPT,
  DEFAULT_CHUNK_MAX_PER_ATTEMPT,
  DEFAULT_CHUNK_RETENTION_MS,
} from "@trellis/queue";
import { DEFAULT_START_AFTER_MS } from "./node-runner.js";
import { type NodeServiceRoute, parseNodeServiceAddress, parseNodeServiceRoutes } from "./node-service-routes.js";

const CAPABILITY = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** The worker's TLS material for NodeServices reached at `grpcs://` addresses (PEM, read from files at start). */
export interface NodeServiceTlsSettings {
  /** CA bundle the NodeServices' certificates must chain to (`NODE_SERVICE_TLS_CA`). */
  ca: Buffer;
  /** Client certificate chain presented to NodeServices that ask for one, mTLS (`NODE_SERVICE_TLS_CERT`). */
  cert?: Buffer | undefined;
  /** The client certificate's private key (`NODE_SERVICE_TLS_KEY`). */
  key?: Buffer | undefined;
}

export type { ReadSettingFile } from "@trellis/config";

/** Settings of the worker app, read once at start. */
export interface WorkerSettings {
  databaseUrl: string;
  /**
   * `DATABASE_LISTEN_URL`: PostgreSQL itself, for the cancellations' LISTEN connection, when `DATABASE_URL` is a
   * transaction-pooling PgBouncer. @default DATABASE_URL
   */
  databaseListenUrl?: string | undefined;
  redisUrl: string;
  /** REDIS_TLS_CA, for a rediss:// REDIS_URL. @default unset */
  redisTls?: RedisTlsSettings | undefined;
  queuePrefix: string;
  logLevel: LogLevel;
  http: HostPort;
  /** Capabilities this worker pulls (WORKER_CAPABILITIES, required). */
  capabilities: string[];
  /** Jobs in flight per capability. @default 16 */
  concurrency: number;
  /** Where ExecuteNode is called for a capability no route matches. @default localhost:50052 */
  nodeServiceAddr: string;
  /**
   * NODE_SERVICE_ROUTES: capabilities (or globs of them) sent to other NodeServices than `nodeServiceAddr`; an exact
   * capability wins over globs, then the first matching glob in the order written. @default [] (all to nodeServiceAddr)
   */
  nodeServiceRoutes?: NodeServiceRoute[];
  /**
   * NODE_SERVICE_TLS_CA / _CERT / _KEY: used for the addresses written `grpcs://host:port` (NODE_SERVICE_ADDR or
   * routes); others stay plaintext. @default unset (no TLS address allowed)
   */
  nodeServiceTls?: NodeServiceTlsSettings | undefined;
  /** Largest ExecuteNodeResponse accepted. @default 16 MiB */
  nodeServiceMaxReceiveBytes: number;
  /**
   * How long the recording of a result is retried while PostgreSQL is unreachable before it is given up (the node
   * then runs again once the scheduler finds this worker's session lost, or after a restart). @default 30000
   */
  resultRetryMs: number;
  /**
   * Heartbeat period: the worker's liveness, one row per worker whatever it runs (the scheduler declares it dead
   * after WORKER_STALE_MS without one). Each beat also checks that the nodes it runs are still its own. @default 1000
   */
  heartbeatMs: number;
  /**
   * How long a call runs before its start (QUEUED -> RUNNING) is written. The result of a call that ends sooner is
   * recorded with its start in one transaction; 0 writes every start before its call. Limited nodes (a key with a
   * limit) are always started first. @default 200
   */
  startAfterMs?: number;
  /** Identity in the worker registry. @default <hostname>-<pid> */
  workerId: string;
  /** Connections of the worker's pool. @default concurrency x capabilities + 2, at most 50 */
  dbPoolSize: number;
  /** How long an attempt's output chunks stay in Redis after its last one (`CHUNK_RETENTION_MS`). @default 3600000 */
  chunkRetentionMs?: number;
  /** Output chunks kept per attempt; later ones are dropped (`CHUNK_MAX_PER_ATTEMPT`). @default 100000 */
  chunkMaxPerAttempt?: number;
  /** Bytes of output chunks kept per attempt (`CHUNK_MAX_BYTES_PER_ATTEMPT`). @default 16 MiB */
  chunkMaxBytesPerAttempt?: number;
}

function readNodeServiceTls(env: Env, readFile: ReadSettingFile): NodeServiceTlsSettings | undefined {
  const caPath = readOptionalString(env, "NODE_SERVICE_TLS_CA");
  const certPath = readOptionalString(env, "NODE_SERVICE_TLS_CERT");
  const keyPath = readOptionalString(env, "NODE_SERVICE_TLS_KEY");
  if (caPath === undefined) {
    if (certPath !== undefined) throw ConfigError.invalid("NODE_SERVICE_TLS_CERT", "needs NODE_SERVICE_TLS_CA");
    if (keyPath !== undefined) throw ConfigError.invalid("NODE_SERVICE_TLS_KEY", "needs NODE_SERVICE_TLS_CA");
    return undefined;
  }
  if (certPath === undefined && keyPath !== undefined) {
    throw ConfigError.invalid("NODE_SERVICE_TLS_CERT", "required when NODE_SERVICE_TLS_KEY is set");
  }
  if (keyPath === undefined && certPath !== undefined) {
    throw ConfigError.invalid("NODE_SERVICE_TLS_KEY", "required when NODE_SERVICE_TLS_CERT is set");
  }
  return {
    ca: readSettingFile("NODE_SERVICE_TLS_CA", caPath, readFile),
    cert: certPath === undefined ? undefined : readSettingFile("NODE_SERVICE_TLS_CERT", certPath, readFile),
    key: keyPath === undefined ? undefined : readSettingFile("NODE_SERVICE_TLS_KEY", keyPath, readFile),
  };
}

/** Reads the worker's settings from the environment (and the TLS files it names, with `readFile`). */
export function readWorkerSettings(env: Env, readFile: ReadSettingFile = readFileSync): WorkerSettings {
  const common = readCommonSettings(env);
  const redis = readRedisSettings(env);
  const capabilities = readList(env, "WORKER_CAPABILITIES");
  if (capabilities.length === 0) {
    throw new ConfigError("WORKER_CAPABILITIES: required (comma-separated capabilities, e.g. llm.chat,web.search)");
  }
  for (const capability of capabilities) {
    if (!CAPABILITY.test(capability)) {
      throw new ConfigError(`WORKER_CAPABILITIES: "${capability}" is not a capability ([a-z0-9][a-z0-9._-]{0,63})`);
    }
  }
  const concurrency = readInt(env, "WORKER_CONCURRENCY", 16, { min: 1, max: 1_000 });
  const nodeServiceTls = readNodeServiceTls(env, readFile);
  const tls = nodeServiceTls !== undefined;
  return {
    ...common,
    ...redis,
    http: readHostPort(env, "HTTP_ADDR", ":9466"),
    capabilities: [...new Set(capabilities)],
    concurrency,
    nodeServiceAddr: parseNodeServiceAddress(
      readString(env, "NODE_SERVICE_ADDR", "localhost:50052"),
      "NODE_SERVICE_ADDR",
      tls,
    ),
    nodeServiceRoutes: parseNodeServiceRoutes(
      readOptionalString(env, "NODE_SERVICE_ROUTES"),
      "NODE_SERVICE_ROUTES",
      tls,
    ),
    nodeServiceTls,
    nodeServiceMaxReceiveBytes: readInt(env, "NODE_SERVICE_MAX_RECEIVE_BYTES", 16 * 1024 * 1024, {
      min: 1024,
      max: 1024 * 1024 * 1024,
    }),
    resultRetryMs: readInt(env, "RESULT_RETRY_MS", 30_000, { min: 0, max: 3_600_000 }),
    heartbeatMs: readInt(env, "WORKER_HEARTBEAT_MS", 1_000, { min: 100, max: 60_000 }),
    startAfterMs: readInt(env, "WORKER_START_AFTER_MS", DEFAULT_START_AFTER_MS, { min: 0, max: 60_000 }),
    workerId: readString(env, "WORKER_ID", `${hostname()}-${process.pid}`),
    dbPoolSize: readInt(env, "WORKER_DB_POOL_SIZE", Math.min(50, concurrency * capabilities.length + 2), {
      min: 1,
      max: 500,
    }),
    chunkRetentionMs: readInt(env, "CHUNK_RETENTION_MS", DEFAULT_CHUNK_RETENTION_MS, { min: 1_000, max: 604_800_000 }),
    chunkMaxPerAttempt: readInt(env, "CHUNK_MAX_PER_ATTEMPT", DEFAULT_CHUNK_MAX_PER_ATTEMPT, {
      min: 0,
      max: 10_000_000,
    }),
    chunkMaxBytesPerAttempt: readInt(env, "CHUNK_MAX_BYTES_PER_ATTEMPT", DEFAULT_CHUNK_MAX_BYTES_PER_ATTEMPT, {
      min: 0,
      max: 1024 * 1024 * 1024,
    }),
  };
}
