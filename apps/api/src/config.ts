import { readFileSync } from "node:fs";
import {
  ConfigError,
  configOrExit,
  type Env,
  type HostPort,
  type LogLevel,
  readCommonSettings,
  readHostPort,
  readInt,
  readOptionalString,
  readRedisSettings,
  type ReadSettingFile,
  readSettingFile,
} from "@trellis/config";
import { type TokenEntry, parseTokenFile } from "./tokens.js";

/** Key material that switches the gRPC server to TLS, and to mutual TLS when `caCert` is set. */
export interface ApiTlsSettings {
  /** PEM certificate chain of the server (`GRPC_TLS_CERT`). */
  cert: Buffer;
  /** PEM private key of the server (`GRPC_TLS_KEY`). */
  key: Buffer;
  /** PEM CA bundle client certificates must chain to (`GRPC_TLS_CA`); unset means no client certificates. */
  caCert?: Buffer | undefined;
}

/** Everything the api app reads from its environment, validated once at start. */
export interface ApiSettings {
  /** `DATABASE_URL`. */
  databaseUrl: string;
  /**
   * `DATABASE_LISTEN_URL`: PostgreSQL itself, for WatchWorkflow's LISTEN connection, when `DATABASE_URL` is a
   * transaction-pooling PgBouncer. @default DATABASE_URL
   */
  databaseListenUrl?: string | undefined;
  /** `LOG_LEVEL`. @default "info" */
  logLevel: LogLevel;
  /** `GRPC_ADDR`: where the gRPC server listens. @default 0.0.0.0:50051 */
  grpcAddr: HostPort;
  /** `HTTP_ADDR`: the side port serving /metrics, /healthz and /readyz. @default :9464 */
  httpAddr: HostPort;
  /** `API_TOKEN`: when set, every call but health needs `authorization: Bearer <token>`. @default unset (no auth) */
  apiToken?: string | undefined;
  /**
   * `API_TOKENS_FILE`: the file of scoped tokens and its entries as read at start (reloaded on change by the
   * server). @default unset
   */
  tokensFile?: { path: string; entries: TokenEntry[] } | undefined;
  /** `GRPC_TLS_CERT`/`GRPC_TLS_KEY`/`GRPC_TLS_CA`, read from the named files. @default unset (plaintext) */
  tls?: ApiTlsSettings | undefined;
  /** `GRPC_MAX_RECEIVE_BYTES`: largest request message accepted. @default 16 MiB */
  maxReceiveBytes: number;
  /** `API_DB_POOL_SIZE`: PostgreSQL connections at most. @default 10 */
  dbPoolSize: number;
  /** `SHUTDOWN_TIMEOUT_MS`: how long in-flight calls may take to finish after SIGTERM. @default 10000 */
  shutdownTimeoutMs: number;
  /**
   * `REDIS_URL` and `QUEUE_PREFIX`, where the workers publish output chunks: only WatchWorkflow's `include_chunks`
   * reads them. @default unset (no chunks are sent)
   */
  chunks?: ReturnType<typeof readRedisSettings> | undefined;
}

/** `GRPC_ADDR` when unset. */
export const DEFAULT_GRPC_ADDR = "0.0.0.0:50051";
/** `HTTP_ADDR` of the api when unset. */
export const DEFAULT_API_HTTP_ADDR = ":9464";
/** `GRPC_MAX_RECEIVE_BYTES` when unset: 16 MiB. */
export const DEFAULT_MAX_RECEIVE_BYTES = 16 * 1024 * 1024;

export type { ReadSettingFile } from "@trellis/config";

function readTokensFile(env: Env, readFile: ReadSettingFile): ApiSettings["tokensFile"] {
  const path = readOptionalString(env, "API_TOKENS_FILE");
  if (path === undefined) return undefined;
  const text = readSettingFile("API_TOKENS_FILE", path, readFile).toString("utf8");
  try {
    return { path, entries: parseTokenFile(text) };
  } catch (error) {
    throw ConfigError.invalid("API_TOKENS_FILE", error instanceof Error ? error.message : String(error));
  }
}

function readTls(env: Env, readFile: ReadSettingFile): ApiTlsSettings | undefined {
  const certPath = readOptionalString(env, "GRPC_TLS_CERT");
  const keyPath = readOptionalString(env, "GRPC_TLS_KEY");
  const caPath = readOptionalString(env, "GRPC_TLS_CA");
  if (certPath === undefined && keyPath === undefined) {
    if (caPath !== undefined) throw ConfigError.invalid("GRPC_TLS_CA", "needs GRPC_TLS_CERT and GRPC_TLS_KEY");
    return undefined;
  }
  if (certPath === undefined) throw ConfigError.invalid("GRPC_TLS_CERT", "required when GRPC_TLS_KEY is set");
  if (keyPath === undefined) throw ConfigError.invalid("GRPC_TLS_KEY", "required when GRPC_TLS_CERT is set");
  return {
    cert: readSettingFile("GRPC_TLS_CERT", certPath, readFile),
    key: readSettingFile("GRPC_TLS_KEY", keyPath, readFile),
    caCert: caPath === undefined ? undefined : readSettingFile("GRPC_TLS_CA", caPath, readFile),
  };
}

/**
 * Reads and validates the api's settings; throws a ConfigError (`<VARIABLE>: <reason>`) on the first bad one.
 * The only code of the api that looks at the environment.
 */
export function readApiSettings(env: Env, readFile: ReadSettingFile = readFileSync): ApiSettings {
  return {
    ...readCommonSettings(env),
    grpcAddr: readHostPort(env, "GRPC_ADDR", DEFAULT_GRPC_ADDR),
    httpAddr: readHostPort(env, "HTTP_ADDR", DEFAULT_API_HTTP_ADDR),
    apiToken: readOptionalString(env, "API_TOKEN"),
    tokensFile: readTokensFile(env, readFile),
    tls: readTls(env, readFile),
    maxReceiveBytes: readInt(env, "GRPC_MAX_RECEIVE_BYTES", DEFAULT_MAX_RECEIVE_BYTES, {
      min: 1024,
      max: 2_147_483_647,
    }),
    dbPoolSize: readInt(env, "API_DB_POOL_SIZE", 10, { min: 1, max: 1000 }),
    shutdownTimeoutMs: readInt(env, "SHUTDOWN_TIMEOUT_MS", 10_000, { min: 0, max: 600_000 }),
    // Optional here: everything but live output works without Redis.
    chunks: readOptionalString(env, "REDIS_URL") === undefined ? undefined : readRedisSettings(env),
  };
}

/** The api's settings from `process.env`; on a bad setting prints one line and exits with code 2. */
export function loadApiSettings(): ApiSettings {
  return configOrExit(() => readApiSettings(process.env), "api");
}
