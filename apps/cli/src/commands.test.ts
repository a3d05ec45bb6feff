import { type MessageInitShape, create, fromJson, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  type CreateWorkflowRequest,
  CreateWorkflowRequestSchema,
  ErrorKind,
  type Limit,
  LimitSchema,
  NodeAttemptSchema,
  NodeSchema,
  NodeStatus,
  type Workflow,
  type WorkflowEvent,
  WorkflowEventSchema,
  WorkflowSchema,
  WorkflowStatus,
} from "@trellis/proto";
import { describe, expect, it } from "vitest";
import type { Command, SignalSpec } from "./args.js";
import type { ApiConnection } from "./client.js";
import {
  type CommandContext,
  describeLimits,
  describeNode,
  OUTPUT_WIDTH,
  dashboardLink,
  describeWorkflow,
  limitOfSpec,
  runCommand,
  table,
  truncate,
  usageLine,
} from "./commands.js";
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
  limits?: Limit[];
  /** The status SignalNode answers; default PASS, FAIL for a rejection. */
  signaled?: NodeStatus;
}): ApiConnection {
  const all = overrides.workflows ?? [];
  const client = {
    async listWorkflows(request: {
      pageSize: number;
      pageToken: string;
      status?: WorkflowStatus;
      labelSelector?: Record<string, string>;
    }) {
      overrides.calls?.push(request);
      const start = request.pageToken === "" ? 0 : Number(request.pageToken);
      const size = Math.min(request.pageSize, overrides.pageSize ?? 500);
      const page = all.filter(
        (w) =>
          (request.status === undefined || w.status === request.status) &&
          Object.entries(request.labelSelector ?? {}).every(([k, v]) => w.labels[k] === v),
      );
      const workflows = page.slice(start, start + size);
      return { workflows, nextPageToken: start + size < page.length ? String(start + size) : "" };
    },
    async updateWorkflow(request: { workflowId: string; action: number }) {
      overrides.calls?.push(request);
      return create(WorkflowSchema, { id: request.workflowId, status: WorkflowStatus.PAUSED });
    },
    async listLimits(request: object) {
      overrides.calls?.push(request);
      return overrides.limits ?? [];
    },
    async setLimit(request: { limit: MessageInitShape<typeof LimitSchema> }) {
      overrides.calls?.push(request);
      // As the api stores it: burst defaults to the rate.
      const limit = create(LimitSchema, request.limit);
      limit.burst ||= limit.rate;
      return limit;
    },
    async deleteLimit(request: { key: string }) {
      overrides.calls?.push(request);
      return {};
    },
    async signalNode(request: { nodeId: string; reject: boolean; message: string }) {
      overrides.calls?.push(request);
      const status = overrides.signaled ?? (request.reject ? NodeStatus.FAIL : NodeStatus.PASS);
      const error = status === NodeStatus.FAIL ? { kind: ErrorKind.TASK_ERROR, message: request.message } : undefined;
      return create(NodeSchema, { id: request.nodeId, status, error });
    },
    async createWorkflow(request: CreateWorkflowRequest) {
      overrides.calls?.push(request);
      return create(WorkflowSchema, { id: ID, name: request.name, nodes: request.nodes, input: request.input });
    },
    async forkWorkflow(request: { workflowId: string }) {
      overrides.calls?.push(request);
      return create(WorkflowSchema, {
        id: ID,
        name: "wf",
        nodes: [
          { id: "a", status: NodeStatus.PASS },
          { id: "b", status: NodeStatus.PENDING },
        ],
      });
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

describe("fork", () => {
  it("sends the source, the nodes to run again and their inputs, and says what the fork keeps", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ calls }));
    const source = "0b7a3c1e-9f4d-4f7a-8c7e-2d1f5a6b7c8d";
    const command: Command = {
      kind: "fork",
      workflowId: source,
      fromNodeIds: ["b"],
      inputs: { b: { k: 1 } },
      watch: false,
    };
    expect(await runCommand(command, ctx)).toBe(0);
    expect(calls).toEqual([{ workflowId: source, fromNodeIds: ["b"], inputs: { b: { k: 1 } } }]);
    expect(ctx.output.lines).toEqual([`forked workflow ${ID} from ${source} (wf: 1 node kept, 1 to run again)`]);
  });
});

