import { describe, expect, it } from "vitest";
import { ConfigError } from "./config-error.js";
import { describeRedisTarget, isRedisClusterUrl, parseRedisUrl } from "./redis-url.js";
import { readRedisSettings } from "./settings.js";

/** The ConfigError message of parsing `value` as REDIS_URL. */
function errorOf(value: string): string {
  try {
    parseRedisUrl(value);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error(`${value} was accepted`);
}

describe("parseRedisUrl: one server", () => {
  it("takes redis:// and rediss:// URLs as they are", () => {
    expect(parseRedisUrl("redis://localhost:6379")).toEqual({
      kind: "server",
      url: "redis://localhost:6379",
      tls: false,
    });
    expect(parseRedisUrl("rediss://:pw@cache:6380/2")).toEqual({
      kind: "server",
      url: "rediss://:pw@cache:6380/2",
      tls: true,
    });
    expect(describeRedisTarget(parseRedisUrl("redis://u:secret@cache:6380/1"))).toBe("cache:6380");
  });

  it("names the schemes it takes, and hides a password", () => {
    expect(errorOf("http://localhost:6379")).toBe(
      'REDIS_URL: must be a redis:, rediss:, redis+cluster: or rediss+cluster: URL, got "http://localhost:6379"',
    );
    expect(errorOf("localhost:6379")).toMatch(
      /^REDIS_URL: must be a redis:, rediss:, redis\+cluster: or rediss\+cluster: URL/,
    );
    expect(errorOf("http://u:secret@localhost")).toContain('"http://u:***@localhost"');
  });
});

describe("parseRedisUrl: a Redis Cluster", () => {
  it("takes redis+cluster://host:port,host:port with credentials, IPv6 nodes and default ports", () => {
    expect(parseRedisUrl("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,redis-3")).toEqual({
      kind: "cluster",
      nodes: [
        { host: "10.0.0.1", port: 7000 },
        { host: "10.0.0.2", port: 7001 },
        { host: "redis-3", port: 6379 },
      ],
      tls: false,
    });
    expect(parseRedisUrl("rediss+cluster://app:p%40ss@[::1]:7000,[fd00::2]:7001/")).toEqual({
      kind: "cluster",
      nodes: [
        { host: "::1", port: 7000 },
        { host: "fd00::2", port: 7001 },
      ],
      username: "app",
      password: "p@ss",
      tls: true,
    });
    expect(parseRedisUrl("redis+cluster://:secret@h:1/0")).toMatchObject({
      password: "secret",
      nodes: [{ host: "h", port: 1 }],
    });
    expect(parseRedisUrl("REDIS+CLUSTER://h:1")).toMatchObject({ kind: "cluster", tls: false });
    expect(describeRedisTarget(parseRedisUrl("redis+cluster://a:1,[::1]:2"))).toBe("cluster a:1,[::1]:2");
    expect(isRedisClusterUrl("rediss+cluster://a:1")).toBe(true);
    expect(isRedisClusterUrl("redis://a:1")).toBe(false);
  });

  it("says precisely what is wrong, never showing the password", () => {
    expect(errorOf("redis+cluster://")).toBe(
      'REDIS_URL: a redis+cluster: URL needs at least one node (redis+cluster://host:port,host:port), got "redis+cluster://"',
    );
    expect(errorOf("redis+cluster://a:7000,,b:7001")).toBe(
      "REDIS_URL: node 2 of the redis+cluster: URL must be host or host:port with a port from 1 to 65535 " +
        '(e.g. 10.0.0.1:7000, redis-1:7000, [::1]:7000), got ""',
    );
    expect(errorOf("redis+cluster://a:7000,b:70000")).toMatch(
      /^REDIS_URL: node 2 of the redis\+cluster: URL .* got "b:70000"$/,
    );
    expect(errorOf("redis+cluster://a:0")).toMatch(/^REDIS_URL: node 1 .* got "a:0"$/);
    expect(errorOf("redis+cluster://a:x")).toMatch(/^REDIS_URL: node 1 .* got "a:x"$/);
    expect(errorOf("redis+cluster://::1:7000")).toMatch(/^REDIS_URL: node 1 .* got "::1:7000"$/);
    expect(errorOf("redis+cluster://a b:7000")).toMatch(/^REDIS_URL: node 1 .* got "a b:7000"$/);
    expect(errorOf("redis+cluster://a:7000,a:7000")).toBe(
      'REDIS_URL: node "a:7000" is listed twice in the redis+cluster: URL',
    );
    expect(errorOf("redis+cluster://u:secret@a:7000/2")).toBe(
      'REDIS_URL: a Redis Cluster has only database 0: remove "/2" from the URL, got "redis+cluster://u:***@a:7000/2"',
    );
    expect(errorOf("rediss+cluster://a:7000?tls=1")).toBe(
      'REDIS_URL: a rediss+cluster: URL takes no query or fragment ("?tls=1"), got "rediss+cluster://a:7000?tls=1"',
    );
    expect(errorOf("redis+cluster://u:%zz@a:7000")).toBe(
      'REDIS_URL: the user or password of the redis+cluster: URL is not valid percent-encoding, got "redis+cluster://u:***@a:7000"',
    );
    expect(() => parseRedisUrl("redis+cluster://", "EVENTS_REDIS_URL")).toThrow(/^EVENTS_REDIS_URL: /);
  });

  it("is what REDIS_URL takes; REDIS_TLS_CA goes with rediss+cluster://", () => {
    expect(readRedisSettings({ REDIS_URL: " redis+cluster://a:7000,b:7001 " })).toEqual({
      redisUrl: "redis+cluster://a:7000,b:7001",
      queuePrefix: "trellis",
    });
    expect(() => readRedisSettings({ REDIS_URL: "redis+cluster://a:7000/1" })).toThrow(
      /^REDIS_URL: a Redis Cluster has only database 0/,
    );
    const pem = Buffer.from("-----BEGIN CERTIFICATE-----\n");
    const read = () => pem;
    expect(
      readRedisSettings({ REDIS_URL: "rediss+cluster://a:7000", REDIS_TLS_CA: "/etc/trellis/ca.pem" }, read).redisTls,
    ).toEqual({ ca: pem });
    expect(() =>
      readRedisSettings({ REDIS_URL: "redis+cluster://a:7000", REDIS_TLS_CA: "/etc/trellis/ca.pem" }, read),
    ).toThrow("REDIS_TLS_CA: needs a rediss:// or rediss+cluster:// REDIS_URL");
  });
});
