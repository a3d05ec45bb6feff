import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { PgStateManager, WorkflowEventHub } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import {
  EditType,
  type GrpcClient,
  type Workflow,
  WorkflowAction,
  type WorkflowEvent,
  WorkflowService,
  createGrpcClient,
} from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import type { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningApiServer, startApiServer } from "../src/index.js";
import { type TokenEntry, parseTokenFile, tokenSha256 } from "../src/tokens.js";
import { LogLines } from "./log-lines.js";

/** The tokens of the file, by name: name -> [plaintext token, role, labels]. */
const TOKENS: Record<string, { token: string; role: string; labels?: Record<string, string> }> = {
  reader: { token: "tok-reader", role: "read" },
  writer: { token: "tok-writer", role: "write" },
  admin: { token: "tok-admin", role: "admin" },
  acme: { token: "tok-acme", role: "write", labels: { tenant: "acme" } },
  globex: { token: "tok-globex", role: "write", labels: { tenant: "globex" } },
  "acme-reader": { token: "tok-acme-reader", role: "read", labels: { tenant: "acme" } },
};

function fileEntries(tokens: typeof TOKENS): object[] {
  return Object.entries(tokens).map(([name, t]) => ({
    name,
    token_sha256: tokenSha256(t.token),
    role: t.role,
    ...(t.labels ? { labels: t.labels } : {}),
  }));
}

let testDb: TestDatabase;
let sm: PgStateManager;
let hub: WorkflowEventHub;
let server: RunningApiServer;
let client: GrpcClient<typeof WorkflowService>;
let registry: Registry;
let logs: LogLines;
let dir: string;
let tokensPath: string;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_api_tokens");
  sm = new PgStateManager(testDb.db);
  hub = new WorkflowEventHub({ stateManager: sm, databaseUrl: testDb.url });
  await hub.start();
  dir = mkdtempSync(join(tmpdir(), "trellis-tokens-"));
  tokensPath = join(dir, "tokens.json");
  const text = JSON.stringify(fileEntries(TOKENS));
  writeFileSync(tokensPath, text);
  logs = new LogLines();
  registry = createMetricsRegistry({ app: "api", collectDefault: false });
  server = await startApiServer({
    stateManager: sm,
    logger: createLogger({ app: "api", level: "info", destination: logs }),
    registry,
    events: hub,
    tokensFilePollMs: 100,
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: "legacy-admin-token",
      tokensFile: { path: tokensPath, entries: parseTokenFile(text) },
      tls: undefined,
      maxReceiveBytes: 16 * 1024 * 1024,
    },
  });
  client = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
});

