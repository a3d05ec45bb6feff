import { create } from "@bufbuild/protobuf";
import { NodeSchema } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "./errors.js";
import {
  assertScheduleId,
  nextScheduleTick,
  scheduleRequestId,
  scheduleTimeZone,
  scheduledWorkflowRequest,
  validateCron,
  validateScheduleSpec,
} from "./schedules.js";

const NOW = new Date("2026-12-03T12:00:00Z");

/** The next `n` ticks after `from`, as ISO strings. */
function ticks(cron: string, timezone: string, from: string, n: number): string[] {
  const out: string[] = [];
  let after = new Date(from);
  for (let i = 0; i < n; i++) {
    after = nextScheduleTick(cron, timezone, after);
    out.push(after.toISOString());
  }
  return out;
}

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return (error as Error).message;
  }
  throw new Error("expected an InvalidArgumentError");
}

const workflow = { name: "nightly", nodes: [create(NodeSchema, { id: "a", capability: "echo" })] };

describe("next tick", () => {
  it("follows the time zone: 07:00 in Paris is 06:00 UTC in winter and 05:00 UTC in summer", () => {
    expect(ticks("0 7 * * *", "Europe/Paris", "2026-03-27T12:00:00Z", 3)).toEqual([
      "2026-03-28T06:00:00.000Z",
      "2026-03-29T05:00:00.000Z",
      "2026-03-30T05:00:00.000Z",
    ]);
  });

  it("runs 02:30 Europe/Berlin at 03:30 local time on the spring-forward day (02:30 does not exist)", () => {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST.
    expect(ticks("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3)).toEqual([
      "2026-03-28T01:30:00.000Z", // 02:30 CET
      "2026-03-29T01:30:00.000Z", // 03:30 CEST: the missing 02:30, an hour later
      "2026-03-30T00:30:00.000Z", // 02:30 CEST
    ]);
  });

  it("runs 02:30 Europe/Berlin once on the fall-back day (02:30 happens twice), at the first one", () => {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 is 00:30 UTC and again 01:30 UTC.
    expect(ticks("30 2 * * *", "Europe/Berlin", "2026-10-23T12:00:00Z", 3)).toEqual([
      "2026-10-24T00:30:00.000Z", // 02:30 CEST
      "2026-10-25T00:30:00.000Z", // 02:30 CEST, the first of the two
      "2026-10-26T01:30:00.000Z", // 02:30 CET
    ]);
    // Just after the first 02:30, the second one is not a tick.
    expect(nextScheduleTick("30 2 * * *", "Europe/Berlin", new Date("2026-10-25T00:30:00Z")).toISOString()).toBe(
      "2026-10-26T01:30:00.000Z",
    );
  });

  it("keeps an every-30-minutes schedule on the real clock through both hours of the fall-back day", () => {
    expect(ticks("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:50:00Z", 6)).toEqual([
      "2026-10-25T00:00:00.000Z",
      "2026-10-25T00:30:00.000Z",
      "2026-10-25T01:00:00.000Z",
      "2026-10-25T01:30:00.000Z",
      "2026-10-25T02:00:00.000Z",
      "2026-10-25T02:30:00.000Z",
    ]);
  });

  it("is strictly after the given time", () => {
    expect(nextScheduleTick("* * * * *", "UTC", new Date("2026-12-03T12:00:00Z")).toISOString()).toBe(
      "2026-12-03T12:01:00.000Z",
    );
  });
});

