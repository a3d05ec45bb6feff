import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { QUEUE_JOB_STATES, refreshQueueGauges, refreshWorkflowGauges } from "./gauges.js";
import { createSchedulerMetrics } from "./metrics.js";

async function series(registry: Registry, name: string): Promise<Record<string, number>> {
  const metric = registry.getSingleMetric(name)!;
  const out: Record<string, number> = {};
  for (const v of (await metric.get()).values) out[Object.values(v.labels).join("/")] = v.value;
  return out;
}

describe("refreshWorkflowGauges", () => {
  it("sets every active status, 0 for those with no workflow", async () => {
    const registry = new Registry();
    const metrics = createSchedulerMetrics(registry);
    const counts = new Map([["RUNNING", 4]]);
    await refreshWorkflowGauges({ countWorkflowsByStatus: async () => counts }, metrics);
    expect(await series(registry, "trellis_workflows_active")).toEqual({ PENDING: 0, RUNNING: 4, PAUSED: 0 });
    counts.set("RUNNING", 0).set("PAUSED", 2);
    await refreshWorkflowGauges({ countWorkflowsByStatus: async () => counts }, metrics);
    expect(await series(registry, "trellis_workflows_active")).toEqual({ PENDING: 0, RUNNING: 0, PAUSED: 2 });
  });
});

describe("refreshQueueGauges", () => {
  it("reports each discovered queue's job counts per state and drops queues that are gone", async () => {
    const registry = new Registry();
    const metrics = createSchedulerMetrics(registry);
    let capabilities = ["echo", "llm.chat"];
    const asked: string[][] = [];
    const queues = {
      queue: (capability: string) =>
        ({
          getJobCounts: async (...states: string[]) => {
            asked.push(states);
            return capability === "echo" ? { waiting: 3, active: 1 } : { delayed: 2 };
          },
        }) as never,
    };
    await refreshQueueGauges(queues, capabilities, metrics);
    expect(asked[0]).toEqual([...QUEUE_JOB_STATES]);
    const first = await series(registry, "trellis_queue_jobs");
    expect(Object.keys(first)).toHaveLength(2 * QUEUE_JOB_STATES.length);
    expect(first).toMatchObject({ "echo/waiting": 3, "echo/active": 1, "echo/failed": 0, "llm.chat/delayed": 2 });
    capabilities = ["llm.chat"];
    await refreshQueueGauges(queues, capabilities, metrics);
    expect(Object.keys(await series(registry, "trellis_queue_jobs")).some((k) => k.startsWith("echo/"))).toBe(false);
  });
});