afterAll(async () => {
  client?.close();
  await server?.close(1_000);
  await hub?.close();
  await testDb?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function opts(token?: string): { deadline: number; metadata: grpc.Metadata } {
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  return { deadline: Date.now() + 10_000, metadata };
}

const as = (name: string) => opts(TOKENS[name]!.token);

/** A workflow to act on: `a` and `b` (PENDING, nothing schedules them here) and `w`, a wait node. */
async function fixture(labels: Record<string, string> = {}): Promise<Workflow> {
  const { workflow } = await client.createWorkflow(
    {
      name: "fixture",
      labels,
      nodes: [
        { id: "a", capability: "echo" },
        { id: "b", capability: "echo", parentIds: ["a"] },
        { id: "w", wait: {} },
      ],
    },
    as("admin"),
  );
  return workflow!;
}

/** Everything the service can change, as one string: equal before and after a refused call. */
async function fingerprint(): Promise<string> {
  const { rows } = await testDb.pool.query(`
    select (select count(*) from workflows) as workflows,
           (select coalesce(sum(event_seq), 0) from workflows) as events,
           (select md5(coalesce(string_agg(n::text, ',' order by n.workflow_id, n.id), '')) from nodes n) as nodes,
           (select md5(coalesce(string_agg(w::text, ',' order by w.id), '')) from workflows w) as wf,
           (select md5(coalesce(string_agg(l::text, ',' order by l.key), '')) from limits l) as limits,
           (select md5(coalesce(string_agg(s::text, ',' order by s.id), '')) from schedules s) as schedules`);
  return JSON.stringify(rows[0]);
}

function codeOf(error: unknown): string {
  if (error === null || error === undefined) return "OK";
  return grpc.status[(error as grpc.ServiceError).code] ?? String(error);
}

/** The first event of a watch, or its error's code. */
function watchFirst(workflowId: string, options: ReturnType<typeof opts>): Promise<string> {
  return new Promise((resolve) => {
    const stream = client.watchWorkflow({ workflowId }, options);
    stream.on("data", () => {
      stream.cancel();
      resolve("OK");
    });
    stream.on("error", (error: grpc.ServiceError) =>
      resolve(error.code === grpc.status.CANCELLED ? "OK" : codeOf(error)),
    );
  });
}

let unique = 0;
type Call = (options: ReturnType<typeof opts>) => Promise<unknown>;
/** Each RPC: a fresh, valid request (so the allowed roles get OK) and the least role it needs. */
const RPCS: Record<string, { needs: "read" | "write" | "admin"; prepare: () => Promise<Call> }> = {
  GetWorkflow: {
    needs: "read",
    prepare: async () => {
      const wf = await fixture();
      return (o) => client.getWorkflow({ workflowId: wf.id }, o);
    },
  },
  ListWorkflows: { needs: "read", prepare: async () => (o) => client.listWorkflows({}, o) },
  WatchWorkflow: {
    needs: "read",
    prepare: async () => {
      const wf = await fixture();
      return async (o) => {
        const code = await watchFirst(wf.id, o);
        if (code !== "OK") throw { code: grpc.status[code as keyof typeof grpc.status] };
      };
    },
  },
  GetNode: {
    needs: "read",
    prepare: async () => {
      const wf = await fixture();
      return (o) => client.getNode({ workflowId: wf.id, nodeId: "a" }, o);
    },
  },
  ListLimits: { needs: "read", prepare: async () => (o) => client.listLimits({}, o) },
  ListSchedules: { needs: "read", prepare: async () => (o) => client.listSchedules({}, o) },
  CreateWorkflow: {
    needs: "write",
    prepare: async () => (o) => client.createWorkflow({ name: "new", nodes: [{ id: "a", capability: "echo" }] }, o),
  },
  UpdateWorkflow: {
    needs: "write",
    prepare: async () => {
      const wf = await fixture();
      return (o) => client.updateWorkflow({ workflowId: wf.id, action: WorkflowAction.PAUSE }, o);
    },
  },
  UpdateNode: {
    needs: "write",
    prepare: async () => {
      const wf = await fixture();
      return (o) =>
        client.updateNode(
          { workflowId: wf.id, node: { id: "b", priority: 5 }, updateMask: { paths: ["priority"] } },
          o,
        );
    },
  },
  EditWorkflow: {
    needs: "write",
    prepare: async () => {
      const wf = await fixture();
      return (o) =>
        client.editWorkflow(
          {
            workflowId: wf.id,
            edits: [{ type: EditType.INSERT, node: { id: "x", capability: "echo", parentIds: ["a"] } }],
          },
          o,
        );
    },
  },
  SignalNode: {
    needs: "write",
    prepare: async () => {
      const wf = await fixture();
      return (o) => client.signalNode({ workflowId: wf.id, nodeId: "w" }, o);
    },
  },
  ForkWorkflow: {
    needs: "write",
    prepare: async () => {
      const wf = await fixture();
      return (o) => client.forkWorkflow({ workflowId: wf.id, fromNodeIds: ["a"] }, o);
    },
  },
  SetLimit: {
    needs: "admin",
    prepare: async () => (o) => client.setLimit({ limit: { key: `model:m${++unique}`, maxConcurrency: 3 } }, o),
  },
  DeleteLimit: {
    needs: "admin",
    prepare: async () => {
      const key = `model:d${++unique}`;
      await client.setLimit({ limit: { key, maxConcurrency: 1 } }, as("admin"));
      return (o) => client.deleteLimit({ key }, o);
    },
  },
  CreateSchedule: {
    needs: "admin",
    prepare: async () => (o) =>
      client.createSchedule(
        { schedule: { id: `s${++unique}`, cron: "0 7 * * *", workflow: { nodes: [{ id: "a", capability: "echo" }] } } },
        o,
      ),
  },
  UpdateSchedule: {
    needs: "admin",
    prepare: async () => {
      const id = `u${++unique}`;
      await client.createSchedule(
        { schedule: { id, cron: "0 7 * * *", workflow: { nodes: [{ id: "a", capability: "echo" }] } } },
        as("admin"),
      );
      return (o) => client.updateSchedule({ schedule: { id, paused: true }, updateMask: { paths: ["paused"] } }, o);
    },
  },
  DeleteSchedule: {
    needs: "admin",
    prepare: async () => {
      const id = `d${++unique}`;
      await client.createSchedule(
        { schedule: { id, cron: "0 7 * * *", workflow: { nodes: [{ id: "a", capability: "echo" }] } } },
        as("admin"),
      );
      return (o) => client.deleteSchedule({ id }, o);
    },
  },
};

const RANK = { read: 0, write: 1, admin: 2 } as const;
const CALLERS: {
  caller: string;
  options: () => ReturnType<typeof opts>;
  expect: (needs: keyof typeof RANK) => string;
}[] = [
  { caller: "read", options: () => as("reader"), expect: (needs) => (RANK[needs] <= 0 ? "OK" : "PERMISSION_DENIED") },
  { caller: "write", options: () => as("writer"), expect: (needs) => (RANK[needs] <= 1 ? "OK" : "PERMISSION_DENIED") },
  { caller: "admin", options: () => as("admin"), expect: () => "OK" },
  { caller: "API_TOKEN", options: () => opts("legacy-admin-token"), expect: () => "OK" },
  { caller: "unknown", options: () => opts("not-a-token"), expect: () => "UNAUTHENTICATED" },
  { caller: "none", options: () => opts(), expect: () => "UNAUTHENTICATED" },
];

describe("every RPC x every role", () => {
  it("covers the whole WorkflowService", () => {
    expect(Object.keys(RPCS).sort()).toEqual(WorkflowService.methods.map((m) => m.name).sort());
  });

  for (const [rpc, { needs, prepare }] of Object.entries(RPCS)) {
    for (const { caller, options, expect: expected } of CALLERS) {
      const want = expected(needs);
      it(`${rpc} as ${caller}: ${want}${want === "OK" ? "" : ", nothing changed"}`, async () => {
        const call = await prepare();
        const before = await fingerprint();
        const outcome = await call(options()).then(
          () => "OK",
          (error: unknown) => codeOf(error),
        );
        expect(outcome).toBe(want);
        if (want !== "OK") expect(await fingerprint()).toBe(before);
      });
    }
  }

  it("counts denied calls by token name and reason", async () => {
    const text = await registry.metrics();
    expect(text).toMatch(/trellis_api_denied_total\{[^}]*token="reader"[^}]*reason="permission_denied"[^}]*\} [1-9]/);
    expect(text).toMatch(/trellis_api_denied_total\{[^}]*token="unknown"[^}]*reason="unauthenticated"[^}]*\} [1-9]/);
  });

  it("refuses limits and schedules to label-scoped tokens, even read ones", async () => {
    for (const name of ["acme", "acme-reader"]) {
      await expect(client.listLimits({}, as(name))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(client.listSchedules({}, as(name))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    }
  });
});

