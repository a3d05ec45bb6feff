import pino from "pino";
import { describe, expect, it } from "vitest";
import { recordWithRetry } from "./record-retry.js";

const logger = pino({ level: "silent" });
const unavailable = () => Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });

describe("recordWithRetry", () => {
  it("retries while PostgreSQL is unreachable and returns the first success", async () => {
    let calls = 0;
    const outcome = await recordWithRetry(
      async () => {
        calls++;
        if (calls < 3) throw unavailable();
        return "passed";
      },
      5_000,
      logger,
    );
    expect(outcome).toBe("passed");
    expect(calls).toBe(3);
  });

  it("gives up once the retry time is spent", async () => {
    let calls = 0;
    const started = Date.now();
    await expect(
      recordWithRetry(
        async () => {
          calls++;
          throw unavailable();
        },
        250,
        logger,
      ),
    ).rejects.toThrow(/ECONNREFUSED/);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("does not retry an error that is not an outage", async () => {
    let calls = 0;
    await expect(
      recordWithRetry(
        async () => {
          calls++;
          throw new Error("duplicate key value violates unique constraint");
        },
        5_000,
        logger,
      ),
    ).rejects.toThrow(/duplicate key/);
    expect(calls).toBe(1);
  });
});
