import { describe, expect, it } from "vitest";
import { GracefulShutdown } from "./graceful-shutdown.js";
import { LogCapture } from "./log-capture.test-helper.js";
import { createLogger } from "./logger.js";

/** A GracefulShutdown whose log is captured. */
function make(timeoutMs?: number) {
  const log = new LogCapture();
  const logger = createLogger({ app: "test", level: "info", destination: log });
  return { log, shutdown: new GracefulShutdown(logger, timeoutMs === undefined ? {} : { timeoutMs }) };
}

describe("GracefulShutdown", () => {
  it("aborts its signal when shutdown starts, before any closer runs", async () => {
    const { shutdown } = make();
    let abortedWhenClosing = false;
    shutdown.add("worker", () => {
      abortedWhenClosing = shutdown.signal.aborted;
    });
    expect(shutdown.signal.aborted).toBe(false);
    await shutdown.shutdown("test");
    expect(abortedWhenClosing).toBe(true);
    expect(shutdown.signal.reason).toBeInstanceOf(DOMException);
    expect((shutdown.signal.reason as DOMException).name).toBe("AbortError");
  });

  it("runs closers in reverse order of add and logs each", async () => {
    const { shutdown, log } = make();
    const order: string[] = [];
    shutdown.add("pool", async () => {
      order.push("pool");
    });
    shutdown.add("http", () => {
      order.push("http");
    });
    shutdown.add("queue", async () => {
      await new Promise((resolve) => setTimeout(resolve, 10));
      order.push("queue");
    });
    await shutdown.shutdown("SIGTERM");
    expect(order).toEqual(["queue", "http", "pool"]);
    expect(log.records().map((r) => r.msg)).toEqual([
      "shutting down",
      "closed queue",
      "closed http",
      "closed pool",
      "shutdown complete",
    ]);
  });

  it("keeps going past a closer that throws or times out", async () => {
    const { shutdown, log } = make(50);
    const closed: string[] = [];
    shutdown.add("pool", () => {
      closed.push("pool");
    });
    shutdown.add("stuck", () => new Promise<void>(() => {}));
    shutdown.add("broken", () => {
      throw new Error("already closed");
    });
    await shutdown.shutdown("test");
    expect(closed).toEqual(["pool"]);
    const records = log.records();
    expect(records.find((r) => r.msg === "closing broken failed")).toMatchObject({
      err: { message: "already closed" },
    });
    expect(records.find((r) => r.msg === "closing stuck failed")).toMatchObject({
      err: { message: "stuck did not close within 50 ms" },
    });
    expect(records.at(-1)).toMatchObject({ level: "error", msg: "shutdown finished with errors" });
  });

  it("runs once however often it is asked", async () => {
    const { shutdown } = make();
    let calls = 0;
    shutdown.add("pool", () => {
      calls += 1;
    });
    await Promise.all([shutdown.shutdown("a"), shutdown.shutdown("b")]);
    await shutdown.shutdown("c");
    expect(calls).toBe(1);
    expect(shutdown.started).toBe(true);
  });

  it("closes a resource added during shutdown, and one added after it at once", async () => {
    const { shutdown } = make();
    const closed: string[] = [];
    shutdown.add("first", () => {
      shutdown.add("late", () => {
        closed.push("late");
      });
      closed.push("first");
    });
    await shutdown.shutdown("test");
    expect(closed).toEqual(["first", "late"]);
    let closedAfter = false;
    shutdown.add("after", () => {
      closedAfter = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(closedAfter).toBe(true);
  });
});
