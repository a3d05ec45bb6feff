import { type MessageInitShape, create } from "@bufbuild/protobuf";
import {
  ErrorKind,
  NodeSchema,
  NodeStatus,
  type Workflow,
  type WorkflowEvent,
  WorkflowEventSchema,
  WorkflowSchema,
  WorkflowStatus,
} from "@trellis/proto";
import { describe, expect, it } from "vitest";
import type { ApiConnection } from "./client.js";
import { type CommandContext, describeWorkflow, runCommand, table } from "./commands.js";
import { MemoryOutput } from "./output.js";

const ID = "6a4f1c39-5e45-48fb-9edb-6f72d9f305d9";

function event(
  sequence: number,
  type: string,
  extra: MessageInitShape<typeof WorkflowEventSchema> = {},
): WorkflowEvent {
  return create(WorkflowEventSchema, {
    sequence: BigInt(sequence),
    workflowId: ID,
    type,
    workflowStatus: WorkflowStatus.RUNNING,
    ...extra,
  });
}

/** An ApiConnection whose calls answer from fixed data; only what a test uses is filled in. */
function fakeApi(overrides: {
  events?: WorkflowEvent[];
  workflows?: Workflow[];
  pageSize?: number;
  calls?: unknown[];
}): ApiConnection {
  const all = overrides.workflows ?? [];
  const client = {
    async listWorkflows(request: { pageSize: number; pageToken: string; status?: WorkflowStatus }) {
      overrides.calls?.push(request);
      const start = request.pageToken === "" ? 0 : Number(request.pageToken);
      const size = Math.min(request.pageSize, overrides.pageSize ?? 500);
      const page = all.filter((w) => request.status === undefined || w.status === request.status);
      const workflows = page.slice(start, start + size);
      return { workflows, nextPageToken: start + size < page.length ? String(start + size) : "" };
    },
    async updateWorkflow(request: { workflowId: string; action: number }) {
      overrides.calls?.push(request);
      return { workflow: create(WorkflowSchema, { id: request.workflowId, status: WorkflowStatus.PAUSED }) };
    },
  };
  return {
    client: client as unknown as ApiConnection["client"],
    call: () => ({}),
    events: {
      async *watch() {
        yield* overrides.events ?? [];
      },
      status: async () => WorkflowStatus.RUNNING,
    },
    close: () => {},
  };
}

function context(api: ApiConnection, output = new MemoryOutput()): CommandContext & { output: MemoryOutput } {
  return { api, output, signal: new AbortController().signal, liveRefreshMs: 5 };
}