describe("validation", () => {
  it("accepts 5-field expressions with names, ranges, steps, L and #", () => {
    for (const cron of ["0 7 * * *", "*/15 9-17 * * MON-FRI", "0 0 L * *", "0 9 * * 1#1", "0 0 29 2 *"]) {
      expect(() => validateCron(cron, "UTC", "cron", NOW)).not.toThrow();
    }
  });

  it("refuses 6 fields, 4 fields, macros, H, out-of-range values and expressions that never fire", () => {
    expect(refusal(() => validateCron("0 0 7 * * *", "UTC", "schedule.cron", NOW))).toBe(
      'schedule.cron: "0 0 7 * * *" has 6 fields; expected 5 (minute hour day-of-month month day-of-week)',
    );
    expect(refusal(() => validateCron("* * * *", "UTC", "cron", NOW))).toMatch(/has 4 fields/);
    expect(refusal(() => validateCron("@daily", "UTC", "cron", NOW))).toMatch(/has 1 fields/);
    expect(refusal(() => validateCron("H * * * *", "UTC", "cron", NOW))).toMatch(/H, \? and @ are not supported/);
    expect(refusal(() => validateCron("61 * * * *", "UTC", "cron", NOW))).toMatch(
      /^cron: "61 \* \* \* \*" is not a valid/,
    );
    expect(refusal(() => validateCron("0 0 30 2 *", "UTC", "cron", NOW))).toMatch(/is not a valid cron expression/);
    expect(refusal(() => validateCron("", "UTC", "cron", NOW))).toBe("cron: required");
  });

  it("refuses unknown time zones and defaults an empty one to UTC", () => {
    expect(scheduleTimeZone("")).toBe("UTC");
    expect(scheduleTimeZone("America/New_York")).toBe("America/New_York");
    expect(refusal(() => scheduleTimeZone("Mars/Olympus", "schedule.timezone"))).toBe(
      'schedule.timezone: unknown time zone "Mars/Olympus" (an IANA name such as Europe/Paris)',
    );
    expect(refusal(() => scheduleTimeZone("+01:00"))).toMatch(/unknown time zone/);
  });

  it("refuses ids outside [A-Za-z0-9_.-]{1,128}", () => {
    expect(() => assertScheduleId("nightly-report.v2")).not.toThrow();
    expect(refusal(() => assertScheduleId("", "schedule.id"))).toBe("schedule.id: required");
    expect(refusal(() => assertScheduleId("a b"))).toMatch(/must match/);
    expect(refusal(() => assertScheduleId("x".repeat(129)))).toMatch(/must match/);
  });

  it("checks the workflow as CreateWorkflow would, with field paths under schedule.workflow", () => {
    const spec = { id: "nightly", cron: "0 7 * * *", timezone: "Europe/Paris", workflow };
    expect(validateScheduleSpec(spec, "schedule", undefined, NOW)).toBe("Europe/Paris");
    expect(validateScheduleSpec({ ...spec, timezone: "" }, "schedule", undefined, NOW)).toBe("UTC");
    expect(refusal(() => validateScheduleSpec({ ...spec, workflow: undefined }))).toBe("schedule.workflow: required");
    const badCapability = { ...workflow, nodes: [create(NodeSchema, { id: "a", capability: "Bad Cap" })] };
    expect(refusal(() => validateScheduleSpec({ ...spec, workflow: badCapability }))).toMatch(
      /^schedule\.workflow\.nodes\[0\]\.capability: /,
    );
    expect(refusal(() => validateScheduleSpec({ ...spec, workflow: { ...workflow, nodes: [] } }))).toBe(
      "schedule.workflow.nodes: at least one node is required",
    );
    const cycle = {
      ...workflow,
      nodes: [
        create(NodeSchema, { id: "a", capability: "echo", parentIds: ["b"] }),
        create(NodeSchema, { id: "b", capability: "echo", parentIds: ["a"] }),
      ],
    };
    expect(refusal(() => validateScheduleSpec({ ...spec, workflow: cycle }))).toMatch(/^schedule\.workflow\.nodes/);
    expect(refusal(() => validateScheduleSpec({ ...spec, workflow: { ...workflow, requestId: "r" } }))).toBe(
      "schedule.workflow.request_id: must be empty: each tick sets its own",
    );
    expect(
      refusal(() => validateScheduleSpec({ ...spec, workflow: { ...workflow, labels: { "bad key": "x" } } })),
    ).toMatch(/^schedule\.workflow\.labels: /);
    expect(refusal(() => validateScheduleSpec({ ...spec, workflow: { ...workflow, budget: { tokens: -1 } } }))).toMatch(
      /^schedule\.workflow\.budget\["tokens"\]: /,
    );
    expect(refusal(() => validateScheduleSpec({ ...spec, cron: "0 7 * *" }))).toMatch(/^schedule\.cron: /);
    expect(refusal(() => validateScheduleSpec({ ...spec, timezone: "Nowhere/Land" }))).toMatch(/^schedule\.timezone: /);
    expect(refusal(() => validateScheduleSpec({ ...spec, id: "no/slash" }))).toMatch(/^schedule\.id: /);
  });
});

describe("a tick's workflow", () => {
  it("carries the schedule label and a request id naming the schedule and the tick", () => {
    const tick = new Date("2026-12-04T06:00:00Z");
    const request = scheduledWorkflowRequest("nightly", { ...workflow, labels: { team: "data" } }, tick);
    expect(request.labels).toEqual({ team: "data", schedule: "nightly" });
    expect(request.requestId).toBe("schedule/nightly/2026-12-04T06:00:00.000Z");
    expect(scheduleRequestId("nightly", tick)).toBe(request.requestId);
  });
});
