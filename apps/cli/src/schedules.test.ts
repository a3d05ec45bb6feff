import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ScheduleSchema } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { UsageError, commandName, parseCliArgs } from "./args.js";
import { describeSchedules } from "./commands.js";

describe("trellis schedules: arguments", () => {
  it("parses list, create, pause, resume and delete", () => {
    expect(parseCliArgs(["schedules"], {}).command).toEqual({ kind: "schedules" });
    expect(parseCliArgs(["schedules", "list"], {}).command).toEqual({ kind: "schedules" });
    const created = parseCliArgs(
      ["schedules", "create", "nightly", "--cron", "0 7 * * *", "--timezone", "Europe/Paris", "--file", "wf.yaml"],
      {},
    ).command;
    expect(created).toEqual({
      kind: "create-schedule",
      id: "nightly",
      cron: "0 7 * * *",
      timezone: "Europe/Paris",
      file: "wf.yaml",
    });
    expect(commandName(created)).toBe("schedules create");
    expect(parseCliArgs(["schedules", "create", "n", "--cron", "* * * * *", "--file", "f.json"], {}).command).toEqual({
      kind: "create-schedule",
      id: "n",
      cron: "* * * * *",
      timezone: "",
      file: "f.json",
    });
    for (const action of ["pause", "resume", "delete"] as const) {
      const command = parseCliArgs(["schedules", action, "nightly"], {}).command;
      expect(command).toEqual({ kind: "schedule-action", action, id: "nightly" });
      expect(commandName(command)).toBe(`schedules ${action}`);
    }
  });

  it("refuses a missing id, --cron or --file, an unknown subcommand and options of other commands", () => {
    const usage = (argv: string[]) => () => parseCliArgs(argv, {});
    expect(usage(["schedules", "create", "--cron", "* * * * *", "--file", "f"])).toThrow(
      "schedules create: schedule ID required",
    );
    expect(usage(["schedules", "create", "n", "--file", "f"])).toThrow("schedules create: --cron required");
    expect(usage(["schedules", "create", "n", "--cron", "* * * * *"])).toThrow("schedules create: --file required");
    expect(usage(["schedules", "pause"])).toThrow("schedules pause: schedule ID required");
    expect(usage(["schedules", "stop", "n"])).toThrow('schedules: unknown subcommand "stop"');
    expect(usage(["schedules", "pause", "n", "--cron", "x"])).toThrow(UsageError);
    expect(usage(["run", "f.yaml", "--cron", "x"])).toThrow("run: --cron is not an option of this command");
  });
});

describe("trellis schedules: table", () => {
  it("shows each schedule's cron, zone, state, next run (none while paused) and last workflow", () => {
    const lines = describeSchedules([
      create(ScheduleSchema, {
        id: "nightly",
        cron: "0 7 * * *",
        timezone: "Europe/Paris",
        workflow: { name: "nightly report" },
        nextRunAt: timestampFromDate(new Date("2026-12-04T06:00:00Z")),
        lastWorkflowId: "0b7a3c1e-9f4d-4f7a-8c7e-2d1f5a6b7c8d",
      }),
      create(ScheduleSchema, { id: "weekly", cron: "0 9 * * 1", timezone: "UTC", paused: true }),
    ]);
    expect(lines).toEqual([
      "ID       CRON       TIMEZONE      STATE   NEXT RUN              WORKFLOW        LAST WORKFLOW",
      "nightly  0 7 * * *  Europe/Paris  ACTIVE  2026-12-04T06:00:00Z  nightly report  0b7a3c1e-9f4d-4f7a-8c7e-2d1f5a6b7c8d",
      "weekly   0 9 * * 1  UTC           PAUSED  -                     -               -",
    ]);
    expect(describeSchedules([])[0]).toMatch(/^no schedules/);
  });
});