describe("signal", () => {
  const command = (signal: Partial<SignalSpec>): Command => ({
    kind: "signal",
    signal: {
      workflowId: ID,
      nodeId: "approve",
      output: undefined,
      reject: false,
      message: "",
      requestId: "",
      ...signal,
    },
  });

  it("sends the output as a protobuf Value and says the node passed", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ calls }));
    expect(await runCommand(command({ output: { approved: true }, requestId: "r1" }), ctx)).toBe(0);
    const request = calls[0] as { output: Value; requestId: string; reject: boolean };
    expect(toJson(ValueSchema, request.output)).toEqual({ approved: true });
    expect(request).toMatchObject({ workflowId: ID, nodeId: "approve", reject: false, requestId: "r1" });
    expect(ctx.output.lines).toEqual(["node approve PASS (signaled)"]);
  });

  it("rejects with the message, and says when the signal is kept for a node not ready yet", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ calls }));
    expect(await runCommand(command({ reject: true, message: "too costly" }), ctx)).toBe(0);
    expect(calls[0]).toMatchObject({ reject: true, message: "too costly", output: undefined });
    expect(ctx.output.lines).toEqual(["node approve FAIL (rejected)  TASK_ERROR: too costly"]);
    const early = context(fakeApi({ signaled: NodeStatus.PENDING }));
    expect(await runCommand(command({}), early)).toBe(0);
    expect(early.output.lines).toEqual([
      "signal kept: node approve is PENDING; the signal completes it the moment it is ready",
    ]);
  });
});

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
    const labelled = context(fakeApi({ workflows: [] }));
    await runCommand({ kind: "list", status: undefined, limit: 50, labels: { team: "ops", env: "prod" } }, labelled);
    expect(labelled.output.lines).toEqual(["no workflows labelled team=ops,env=prod"]);
  });

  it("passes --label as ListWorkflows' label selector", async () => {
    const calls: unknown[] = [];
    const tagged = workflows.map((w, i) =>
      create(WorkflowSchema, { ...w, labels: { team: i < 2 ? "ops" : "search" } }),
    );
    const ctx = context(fakeApi({ workflows: tagged, calls }));
    await runCommand({ kind: "list", status: undefined, limit: 50, labels: { team: "ops" } }, ctx);
    expect(calls).toEqual([expect.objectContaining({ labelSelector: { team: "ops" } })]);
    expect(ctx.output.lines.slice(1).map((line) => line.split(/\s+/)[3])).toEqual(["wf-0", "wf-1"]);
  });

  it("--json prints one JSON document: the workflows as protobuf JSON and the next page token when more are left", async () => {
    const ctx = context(fakeApi({ workflows, pageSize: 2 }));
    expect(await runCommand({ kind: "list", status: undefined, limit: 3, json: true }, ctx)).toBe(0);
    expect(ctx.output.lines).toHaveLength(1);
    const document = JSON.parse(ctx.output.lines[0]!) as { workflows: { id: string; status: string }[] };
    expect(document.workflows.map((w) => w.id)).toEqual(workflows.slice(0, 3).map((w) => w.id));
    expect(document.workflows[1]).toMatchObject({ name: "wf-1", status: "WORKFLOW_STATUS_FAILED" });
    expect(document).toHaveProperty("nextPageToken", "3");
    expect(ctx.output.errors).toEqual([]);
    const none = context(fakeApi({ workflows: [] }));
    await runCommand({ kind: "list", status: WorkflowStatus.PAUSED, limit: 50, json: true }, none);
    expect(JSON.parse(none.output.lines.join("\n"))).toEqual({ workflows: [] });
  });
});

describe("run", () => {
  const file = create(CreateWorkflowRequestSchema, {
    name: "wf",
    input: { topic: "from the file" },
    nodes: [{ id: "a", capability: "echo" }],
  });

  it("creates the workflow, its input replaced by --input, and prints its dashboard link", async () => {
    const calls: unknown[] = [];
    const read: string[] = [];
    const ctx = {
      ...context(fakeApi({ calls })),
      readWorkflow: (path: string) => {
        read.push(path);
        return create(CreateWorkflowRequestSchema, file);
      },
      dashboardUrl: "http://dash.local:3000",
    };
    const command: Command = { kind: "run", file: "-", watch: false, input: { topic: "from --input" } };
    expect(await runCommand(command, ctx)).toBe(0);
    expect(read).toEqual(["-"]);
    expect((calls[0] as CreateWorkflowRequest).input).toEqual({ topic: "from --input" });
    expect(ctx.output.lines).toEqual([
      `created workflow ${ID} (wf, 1 nodes)`,
      `dashboard http://dash.local:3000/workflows/${ID}`,
    ]);
    const kept = { ...context(fakeApi({ calls: [] })), readWorkflow: () => create(CreateWorkflowRequestSchema, file) };
    await runCommand({ kind: "run", file: "wf.yaml", watch: false }, kept);
    expect(kept.output.lines).toEqual([`created workflow ${ID} (wf, 1 nodes)`]);
  });

  it("links a workflow's dashboard page, under a base path too", () => {
    expect(dashboardLink("http://localhost:3000", ID)).toBe(`http://localhost:3000/workflows/${ID}`);
    expect(dashboardLink("https://ops.example.com/trellis/", "a b")).toBe(
      "https://ops.example.com/trellis/workflows/a%20b",
    );
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
      "NODE    CAPABILITY  STATUS  ATTEMPTS  DURATION  PARENTS  OUTPUT  DETAIL",
      "ok      echo        PASS    1         -         -        -",
      "broken  fail        FAIL    3         -         ok       -       INFRA_ERROR: unreachable",
    ]);
  });
});