describe("watch", () => {
  const script = [
    event(1, "workflow.created", { workflowStatus: WorkflowStatus.PENDING, data: { nodeCount: 1 } }),
    event(2, "node.status_changed", { nodeId: "a", nodeStatus: NodeStatus.RUNNING, data: { attempt: 1 } }),
    event(3, "node.status_changed", { nodeId: "a", nodeStatus: NodeStatus.PASS }),
    event(4, "workflow.status_changed", { workflowStatus: WorkflowStatus.SUCCEEDED }),
  ];

  it("prints the node lines, the final bar and the summary, and exits 0 when the workflow SUCCEEDED", async () => {
    const ctx = context(fakeApi({ events: script }));
    expect(await runCommand({ kind: "watch", workflowId: ID }, ctx)).toBe(0);
    expect(ctx.output.lines).toEqual([
      `watching workflow ${ID}`,
      "  [0/1] ▶ a                RUNNING    attempt 1",
      "  [1/1] ✔ a                PASS",
      "  [1/1] ● workflow         SUCCEEDED",
      "  [##############################] 1/1 nodes done · SUCCEEDED · 0ms",
      `workflow ${ID} SUCCEEDED (1 PASS)`,
    ]);
    expect(ctx.output.liveLines).toEqual([]);
  });

  it("draws a live bar on an interactive terminal", async () => {
    const ctx = context(fakeApi({ events: script }), new MemoryOutput(true));
    await runCommand({ kind: "watch", workflowId: ID }, ctx);
    expect(ctx.output.liveLines.at(-1)).toMatch(/^ {2}\[#{30}\] 1\/1 nodes done · SUCCEEDED · /);
  });

  it("exits 1 when the workflow FAILED or was CANCELLED", async () => {
    for (const status of [WorkflowStatus.FAILED, WorkflowStatus.CANCELLED]) {
      const ctx = context(fakeApi({ events: [event(1, "workflow.status_changed", { workflowStatus: status })] }));
      expect(await runCommand({ kind: "watch", workflowId: ID }, ctx)).toBe(1);
    }
  });
});

describe("list", () => {
  const workflows = Array.from({ length: 7 }, (_, i) =>
    create(WorkflowSchema, {
      id: `00000000-0000-4000-8000-00000000000${i}`,
      name: `wf-${i}`,
      status: i % 2 ? WorkflowStatus.FAILED : WorkflowStatus.SUCCEEDED,
      createdAt: { seconds: 1_790_000_000n + BigInt(i), nanos: 0 },
    }),
  );

  it("follows page tokens up to the limit and prints a table", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ workflows, pageSize: 2, calls }));
    expect(await runCommand({ kind: "list", status: undefined, limit: 5 }, ctx)).toBe(0);
    expect(ctx.output.lines[0]).toBe("ID                                    STATUS     CREATED               NAME");
    expect(ctx.output.lines.slice(1)).toHaveLength(5);
    expect(ctx.output.lines[1]).toBe("00000000-0000-4000-8000-000000000000  SUCCEEDED  2026-09-21T14:13:20Z  wf-0");
    expect(calls).toHaveLength(3);
    expect(ctx.output.errors).toEqual(["(first 5; --limit shows more)"]);
  });

  it("passes the status filter and says when nothing matches", async () => {
    const ctx = context(fakeApi({ workflows: [] }));
    await runCommand({ kind: "list", status: WorkflowStatus.PAUSED, limit: 50 }, ctx);
    expect(ctx.output.lines).toEqual(["no PAUSED workflows"]);
  });
});

describe("actions", () => {
  it("sends the action and prints the new status", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ calls }));
    expect(await runCommand({ kind: "action", action: "pause", workflowId: ID }, ctx)).toBe(0);
    expect(calls).toEqual([{ workflowId: ID, action: 1 }]);
    expect(ctx.output.lines).toEqual([`workflow ${ID} PAUSED`]);
  });
});

describe("describeWorkflow", () => {
  it("shows the workflow and a table of its nodes with their errors", () => {
    const wf = create(WorkflowSchema, {
      id: ID,
      name: "failing",
      status: WorkflowStatus.FAILED,
      labels: { team: "ops" },
      createdAt: { seconds: 1_790_000_000n, nanos: 0 },
      finishedAt: { seconds: 1_790_000_002n, nanos: 0 },
      nodes: [
        create(NodeSchema, { id: "ok", capability: "echo", status: NodeStatus.PASS, attempt: 1 }),
        create(NodeSchema, {
          id: "broken",
          capability: "fail",
          parentIds: ["ok"],
          status: NodeStatus.FAIL,
          attempt: 3,
          error: { kind: ErrorKind.INFRA_ERROR, message: "unreachable" },
        }),
      ],
    });
    expect(describeWorkflow(wf)).toEqual([
      `workflow ${ID}  failing  FAILED`,
      "created 2026-09-21T14:13:20Z · finished 2026-09-21T14:13:22Z · labels team=ops",
      "",
      "NODE    CAPABILITY  STATUS  ATTEMPT  PARENTS  DETAIL",
      "ok      echo        PASS    1        -",
      "broken  fail        FAIL    3        ok       INFRA_ERROR: unreachable",
    ]);
  });
});

describe("table", () => {
  it("pads every column but the last", () => {
    expect(
      table([
        ["A", "LONG HEADER", "X"],
        ["aaaa", "b", ""],
      ]),
    ).toEqual(["A     LONG HEADER  X", "aaaa  b"]);
  });
});
