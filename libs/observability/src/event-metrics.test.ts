import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createEventMetrics, eventMetrics, type ObservedEvent } from "./event-metrics.js";

/** The value of one series of a counter, 0 when absent. */
async function value(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return 0;
  const { values } = await metric.get();
  const match = values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return match?.value ?? 0;
}

function nodeEvent(
  nodeStatus: string,
  data: Record<string, unknown> = {},
  type = "node.status_changed",
): ObservedEvent {
  return { type, workflowStatus: "RUNNING", nodeStatus, data };
}

describe("eventMetrics", () => {
  it("counts nodes entering each final status, with the error kind of a failure", async () => {
    const registry = new Registry();
    const hook = eventMetrics(registry);
    hook([
      nodeEvent("QUEUED", { from: "PENDING" }),
      nodeEvent("RUNNING", { from: "QUEUED", attempt: 1 }),
      nodeEvent("PASS", { from: "RUNNING", attempt: 1 }),
      nodeEvent("PASS", { from: "RUNNING", attempt: 1 }),
      nodeEvent("FAIL", { from: "RUNNING", attempt: 3, error: { kind: "INFRA_ERROR", message: "down" } }),
      nodeEvent("SKIPPED", { reason: 'ancestor "x" failed' }),
    ]);
    hook([nodeEvent("CANCELLED", { from: "RUNNING", reason: "workflow cancelled" })]);
    const finished = (status: string, error_kind = "") =>
      value(registry, "trellis_nodes_finished_total", { capability: "", status, error_kind });
    expect(await finished("PASS")).toBe(2);
    expect(await finished("FAIL", "INFRA_ERROR")).toBe(1);
    expect(await finished("SKIPPED")).toBe(1);
    expect(await finished("CANCELLED")).toBe(1);
    const text = await registry.metrics();
    expect(text).not.toContain('status="QUEUED"');
    expect(text).not.toContain('status="RUNNING"');
  });

  it("labels the capability when the event carries one, and only a well-formed one", async () => {
    const registry = new Registry();
    eventMetrics(registry)([
      nodeEvent("PASS", { capability: "llm.chat" }),
      nodeEvent("FAIL", { capability: "web.search", error: { kind: "TASK_ERROR", message: "no" } }),
      nodeEvent("PASS", { capability: "NOT A CAPABILITY" }),
      {
        type: "node.retry_scheduled",
        workflowStatus: "RUNNING",
        nodeStatus: "QUEUED",
        data: { capability: "llm.chat" },
      },
    ]);
    expect(
      await value(registry, "trellis_nodes_finished_total", { capability: "llm.chat", status: "PASS", error_kind: "" }),
    ).toBe(1);
    expect(
      await value(registry, "trellis_nodes_finished_total", {
        capability: "web.search",
        status: "FAIL",
        error_kind: "TASK_ERROR",
      }),
    ).toBe(1);
    expect(await value(registry, "trellis_nodes_finished_total", { capability: "", status: "PASS" })).toBe(1);
    expect(await value(registry, "trellis_node_retries_total", { capability: "llm.chat" })).toBe(1);
  });

  it("counts nodes born SKIPPED or CANCELLED by an edit, not those born PENDING", async () => {
    const registry = new Registry();
    eventMetrics(registry)([
      nodeEvent("SKIPPED", { capability: "echo", parentIds: ["failed"] }, "node.created"),
      nodeEvent("PENDING", { capability: "echo", parentIds: [] }, "node.created"),
      nodeEvent("CANCELLED", { fields: ["parentIds"] }, "node.updated"),
      nodeEvent("PENDING", { fields: ["input"] }, "node.updated"),
    ]);
    expect(await value(registry, "trellis_nodes_finished_total", { capability: "echo", status: "SKIPPED" })).toBe(1);
    expect(await value(registry, "trellis_nodes_finished_total", { capability: "", status: "CANCELLED" })).toBe(1);
    expect(await value(registry, "trellis_nodes_finished_total", { status: "PENDING" })).toBe(0);
  });

  it("counts retries and workflows entering a final status, ignoring other transitions", async () => {
    const registry = new Registry();
    eventMetrics(registry)([
      { type: "workflow.created", workflowStatus: "PENDING", nodeStatus: null, data: { nodeCount: 2 } },
      { type: "workflow.status_changed", workflowStatus: "RUNNING", nodeStatus: null, data: { from: "PENDING" } },
      { type: "node.retry_scheduled", workflowStatus: "RUNNING", nodeStatus: "QUEUED", data: { attempt: 1 } },
      { type: "workflow.status_changed", workflowStatus: "FAILED", nodeStatus: null, data: { from: "RUNNING" } },
      { type: "workflow.status_changed", workflowStatus: "RUNNING", nodeStatus: null, data: { action: "RETRY" } },
      { type: "workflow.status_changed", workflowStatus: "SUCCEEDED", nodeStatus: null, data: { from: "RUNNING" } },
    ]);
    expect(await value(registry, "trellis_node_retries_total", { capability: "" })).toBe(1);
    expect(await value(registry, "trellis_workflows_finished_total", { status: "FAILED" })).toBe(1);
    expect(await value(registry, "trellis_workflows_finished_total", { status: "SUCCEEDED" })).toBe(1);
    expect(await value(registry, "trellis_workflows_finished_total", { status: "CANCELLED" })).toBe(0);
  });

  it("exposes every workflow status at 0 before anything finishes", async () => {
    const registry = new Registry();
    eventMetrics(registry);
    const text = await registry.metrics();
    for (const status of ["SUCCEEDED", "FAILED", "CANCELLED"]) {
      expect(text).toContain(`trellis_workflows_finished_total{status="${status}"} 0`);
    }
  });

  it("shares one set of counters per registry however often it is created", async () => {
    const registry = new Registry();
    const a = createEventMetrics(registry);
    const b = createEventMetrics(registry);
    expect(a.nodesFinished).toBe(b.nodesFinished);
    eventMetrics(registry)([nodeEvent("PASS")]);
    eventMetrics(registry)([nodeEvent("PASS")]);
    expect(await value(registry, "trellis_nodes_finished_total", { status: "PASS" })).toBe(2);
  });
});
