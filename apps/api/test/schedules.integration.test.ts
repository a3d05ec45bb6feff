import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { PgStateManager } from "@trellis/db";
import { createLogger, createMetricsRegistry } from "@trellis/observability";
import { type GrpcClient, WorkflowService, createGrpcClient } from "@trellis/proto";
import { type TestDatabase, createTestDatabase } from "@trellis/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type RunningApiServer, startApiServer } from "../src/index.js";

let testDb: TestDatabase;
let sm: PgStateManager;
let server: RunningApiServer;
let client: GrpcClient<typeof WorkflowService>;

beforeAll(async () => {
  testDb = await createTestDatabase("trellis_api_schedules");
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
  client = createGrpcClient(WorkflowService, `127.0.0.1:${server.port}`);
});

afterAll(async () => {
  client?.close();
  await server?.close(1_000);
  await testDb?.drop();
});

beforeEach(async () => {
  await testDb.pool.query("delete from schedules");
  await testDb.pool.query("delete from workflows");
});

function opts(): { deadline: number } {
  return { deadline: Date.now() + 10_000 };
}

async function expectStatus(call: Promise<unknown>, code: grpc.status, details: string | RegExp): Promise<void> {
  const error = (await call.then(
    () => {
      throw new Error("the call succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as grpc.ServiceError;
  expect(grpc.status[error.code]).toBe(grpc.status[code]);
  if (typeof details === "string") expect(error.details).toBe(details);
  else expect(error.details).toMatch(details);
}

const NIGHTLY = {
  id: "nightly",
  cron: "0 7 * * *",
  timezone: "Europe/Paris",
  workflow: { name: "nightly report", nodes: [{ id: "fetch", capability: "echo" }], labels: { team: "data" } },
};

async function storedIds(): Promise<string[]> {
  return (await testDb.pool.query<{ id: string }>("select id from schedules order by id")).rows.map((r) => r.id);
}

describe("schedules over gRPC", () => {
  it("CreateSchedule, ListSchedules, UpdateSchedule (pause, resume, cron) and DeleteSchedule", async () => {
    const { schedule } = await client.createSchedule({ schedule: NIGHTLY }, opts());
    expect(schedule).toMatchObject({ id: "nightly", cron: "0 7 * * *", timezone: "Europe/Paris", paused: false });
    const next = timestampDate(schedule!.nextRunAt!);
    expect(next.getTime()).toBeGreaterThan(Date.now());
    expect(new Intl.DateTimeFormat("en-GB", { timeZone: "Europe/Paris", timeStyle: "short" }).format(next)).toBe(
      "07:00",
    );
    expect(schedule!.workflow?.labels).toEqual({ team: "data" });

    const listed = await client.listSchedules({}, opts());
    expect(listed.schedules.map((s) => s.id)).toEqual(["nightly"]);

    const paused = await client.updateSchedule(
      { schedule: { id: "nightly", paused: true }, updateMask: { paths: ["paused"] } },
      opts(),
    );
    expect(paused.schedule).toMatchObject({ paused: true });
    expect(paused.schedule!.nextRunAt).toBeUndefined();

    const changed = await client.updateSchedule(
      {
        schedule: { id: "nightly", cron: "30 2 * * *", timezone: "Europe/Berlin" },
        updateMask: { paths: ["cron", "timezone"] },
      },
      opts(),
    );
    expect(changed.schedule).toMatchObject({ cron: "30 2 * * *", timezone: "Europe/Berlin", paused: true });

    const resumed = await client.updateSchedule(
      { schedule: { id: "nightly", paused: false }, updateMask: { paths: ["paused"] } },
      opts(),
    );
    const resumedNext = timestampDate(resumed.schedule!.nextRunAt!);
    expect(resumedNext.getTime()).toBeGreaterThan(Date.now());
    expect(
      new Intl.DateTimeFormat("en-GB", { timeZone: "Europe/Berlin", timeStyle: "short" }).format(resumedNext),
    ).toMatch(/^0[23]:30$/);

    await client.deleteSchedule({ id: "nightly" }, opts());
    expect(await storedIds()).toEqual([]);
    await expectStatus(
      client.deleteSchedule({ id: "nightly" }, opts()),
      grpc.status.NOT_FOUND,
      'schedule "nightly" not found',
    );
  });

  it("refuses a duplicate id with ALREADY_EXISTS, keeping the first", async () => {
    await client.createSchedule({ schedule: NIGHTLY }, opts());
    await expectStatus(
      client.createSchedule({ schedule: { ...NIGHTLY, cron: "*/5 * * * *" } }, opts()),
      grpc.status.ALREADY_EXISTS,
      'schedule "nightly" already exists',
    );
    expect((await client.listSchedules({}, opts())).schedules[0]!.cron).toBe("0 7 * * *");
  });

  it("refuses bad input with INVALID_ARGUMENT naming the field, storing nothing", async () => {
    const cases: [object, string | RegExp][] = [
      [{ ...NIGHTLY, cron: "0 0 7 * * *" }, /^schedule\.cron: "0 0 7 \* \* \*" has 6 fields/],
      [{ ...NIGHTLY, cron: "0 0 31 2 *" }, /^schedule\.cron: /],
      [{ ...NIGHTLY, timezone: "Europe/Atlantis" }, /^schedule\.timezone: unknown time zone "Europe\/Atlantis"/],
      [{ ...NIGHTLY, id: "not ok" }, /^schedule\.id: /],
      [
        { ...NIGHTLY, workflow: { ...NIGHTLY.workflow, nodes: [{ id: "fetch", capability: "" }] } },
        "schedule.workflow.nodes[0].capability: required",
      ],
      [
        {
          ...NIGHTLY,
          workflow: {
            ...NIGHTLY.workflow,
            nodes: [
              { id: "a", capability: "echo", parentIds: ["b"] },
              { id: "b", capability: "echo", parentIds: ["a"] },
            ],
          },
        },
        /^schedule\.workflow\.nodes/,
      ],
    ];
    for (const [schedule, details] of cases) {
      await expectStatus(client.createSchedule({ schedule }, opts()), grpc.status.INVALID_ARGUMENT, details);
    }
    expect(await storedIds()).toEqual([]);
    await expectStatus(
      client.updateSchedule({ schedule: { id: "missing", paused: true }, updateMask: { paths: ["paused"] } }, opts()),
      grpc.status.NOT_FOUND,
      'schedule "missing" not found',
    );
  });

  it("a tick's workflow is labelled with its schedule and shows in ListSchedules as the last workflow", async () => {
    await client.createSchedule({ schedule: { ...NIGHTLY, cron: "* * * * *" } }, opts());
    await testDb.pool.query("update schedules set next_run_at = now() - interval '1 second'");
    const { ticks } = await sm.runDueSchedules(10);
    expect(ticks).toHaveLength(1);
    const [schedule] = (await client.listSchedules({}, opts())).schedules;
    expect(schedule!.lastWorkflowId).toBe(ticks[0]!.workflowId);
    const { workflows } = await client.listWorkflows({ labelSelector: { schedule: "nightly" } }, opts());
    expect(workflows.map((w) => w.id)).toEqual([ticks[0]!.workflowId]);
    expect(workflows[0]!.labels).toEqual({ team: "data", schedule: "nightly" });
  });
});
