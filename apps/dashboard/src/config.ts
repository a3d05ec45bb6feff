import {
  type Env,
  type RedisTlsSettings,
  type HostPort,
  type LogLevel,
  readCommonSettings,
  readHostPort,
  readOptionalString,
  readRedisSettings,
} from "@trellis/config";

/** Settings of the dashboard app, read once at start. */
export interface DashboardSettings {
  databaseUrl: string;
  redisUrl: string;
  /** REDIS_TLS_CA, for a rediss:// REDIS_URL. @default unset */
  redisTls?: RedisTlsSettings | undefined;
  queuePrefix: string;
  logLevel: LogLevel;
  http: HostPort;
  /** Basic-auth user for the whole dashboard, Bull Board included (with DASHBOARD_PASSWORD). */
  user: string | undefined;
  password: string | undefined;
}

/** Reads the dashboard's settings from the environment. */
export function readDashboardSettings(env: Env): DashboardSettings {
  return {
    ...readCommonSettings(env),
    ...readRedisSettings(env),
    http: readHostPort(env, "HTTP_ADDR", ":3000"),
    user: readOptionalString(env, "DASHBOARD_USER"),
    password: readOptionalString(env, "DASHBOARD_PASSWORD"),
  };
}
