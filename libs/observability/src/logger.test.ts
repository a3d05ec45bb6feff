import { describe, expect, it } from "vitest";
import { LogCapture } from "./log-capture.test-helper.js";
import { createLogger } from "./logger.js";

describe("createLogger", () => {
  it("writes one JSON line per entry with the app, level name and ISO time", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "scheduler", level: "info", destination: out });
    logger.info({ workflowId: "w1" }, "claimed nodes");
    const [record] = out.records();
    expect(record).toMatchObject({ app: "scheduler", level: "info", msg: "claimed nodes", workflowId: "w1" });
    expect(new Date(String(record?.time)).toISOString()).toBe(record?.time);
    expect(record).not.toHaveProperty("pid");
    expect(record).not.toHaveProperty("hostname");
  });

  it("drops entries below the level", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "api", level: "warn", destination: out });
    logger.info("hidden");
    logger.warn("shown");
    expect(out.records().map((r) => r.msg)).toEqual(["shown"]);
  });

  it("serializes errors under err and redacts credentials", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "api", level: "info", destination: out });
    logger.error({ err: new Error("boom"), headers: { authorization: "Bearer s3cret" } }, "failed");
    const [record] = out.records();
    expect(record?.err).toMatchObject({ type: "Error", message: "boom" });
    expect(JSON.stringify(record)).not.toContain("s3cret");
  });

  it("writes human-readable lines when pretty", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "worker", level: "info", pretty: true, destination: out });
    logger.info("hello there");
    expect(out.text).toContain("hello there");
    expect(() => JSON.parse(out.text.trim())).toThrow();
  });

  it("rejects an unknown level", () => {
    expect(() => createLogger({ app: "api", level: "verbose", destination: new LogCapture() })).toThrow();
  });
});
