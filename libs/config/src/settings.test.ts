import { describe, expect, it } from "vitest";
import { ConfigError } from "./config-error.js";
import {
  DEFAULT_DATABASE_URL,
  DEFAULT_REDIS_URL,
  readCommonSettings,
  readRedisSettings,
  readStartupSettings,
} from "./settings.js";

describe("readCommonSettings", () => {
  it("defaults to the local database and info logs", () => {
    expect(readCommonSettings({})).toEqual({
      databaseUrl: DEFAULT_DATABASE_URL,
      databaseListenUrl: DEFAULT_DATABASE_URL,
      logLevel: "info",
    });
  });

  it("reads DATABASE_URL and LOG_LEVEL; DATABASE_LISTEN_URL defaults to DATABASE_URL", () => {
    expect(readCommonSettings({ DATABASE_URL: "postgresql://pg/db", LOG_LEVEL: "warn" })).toEqual({
      databaseUrl: "postgresql://pg/db",
      databaseListenUrl: "postgresql://pg/db",
      logLevel: "warn",
    });
  });

  it("reads DATABASE_LISTEN_URL, the direct connection beside a PgBouncer DATABASE_URL", () => {
    expect(
      readCommonSettings({
        DATABASE_URL: "postgres://u:p@pgbouncer:6432/trellis",
        DATABASE_LISTEN_URL: "postgres://u:p@db:5432/trellis",
      }),
    ).toMatchObject({
      databaseUrl: "postgres://u:p@pgbouncer:6432/trellis",
      databaseListenUrl: "postgres://u:p@db:5432/trellis",
    });
    expect(() => readCommonSettings({ DATABASE_LISTEN_URL: "http://db" })).toThrow(
      new ConfigError('DATABASE_LISTEN_URL: must be a postgres: or postgresql: URL, got "http://db"'),
    );
  });

  it("rejects a DATABASE_URL that is not PostgreSQL", () => {
    expect(() => readCommonSettings({ DATABASE_URL: "redis://localhost" })).toThrow(
      new ConfigError('DATABASE_URL: must be a postgres: or postgresql: URL, got "redis://localhost"'),
    );
  });
});

describe("readRedisSettings", () => {
  it("defaults to local Redis and the trellis prefix", () => {
    expect(readRedisSettings({})).toEqual({ redisUrl: DEFAULT_REDIS_URL, queuePrefix: "trellis" });
  });

  it("accepts rediss: URLs and a custom prefix", () => {
    expect(readRedisSettings({ REDIS_URL: "rediss://:pw@cache:6380/2", QUEUE_PREFIX: "test_1.a-b" })).toEqual({
      redisUrl: "rediss://:pw@cache:6380/2",
      queuePrefix: "test_1.a-b",
    });
  });

  it.each(["a:b", "with space", "x".repeat(65), "ünï"])("rejects the queue prefix %s", (prefix) => {
    expect(() => readRedisSettings({ QUEUE_PREFIX: prefix })).toThrow(/^QUEUE_PREFIX: must be 1 to 64 of/);
  });

  it("rejects a REDIS_URL that is not Redis", () => {
    expect(() => readRedisSettings({ REDIS_URL: "http://localhost:6379" })).toThrow(
      'REDIS_URL: must be a redis:, rediss:, redis+cluster: or rediss+cluster: URL, got "http://localhost:6379"',
    );
  });

  it("reads REDIS_TLS_CA's file for a rediss:// URL; refuses it with redis:// or when the file cannot be read", () => {
    const pem = Buffer.from("-----BEGIN CERTIFICATE-----\n");
    const read = (path: string) => {
      if (path === "/etc/trellis/redis-ca.pem") return pem;
      throw new Error(`ENOENT: no such file or directory, open '${path}'`);
    };
    const env = { REDIS_URL: "rediss://cache:6380", REDIS_TLS_CA: "/etc/trellis/redis-ca.pem" };
    expect(readRedisSettings(env, read)).toEqual({
      redisUrl: "rediss://cache:6380",
      queuePrefix: "trellis",
      redisTls: { ca: pem },
    });
    expect(() => readRedisSettings({ ...env, REDIS_URL: "redis://cache:6379" }, read)).toThrow(
      "REDIS_TLS_CA: needs a rediss:// or rediss+cluster:// REDIS_URL",
    );
    expect(() => readRedisSettings({ ...env, REDIS_TLS_CA: "/missing.pem" }, read)).toThrow(
      /^REDIS_TLS_CA: cannot read "\/missing.pem": ENOENT/,
    );
  });
});

describe("readStartupSettings", () => {
  it("waits 30 s by default and reads STARTUP_TIMEOUT_MS", () => {
    expect(readStartupSettings({})).toEqual({ startupTimeoutMs: 30_000 });
    expect(readStartupSettings({ STARTUP_TIMEOUT_MS: "0" })).toEqual({ startupTimeoutMs: 0 });
    expect(readStartupSettings({ STARTUP_TIMEOUT_MS: "120000" })).toEqual({ startupTimeoutMs: 120_000 });
  });

  it("rejects a negative or non-integer timeout", () => {
    expect(() => readStartupSettings({ STARTUP_TIMEOUT_MS: "-1" })).toThrow(
      'STARTUP_TIMEOUT_MS: must be an integer between 0 and 3600000, got "-1"',
    );
    expect(() => readStartupSettings({ STARTUP_TIMEOUT_MS: "5s" })).toThrow(/^STARTUP_TIMEOUT_MS: /);
  });
});
