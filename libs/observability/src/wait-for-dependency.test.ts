import { describe, expect, it } from "vitest";
import { LogCapture } from "./log-capture.test-helper.js";
import { createLogger } from "./logger.js";
import { waitForDependency } from "./wait-for-dependency.js";

/** A logger whose lines are captured. */
function capture() {
  const log = new LogCapture();
  return { log, logger: createLogger({ app: "test", level: "info", destination: log }) };
}

describe("waitForDependency", () => {
  it("returns the first success, backing off from 100 ms and logging each failure at warn", async () => {
    const { log, logger } = capture();
    let calls = 0;
    const started = performance.now();
    const value = await waitForDependency(
      "PostgreSQL",
      async () => {
        calls += 1;
        if (calls < 3) throw new Error("ECONNREFUSED");
        return "connected";
      },
      { logger, timeoutMs: 5000 },
    );
    expect(value).toBe("connected");
    expect(performance.now() - started).toBeGreaterThanOrEqual(290); // 100 ms + 200 ms
    const warnings = log.records();
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatchObject({ level: "warn", dependency: "PostgreSQL", attempt: 1, retryInMs: 100 });
    expect(warnings[1]).toMatchObject({ attempt: 2, retryInMs: 200, err: { message: "ECONNREFUSED" } });
  });

  it("gives up after the timeout with the last error", async () => {
    const { logger } = capture();
    let calls = 0;
    await expect(
      waitForDependency(
        "Redis",
        async () => {
          calls += 1;
          throw new Error(`refused ${calls}`);
        },
        { logger, timeoutMs: 250 },
      ),
    ).rejects.toThrow(/^Redis is not reachable after 250 ms: refused [23]$/);
  });

  it("bounds an attempt that never settles by the timeout", async () => {
    const { logger } = capture();
    await expect(
      waitForDependency("PostgreSQL", () => new Promise<never>(() => {}), { logger, timeoutMs: 100 }),
    ).rejects.toThrow("PostgreSQL is not reachable after 100 ms: no answer before the deadline");
  });

  it("stops when its signal aborts", async () => {
    const { logger } = capture();
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("shutting down")), 150);
    await expect(
      waitForDependency(
        "Redis",
        async () => {
          throw new Error("refused");
        },
        { logger, timeoutMs: 10_000, signal: controller.signal },
      ),
    ).rejects.toThrow("shutting down");
  });
});
