import { ConfigError } from "@trellis/config";
import { describe, expect, it } from "vitest";
import { readApiSettings } from "./config.js";

const GOOD_SHA = "a".repeat(64);
const files: Record<string, string> = {
  "/tls/cert.pem": "CERT",
  "/tls/key.pem": "KEY",
  "/tls/ca.pem": "CA",
  "/tokens/good.yaml": `- name: ci\n  token_sha256: ${GOOD_SHA}\n  role: write\n  labels: {tenant: acme}\n`,
  "/tokens/bad-role.json": JSON.stringify([
    { name: "ok", token_sha256: GOOD_SHA, role: "read" },
    { name: "ops", token_sha256: "b".repeat(64), role: "root" },
  ]),
  "/tokens/broken.json": "[{",
};
function readFile(path: string): Buffer {
  const content = files[path];
  if (content === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`);
  return Buffer.from(content);
}

function errorOf(env: Record<string, string>): string {
  try {
    readApiSettings(env, readFile);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("readApiSettings", () => {
  it("has the documented defaults", () => {
    const settings = readApiSettings({}, readFile);
    expect(settings).toMatchObject({
      databaseUrl: "postgres://postgres:postgres@localhost:5432/trellis",
      logLevel: "info",
      grpcAddr: { host: "0.0.0.0", port: 50051, address: "0.0.0.0:50051" },
      httpAddr: { host: "0.0.0.0", port: 9464 },
      maxReceiveBytes: 16 * 1024 * 1024,
      dbPoolSize: 10,
      shutdownTimeoutMs: 10_000,
    });
    expect(settings.apiToken).toBeUndefined();
    expect(settings.tls).toBeUndefined();
  });

  it("reads every variable", () => {
    const settings = readApiSettings(
      {
        DATABASE_URL: "postgresql://u:p@db:5432/x",
        LOG_LEVEL: "debug",
        GRPC_ADDR: "127.0.0.1:6000",
        HTTP_ADDR: ":7000",
        API_TOKEN: "tok",
        GRPC_TLS_CERT: "/tls/cert.pem",
        GRPC_TLS_KEY: "/tls/key.pem",
        GRPC_TLS_CA: "/tls/ca.pem",
        GRPC_MAX_RECEIVE_BYTES: "2048",
        API_DB_POOL_SIZE: "3",
        SHUTDOWN_TIMEOUT_MS: "500",
      },
      readFile,
    );
    expect(settings).toMatchObject({
      databaseUrl: "postgresql://u:p@db:5432/x",
      logLevel: "debug",
      grpcAddr: { address: "127.0.0.1:6000" },
      httpAddr: { port: 7000 },
      apiToken: "tok",
      maxReceiveBytes: 2048,
      dbPoolSize: 3,
      shutdownTimeoutMs: 500,
    });
    expect(settings.tls?.cert.toString()).toBe("CERT");
    expect(settings.tls?.key.toString()).toBe("KEY");
    expect(settings.tls?.caCert?.toString()).toBe("CA");
  });

  it("refuses half a TLS configuration and unreadable key files, naming the variable", () => {
    expect(errorOf({ GRPC_TLS_CERT: "/tls/cert.pem" })).toBe("GRPC_TLS_KEY: required when GRPC_TLS_CERT is set");
    expect(errorOf({ GRPC_TLS_KEY: "/tls/key.pem" })).toBe("GRPC_TLS_CERT: required when GRPC_TLS_KEY is set");
    expect(errorOf({ GRPC_TLS_CA: "/tls/ca.pem" })).toBe("GRPC_TLS_CA: needs GRPC_TLS_CERT and GRPC_TLS_KEY");
    expect(errorOf({ GRPC_TLS_CERT: "/nope.pem", GRPC_TLS_KEY: "/tls/key.pem" })).toMatch(
      /^GRPC_TLS_CERT: cannot read "\/nope.pem": ENOENT/,
    );
  });

  it("refuses malformed numbers and addresses", () => {
    expect(errorOf({ GRPC_MAX_RECEIVE_BYTES: "lots" })).toMatch(/^GRPC_MAX_RECEIVE_BYTES: must be an integer/);
    expect(errorOf({ GRPC_MAX_RECEIVE_BYTES: "10" })).toMatch(/^GRPC_MAX_RECEIVE_BYTES: /);
    expect(errorOf({ API_DB_POOL_SIZE: "0" })).toMatch(/^API_DB_POOL_SIZE: /);
    expect(errorOf({ GRPC_ADDR: "nowhere" })).toMatch(/^GRPC_ADDR: must be host:port/);
    expect(errorOf({ DATABASE_URL: "mysql://x" })).toMatch(/^DATABASE_URL: /);
  });

  it("reads Redis only when REDIS_URL is set: it serves include_chunks, and nothing else needs it", () => {
    expect(readApiSettings({}, readFile).chunks).toBeUndefined();
    expect(readApiSettings({ REDIS_URL: "redis://cache:6380", QUEUE_PREFIX: "prod" }, readFile).chunks).toEqual({
      redisUrl: "redis://cache:6380",
      queuePrefix: "prod",
    });
    expect(readApiSettings({ REDIS_URL: "redis://cache:6380" }, readFile).chunks?.queuePrefix).toBe("trellis");
    expect(errorOf({ REDIS_URL: "http://cache" })).toMatch(/^REDIS_URL: /);
    expect(errorOf({ REDIS_URL: "redis://cache", QUEUE_PREFIX: "a:b" })).toMatch(/^QUEUE_PREFIX: /);
  });

  it("reads API_TOKENS_FILE at start, and a bad one is one line naming the entry", () => {
    const settings = readApiSettings({ API_TOKENS_FILE: "/tokens/good.yaml" }, readFile);
    expect(settings.tokensFile).toEqual({
      path: "/tokens/good.yaml",
      entries: [{ name: "ci", sha256: GOOD_SHA, role: "write", labels: { tenant: "acme" } }],
    });
    expect(errorOf({ API_TOKENS_FILE: "/tokens/bad-role.json" })).toBe(
      'API_TOKENS_FILE: entry 1 ("ops"): unknown role "root" (read, write or admin)',
    );
    expect(errorOf({ API_TOKENS_FILE: "/tokens/broken.json" })).toMatch(/^API_TOKENS_FILE: not JSON or YAML: /);
    expect(errorOf({ API_TOKENS_FILE: "/tokens/missing.json" })).toMatch(/^API_TOKENS_FILE: cannot read/);
  });
});
