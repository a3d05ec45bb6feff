import type { ScheduleTick, ScheduleTicks } from "@trellis/db";
import { createLogger } from "@trellis/observability";
import { describe, expect, it, vi } from "vitest";
import { Registry } from "prom-client";
import { ScheduleTicker, createScheduleTickCounter } from "./schedule-ticker.js";

const logger = createLogger({ app: "scheduler", level: "silent" });

function tick(scheduleId: string, init: Partial<ScheduleTick> = {}): ScheduleTick {
  return {
    scheduleId,
    tick: new Date("2026-12-04T06:00:00Z"),
    workflowId: `wf-${scheduleId}`,
    created: true,
    nextRunAt: new Date("2026-12-05T06:00:00Z"),
    ...init,
  };
}

function ticker(result: ScheduleTicks, batchSize = 2) {
  const runDueSchedules = vi.fn(async () => result);
  const onWorkflowCreated = vi.fn<(workflowId: string) => void>();
  const registry = new Registry();
  const t = new ScheduleTicker({
    stateManager: { runDueSchedules },
    logger,
    pollMs: 1_000,
    batchSize,
    onWorkflowCreated,
    ticks: createScheduleTickCounter(registry),
  });
  return { t, runDueSchedules, onWorkflowCreated, registry };
}

describe("ScheduleTicker.pass", () => {
  it("sleeps until the next tick, a few ms late, at most the poll", async () => {
    expect(await ticker({ ticks: [], nextDueInMs: 300 }).t.pass()).toBe(305);
    expect(await ticker({ ticks: [], nextDueInMs: 60_000 }).t.pass()).toBe(1_000);
    expect(await ticker({ ticks: [], nextDueInMs: null }).t.pass()).toBe(1_000);
  });

  it("runs again at once after a full batch, and polls when what is due is another scheduler's", async () => {
    expect(await ticker({ ticks: [tick("a"), tick("b")], nextDueInMs: -10 }).t.pass()).toBe(0);
    expect(await ticker({ ticks: [tick("a")], nextDueInMs: -10 }).t.pass()).toBe(1_000);
  });

  it("hands on the workflows it created, not replayed or refused ticks, and counts each by result", async () => {
    const { t, runDueSchedules, onWorkflowCreated, registry } = ticker(
      {
        ticks: [
          tick("a"),
          tick("b", { created: false }),
          tick("c", { workflowId: null, created: false, refused: "nodes: at least one node is required" }),
        ],
        nextDueInMs: 500,
      },
      10,
    );
    await t.pass();
    expect(runDueSchedules).toHaveBeenCalledWith(10);
    expect(onWorkflowCreated.mock.calls).toEqual([["wf-a"]]);
    const text = await registry.metrics();
    for (const result of ["created", "replayed", "refused"]) {
      expect(text).toContain(`trellis_schedule_ticks_total{result="${result}"} 1`);
    }
  });
});
