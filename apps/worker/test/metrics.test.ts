import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type GrpcClient,
  type Node,
} from "@trellis/proto";
import {
  type TestDatabase,
  createTestDatabase,
  promtoolCheckExpressions,
  promtoolCheckMetrics,
  promtoolSkipReason,
  waitFor,
} from "@trellis/testing";
import { dashboardHttpMetrics } from "@trellis/dashboard";
import { createMetricsRegistry } from "@trellis/observability";
import type { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StackApp, type TestStack, startTestStack } from "./stack.js";

const ROOT = resolve(import.meta.dirname, "../../..");

let testDb: TestDatabase;
let stack: TestStack;
let client: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_metrics");
  stack = await startTestStack(testDb, { reconcileIntervalMs: 300 });
  client = createGrpcClient(WorkflowService, stack.apiAddr);
});

afterAll(async () => {
  client?.close();
  await stack?.close();
  await testDb?.drop();
});

const deadline = () => ({ deadline: Date.now() + 10_000 });

function node(id: string, capability: string, parentIds: string[] = [], input: Record<string, unknown> = {}): Node {
  return create(NodeSchema, {
    id,
    capability,
    parentIds,
    input: input as Node["input"],
    retryPolicy: { maxAttempts: 3, initialBackoff: durationFromMs(50) },
  });
}

/**
 * The sum of the samples of `name` (a counter, gauge, or a histogram's `_count`/`_sum`) whose labels include
 * `labels`, over the given registries.
 */
async function sample(registries: Registry[], name: string, labels: Record<string, string> = {}): Promise<number> {
  const base = name.replace(/_(count|sum|bucket)$/, "");
  let total = 0;
  for (const registry of registries) {
    const direct = registry.getSingleMetric(name);
    const metric = direct ?? registry.getSingleMetric(base);
    if (metric === undefined) continue;
    for (const v of (await metric.get()).values) {
      const sampleName = (v as { metricName?: string }).metricName ?? (direct ? name : base);
      if (sampleName !== name) continue;
      if (Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l)) total += v.value;
    }
  }
  return total;
}

const every = (): Registry[] => Object.values(stack.registries);
const only = (app: StackApp): Registry[] => [stack.registries[app]];

async function finished(workflowId: string): Promise<WorkflowStatus> {
  return waitFor(
    async () => {
      const { workflow } = await client.getWorkflow({ workflowId }, deadline());
      const status = workflow!.status;
      return [WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED].includes(status) && status;
    },
    { timeoutMs: 20_000, description: `workflow ${workflowId} to finish` },
  );
}

