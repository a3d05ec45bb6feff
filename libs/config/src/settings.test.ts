import { describe, expect, it } from "vitest";
import { ConfigError } from "./config-error.js";
import { DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, readCommonSettings, readRedisSettings } from "./settings.js";

describe("readCommonSettings", () => {
  it("defaults to the local database and info logs", () => {
    expect(readCommonSettings({})).toEqual({ databaseUrl: DEFAULT_DATABASE_URL, logLevel: "info" });
  });

  it("reads DATABASE_URL and LOG_LEVEL", () => {
    expect(readCommonSettings({ DATABASE_URL: "postgresql://pg/db", LOG_LEVEL: "warn" })).toEqual({
      databaseUrl: "postgresql://pg/db",
      logLevel: "warn",
    });
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
      'REDIS_URL: must be a redis: or rediss: URL, got "http://localhost:6379"',
    );
  });
});
