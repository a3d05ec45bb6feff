import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { type LimitSample, registerLimitMetrics } from "./limit-metrics.js";

/** The series of one metric as `key -> value`. */
async function series(registry: Registry, name: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await registry.getSingleMetric(name)!.get()).values) out[String(v.labels.key)] = v.value;
  return out;
}

function sample(key: string, running: number, waiting: number, throttledTotal: number): LimitSample {
  return { key, running, waiting, throttledTotal };
}

describe("registerLimitMetrics", () => {
  it("reports every key listLimits returns, once per scrape, and drops keys that are gone", async () => {
    const registry = new Registry();
    let limits = [sample("model:gpt-4o", 3, 12, 0), sample("tenant:acme", 1, 0, 4)];
    let calls = 0;
    registerLimitMetrics(registry, async () => {
      calls++;
      return limits;
    });

    const text = await registry.metrics();
    expect(calls).toBe(1);
    expect(text).toContain('trellis_limit_running{key="model:gpt-4o"} 3');
    expect(text).toContain('trellis_limit_waiting{key="model:gpt-4o"} 12');
    expect(text).toContain('trellis_limit_throttled_total{key="tenant:acme"} 4');
    expect(text).toContain("# TYPE trellis_limit_throttled_total counter");

    limits = [sample("tenant:acme", 0, 2, 6)];
    await registry.metrics();
    expect(calls).toBe(2);
    expect(await series(registry, "trellis_limit_running")).toEqual({ "tenant:acme": 0 });
    expect(await series(registry, "trellis_limit_waiting")).toEqual({ "tenant:acme": 2 });
    expect(await series(registry, "trellis_limit_throttled_total")).toEqual({ "tenant:acme": 6 });
  });

  it("keeps the last values and reports the error when listLimits fails", async () => {
    const registry = new Registry();
    const errors: unknown[] = [];
    let fail = false;
    registerLimitMetrics(
      registry,
      async () => {
        if (fail) throw new Error("database unreachable");
        return [sample("model:gpt-4o", 2, 1, 3)];
      },
      { onError: (error) => errors.push(error) },
    );
    await registry.metrics();
    fail = true;
    const text = await registry.metrics();
    expect(text).toContain('trellis_limit_running{key="model:gpt-4o"} 2');
    expect(errors).toHaveLength(1);
    expect(String(errors[0])).toContain("database unreachable");
  });

  it("survives a listLimits that throws before returning a promise", async () => {
    const registry = new Registry();
    let calls = 0;
    registerLimitMetrics(registry, () => {
      calls++;
      if (calls === 1) throw new Error("not connected");
      return Promise.resolve([sample("k", 1, 0, 0)]);
    });
    await registry.metrics();
    expect(await registry.metrics()).toContain('trellis_limit_running{key="k"} 1');
  });
});
