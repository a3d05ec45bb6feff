// `trellis schedules ...` against a real api (in this process) on PostgreSQL, with the example workflow file.
import { resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { startApiServer, type RunningApiServer } from "@trellis/api";
import { PgStateManager } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { type TestDatabase, createTestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCliArgs } from "../src/args.js";
import { type ApiConnection, connect } from "../src/client.js";
import { runCommand } from "../src/commands.js";
import { MemoryOutput } from "../src/output.js";

const ROOT = resolve(import.meta.dirname, "../../..");
const FILE = resolve(ROOT, "docs/examples/nightly-digest.yaml");

let testDb: TestDatabase;
let sm: PgStateManager;
let server: RunningApiServer;
let api: ApiConnection;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_cli_schedules");
  sm = new PgStateManager(testDb.db);
  server = await startApiServer({
    stateManager: sm,
    logger: createLogger({ app: "api", level: "silent" }),
    registry: createMetricsRegistry({ app: "api", collectDefault: false }),
    settings: {
      grpcAddr: { host: "127.0.0.1", port: 0, address: "127.0.0.1:0" },
      apiToken: undefined,
      tls: undefined,
      maxReceiveBytes: 16 * 1024 * 1024,
    },
  });
  api = connect(`127.0.0.1:${server.port}`, undefined);
});

afterAll(async () => {
  api?.close();
  await server?.close(1_000);
  await testDb?.drop();
});

/** Runs a command line; answers its exit code and what it printed. */
async function trellis(...argv: string[]): Promise<{ code: number; lines: string[] }> {
  const output = new MemoryOutput();
  const { command } = parseCliArgs(argv, {});
  const code = await runCommand(command, { api, output, signal: new AbortController().signal });
  return { code, lines: output.lines };
}

async function refusal(...argv: string[]): Promise<string> {
  const error = (await trellis(...argv).then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => e,
  )) as grpc.ServiceError;
  return `${grpc.status[error.code]}: ${error.details}`;
}

describe("trellis schedules against the api", () => {
  it("creates from a YAML file, lists, pauses, resumes and deletes", async () => {
    const created = await trellis(
      "schedules",
      "create",
      "nightly-digest",
      "--cron",
      "0 7 * * *",
      "--timezone",
      "Europe/Paris",
      "--file",
      FILE,
    );
    expect(created.code).toBe(0);
    expect(created.lines[0]).toMatch(/^created schedule nightly-digest: 0 7 \* \* \* Europe\/Paris, next run \S+Z$/);
    const [stored] = await sm.listSchedules();
    expect(stored!.workflow?.nodes.map((n) => n.id)).toEqual(["collect", "summarize", "publish"]);

    const listed = await trellis("schedules");
    expect(listed.lines[0]).toMatch(/^ID\s+CRON\s+TIMEZONE\s+STATE\s+NEXT RUN\s+WORKFLOW\s+LAST WORKFLOW$/);
    expect(listed.lines[1]).toMatch(
      /^nightly-digest\s+0 7 \* \* \*\s+Europe\/Paris\s+ACTIVE\s+\S+Z\s+nightly digest\s+-$/,
    );

    expect((await trellis("schedules", "pause", "nightly-digest")).lines).toEqual([
      "paused schedule nightly-digest: 0 7 * * * Europe/Paris, paused",
    ]);
    expect((await trellis("schedules")).lines[1]).toMatch(/\sPAUSED\s+-\s+nightly digest/);
    expect((await trellis("schedules", "resume", "nightly-digest")).lines[0]).toMatch(
      /^resumed schedule nightly-digest: 0 7 \* \* \* Europe\/Paris, next run \S+Z$/,
    );

    // A tick (as the scheduler runs it) shows as the last workflow.
    await testDb.pool.query("update schedules set next_run_at = now() - interval '1 second'");
    const { ticks } = await sm.runDueSchedules(10);
    expect((await trellis("schedules")).lines[1]).toContain(ticks[0]!.workflowId!);

    expect((await trellis("schedules", "delete", "nightly-digest")).lines).toEqual(["schedule nightly-digest deleted"]);
    expect((await trellis("schedules")).lines[0]).toMatch(/^no schedules/);
  });

  it("reports the api's refusals", async () => {
    expect(await refusal("schedules", "create", "x", "--cron", "0 0 7 * * *", "--file", FILE)).toBe(
      'INVALID_ARGUMENT: schedule.cron: "0 0 7 * * *" has 6 fields; expected 5 (minute hour day-of-month month day-of-week)',
    );
    expect(
      await refusal("schedules", "create", "x", "--cron", "0 7 * * *", "--timezone", "Mars/Olympus", "--file", FILE),
    ).toBe('INVALID_ARGUMENT: schedule.timezone: unknown time zone "Mars/Olympus" (an IANA name such as Europe/Paris)');
    expect(await refusal("schedules", "pause", "missing")).toBe('NOT_FOUND: schedule "missing" not found');
    expect(await refusal("schedules", "delete", "missing")).toBe('NOT_FOUND: schedule "missing" not found');
    await trellis("schedules", "create", "dup", "--cron", "0 7 * * *", "--file", FILE);
    expect(await refusal("schedules", "create", "dup", "--cron", "0 7 * * *", "--file", FILE)).toBe(
      'ALREADY_EXISTS: schedule "dup" already exists',
    );
  });
});
