import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { WorkflowService, createGrpcClient } from "@trellis/proto";
import { type TestDatabase, createTestDatabase, waitFor } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const TSX = `${ROOT}node_modules/.bin/tsx`;
const MAIN = `${ROOT}apps/api/src/main.ts`;

interface Started {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

function startMain(env: Record<string, string>): Started {
  const child = spawn(TSX, [MAIN], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  // "close", not "exit": a child's last lines may still be in its stdout pipe when "exit" fires.
  const exit = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exit };
}

function logLines(text: string): Record<string, unknown>[] {
  return text
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

let testDb: TestDatabase;
const children: ChildProcess[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_api_main");
});

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  await testDb?.drop();
});

describe("npm run start:api (apps/api/src/main.ts)", () => {
  it("exits 2 with one line naming an invalid setting", async () => {
    const main = startMain({ GRPC_MAX_RECEIVE_BYTES: "lots" });
    children.push(main.child);
    expect(await main.exit).toBe(2);
    expect(main.stderr().trim()).toMatch(/^trellis api: invalid setting: GRPC_MAX_RECEIVE_BYTES: must be an integer/);
  });

  it("serves until SIGTERM, then drains and exits 0 after closing the server and the pool", async () => {
    const main = startMain({
      DATABASE_URL: testDb.url,
      GRPC_ADDR: "127.0.0.1:0",
      HTTP_ADDR: "127.0.0.1:0",
      LOG_LEVEL: "info",
    });
    children.push(main.child);
    const listening = await waitFor(
      () => {
        const lines = logLines(main.stdout());
        const grpcLine = lines.find((l) => l.msg === "grpc server listening");
        const httpLine = lines.find((l) => l.msg === "http server listening");
        return grpcLine && httpLine ? { grpcPort: grpcLine.port as number, http: httpLine.address } : undefined;
      },
      { timeoutMs: 20_000, description: "the api to listen" },
    );
    const httpPort = (listening.http as { port: number }).port;
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
    expect(ready.status).toBe(200);

    const client = createGrpcClient(WorkflowService, `127.0.0.1:${listening.grpcPort}`);
    try {
      const { workflow } = await client.createWorkflow(
        { name: "main", nodes: [{ id: "a", capability: "echo" }] },
        { deadline: Date.now() + 5_000 },
      );
      expect(workflow!.name).toBe("main");
    } finally {
      client.close();
    }

    main.child.kill("SIGTERM");
    expect(await main.exit).toBe(0);
    const closed = logLines(main.stdout())
      .filter((l) => l.msg?.toString().startsWith("closed "))
      .map((l) => l.closer);
    // The gRPC server drains first and the pool closes last; the listener, the pending notifications (after the
    // last call that made any) and the HTTP side server close in between.
    expect(closed[0]).toBe("grpc server");
    expect(closed.at(-1)).toBe("postgres pool");
    expect([...closed].sort()).toEqual([
      "event listener",
      "grpc server",
      "http server",
      "notifications",
      "postgres pool",
    ]);
  });
});