describe("tenants", () => {
  it("cannot see or touch another tenant's workflow: NOT_FOUND exactly as a missing one", async () => {
    const theirs = await fixture({ tenant: "globex" });
    const missing = "00000000-0000-4000-8000-000000000000";
    const o = () => as("acme");
    const attempts: [string, (id: string) => Promise<unknown>][] = [
      ["get", (id) => client.getWorkflow({ workflowId: id }, o())],
      ["getNode", (id) => client.getNode({ workflowId: id, nodeId: "a" }, o())],
      ["update", (id) => client.updateWorkflow({ workflowId: id, action: WorkflowAction.CANCEL }, o())],
      [
        "updateNode",
        (id) =>
          client.updateNode(
            { workflowId: id, node: { id: "b", priority: 5 }, updateMask: { paths: ["priority"] } },
            o(),
          ),
      ],
      [
        "edit",
        (id) => client.editWorkflow({ workflowId: id, edits: [{ type: EditType.DELETE, node: { id: "b" } }] }, o()),
      ],
      ["signal", (id) => client.signalNode({ workflowId: id, nodeId: "w" }, o())],
      ["fork", (id) => client.forkWorkflow({ workflowId: id, fromNodeIds: ["a"] }, o())],
      [
        "watch",
        async (id) => {
          const code = await watchFirst(id, o());
          if (code !== "OK") throw { code: grpc.status[code as keyof typeof grpc.status], details: "" };
        },
      ],
    ];
    const before = await fingerprint();
    for (const [what, attempt] of attempts) {
      const onTheirs = await attempt(theirs.id).then(
        () => null,
        (e: grpc.ServiceError) => e,
      );
      const onMissing = await attempt(missing).then(
        () => null,
        (e: grpc.ServiceError) => e,
      );
      expect(codeOf(onTheirs), what).toBe("NOT_FOUND");
      expect(codeOf(onMissing), what).toBe("NOT_FOUND");
      if (what !== "watch")
        expect(onTheirs!.details.replace(theirs.id, "<id>"), what).toBe(onMissing!.details.replace(missing, "<id>"));
    }
    expect(await fingerprint()).toBe(before);
    // Its own workflows it can do all of that to.
    const mine = await fixture({ tenant: "acme" });
    expect((await client.getWorkflow({ workflowId: mine.id }, o())).workflow?.id).toBe(mine.id);
    expect(await watchFirst(mine.id, o())).toBe("OK");
    await client.signalNode({ workflowId: mine.id, nodeId: "w" }, o());
  });

  it("lists only its own workflows, whatever the selector asks", async () => {
    const mine = await fixture({ tenant: "acme", team: "x" });
    const theirs = await fixture({ tenant: "globex", team: "x" });
    const ids = async (labelSelector: Record<string, string>) =>
      (await client.listWorkflows({ labelSelector, pageSize: 500 }, as("acme-reader"))).workflows.map((w) => w.id);
    const all = await ids({});
    expect(all).toContain(mine.id);
    expect(all).not.toContain(theirs.id);
    expect(await ids({ team: "x" })).toEqual([mine.id]);
    expect(await ids({ tenant: "globex" })).toEqual([]);
    const unscoped = (await client.listWorkflows({ pageSize: 500 }, as("reader"))).workflows.map((w) => w.id);
    expect(unscoped).toEqual(expect.arrayContaining([mine.id, theirs.id]));
  });

  it("what it creates or forks carries its labels whatever the request says; it cannot relabel out of scope", async () => {
    const { workflow } = await client.createWorkflow(
      { name: "t", labels: { tenant: "globex", team: "a" }, nodes: [{ id: "a", capability: "echo" }] },
      as("acme"),
    );
    expect(workflow!.labels).toEqual({ tenant: "acme", team: "a" });
    const { workflow: fork } = await client.forkWorkflow({ workflowId: workflow!.id, fromNodeIds: ["a"] }, as("acme"));
    expect(fork!.labels.tenant).toBe("acme");
    const { workflow: relabeled } = await client.updateWorkflow(
      { workflowId: workflow!.id, labels: { tenant: "globex" }, updateMask: { paths: ["labels"] } },
      as("acme"),
    );
    expect(relabeled!.labels).toEqual({ tenant: "acme" });
  });

  it("a request_id another tenant used does not hand over its workflow", async () => {
    const requestId = `rid-${Date.now()}`;
    const nodes = [{ id: "a", capability: "echo" }];
    await client.createWorkflow({ name: "g", nodes, requestId }, as("globex"));
    await expect(client.createWorkflow({ name: "a", nodes, requestId }, as("acme"))).rejects.toMatchObject({
      code: grpc.status.ALREADY_EXISTS,
    });
  });
});

