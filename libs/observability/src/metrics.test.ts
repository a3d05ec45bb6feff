import { Counter } from "prom-client";
import { describe, expect, it } from "vitest";
import { createMetricsRegistry } from "./metrics.js";

describe("createMetricsRegistry", () => {
  it("labels every metric with the app and collects process metrics by default", async () => {
    const registry = createMetricsRegistry({ app: "worker" });
    const counter = new Counter({ name: "trellis_test_total", help: "test", registers: [registry] });
    counter.inc();
    const text = await registry.metrics();
    expect(text).toContain('trellis_test_total{app="worker"} 1');
    expect(text).toMatch(/process_cpu_user_seconds_total\{app="worker"\}/);
  });

  it("leaves out the default gauges named like counters, keeping their by-type siblings", async () => {
    const text = await createMetricsRegistry({ app: "worker" }).metrics();
    expect(text).not.toMatch(/^nodejs_active_(handles|requests|resources)_total/m);
    expect(text).toContain("# TYPE nodejs_active_handles gauge");
  });

  it("leaves process metrics out when asked", async () => {
    const registry = createMetricsRegistry({ app: "api", collectDefault: false });
    expect(await registry.metrics()).not.toContain("process_cpu_user_seconds_total");
  });

  it("gives each call its own registry", async () => {
    const a = createMetricsRegistry({ app: "a", collectDefault: false });
    const b = createMetricsRegistry({ app: "b", collectDefault: false });
    new Counter({ name: "only_in_a_total", help: "a", registers: [a] });
    expect(await b.metrics()).not.toContain("only_in_a_total");
  });
});