describe("metrics after a known workflow", () => {
  let failedWorkflow: string;

  beforeAll(async () => {
    // 3 PASS (a, b after one retry, c), 1 FAIL (d, TASK_ERROR), 1 SKIPPED (e, child of d): the workflow FAILS.
    const { workflow } = await client.createWorkflow(
      {
        name: "metrics-known",
        nodes: [
          node("a", "echo"),
          node("b", "flaky", ["a"], { failures: 1 }),
          node("c", "echo", ["a"]),
          node("d", "fail", ["a"], { message: "fails on purpose" }),
          node("e", "echo", ["d"]),
        ],
      },
      deadline(),
    );
    failedWorkflow = workflow!.id;
    expect(await finished(failedWorkflow)).toBe(WorkflowStatus.FAILED);
  });

  it("counts every final node status once, across the apps that committed them", async () => {
    const finishedTotal = (status: string, error_kind = "") =>
      sample(every(), "trellis_nodes_finished_total", { status, error_kind });
    expect(await finishedTotal("PASS")).toBe(3);
    expect(await finishedTotal("FAIL", "TASK_ERROR")).toBe(1);
    expect(await sample(every(), "trellis_nodes_finished_total", { status: "FAIL" })).toBe(1);
    expect(await finishedTotal("SKIPPED")).toBe(1);
    // The worker committed all of them: the scheduler and the api counted none.
    expect(await sample(only("worker"), "trellis_nodes_finished_total")).toBe(5);
    expect(await sample(only("scheduler"), "trellis_nodes_finished_total")).toBe(0);
  });

  it("counts the retry and the failed workflow", async () => {
    expect(await sample(every(), "trellis_node_retries_total")).toBe(1);
    expect(await sample(every(), "trellis_workflows_finished_total", { status: "FAILED" })).toBe(1);
    expect(await sample(every(), "trellis_workflows_finished_total", { status: "SUCCEEDED" })).toBe(0);
  });

  it("times every ExecuteNode call and every queue wait by capability", async () => {
    expect(await sample(only("worker"), "trellis_node_execution_seconds_count", { capability: "echo" })).toBe(2);
    expect(await sample(only("worker"), "trellis_node_execution_seconds_count", { capability: "flaky" })).toBe(2);
    expect(await sample(only("worker"), "trellis_node_execution_seconds_count", { capability: "fail" })).toBe(1);
    expect(await sample(only("worker"), "trellis_node_queue_wait_seconds_count")).toBe(5);
  });

  it("counts the api's calls by method and code", async () => {
    expect(
      await sample(only("api"), "trellis_grpc_requests_total", {
        method: "workflow.v1.WorkflowService/CreateWorkflow",
        code: "OK",
      }),
    ).toBeGreaterThanOrEqual(1);
    expect(
      await sample(only("api"), "trellis_grpc_request_seconds_count", {
        method: "workflow.v1.WorkflowService/CreateWorkflow",
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  it("reports active workflows, queue jobs and workers while a workflow runs, and counts its cancellation", async () => {
    const { workflow } = await client.createWorkflow(
      { name: "metrics-cancel", nodes: [node("x", "sleep", [], { ms: 60_000 }), node("y", "echo", ["x"])] },
      deadline(),
    );
    const id = workflow!.id;
    await waitFor(
      async () => {
        const { node: x } = await client.getNode({ workflowId: id, nodeId: "x" }, deadline());
        return x!.status === NodeStatus.RUNNING;
      },
      { description: "node x to run" },
    );
    await waitFor(
      async () => (await sample(only("scheduler"), "trellis_workflows_active", { status: "RUNNING" })) === 1,
      {
        description: "trellis_workflows_active{status=RUNNING} to read 1",
      },
    );
    await waitFor(
      async () =>
        (await sample(only("scheduler"), "trellis_queue_jobs", { capability: "sleep", state: "active" })) === 1,
      { description: 'trellis_queue_jobs{capability="sleep",state="active"} to read 1' },
    );
    expect(await sample(only("scheduler"), "trellis_workers", { capability: "sleep" })).toBe(1);
    expect(await sample(only("scheduler"), "trellis_workflows_active", { status: "PAUSED" })).toBe(0);

    await client.updateWorkflow({ workflowId: id, action: WorkflowAction.CANCEL }, deadline());
    // CANCEL is committed by the api: x (RUNNING) and y (PENDING) are counted there, once.
    expect(await sample(only("api"), "trellis_nodes_finished_total", { status: "CANCELLED" })).toBe(2);
    expect(await sample(every(), "trellis_nodes_finished_total", { status: "CANCELLED" })).toBe(2);
    expect(await sample(only("api"), "trellis_workflows_finished_total", { status: "CANCELLED" })).toBe(1);
    await waitFor(
      async () => (await sample(only("scheduler"), "trellis_workflows_active", { status: "RUNNING" })) === 0,
      {
        description: "trellis_workflows_active{status=RUNNING} to read 0",
      },
    );
    // The worker's cancelled call finishes without counting anything more.
    await waitFor(
      async () => (await sample(only("worker"), "trellis_node_execution_seconds_count", { capability: "sleep" })) === 1,
      {
        description: "the cancelled sleep call to end",
      },
    );
    expect(await sample(every(), "trellis_nodes_finished_total")).toBe(7);
  });
});

describe("/metrics", () => {
  for (const app of ["api", "scheduler", "worker", "example-node-service"] as const) {
    it(`of the ${app} passes promtool check metrics`, async (ctx) => {
      const skip = promtoolSkipReason();
      if (skip !== undefined) ctx.skip(skip);
      const res = await fetch(`http://127.0.0.1:${stack.http[app].address.port}/metrics`);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toContain(`app="${app}"`);
      const check = promtoolCheckMetrics(text);
      expect(check.output).toBe("");
      expect(check.code).toBe(0);
    });
  }

  it("serves the issue's metric names on the app that owns them", async () => {
    const text = async (app: StackApp) =>
      (await fetch(`http://127.0.0.1:${stack.http[app].address.port}/metrics`)).text();
    const names = {
      worker: [
        "trellis_nodes_finished_total",
        "trellis_node_retries_total",
        "trellis_workflows_finished_total",
        "trellis_node_execution_seconds",
        "trellis_node_queue_wait_seconds",
        "process_cpu_user_seconds_total",
      ],
      scheduler: [
        "trellis_scheduler_pass_seconds",
        "trellis_workflows_active",
        "trellis_nodes",
        "trellis_queue_jobs",
        "trellis_workers",
        "trellis_nodes_unroutable",
        "trellis_nodes_finished_total",
      ],
      api: ["trellis_grpc_requests_total", "trellis_grpc_request_seconds", "trellis_nodes_finished_total"],
    } as const;
    for (const [app, list] of Object.entries(names) as [StackApp, readonly string[]][]) {
      const body = await text(app);
      for (const name of list) expect(body, `${app} serves ${name}`).toContain(`# TYPE ${name} `);
    }
  });

  it("has every metric the apps serve documented in docs/metrics.md, with its type, labels and app", async () => {
    const documented = documentedMetrics(readFileSync(resolve(ROOT, "docs/metrics.md"), "utf8"));
    // The dashboard is not in the stack: its metrics registered as it registers them.
    const dashboard = createMetricsRegistry({ app: "dashboard", collectDefault: false });
    dashboardHttpMetrics(dashboard);
    const registries = { ...stack.registries, dashboard };
    const served = new Set<string>();
    for (const [app, registry] of Object.entries(registries)) {
      for (const metric of registry.getMetricsAsArray()) {
        const { name, type, labelNames } = metric as unknown as { name: string; type: string; labelNames: string[] };
        if (!name.startsWith("trellis_")) continue;
        served.add(name);
        const doc = documented.get(name);
        expect(doc, `docs/metrics.md documents ${name}`).toBeDefined();
        expect({ name, type: doc?.type, labels: doc?.labels }).toEqual({ name, type, labels: [...labelNames].sort() });
        expect(doc?.apps, `docs/metrics.md says ${app} serves ${name}`).toContain(app);
      }
    }
    // Documented metrics the stack does not register (the relay's, the limits', the token check's) are still real.
    for (const name of documented.keys()) {
      if (!served.has(name) && name.startsWith("trellis_")) {
        expect(OPTIONAL_METRICS, `${name} is documented but no app serves it`).toContain(name);
      }
    }
  });
});

/** Metrics registered only with a setting or on first use, so absent from the stack's registries. */
const OPTIONAL_METRICS = [
  "trellis_events_relayed_total",
  "trellis_event_relay_lag_seconds",
  "trellis_limit_running",
  "trellis_limit_waiting",
  "trellis_limit_throttled_total",
  "trellis_api_denied_total",
  "trellis_schedule_ticks_total",
];

/** The table of docs/metrics.md: each metric's type, labels (sorted, `app` aside) and app(s). */
function documentedMetrics(markdown: string): Map<string, { type: string; labels: string[]; apps: string[] }> {
  const metrics = new Map<string, { type: string; labels: string[]; apps: string[] }>();
  for (const line of markdown.split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    const name = /^`(trellis_\w+)`$/.exec(cells[1] ?? "")?.[1];
    if (name === undefined) continue;
    const list = (cell: string | undefined) =>
      (cell ?? "")
        .split(",")
        .map((c) => c.trim().replace(/`/g, ""))
        .filter((c) => c !== "");
    metrics.set(name, { type: cells[2] ?? "", labels: list(cells[3]).sort(), apps: list(cells[4]) });
  }
  return metrics;
}

describe("the Grafana dashboard (docs/grafana/trellis.json)", () => {
  const dashboard = JSON.parse(readFileSync(resolve(ROOT, "docs/grafana/trellis.json"), "utf8")) as {
    panels: { title: string; targets?: { expr: string }[] }[];
  };
  const expressions = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

  it("has a panel for each thing an operator watches", () => {
    const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join("\n");
    for (const word of [
      "finished",
      "failure",
      "retries",
      "queue wait",
      "executenode",
      "queue depth",
      "workers",
      "grpc",
    ]) {
      expect(titles).toContain(word);
    }
  });

  it("queries only metrics the apps serve", async () => {
    const served = new Set<string>();
    for (const app of ["api", "scheduler", "worker"] as const) {
      const body = await (await fetch(`http://127.0.0.1:${stack.http[app].address.port}/metrics`)).text();
      for (const [, name] of body.matchAll(/^# TYPE (\w+) /gm)) served.add(name!);
    }
    for (const expr of expressions) {
      for (const [name] of expr.matchAll(/\b(trellis|process)_\w+/g)) {
        expect(served, `${name} in ${expr}`).toContain(name.replace(/_(bucket|count|sum)$/, ""));
      }
    }
  });

  it("has queries that parse (promtool check rules)", (ctx) => {
    const skip = promtoolSkipReason();
    if (skip !== undefined) ctx.skip(skip);
    const check = promtoolCheckExpressions(
      expressions.map((e) => e.replaceAll("$__rate_interval", "5m").replaceAll("$capability", ".*")),
    );
    expect(check.output).toContain(`SUCCESS: ${expressions.length} rules found`);
    expect(check.code).toBe(0);
  });
});
