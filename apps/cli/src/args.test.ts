import { WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { DEFAULT_ADDR, UsageError, parseCliArgs, parseWorkflowStatus } from "./args.js";

const ID = "6a4f1c39-5e45-48fb-9edb-6f72d9f305d9";

describe("parseCliArgs", () => {
  it("parses each command with its argument and options", () => {
    expect(parseCliArgs(["run", "wf.yaml", "--watch"], {}).command).toEqual({
      kind: "run",
      file: "wf.yaml",
      watch: true,
    });
    expect(parseCliArgs(["run", "wf.json"], {}).command).toEqual({ kind: "run", file: "wf.json", watch: false });
    expect(parseCliArgs(["watch", ID], {}).command).toEqual({ kind: "watch", workflowId: ID });
    expect(parseCliArgs(["get", ID, "--json"], {}).command).toEqual({ kind: "get", workflowId: ID, json: true });
    expect(parseCliArgs(["list"], {}).command).toEqual({ kind: "list", status: undefined, limit: 50 });
    expect(parseCliArgs(["list", "--status", "failed", "--limit", "7"], {}).command).toEqual({
      kind: "list",
      status: WorkflowStatus.FAILED,
      limit: 7,
    });
    for (const action of ["cancel", "pause", "resume", "retry"] as const) {
      expect(parseCliArgs([action, ID], {}).command).toEqual({ kind: "action", action, workflowId: ID });
    }
  });

  it("takes the address and token from flags, else TRELLIS_ADDR and TRELLIS_TOKEN, else the defaults", () => {
    expect(parseCliArgs(["list"], {})).toMatchObject({ addr: DEFAULT_ADDR, token: undefined });
    const env = { TRELLIS_ADDR: "api:50051", TRELLIS_TOKEN: "s3cret" };
    expect(parseCliArgs(["list"], env)).toMatchObject({ addr: "api:50051", token: "s3cret" });
    expect(parseCliArgs(["list", "--addr", "other:1", "--token", "t"], env)).toMatchObject({
      addr: "other:1",
      token: "t",
    });
    expect(parseCliArgs(["list"], { TRELLIS_TOKEN: "" }).token).toBeUndefined();
  });

  it("answers help for --help, -h, `help` and no command at all", () => {
    for (const argv of [["--help"], ["-h"], ["help"], [], ["run", "x.json", "--help"]]) {
      expect(parseCliArgs(argv, {}).command).toEqual({ kind: "help" });
    }
  });

  it("rejects unknown commands and options, missing and extra arguments, and options of other commands", () => {
    const cases: [string[], string][] = [
      [["launch"], 'unknown command "launch"'],
      [["list", "--verbose"], "Unknown option '--verbose'"],
      [["get"], "get: workflow ID required"],
      [["run"], "run: FILE required"],
      [["cancel", ID, ID], `cancel: unexpected argument "${ID}"`],
      [["list", "extra"], 'list: unexpected argument "extra"'],
      [["get", ID, "--watch"], "get: --watch is not an option of this command"],
      [["run", "f.json", "--status", "failed"], "run: --status is not an option of this command"],
      [["list", "--limit", "0"], '--limit: "0" is not a whole number 1..1000'],
      [["list", "--limit", "ten"], '--limit: "ten" is not a whole number 1..1000'],
      [["list", "--addr", " "], "--addr: empty"],
    ];
    for (const [argv, message] of cases) {
      expect(() => parseCliArgs(argv, {}), argv.join(" ")).toThrow(UsageError);
      expect(() => parseCliArgs(argv, {}), argv.join(" ")).toThrow(message);
    }
  });
});

describe("parseWorkflowStatus", () => {
  it("accepts lower case, upper case and the full enum name", () => {
    expect(parseWorkflowStatus("running")).toBe(WorkflowStatus.RUNNING);
    expect(parseWorkflowStatus("PAUSED")).toBe(WorkflowStatus.PAUSED);
    expect(parseWorkflowStatus("WORKFLOW_STATUS_CANCELLED")).toBe(WorkflowStatus.CANCELLED);
  });

  it("lists the statuses when given something else", () => {
    expect(() => parseWorkflowStatus("unspecified")).toThrow(
      '--status: "unspecified" is not one of pending, running, paused, succeeded, failed, cancelled',
    );
  });
});