describe("describeWorkflow: attempts, duration and output", () => {
  it("shows how many attempts each node made, how long the last one ran (so far) and its output, shortened", () => {
    const NOW = 1_790_000_010_000;
    const wf = create(WorkflowSchema, {
      id: ID,
      name: "outputs",
      status: WorkflowStatus.RUNNING,
      nodes: [
        create(NodeSchema, {
          id: "short",
          capability: "echo",
          status: NodeStatus.PASS,
          attempt: 2,
          startedAt: { seconds: 1_790_000_000n, nanos: 0 },
          finishedAt: { seconds: 1_790_000_001n, nanos: 250_000_000 },
          output: fromJson(ValueSchema, { answer: 42 }),
        }),
        create(NodeSchema, {
          id: "long",
          capability: "llm.chat",
          status: NodeStatus.PASS,
          attempt: 1,
          startedAt: { seconds: 1_790_000_000n, nanos: 0 },
          finishedAt: { seconds: 1_790_000_000n, nanos: 80_000_000 },
          output: fromJson(ValueSchema, { text: "a summary that is much longer than the column allows" }),
        }),
        create(NodeSchema, {
          id: "busy",
          capability: "sleep",
          status: NodeStatus.RUNNING,
          attempt: 1,
          startedAt: { seconds: 1_790_000_007n, nanos: 0 },
        }),
        create(NodeSchema, { id: "next", capability: "echo", status: NodeStatus.PENDING, parentIds: ["busy"] }),
      ],
    });
    expect(describeWorkflow(wf, NOW).slice(-5)).toEqual([
      "NODE   CAPABILITY  STATUS   ATTEMPTS  DURATION  PARENTS  OUTPUT                                   DETAIL",
      'short  echo        PASS     2         1.25s     -        {"answer":42}',
      'long   llm.chat    PASS     1         80ms      -        {"text":"a summary that is much longer…',
      "busy   sleep       RUNNING  1         3.00s…    -        -",
      "next   echo        PENDING  0         -         busy     -",
    ]);
    expect(truncate("abcdef", 4)).toBe("abc…");
    expect(truncate("abcd", 4)).toBe("abcd");
    expect(OUTPUT_WIDTH).toBe(40);
  });
});

describe("describeWorkflow with waits", () => {
  it("says what a WAITING node waits for: a signal (with its timeout) or its start time", () => {
    const wf = create(WorkflowSchema, {
      id: ID,
      name: "approval",
      status: WorkflowStatus.RUNNING,
      nodes: [
        create(NodeSchema, {
          id: "approve",
          parentIds: ["plan"],
          status: NodeStatus.WAITING,
          wait: { timeout: { seconds: 3600n, nanos: 0 } },
        }),
        create(NodeSchema, { id: "ask", status: NodeStatus.WAITING, wait: {} }),
        create(NodeSchema, {
          id: "nightly",
          capability: "echo",
          status: NodeStatus.WAITING,
          notBefore: { seconds: 1_790_000_000n, nanos: 0 },
        }),
      ],
    });
    expect(describeWorkflow(wf).slice(-3)).toEqual([
      "approve              WAITING  0         -         plan     -       waiting for a signal (timeout 60m00s)",
      "ask                  WAITING  0         -         -        -       waiting for a signal",
      "nightly  echo        WAITING  0         -         -        -       waiting until 2026-09-21T14:13:20Z",
    ]);
  });
});

