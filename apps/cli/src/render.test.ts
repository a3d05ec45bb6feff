import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus, type WorkflowEvent, WorkflowEventSchema, WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { WorkflowProgress, formatAmount, formatDuration, formatPeriod, formatUsage } from "./render.js";

const T0 = Date.UTC(2026, 0, 1);

/** Builds consecutive events: each call gets the next sequence and `ms` after T0. */
function events() {
  let sequence = 0n;
  return (
    type: string,
    fields: { node?: string; node_status?: NodeStatus; wf?: WorkflowStatus; data?: JsonObject; ms?: number } = {},
  ): WorkflowEvent => {
    sequence += 1n;
    return create(WorkflowEventSchema, {
      sequence,
      workflowId: "w",
      nodeId: fields.node ?? "",
      type,
      workflowStatus: fields.wf ?? WorkflowStatus.RUNNING,
      nodeStatus: fields.node_status ?? NodeStatus.UNSPECIFIED,
      time: timestampFromMs(T0 + (fields.ms ?? 0)),
      data: fields.data ?? {},
    });
  };
}

function node(id: string, status: NodeStatus, data: JsonObject = {}, ms = 0) {
  return { node: id, node_status: status, data, ms };
}

describe("WorkflowProgress", () => {
  it("prints one line per node change with the finished/total counter, and none for QUEUED", () => {
    const e = events();
    const progress = new WorkflowProgress();
    const lines = [
      e("workflow.created", { wf: WorkflowStatus.PENDING, data: { nodeCount: 2 } }),
      e("workflow.status_changed", { data: { from: "PENDING" } }),
      e("node.status_changed", node("a", NodeStatus.QUEUED, { from: "PENDING" })),
      e("node.status_changed", node("a", NodeStatus.RUNNING, { from: "QUEUED", attempt: 1 }, 100)),
      e("node.status_changed", node("a", NodeStatus.PASS, { from: "RUNNING", attempt: 1 }, 350)),
      e("node.status_changed", node("b", NodeStatus.RUNNING, { attempt: 1 }, 400)),
      e(
        "node.status_changed",
        node("b", NodeStatus.FAIL, { attempt: 1, error: { kind: "TASK_ERROR", message: "bad input" } }, 500),
      ),
      e("workflow.status_changed", { wf: WorkflowStatus.FAILED, data: { from: "RUNNING" }, ms: 500 }),
    ].map((event) => progress.apply(event));
    expect(lines.filter((l) => l !== undefined)).toEqual([
      "  [0/2] ● workflow         RUNNING",
      "  [0/2] ▶ a                RUNNING    attempt 1",
      "  [1/2] ✔ a                PASS       in 250ms",
      "  [1/2] ▶ b                RUNNING    attempt 1",
      "  [2/2] ✘ b                FAIL       TASK_ERROR: bad input",
      "  [2/2] ● workflow         FAILED",
    ]);
    expect(progress.status).toBe(WorkflowStatus.FAILED);
    expect(progress.bar(10)).toBe("  [##########] 2/2 nodes done · FAILED · 500ms");
    expect(progress.summary("w")).toBe("workflow w FAILED (1 PASS, 1 FAIL)");
  });

  it("shows retries, skipped and cancelled nodes with their reasons", () => {
    const e = events();
    const progress = new WorkflowProgress();
    progress.apply(e("workflow.created", { data: { nodeCount: 3 } }));
    const retry = progress.apply(
      e(
        "node.retry_scheduled",
        node("c", NodeStatus.QUEUED, {
          attempt: 1,
          delayMs: 1500,
          error: { kind: "INFRA_ERROR", message: "connection refused" },
        }),
      ),
    );
    expect(retry).toBe(
      "  [0/3] ↻ c                RETRY      attempt 1 failed  INFRA_ERROR: connection refused  → retry in 1.50s",
    );
    progress.apply(e("node.status_changed", node("c", NodeStatus.RUNNING, { attempt: 2 }, 1000)));
    expect(progress.apply(e("node.status_changed", node("c", NodeStatus.PASS, { attempt: 2 }, 1200)))).toBe(
      "  [1/3] ✔ c                PASS       in 200ms (attempt 2)",
    );
    expect(
      progress.apply(e("node.status_changed", node("d", NodeStatus.SKIPPED, { reason: 'ancestor "x" failed' }))),
    ).toBe('  [2/3] ↷ d                SKIPPED    ancestor "x" failed');
    expect(
      progress.apply(
        e("node.status_changed", node("e", NodeStatus.CANCELLED, { from: "RUNNING", reason: "workflow cancelled" })),
      ),
    ).toBe("  [3/3] ■ e                CANCELLED  workflow cancelled");
  });

  it("counts nodes added and deleted by edits, and shows updates, requeues and unroutable nodes", () => {
    const e = events();
    const progress = new WorkflowProgress();
    // The initial nodes are old, report and x.
    progress.apply(e("workflow.created", { data: { nodeCount: 3 } }));
    expect(
      progress.apply(
        e("node.created", node("sub-1", NodeStatus.PENDING, { capability: "llm.mock", parentIds: ["plan"] })),
      ),
    ).toBe("  [0/4] + sub-1            ADDED      llm.mock after plan");
    expect(
      progress.apply(e("node.created", node("sub-2", NodeStatus.SKIPPED, { capability: "echo", parentIds: [] }))),
    ).toBe("  [1/5] + sub-2            ADDED      echo (SKIPPED)");
    expect(progress.apply(e("node.deleted", node("old", NodeStatus.UNSPECIFIED)))).toBe(
      "  [1/4] - old              DELETED",
    );
    expect(
      progress.apply(e("node.updated", node("report", NodeStatus.PENDING, { fields: ["parentIds", "input"] }))),
    ).toBe("  [1/4] ~ report           UPDATED    parentIds, input");
    expect(progress.apply(e("workflow.edited", { data: { inserted: ["sub-1"] } }))).toBeUndefined();
    expect(
      progress.apply(e("node.unroutable", node("x", NodeStatus.QUEUED, { reason: 'no live worker serves "gpu"' }))),
    ).toBe('  [1/4] ! x                UNROUTABLE no live worker serves "gpu"');
    expect(
      progress.apply(
        e(
          "node.unroutable",
          node("y", NodeStatus.QUEUED, { capability: "gpu", reason: 'no live worker serves capability "gpu"' }),
        ),
      ),
    ).toBe(
      '  [1/4] ! y                UNROUTABLE no live worker serves capability "gpu" (start a worker with WORKER_CAPABILITIES=gpu)',
    );
    expect(
      progress.apply(e("node.requeued", node("x", NodeStatus.QUEUED, { reason: "job missing from the queue" }))),
    ).toBe("  [1/4] ↺ x                REQUEUED   job missing from the queue");
    expect(progress.total).toBe(4);
  });

  it("says when a limit holds a node back, when a provider throttles it, and when a budget pauses the workflow", () => {
    const e = events();
    const progress = new WorkflowProgress();
    progress.apply(e("workflow.created", { data: { nodeCount: 2 } }));
    expect(
      progress.apply(e("node.held", node("ask", NodeStatus.PENDING, { key: "model:gpt-4o", reason: "concurrency" }))),
    ).toBe("  [0/2] ◌ ask              HELD       by model:gpt-4o (at its cap)");
    expect(
      progress.apply(e("node.held", node("ask", NodeStatus.PENDING, { key: "tenant:acme", reason: "rate" }))),
    ).toBe("  [0/2] ◌ ask              HELD       by tenant:acme (out of tokens)");
    expect(
      progress.apply(
        e(
          "node.throttled",
          node("ask", NodeStatus.QUEUED, { retryAfterMs: 2000, keys: ["model:gpt-4o", "capability:llm.chat"] }),
        ),
      ),
    ).toBe("  [0/2] ⧖ ask              THROTTLED  retry in 2.00s  pauses model:gpt-4o, capability:llm.chat");
    expect(
      progress.apply(e("workflow.budget_exceeded", { data: { unit: "tokens", usage: 200_512, budget: 200_000 } })),
    ).toBe("  [0/2] $ workflow         BUDGET     tokens 200512 of budget 200000");
    expect(
      progress.apply(
        e("workflow.status_changed", {
          wf: WorkflowStatus.PAUSED,
          data: { from: "RUNNING", reason: "budget exceeded" },
        }),
      ),
    ).toBe("  [0/2] ● workflow         PAUSED     (budget exceeded)");
  });

  it("counts a fork's kept nodes as done, one KEPT line each", () => {
    const e = events();
    const progress = new WorkflowProgress();
    const lines = [
      e("workflow.created", { wf: WorkflowStatus.PENDING, data: { nodeCount: 2, forkedFrom: "src" } }),
      e("node.copied", { wf: WorkflowStatus.PENDING, ...node("a", NodeStatus.PASS, { fromWorkflowId: "src" }) }),
    ].map((event) => progress.apply(event));
    expect(lines).toEqual([undefined, "  [1/2] = a                KEPT       output of src"]);
  });

  it("says why a node is WAITING, shows signals, and a wait node's PASS after its wait", () => {
    const e = events();
    const progress = new WorkflowProgress();
    const lines = [
      e("workflow.created", { wf: WorkflowStatus.PENDING, data: { nodeCount: 3 } }),
      e(
        "node.status_changed",
        node("approve", NodeStatus.WAITING, {
          from: "PENDING",
          reason: "waiting for a signal",
          until: "2026-01-01T01:00:00.123456+00:00",
        }),
      ),
      e("node.status_changed", node("later", NodeStatus.WAITING, { from: "PENDING", reason: "waiting for a signal" })),
      e(
        "node.status_changed",
        node("nightly", NodeStatus.WAITING, {
          from: "PENDING",
          reason: "waiting for its start time",
          until: "2026-01-02T07:00:00+00:00",
        }),
      ),
      e("node.created", node("review", NodeStatus.PENDING, { capability: "", parentIds: ["approve"] })),
      e("node.signaled", node("approve", NodeStatus.WAITING, { reject: false, kept: false, requestId: "r1" }, 1500)),
      e("node.status_changed", node("approve", NodeStatus.PASS, { from: "WAITING", attempt: 1 }, 1500)),
      e("node.signaled", node("review", NodeStatus.PENDING, { reject: true, kept: true })),
      e("node.status_changed", node("nightly", NodeStatus.PENDING, { from: "WAITING", reason: "start time reached" })),
    ].map((event) => progress.apply(event));
    expect(lines.filter((l) => l !== undefined)).toEqual([
      "  [0/3] ⏸ approve          WAITING    waiting for a signal (times out at 2026-01-01T01:00:00Z)",
      "  [0/3] ⏸ later            WAITING    waiting for a signal",
      "  [0/3] ⏸ nightly          WAITING    waiting for its start time (2026-01-02T07:00:00Z)",
      "  [0/4] + review           ADDED      wait node after approve",
      "  [0/4] ✉ approve          SIGNALED   pass request r1",
      "  [1/4] ✔ approve          PASS       after waiting 1.50s",
      "  [1/4] ✉ review           SIGNALED   reject (kept until the node is ready)",
      "  [1/4] · nightly          PENDING    start time reached",
    ]);
    expect(progress.counts()).toMatchObject({ WAITING: 1, PASS: 1, PENDING: 2 });
  });

  it("goes back when a workflow RETRY reopens nodes", () => {
    const e = events();
    const progress = new WorkflowProgress();
    progress.apply(e("workflow.created", { data: { nodeCount: 1 } }));
    progress.apply(
      e("node.status_changed", node("a", NodeStatus.FAIL, { error: { kind: "TASK_ERROR", message: "x" } })),
    );
    expect(progress.done).toBe(1);
    progress.apply(e("workflow.status_changed", { wf: WorkflowStatus.RUNNING, data: { action: "RETRY" } }));
    expect(
      progress.apply(e("node.status_changed", node("a", NodeStatus.PENDING, { reason: "workflow retried" }))),
    ).toBe("  [0/1] · a                PENDING    workflow retried");
    expect(progress.done).toBe(0);
  });

  it("ignores an event it has already applied", () => {
    const e = events();
    const progress = new WorkflowProgress();
    const created = e("workflow.created", { data: { nodeCount: 1 } });
    const passed = e("node.status_changed", node("a", NodeStatus.PASS));
    expect(progress.apply(created)).toBeUndefined();
    expect(progress.apply(passed)).toBeDefined();
    expect(progress.apply(passed)).toBeUndefined();
    expect(progress.lastSequence).toBe(2n);
  });

  it("colours the marks and labels only when asked", () => {
    const e = events();
    const progress = new WorkflowProgress({ color: true });
    const line = progress.apply(e("node.status_changed", node("a", NodeStatus.PASS)));
    expect(line).toContain("\x1b[32m✔\x1b[0m");
  });
});

describe("formatDuration", () => {
  it("uses ms below a second, seconds below a minute, then minutes", () => {
    expect(formatDuration(0)).toBe("0ms");
    expect(formatDuration(999.4)).toBe("999ms");
    expect(formatDuration(1234)).toBe("1.23s");
    expect(formatDuration(125_000)).toBe("2m05s");
  });
});

describe("formatAmount, formatUsage and formatPeriod", () => {
  it("print usage amounts and rate periods briefly", () => {
    expect(formatAmount(100_000)).toBe("100000");
    expect(formatAmount(0.012345678)).toBe("0.0123457");
    expect(formatAmount(-2345.5)).toBe("-2345.5");
    expect(formatUsage({ tokens: 1234, cost_usd: 0.0025 })).toBe("cost_usd=0.0025 tokens=1234");
    expect(formatUsage({})).toBe("");
    expect(formatPeriod(500)).toBe("500ms");
    expect(formatPeriod(1000)).toBe("1s");
    expect(formatPeriod(60_000)).toBe("1m");
    expect(formatPeriod(90_000)).toBe("1m30s");
    expect(formatPeriod(3_600_000)).toBe("1h");
    expect(formatPeriod(0)).toBe("0ms");
  });
});