describe("audit", () => {
  it("names the token as the actor of every event its calls cause", async () => {
    const { workflow } = await client.createWorkflow(
      {
        name: "audited",
        nodes: [
          { id: "a", capability: "echo" },
          { id: "w", wait: {} },
        ],
      },
      as("writer"),
    );
    const id = workflow!.id;
    await client.updateWorkflow({ workflowId: id, action: WorkflowAction.PAUSE }, as("admin"));
    await client.updateWorkflow({ workflowId: id, action: WorkflowAction.RESUME }, opts("legacy-admin-token"));
    const events: WorkflowEvent[] = await sm.listEvents(id, 0);
    const actors = events.map((e) => [e.type, e.data?.actor]);
    expect(actors).toEqual([
      ["workflow.created", "writer"],
      ["workflow.status_changed", "admin"],
      ["workflow.status_changed", "api-token"],
    ]);
  });

  it("names the actor on events written by the SQL functions too (a signal's PASS)", async () => {
    const wf = await fixture();
    const before = (await sm.listEvents(wf.id, 0)).length;
    await client.signalNode({ workflowId: wf.id, nodeId: "w" }, as("writer"));
    await waitFor(async () => (await sm.listEvents(wf.id, 0)).length > before, { timeoutMs: 5_000 });
    const later = (await sm.listEvents(wf.id, 0)).slice(before);
    expect(later.length).toBeGreaterThan(0);
    for (const event of later) expect(event.data?.actor, event.type).toBe("writer");
  });
});