describe("describeWorkflow with flow control", () => {
  it("shows usage and budget, priority and limit keys, and which limit holds a node back", () => {
    const wf = create(WorkflowSchema, {
      id: ID,
      name: "agents",
      status: WorkflowStatus.RUNNING,
      createdAt: { seconds: 1_790_000_000n, nanos: 0 },
      updatedAt: { seconds: 1_790_000_005n, nanos: 0 },
      usage: { tokens: 1234, cost_usd: 0.01234 },
      budget: { tokens: 200_000 },
      nodes: [
        create(NodeSchema, { id: "plan", capability: "echo", status: NodeStatus.PASS, attempt: 1 }),
        create(NodeSchema, {
          id: "ask",
          capability: "llm.chat",
          parentIds: ["plan"],
          status: NodeStatus.PENDING,
          priority: 5,
          limitKeys: ["model:gpt-4o", "tenant:acme"],
          heldBy: "model:gpt-4o",
        }),
      ],
    });
    expect(describeWorkflow(wf)).toEqual([
      `workflow ${ID}  agents  RUNNING`,
      "created 2026-09-21T14:13:20Z · updated 2026-09-21T14:13:25Z",
      "usage cost_usd=0.01234 tokens=1234 · budget tokens=200000",
      "",
      "NODE  CAPABILITY  STATUS   ATTEMPTS  DURATION  PARENTS  PRIORITY  LIMIT KEYS                OUTPUT  DETAIL",
      "plan  echo        PASS     1         -         -        0         -                         -",
      "ask   llm.chat    PENDING  0         -         plan     5         model:gpt-4o,tenant:acme  -       held by model:gpt-4o",
    ]);
  });

  it("marks a budget unit that usage reached", () => {
    expect(usageLine({ usage: { tokens: 200_512 }, budget: { tokens: 200_000, cost_usd: 5 } })).toBe(
      "usage tokens=200512 · budget cost_usd=5 tokens=200000 (reached)",
    );
    expect(usageLine({ usage: {}, budget: {} })).toBeUndefined();
  });
});

describe("describeNode", () => {
  it("shows a node's flow control and each ended attempt with what it spent", () => {
    const node = create(NodeSchema, {
      id: "ask",
      name: "ask the model",
      workflowId: ID,
      capability: "llm.chat",
      status: NodeStatus.PASS,
      attempt: 3,
      priority: 5,
      limitKeys: ["tenant:acme"],
      createdAt: { seconds: 1_790_000_000n, nanos: 0 },
      startedAt: { seconds: 1_790_000_003n, nanos: 0 },
      finishedAt: { seconds: 1_790_000_004n, nanos: 0 },
    });
    const attempts = [
      create(NodeAttemptSchema, {
        attempt: 1,
        status: "THROTTLED",
        workerId: "w-1",
        startedAt: { seconds: 1_790_000_000n, nanos: 0 },
        finishedAt: { seconds: 1_790_000_000n, nanos: 120_000_000 },
      }),
      create(NodeAttemptSchema, {
        attempt: 2,
        status: "RETRY",
        workerId: "w-2",
        error: { kind: ErrorKind.INFRA_ERROR, message: "connection reset" },
        usage: { tokens: 10 },
      }),
      create(NodeAttemptSchema, {
        attempt: 3,
        status: "PASS",
        workerId: "w-1",
        startedAt: { seconds: 1_790_000_003n, nanos: 0 },
        finishedAt: { seconds: 1_790_000_004n, nanos: 500_000_000 },
        usage: { tokens: 1234, cost_usd: 0.0025 },
      }),
    ];
    expect(describeNode(node, attempts)).toEqual([
      "node ask (ask the model)  llm.chat  PASS",
      `workflow ${ID} · attempt 3 · priority 5 · limit keys tenant:acme,capability:llm.chat`,
      "created 2026-09-21T14:13:20Z · started 2026-09-21T14:13:23Z · finished 2026-09-21T14:13:24Z",
      "",
      "ATTEMPT  STATUS     STARTED               TOOK   WORKER  USAGE                        ERROR",
      "1        THROTTLED  2026-09-21T14:13:20Z  120ms  w-1     -",
      "2        RETRY      -                     -      w-2     tokens=10                    INFRA_ERROR: connection reset",
      "3        PASS       2026-09-21T14:13:23Z  1.50s  w-1     cost_usd=0.0025 tokens=1234",
    ]);
  });

  it("says which limit holds a waiting node back, and when no attempt has ended", () => {
    const node = create(NodeSchema, {
      id: "ask",
      workflowId: ID,
      capability: "llm.chat",
      status: NodeStatus.PENDING,
      heldBy: "model:gpt-4o",
      createdAt: { seconds: 1_790_000_000n, nanos: 0 },
    });
    const lines = describeNode(node, []);
    expect(lines[0]).toBe("node ask  llm.chat  PENDING  held by model:gpt-4o");
    expect(lines.at(-1)).toBe("no attempt has ended yet");
  });
});

