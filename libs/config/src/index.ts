export { ConfigError } from "./config-error.js";
export { configOrExit, type ExitIo } from "./config-or-exit.js";
export {
  type Env,
  type HostPort,
  type IntBounds,
  LOG_LEVELS,
  type LogLevel,
  readBool,
  readHostPort,
  readInt,
  readList,
  readLogLevel,
  readOptionalString,
  readString,
  readUrl,
} from "./readers.js";
export {
  type CommonSettings,
  DATABASE_URL_PROTOCOLS,
  DEFAULT_DATABASE_URL,
  DEFAULT_STARTUP_TIMEOUT_MS,
  DEFAULT_QUEUE_PREFIX,
  DEFAULT_REDIS_URL,
  QUEUE_PREFIX_PATTERN,
  REDIS_URL_PROTOCOLS,
  type RedisSettings,
  type RedisTlsSettings,
  readCommonSettings,
  readRedisSettings,
  readStartupSettings,
  type StartupSettings,
} from "./settings.js";
