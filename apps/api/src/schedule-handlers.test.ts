import { type MessageInitShape, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { StateManager } from "@trellis/db";
import { createLogger } from "@trellis/observability";
import { type GrpcServiceHandlers, type Schedule, ScheduleSchema, WorkflowService } from "@trellis/proto";
import { describe, expect, it, vi } from "vitest";
import { LogLines } from "../test/log-lines.js";
import { mockStateManager } from "../test/mock-state-manager.js";
import { createWorkflowServiceHandlers } from "./handlers.js";

type Handlers = GrpcServiceHandlers<typeof WorkflowService>;
type ScheduleRpc = "createSchedule" | "listSchedules" | "updateSchedule" | "deleteSchedule";

interface Outcome {
  error: { code?: grpc.status; details?: string } | null;
  response: unknown;
}

/** The api's handlers over the mocked StateManager, with the schedule methods mocked too. */
function setup() {
  const sm = Object.assign(mockStateManager(), {
    createSchedule: vi.fn<StateManager["createSchedule"]>(async (s) => s),
    listSchedules: vi.fn<StateManager["listSchedules"]>(async () => [create(ScheduleSchema, { id: "nightly" })]),
    updateSchedule: vi.fn<StateManager["updateSchedule"]>(async (id) => create(ScheduleSchema, { id })),
    deleteSchedule: vi.fn<StateManager["deleteSchedule"]>(async () => true),
  });
  const logger = createLogger({ app: "api", level: "info", destination: new LogLines() });
  const handlers = createWorkflowServiceHandlers({ stateManager: sm, logger });

  /** Invokes a handler the way grpc-js does, with a fake call. */
  function call<K extends ScheduleRpc>(
    name: K,
    init: MessageInitShape<(typeof WorkflowService.method)[K]["input"]>,
  ): Promise<Outcome> {
    const method = WorkflowService.method[name];
    const fakeCall = {
      request: create(method.input, init as never),
      cancelled: false,
      metadata: new grpc.Metadata(),
      getDeadline: () => Number.POSITIVE_INFINITY,
      getPath: () => `/workflow.v1.WorkflowService/${method.name}`,
    };
    return new Promise((resolve) => {
      const handler = handlers[name] as Handlers[K] as grpc.handleUnaryCall<unknown, unknown>;
      handler(fakeCall as unknown as grpc.ServerUnaryCall<unknown, unknown>, (error, response) =>
        resolve({ error: error as Outcome["error"], response }),
      );
    });
  }
  return { sm, call };
}

function expectRejected(outcome: Outcome, code: grpc.status, details?: string | RegExp): void {
  expect(outcome.error, "the call should have failed").not.toBeNull();
  expect(grpc.status[outcome.error!.code!]).toBe(grpc.status[code]);
  if (typeof details === "string") expect(outcome.error!.details).toBe(details);
  else if (details) expect(outcome.error!.details).toMatch(details);
}

const WORKFLOW = { name: "nightly report", nodes: [{ id: "a", capability: "echo" }] };
const SCHEDULE = { id: "nightly", cron: "0 7 * * *", timezone: "Europe/Paris", workflow: WORKFLOW };

describe("CreateSchedule", () => {
  it("passes a valid schedule to the StateManager and answers it", async () => {
    const { sm, call } = setup();
    const outcome = await call("createSchedule", { schedule: SCHEDULE });
    expect(outcome.error).toBeNull();
    const passed = sm.createSchedule.mock.calls[0]![0] as Schedule;
    expect(passed).toMatchObject({ id: "nightly", cron: "0 7 * * *", timezone: "Europe/Paris" });
    expect(passed.workflow?.nodes.map((n) => n.id)).toEqual(["a"]);
    expect(outcome.response).toMatchObject({ schedule: { id: "nightly" } });
  });

  const refusals: [string, MessageInitShape<typeof ScheduleSchema> | undefined, string | RegExp][] = [
    ["no schedule", undefined, "schedule: required"],
    ["an empty id", { ...SCHEDULE, id: "" }, "schedule.id: required"],
    ["an id with a slash", { ...SCHEDULE, id: "a/b" }, 'schedule.id: "a/b" must match [A-Za-z0-9_.-]{1,128}'],
    [
      "6 cron fields",
      { ...SCHEDULE, cron: "0 0 7 * * *" },
      'schedule.cron: "0 0 7 * * *" has 6 fields; expected 5 (minute hour day-of-month month day-of-week)',
    ],
    ["a cron that never fires", { ...SCHEDULE, cron: "0 0 30 2 *" }, /^schedule\.cron: "0 0 30 2 \*" is not a valid/],
    ["a minute out of range", { ...SCHEDULE, cron: "60 7 * * *" }, /^schedule\.cron: /],
    [
      "an unknown time zone",
      { ...SCHEDULE, timezone: "Mars/Olympus" },
      'schedule.timezone: unknown time zone "Mars/Olympus" (an IANA name such as Europe/Paris)',
    ],
    ["no workflow", { ...SCHEDULE, workflow: undefined }, "schedule.workflow: required"],
    [
      "a node without capability",
      { ...SCHEDULE, workflow: { ...WORKFLOW, nodes: [{ id: "a" }] } },
      "schedule.workflow.nodes[0].capability: required",
    ],
    [
      "an unknown parent",
      { ...SCHEDULE, workflow: { ...WORKFLOW, nodes: [{ id: "a", capability: "echo", parentIds: ["x"] }] } },
      'schedule.workflow.nodes[0].parent_ids[0]: unknown node "x"',
    ],
    [
      "a priority out of range",
      { ...SCHEDULE, workflow: { ...WORKFLOW, nodes: [{ id: "a", capability: "echo", priority: 11 }] } },
      /^schedule\.workflow\.nodes\[0\]\.priority: /,
    ],
    [
      "a request_id of its own",
      { ...SCHEDULE, workflow: { ...WORKFLOW, requestId: "r1" } },
      "schedule.workflow.request_id: must be empty: each tick sets its own",
    ],
    ["a bad budget", { ...SCHEDULE, workflow: { ...WORKFLOW, budget: { tokens: 0 } } }, /^schedule\.workflow\.budget/],
  ];
  for (const [what, schedule, message] of refusals) {
    it(`refuses ${what} with INVALID_ARGUMENT, without calling the StateManager`, async () => {
      const { sm, call } = setup();
      expectRejected(await call("createSchedule", { schedule }), grpc.status.INVALID_ARGUMENT, message);
      expect(sm.createSchedule).not.toHaveBeenCalled();
    });
  }
});

describe("UpdateSchedule", () => {
  it("passes only the fields update_mask names", async () => {
    const { sm, call } = setup();
    await call("updateSchedule", { schedule: { id: "nightly", paused: true }, updateMask: { paths: ["paused"] } });
    expect(sm.updateSchedule).toHaveBeenLastCalledWith("nightly", { paused: true });
    await call("updateSchedule", {
      schedule: { ...SCHEDULE, paused: true },
      updateMask: { paths: ["cron", "timezone"] },
    });
    expect(sm.updateSchedule).toHaveBeenLastCalledWith("nightly", { cron: "0 7 * * *", timezone: "Europe/Paris" });
    await call("updateSchedule", { schedule: { id: "nightly", timezone: "" }, updateMask: { paths: ["timezone"] } });
    expect(sm.updateSchedule).toHaveBeenLastCalledWith("nightly", { timezone: "UTC" });
    await call("updateSchedule", { schedule: SCHEDULE, updateMask: { paths: ["workflow"] } });
    expect(sm.updateSchedule.mock.lastCall![1].workflow?.name).toBe("nightly report");
  });

  it("refuses a missing mask, unknown or repeated paths and bad values, without calling the StateManager", async () => {
    const { sm, call } = setup();
    expectRejected(
      await call("updateSchedule", { schedule: { id: "nightly" } }),
      grpc.status.INVALID_ARGUMENT,
      "update_mask: required (paths: cron, timezone, workflow, paused)",
    );
    expectRejected(
      await call("updateSchedule", { schedule: { id: "nightly" }, updateMask: { paths: ["next_run_at"] } }),
      grpc.status.INVALID_ARGUMENT,
      'update_mask.paths[0]: "next_run_at" cannot be updated (allowed: cron, timezone, workflow, paused)',
    );
    expectRejected(
      await call("updateSchedule", { schedule: { id: "nightly" }, updateMask: { paths: ["paused", "paused"] } }),
      grpc.status.INVALID_ARGUMENT,
      'update_mask.paths[1]: duplicate path "paused"',
    );
    expectRejected(
      await call("updateSchedule", { schedule: { id: "nightly", cron: "* * *" }, updateMask: { paths: ["cron"] } }),
      grpc.status.INVALID_ARGUMENT,
      /^schedule\.cron: /,
    );
    expectRejected(
      await call("updateSchedule", {
        schedule: { id: "nightly", timezone: "X/Y" },
        updateMask: { paths: ["timezone"] },
      }),
      grpc.status.INVALID_ARGUMENT,
      /^schedule\.timezone: /,
    );
    expectRejected(
      await call("updateSchedule", {
        schedule: { id: "nightly", workflow: { nodes: [{ id: "a", capability: "Bad" }] } },
        updateMask: { paths: ["workflow"] },
      }),
      grpc.status.INVALID_ARGUMENT,
      /^schedule\.workflow\.nodes\[0\]\.capability: /,
    );
    expectRejected(
      await call("updateSchedule", { updateMask: { paths: ["paused"] } }),
      grpc.status.INVALID_ARGUMENT,
      "schedule: required",
    );
    expect(sm.updateSchedule).not.toHaveBeenCalled();
  });
});

describe("ListSchedules and DeleteSchedule", () => {
  it("lists the StateManager's schedules", async () => {
    const { call } = setup();
    expect((await call("listSchedules", {})).response).toMatchObject({ schedules: [{ id: "nightly" }] });
  });

  it("deletes by id, NOT_FOUND for an unknown one, INVALID_ARGUMENT for a malformed one", async () => {
    const { sm, call } = setup();
    expect((await call("deleteSchedule", { id: "nightly" })).error).toBeNull();
    expect(sm.deleteSchedule).toHaveBeenCalledWith("nightly");
    sm.deleteSchedule.mockResolvedValueOnce(false);
    expectRejected(await call("deleteSchedule", { id: "gone" }), grpc.status.NOT_FOUND, 'schedule "gone" not found');
    expectRejected(await call("deleteSchedule", { id: "" }), grpc.status.INVALID_ARGUMENT, "id: required");
  });
});