describe("limits", () => {
  const NOW = Date.UTC(2026, 8, 21, 14, 13, 20);
  const limits = [
    create(LimitSchema, { key: "capability:echo", running: 2, waiting: 0n }),
    create(LimitSchema, { key: "model:gpt-4o", maxConcurrency: 3, running: 3, waiting: 12n }),
    create(LimitSchema, {
      key: "tenant:acme",
      rate: 100_000,
      period: { seconds: 60n, nanos: 0 },
      burst: 150_000,
      unit: "tokens",
      available: -2345.5,
      running: 1,
      throttledUntil: { seconds: BigInt(NOW / 1000 + 30), nanos: 0 },
    }),
    create(LimitSchema, {
      key: "web",
      rate: 10,
      available: 4,
      throttledUntil: { seconds: BigInt(NOW / 1000 - 30), nanos: 0 },
    }),
  ];

  it("lists every key with its cap, holders, waiting nodes, rate, tokens left and a pause still running", () => {
    expect(describeLimits(limits, NOW)).toEqual([
      "KEY              CAP  RUNNING  WAITING  RATE              BURST   AVAILABLE  THROTTLED UNTIL",
      "capability:echo  -    2        0        -                 -       -          -",
      "model:gpt-4o     3    3        12       -                 -       -          -",
      "tenant:acme      -    1        0        100000 tokens/1m  150000  -2345.5    2026-09-21T14:13:50Z",
      "web              -    0        0        10 starts/1s      10      4          -",
    ]);
    expect(describeLimits([], NOW)).toEqual(["no limits (`trellis limits set KEY --max-concurrency N` adds one)"]);
  });

  it("`limits` calls ListLimits and prints the table", async () => {
    const calls: unknown[] = [];
    const ctx = { ...context(fakeApi({ limits, calls })), now: () => NOW };
    expect(await runCommand({ kind: "limits" }, ctx)).toBe(0);
    expect(calls).toEqual([{}]);
    expect(ctx.output.lines).toEqual(describeLimits(limits, NOW));
  });

  it("`limits set` sends the whole limit, defaults left to the api, and prints it as stored", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ calls }));
    const spec = {
      key: "tenant:acme",
      maxConcurrency: 4,
      rate: 100_000,
      periodMs: 60_000,
      burst: undefined,
      unit: "tokens",
    };
    expect(await runCommand({ kind: "set-limit", limit: spec }, ctx)).toBe(0);
    expect(calls).toEqual([{ limit: limitOfSpec(spec) }]);
    expect(limitOfSpec(spec)).toEqual({
      key: "tenant:acme",
      maxConcurrency: 4,
      rate: 100_000,
      period: expect.objectContaining({ seconds: 60n, nanos: 0 }),
      burst: 0,
      unit: "tokens",
    });
    expect(ctx.output.lines).toEqual(["limit tenant:acme set: cap 4, rate 100000 tokens/1m, burst 100000"]);
    const capOnly = {
      key: "model:gpt-4o",
      maxConcurrency: 3,
      rate: 0,
      periodMs: undefined,
      burst: undefined,
      unit: "",
    };
    expect(limitOfSpec(capOnly).period).toBeUndefined();
  });

  it("`limits delete` sends the key", async () => {
    const calls: unknown[] = [];
    const ctx = context(fakeApi({ calls }));
    expect(await runCommand({ kind: "delete-limit", key: "model:gpt-4o" }, ctx)).toBe(0);
    expect(calls).toEqual([{ key: "model:gpt-4o" }]);
    expect(ctx.output.lines).toEqual(["limit model:gpt-4o deleted"]);
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

describe("get --events", () => {
  it("prints each event with the actor that caused it", async () => {
    const events = [
      event(1, "workflow.created", { data: { actor: "ci" } }),
      event(2, "node.status_changed", { nodeId: "a", nodeStatus: NodeStatus.RUNNING }),
      event(3, "workflow.status_changed", { workflowStatus: WorkflowStatus.PAUSED, data: { actor: "oncall" } }),
    ];
    const ctx = context(fakeApi({ events }));
    expect(await runCommand({ kind: "get", workflowId: ID, json: false, events: true }, ctx)).toBe(0);
    expect(ctx.output.lines).toHaveLength(3);
    expect(ctx.output.lines[0]).toMatch(/^ {3}1 {2}- {2}workflow\.created .* RUNNING +actor=ci$/);
    expect(ctx.output.lines[1]).not.toMatch(/actor=/);
    expect(ctx.output.lines[1]).toMatch(/node\.status_changed +a +RUNNING$/);
    expect(ctx.output.lines[2]).toMatch(/PAUSED +actor=oncall$/);
  });
});
