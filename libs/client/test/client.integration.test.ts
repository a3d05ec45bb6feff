import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PgStateManager } from "@trellis/db";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { EditType, NodeStatus, type WorkflowEvent, WorkflowStatus } from "@trellis/proto";
import {
  type AppProcess,
  REPO_ROOT,
  type TestDatabase,
  createTestDatabase,
  freePort,
  passReadyNodes,
  startApp,
  waitFor,
} from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Reconnect, type TrellisClient, TrellisClientError, createClient } from "../src/index.js";

const TOKEN = "client-test-token";
const TLS_DIR = join(REPO_ROOT, "apps/api/test/fixtures/tls");

let testDb: TestDatabase;
let sm: PgStateManager;
let grpcPort: number;
let httpPort: number;
let api: AppProcess;
let client: TrellisClient;

/** The api as a process of its own on fixed ports, so a test can kill it and start it again where it was. */
async function startApi(extraEnv: Record<string, string> = {}, ports = { grpc: grpcPort, http: httpPort }) {
  const app = startApp({
    app: "api",
    env: {
      DATABASE_URL: testDb.url,
      GRPC_ADDR: `127.0.0.1:${ports.grpc}`,
      HTTP_ADDR: `127.0.0.1:${ports.http}`,
      API_TOKEN: TOKEN,
      LOG_LEVEL: "warn",
      ...extraEnv,
    },
  });
  await app.waitReady();
  return app;
}

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_client");
  sm = new PgStateManager(testDb.db);
  grpcPort = await freePort();
  httpPort = await freePort();
  api = await startApi();
  client = createClient({ address: `127.0.0.1:${grpcPort}`, token: TOKEN, defaultDeadlineMs: 10_000 });
});

afterAll(async () => {
  client?.close();
  await api?.stop(2_000);
  await testDb?.drop();
});

/** A chain n1 -> n2 -> ... -> n<length>, capability echo. */
function chain(name: string, length: number) {
  return client.createWorkflow({
    name,
    nodes: Array.from({ length }, (_, i) => ({
      id: `n${i + 1}`,
      capability: "echo",
      parentIds: i === 0 ? [] : [`n${i}`],
    })),
  });
}

/** What a failed call threw, for assertions. */
async function failure(promise: Promise<unknown>): Promise<TrellisClientError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TrellisClientError);
  return error as TrellisClientError;
}

