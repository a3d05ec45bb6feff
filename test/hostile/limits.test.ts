// Hostile input: the documented limits, each answered with its documented error, or working.
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import {
  CreateWorkflowRequestSchema,
  EditType,
  ExecutionStatus,
  type GrpcClient,
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  type WorkflowService,
  WorkflowStatus,
} from "@trellis/proto";
import { type FaultStack, recordMeasurement, startFaultStack, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let stack: FaultStack;
let api: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  stack = await startFaultStack({
    name: "hostile_limits",
    handler: () => ({ status: ExecutionStatus.SUCCESS }),
    logLevel: "warn",
  });
  api = (await stack.startApi()).client;
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

function deadline(ms = 60_000): number {
  return Date.now() + ms;
}

function chain(length: number) {
  return Array.from({ length }, (_, i) =>
    create(NodeSchema, { id: `n${i}`, capability: "echo", parentIds: i === 0 ? [] : [`n${i - 1}`] }),
  );
}

async function rejected(call: Promise<unknown>): Promise<{ code: string; details: string }> {
  try {
    await call;
  } catch (error) {
    const e = error as grpc.ServiceError;
    return { code: grpc.status[e.code] ?? String(e.code), details: e.details };
  }
  throw new Error("the call was accepted");
}

async function workflowCount(): Promise<number> {
  const { rows } = await stack.db.pool.query<{ n: number }>("select count(*)::int as n from workflows");
  return rows[0]!.n;
}

describe("limits", () => {
  it("a 100,000-node request is RESOURCE_EXHAUSTED and stores nothing", async () => {
    const before = await workflowCount();
    const nodes = Array.from({ length: 100_000 }, (_, i) => create(NodeSchema, { id: `n${i}`, capability: "echo" }));
    expect(await rejected(api.createWorkflow({ name: "huge", nodes }, { deadline: deadline() }))).toEqual({
      code: "RESOURCE_EXHAUSTED",
      details: "nodes: at most 10000 nodes are allowed, got 100000",
    });
    expect(await workflowCount()).toBe(before);
  }, 60_000);

  it("a message over 16 MiB is RESOURCE_EXHAUSTED; an input over 1 MiB too", async () => {
    const big = {
      name: "big",
      nodes: [create(NodeSchema, { id: "a", capability: "echo" })],
      input: { blob: "x".repeat(17 * 1024 * 1024) },
    };
    expect((await rejected(api.createWorkflow(big, { deadline: deadline() }))).code).toBe("RESOURCE_EXHAUSTED");
    const large = {
      name: "large",
      nodes: [create(NodeSchema, { id: "a", capability: "echo", input: { blob: "x".repeat(1_100_000) } })],
    };
    expect(await rejected(api.createWorkflow(large, { deadline: deadline() }))).toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      details: expect.stringMatching(/^nodes\[0\]\.input: /),
    });
  }, 60_000);

  it("a 10,000-deep chain is created, read back in order, runs hop by hop and cancels cleanly", async () => {
    const started = Date.now();
    const created = (await api.createWorkflow({ name: "deep-chain", nodes: chain(10_000) }, { deadline: deadline() }))
      .workflow!;
    const createMs = Date.now() - started;
    const read = (await api.getWorkflow({ workflowId: created.id }, { deadline: deadline() })).workflow!;
    expect(read.nodes.map((n) => n.id)).toEqual(chain(10_000).map((n) => n.id));
    await Promise.all([stack.startScheduler(), stack.startWorker(["echo"])]);
    const hops = Number(process.env.TRELLIS_CHAIN_HOPS ?? 30);
    const runStarted = Date.now();
    await waitFor(
      async () => {
        const { rows } = await stack.db.pool.query<{ n: number }>(
          "select count(*)::int as n from nodes where workflow_id = $1 and status = 'PASS'",
          [created.id],
        );
        return rows[0]!.n >= Math.min(hops, 10_000);
      },
      { timeoutMs: 30_000 + hops * 100, description: `${hops} hops of the chain` },
    );
    recordMeasurement("10,000-deep chain", { createMs, hops, msPerHop: Math.round((Date.now() - runStarted) / hops) });
    if (hops < 10_000) {
      const cancelled = (
        await api.updateWorkflow({ workflowId: created.id, action: WorkflowAction.CANCEL }, { deadline: deadline() })
      ).workflow!;
      expect(cancelled.status).toBe(WorkflowStatus.CANCELLED);
      expect(cancelled.nodes.filter((n) => n.status === NodeStatus.PASS).length).toBeGreaterThanOrEqual(hops);
      expect(cancelled.nodes.every((n) => n.status === NodeStatus.PASS || n.status === NodeStatus.CANCELLED)).toBe(
        true,
      );
    }
    await stack.expectInvariants({ workflowIds: [created.id] });
    await stack.apps.processes
      .filter((p) => p.name !== "api")
      .reduce((p, app) => p.then(() => app.stop().then(() => undefined)), Promise.resolve());
  }, 120_000);

  it("1,000 edits in one EditWorkflow apply; 10,001 are RESOURCE_EXHAUSTED", async () => {
    const workflow = (await api.createWorkflow({ name: "edits", nodes: chain(1) }, { deadline: deadline() })).workflow!;
    const inserts = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        type: EditType.INSERT,
        node: create(NodeSchema, { id: `e${i}`, capability: "echo", parentIds: ["n0"] }),
      }));
    const edited = (
      await api.editWorkflow({ workflowId: workflow.id, edits: inserts(1_000) }, { deadline: deadline() })
    ).workflow!;
    expect(edited.nodes).toHaveLength(1_001);
    expect(
      (await rejected(api.editWorkflow({ workflowId: workflow.id, edits: inserts(10_001) }, { deadline: deadline() })))
        .code,
    ).toBe("RESOURCE_EXHAUSTED");
    const after = (await api.getWorkflow({ workflowId: workflow.id }, { deadline: deadline() })).workflow!;
    expect(after.nodes).toHaveLength(1_001);
  }, 60_000);

  it("a deeply nested input works up to the decoder's limit and is INVALID_ARGUMENT beyond it", async () => {
    const nested = (depth: number) => {
      let value: Record<string, unknown> = { leaf: "x" };
      for (let i = 1; i < depth; i++) value = i % 2 ? { list: [value] } : { obj: value };
      return value as never;
    };
    const ok = (
      await api.createWorkflow(
        { name: "nested", nodes: [create(NodeSchema, { id: "a", capability: "echo", input: nested(30) })] },
        { deadline: deadline() },
      )
    ).workflow!;
    expect(ok.nodes[0]!.input).toEqual(nested(30));
    const deep = create(CreateWorkflowRequestSchema, {
      name: "too-deep",
      nodes: [{ id: "a", capability: "echo", input: nested(200) }],
    });
    expect(await rejected(api.createWorkflow(deep, { deadline: deadline() }))).toMatchObject({
      code: "INVALID_ARGUMENT",
      details: expect.stringMatching(/^request: cannot be decoded: .*maximum recursion depth/),
    });
  }, 60_000);

  it("unicode and control characters in names and label values are stored as given; NUL and bad keys are refused", async () => {
    const name = "Σ 😀 \u202eevil\u200b \u0007bell\ttab\r\n\u001b[31m";
    const labels = { team: "ünïcödé 🚀", note: "\u0001\u001f\u007f" };
    const created = (
      await api.createWorkflow(
        { name, labels, nodes: [create(NodeSchema, { id: "a", name, capability: "echo", labels })] },
        { deadline: deadline() },
      )
    ).workflow!;
    const read = (await api.getWorkflow({ workflowId: created.id }, { deadline: deadline() })).workflow!;
    expect(read.name).toBe(name);
    expect(read.labels).toEqual(labels);
    expect(read.nodes[0]).toMatchObject({ name, labels });
    const listed = await api.listWorkflows({ labelSelector: { team: "ünïcödé 🚀" } }, { deadline: deadline() });
    expect(listed.workflows.map((w) => w.id)).toContain(created.id);
    const longest = "😀".repeat(256);
    expect(
      (await api.createWorkflow({ name: longest, nodes: chain(1) }, { deadline: deadline() })).workflow!.name,
    ).toBe(longest);

    const before = await workflowCount();
    const refusals = [
      [{ name: "nul\u0000", nodes: chain(1) }, "name: must not contain the NUL character (U+0000)"],
      [{ name: `${longest}😀`, nodes: chain(1) }, "name: must be at most 256 characters"],
      [{ name: "x", labels: { ключ: "v" }, nodes: chain(1) }, /^labels: label key "ключ" must match/],
      [
        { name: "x", labels: { k: "a\u0000" }, nodes: chain(1) },
        'labels["k"]: must not contain the NUL character (U+0000)',
      ],
      [
        { name: "x", nodes: [create(NodeSchema, { id: "a", capability: "echo", input: { t: "a\u0000" } })] },
        /^nodes\[0\]\.input\.t: /,
      ],
      [{ name: "x", nodes: [create(NodeSchema, { id: "ü", capability: "echo" })] }, /^nodes\[0\]\.id: /],
    ] as const;
    for (const [request, details] of refusals) {
      const answer = await rejected(api.createWorkflow(request as never, { deadline: deadline() }));
      expect(answer.code).toBe("INVALID_ARGUMENT");
      if (typeof details === "string") expect(answer.details).toBe(details);
      else expect(answer.details).toMatch(details);
    }
    expect(await workflowCount()).toBe(before);
    expect((await rejected(api.listWorkflows({ labelSelector: { k: "\u0000" } }, { deadline: deadline() }))).code).toBe(
      "INVALID_ARGUMENT",
    );
  }, 60_000);
});