describe("API_TOKENS_FILE reload", () => {
  it("takes a changed file without a restart, and keeps the last good one when the new one is broken", async () => {
    const rotated = { ...TOKENS, "writer-2": { token: "tok-writer-2", role: "write" } } as typeof TOKENS;
    delete (rotated as Record<string, unknown>).writer;
    writeFileSync(tokensPath, JSON.stringify(fileEntries(rotated)));
    await waitFor(
      async () =>
        await client.listWorkflows({}, opts("tok-writer-2")).then(
          () => true,
          () => false,
        ),
      { timeoutMs: 5_000 },
    );
    await expect(client.listWorkflows({}, as("writer"))).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });

    const errorsBefore = logs.records().filter((l) => l.level === "error").length;
    writeFileSync(tokensPath, JSON.stringify([{ name: "x", token: "plaintext", role: "read" }]));
    await waitFor(() => logs.records().filter((l) => l.level === "error").length > errorsBefore, {
      timeoutMs: 5_000,
    });
    const error = logs
      .records()
      .filter((l) => l.level === "error")
      .at(-1)!;
    expect(String(error.msg)).toMatch(/API_TOKENS_FILE: entry 0 \("x"\): a plaintext "token" is refused/);
    // The last good tokens still work.
    await client.listWorkflows({}, opts("tok-writer-2"));
    await client.listWorkflows({}, opts("legacy-admin-token"));
  });
});

describe("the token file's refusals", () => {
  const sha = tokenSha256("t");
  const cases: [string, unknown, RegExp][] = [
    ["an unknown role", [{ name: "a", token_sha256: sha, role: "root" }], /entry 0 \("a"\): unknown role "root"/],
    [
      "duplicate names",
      [
        { name: "a", token_sha256: sha, role: "read" },
        { name: "a", token_sha256: tokenSha256("u"), role: "read" },
      ],
      /entry 1 \("a"\): duplicate name/,
    ],
    ["a plaintext token", [{ name: "a", token: "t", role: "read" }], /entry 0 \("a"\): a plaintext "token" is refused/],
    [
      "a short digest",
      [{ name: "a", token_sha256: "abc", role: "read" }],
      /entry 0 \("a"\): "token_sha256" must be 64 hex/,
    ],
    [
      "a scoped admin",
      [{ name: "a", token_sha256: sha, role: "admin", labels: { tenant: "x" } }],
      /entry 0 \("a"\): role "admin" cannot have labels/,
    ],
    [
      "the name api-token",
      [{ name: "api-token", token_sha256: sha, role: "read" }],
      /entry 0 \("api-token"\): duplicate name/,
    ],
    ["not a list", { name: "a" }, /must be a list/],
  ];
  for (const [what, content, message] of cases) {
    it(`refuses ${what}, naming the entry`, () => {
      expect(() => parseTokenFile(JSON.stringify(content))).toThrow(message);
    });
  }

  it("reads YAML as well as JSON", () => {
    const entries: TokenEntry[] = parseTokenFile(
      `- name: ci\n  token_sha256: ${sha.toUpperCase()}\n  role: write\n  labels: {tenant: acme}\n`,
    );
    expect(entries).toEqual([{ name: "ci", sha256: sha, role: "write", labels: { tenant: "acme" } }]);
  });
});