describe("@trellis/client against a real api", () => {
  it("round-trips workflows: create, get, list (pages and all), update, the actions, nodes, edits, signal, fork", async () => {
    const wf = await client.createWorkflow({
      name: "round-trip",
      labels: { suite: "client" },
      nodes: [
        { id: "a", capability: "echo", input: { q: "hi" } },
        { id: "b", capability: "echo", parentIds: ["a"] },
        { id: "approve", wait: {}, parentIds: ["b"] },
      ],
    });
    expect(wf.nodes.map((n) => n.id)).toEqual(["a", "b", "approve"]);
    expect((await client.getWorkflow({ workflowId: wf.id })).labels).toEqual({ suite: "client" });

    await passReadyNodes(sm, wf.id);
    const node = await client.getNode({ workflowId: wf.id, nodeId: "a" });
    expect(node.node?.status).toBe(NodeStatus.PASS);
    expect(node.attempts.map((a) => [a.attempt, a.status])).toEqual([[1, "PASS"]]);

    const renamed = await client.updateNode({
      workflowId: wf.id,
      node: { id: "b", name: "second step" },
      updateMask: { paths: ["name"] },
    });
    expect(renamed.name).toBe("second step");
    const edited = await client.editWorkflow({
      workflowId: wf.id,
      edits: [{ type: EditType.INSERT, node: { id: "c", capability: "echo", parentIds: ["b"] } }],
    });
    expect(edited.nodes.map((n) => n.id)).toContain("c");
    // Sent before the node is ready: kept, and the node stays PENDING.
    const signaled = await client.signalNode({
      workflowId: wf.id,
      nodeId: "approve",
      output: fromJson(ValueSchema, { approved: true }),
    });
    expect(signaled).toMatchObject({ id: "approve", status: NodeStatus.PENDING });

    expect((await client.pauseWorkflow(wf.id)).status).toBe(WorkflowStatus.PAUSED);
    expect((await client.resumeWorkflow(wf.id)).status).toBe(WorkflowStatus.RUNNING);
    const retry = await failure(client.retryWorkflow(wf.id));
    expect(retry.codeName).toBe("FAILED_PRECONDITION");
    const named = await client.updateWorkflow({ workflowId: wf.id, name: "renamed", updateMask: { paths: ["name"] } });
    expect(named.name).toBe("renamed");

    const fork = await client.forkWorkflow({ workflowId: wf.id, fromNodeIds: ["b"] });
    expect(fork.id).not.toBe(wf.id);
    expect(fork.nodes.find((n) => n.id === "a")?.status).toBe(NodeStatus.PASS);
    expect(fork.nodes.find((n) => n.id === "b")?.status).toBe(NodeStatus.PENDING);
    expect((await client.cancelWorkflow(wf.id)).status).toBe(WorkflowStatus.CANCELLED);

    const extra = await chain("listed", 1);
    const firstPage = await client.listWorkflows({ pageSize: 1 });
    expect(firstPage.workflows).toHaveLength(1);
    expect(firstPage.nextPageToken).not.toBe("");
    const all: string[] = [];
    for await (const w of client.listAllWorkflows({ pageSize: 1 })) all.push(w.id);
    expect(new Set(all)).toEqual(new Set([wf.id, fork.id, extra.id]));
    expect(all).toHaveLength(3);
    const cancelled: string[] = [];
    for await (const w of client.listAllWorkflows({ status: WorkflowStatus.CANCELLED })) cancelled.push(w.id);
    expect(cancelled).toEqual([wf.id]);
  });

  it("round-trips limits and schedules", async () => {
    const limit = await client.setLimit({ limit: { key: "model:test", maxConcurrency: 2, rate: 10 } });
    expect(limit).toMatchObject({ key: "model:test", maxConcurrency: 2, rate: 10, burst: 10 });
    expect((await client.listLimits()).map((l) => l.key)).toContain("model:test");
    await client.deleteLimit({ key: "model:test" });
    expect((await client.listLimits()).map((l) => l.key)).not.toContain("model:test");

    const schedule = await client.createSchedule({
      schedule: {
        id: "nightly",
        cron: "0 7 * * *",
        timezone: "Europe/Paris",
        workflow: { name: "nightly", nodes: [{ id: "a", capability: "echo" }] },
      },
    });
    expect(schedule.nextRunAt).toBeDefined();
    expect((await client.listSchedules()).map((s) => s.id)).toEqual(["nightly"]);
    const paused = await client.updateSchedule({
      schedule: { id: "nightly", paused: true },
      updateMask: { paths: ["paused"] },
    });
    expect(paused.paused).toBe(true);
    await client.deleteSchedule({ id: "nightly" });
    expect(await client.listSchedules()).toEqual([]);
  });

  it("watch() resumes after the api is killed and restarted mid-stream: every event once, in order, to the end", async () => {
    const wf = await chain("resumed", 6);
    const seen: WorkflowEvent[] = [];
    const reconnects: Reconnect[] = [];
    const watching = (async () => {
      const events = client.watch(wf.id, {
        onReconnect: (r) => reconnects.push(r),
        initialDelayMs: 50,
        maxDelayMs: 500,
      });
      for (;;) {
        const next = await events.next();
        if (next.done) return next.value;
        seen.push(next.value);
      }
    })();
    const passed = (id: string) => seen.some((e) => e.nodeId === id && e.nodeStatus === NodeStatus.PASS);
    await passReadyNodes(sm, wf.id);
    await waitFor(() => passed("n1"), { timeoutMs: 10_000, description: "n1's PASS to be watched" });

    await api.kill();
    // Committed while the api is away: the resumed stream must replay them.
    await passReadyNodes(sm, wf.id);
    await passReadyNodes(sm, wf.id);
    await waitFor(() => reconnects.length > 0, { timeoutMs: 10_000, description: "the watch to notice" });
    api = await startApi();
    await waitFor(() => passed("n3"), { timeoutMs: 20_000, description: "n3's PASS to be watched after the restart" });
    for (let i = 0; i < 3; i++) await passReadyNodes(sm, wf.id);

    expect(await watching).toBe(WorkflowStatus.SUCCEEDED);
    const sequences = seen.map((e) => Number(e.sequence));
    expect(sequences).toEqual(sequences.map((_, i) => i + 1));
    expect(seen.at(-1)?.workflowStatus).toBe(WorkflowStatus.SUCCEEDED);
    // The same history a fresh watch replays.
    const replayed: bigint[] = [];
    for await (const e of client.watch(wf.id)) replayed.push(e.sequence);
    expect(replayed).toEqual(seen.map((e) => e.sequence));
    expect(reconnects[0]?.reason).toMatch(/^UNAVAILABLE/);
    expect(reconnects.every((r) => r.afterSequence === reconnects[0]!.afterSequence)).toBe(true);
  }, 60_000);

  it("watch() starts after afterSequence and ends after the terminal event", async () => {
    const wf = await chain("after", 1);
    await passReadyNodes(sm, wf.id);
    const all: bigint[] = [];
    for await (const e of client.watch(wf.id)) all.push(e.sequence);
    const tail: bigint[] = [];
    for await (const e of client.watch(wf.id, { afterSequence: all[1]! })) tail.push(e.sequence);
    expect(tail).toEqual(all.slice(2));
  });

  it("gives every call a deadline: a stopped api answers DEADLINE_EXCEEDED after it, not never; a signal cancels", async () => {
    const quick = createClient({ address: `127.0.0.1:${grpcPort}`, token: TOKEN, defaultDeadlineMs: 300 });
    try {
      const wf = await quick.createWorkflow({ nodes: [{ id: "a", capability: "echo" }] });
      api.signal("SIGSTOP");
      try {
        const started = Date.now();
        expect((await failure(quick.getWorkflow({ workflowId: wf.id }))).codeName).toBe("DEADLINE_EXCEEDED");
        expect(Date.now() - started).toBeLessThan(5_000);
        const longer = Date.now();
        const error = await failure(quick.getWorkflow({ workflowId: wf.id }, { deadlineMs: 1_000 }));
        expect(error.codeName).toBe("DEADLINE_EXCEEDED");
        expect(Date.now() - longer).toBeGreaterThanOrEqual(900);
        // An aborted signal cancels a call that would otherwise wait for its deadline.
        const controller = new AbortController();
        const aborted = failure(
          quick.getWorkflow({ workflowId: wf.id }, { deadlineMs: 60_000, signal: controller.signal }),
        );
        setTimeout(() => controller.abort(), 100);
        expect((await aborted).codeName).toBe("CANCELLED");
      } finally {
        api.signal("SIGCONT");
      }
      expect((await quick.getWorkflow({ workflowId: wf.id })).id).toBe(wf.id);
    } finally {
      quick.close();
    }
  });

  it("sends the token as authorization: Bearer; without it or with a wrong one the api refuses", async () => {
    const anonymous = createClient({ address: `127.0.0.1:${grpcPort}` });
    const wrong = createClient({ address: `127.0.0.1:${grpcPort}`, token: "nope" });
    try {
      const refused = await failure(anonymous.listWorkflows());
      expect(refused).toMatchObject({ codeName: "UNAUTHENTICATED", code: 16 });
      expect((await failure(wrong.listLimits())).codeName).toBe("UNAUTHENTICATED");
      const wf = await chain("private", 1);
      // A permanent status ends a watch at once: no reconnecting.
      const watch = (async () => {
        for await (const _ of anonymous.watch(wf.id)) {
        }
      })();
      expect((await failure(watch)).codeName).toBe("UNAUTHENTICATED");
    } finally {
      anonymous.close();
      wrong.close();
    }
  });

  it("throws TrellisClientError with the code's name and the api's details", async () => {
    const missing = await failure(client.getWorkflow({ workflowId: "00000000-0000-4000-8000-000000000000" }));
    expect(missing.codeName).toBe("NOT_FOUND");
    expect(missing.message).toBe(`NOT_FOUND: ${missing.details}`);
    const invalid = await failure(
      client.createWorkflow({ nodes: [{ id: "a", capability: "echo", parentIds: ["nowhere"] }] }),
    );
    expect(invalid.codeName).toBe("INVALID_ARGUMENT");
    expect(invalid.details).toContain("nowhere");
    const closedPort = await freePort();
    const nowhere = createClient({ address: `127.0.0.1:${closedPort}`, defaultDeadlineMs: 2_000 });
    try {
      expect((await failure(nowhere.listWorkflows())).codeName).toBe("UNAVAILABLE");
    } finally {
      nowhere.close();
    }
  });

  it("speaks TLS to an api serving it, with the CA given", async () => {
    const ports = { grpc: await freePort(), http: await freePort() };
    const secured = await startApi(
      { GRPC_TLS_CERT: join(TLS_DIR, "server.crt"), GRPC_TLS_KEY: join(TLS_DIR, "server.key") },
      ports,
    );
    const tls = createClient({
      address: `localhost:${ports.grpc}`,
      token: TOKEN,
      tls: { ca: readFileSync(join(TLS_DIR, "ca.crt")) },
    });
    const plaintext = createClient({ address: `localhost:${ports.grpc}`, token: TOKEN, defaultDeadlineMs: 2_000 });
    try {
      expect(Array.isArray(await tls.listLimits())).toBe(true);
      expect((await failure(plaintext.listLimits())).codeName).toBe("UNAVAILABLE");
    } finally {
      tls.close();
      plaintext.close();
      await secured.stop(2_000);
    }
  });
});

