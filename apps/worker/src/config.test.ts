import { describe, expect, it } from "vitest";
import { readWorkerSettings } from "./config.js";

describe("readWorkerSettings: output chunks", () => {
  it("keeps an attempt's chunks an hour after its last one, at most 100,000 and 16 MiB of them, by default", () => {
    const settings = readWorkerSettings({ WORKER_CAPABILITIES: "llm.stream" });
    expect(settings).toMatchObject({
      chunkRetentionMs: 3_600_000,
      chunkMaxPerAttempt: 100_000,
      chunkMaxBytesPerAttempt: 16 * 1024 * 1024,
    });
  });

  it("reads CHUNK_RETENTION_MS, CHUNK_MAX_PER_ATTEMPT and CHUNK_MAX_BYTES_PER_ATTEMPT, refusing what is out of range", () => {
    const settings = readWorkerSettings({
      WORKER_CAPABILITIES: "llm.stream",
      CHUNK_RETENTION_MS: "60000",
      CHUNK_MAX_PER_ATTEMPT: "0",
      CHUNK_MAX_BYTES_PER_ATTEMPT: "1024",
    });
    expect(settings).toMatchObject({ chunkRetentionMs: 60_000, chunkMaxPerAttempt: 0, chunkMaxBytesPerAttempt: 1024 });
    expect(() => readWorkerSettings({ WORKER_CAPABILITIES: "x", CHUNK_RETENTION_MS: "10" })).toThrow(
      /^CHUNK_RETENTION_MS: /,
    );
    expect(() => readWorkerSettings({ WORKER_CAPABILITIES: "x", CHUNK_MAX_PER_ATTEMPT: "-1" })).toThrow(
      /^CHUNK_MAX_PER_ATTEMPT: /,
    );
  });
});

describe("readWorkerSettings: NODE_SERVICE_ROUTES", () => {
  it("routes nothing by default: every capability goes to NODE_SERVICE_ADDR", () => {
    expect(readWorkerSettings({ WORKER_CAPABILITIES: "x" })).toMatchObject({
      nodeServiceAddr: "localhost:50052",
      nodeServiceRoutes: [],
    });
  });

  it("reads the routes, and refuses a bad entry naming it", () => {
    const settings = readWorkerSettings({
      WORKER_CAPABILITIES: "llm.chat,web.search",
      NODE_SERVICE_ROUTES: "llm.*=10.0.0.5:50052,web.search=127.0.0.1:50053",
    });
    expect(settings.nodeServiceRoutes).toEqual([
      { pattern: "llm.*", address: "10.0.0.5:50052" },
      { pattern: "web.search", address: "127.0.0.1:50053" },
    ]);
    expect(() => readWorkerSettings({ WORKER_CAPABILITIES: "x", NODE_SERVICE_ROUTES: "llm.*:10.0.0.5:1" })).toThrow(
      /^NODE_SERVICE_ROUTES: "llm\.\*:10\.0\.0\.5:1": expected capability-or-glob=host:port$/,
    );
  });
});