/** The fenced blocks of docs/api.md's client section: the example's code and the output shown under it. */
function docExample(): { code: string; output: string } {
  const doc = readFileSync(join(REPO_ROOT, "docs/api.md"), "utf8");
  const start = doc.indexOf("<!-- client-example:start");
  const end = doc.indexOf("<!-- client-example:end -->");
  const code = /```ts\n([\s\S]*?)```/.exec(doc.slice(start, end))?.[1];
  const output = /```console\n([\s\S]*?)```/.exec(doc.slice(end))?.[1];
  if (start < 0 || code === undefined || output === undefined) throw new Error("docs/api.md: no client example");
  return { code, output };
}

describe("docs/api.md: Using the TypeScript client", () => {
  it("runs the example as written and prints what the doc shows", async () => {
    const { code, output } = docExample();
    const dir = mkdtempSync(join(REPO_ROOT, "libs/client/test/.doc-example-"));
    try {
      writeFileSync(join(dir, "example.ts"), code);
      const child = spawn(process.execPath, ["--import", "tsx", join(dir, "example.ts")], {
        cwd: REPO_ROOT,
        env: { PATH: process.env.PATH ?? "", TRELLIS_ADDR: `127.0.0.1:${grpcPort}`, TRELLIS_TOKEN: TOKEN },
      });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        stdout += chunk;
      });
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
      });
      const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
      let ended = false;
      void exited.then(() => {
        ended = true;
      });
      // Plays scheduler and worker for the example's workflow until the example has seen it end.
      const id = await waitFor(() => /^created (\S+)$/m.exec(stdout)?.[1], {
        timeoutMs: 20_000,
        description: `the example to create its workflow (stderr: ${stderr})`,
      });
      while (!ended) {
        await passReadyNodes(sm, id);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(stderr).toBe("");
      expect(await exited).toBe(0);
      expect(stdout.replace(id, "<id>")).toBe(output.replace(/^created \S+$/m, "created <id>"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
