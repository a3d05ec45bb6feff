import { WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { DEFAULT_ADDR, UsageError, commandName, parseCliArgs, parsePeriod, parseWorkflowStatus } from "./args.js";

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
    expect(parseCliArgs(["get", ID, "--node", "summarize", "--json"], {}).command).toEqual({
      kind: "get",
      workflowId: ID,
      json: true,
      nodeId: "summarize",
    });
  });

  it("parses `limits`, `limits set` with its options and `limits delete`", () => {
    expect(parseCliArgs(["limits"], {}).command).toEqual({ kind: "limits" });
    expect(parseCliArgs(["limits", "list"], {}).command).toEqual({ kind: "limits" });
    expect(parseCliArgs(["limits", "set", "model:gpt-4o", "--max-concurrency", "3"], {}).command).toEqual({
      kind: "set-limit",
      limit: { key: "model:gpt-4o", maxConcurrency: 3, rate: 0, periodMs: undefined, burst: undefined, unit: "" },
    });
    const argv = ["limits", "set", "tenant:acme", "--rate", "100000", "--period", "1m", "--burst", "1.5e5"];
    expect(parseCliArgs([...argv, "--unit", "tokens"], {}).command).toEqual({
      kind: "set-limit",
      limit: { key: "tenant:acme", maxConcurrency: 0, rate: 100_000, periodMs: 60_000, burst: 150_000, unit: "tokens" },
    });
    expect(parseCliArgs(["limits", "delete", "tenant:acme"], {}).command).toEqual({
      kind: "delete-limit",
      key: "tenant:acme",
    });
  });

  it("parses `fork` with --from, repeated --input NODE=JSON and --watch", () => {
    expect(parseCliArgs(["fork", ID, "--from", "b,c"], {}).command).toEqual({
      kind: "fork",
      workflowId: ID,
      fromNodeIds: ["b", "c"],
      inputs: {},
      watch: false,
    });
    expect(
      parseCliArgs(["fork", ID, "--from", "c", "--input", 'c={"prompt":"a=b"}', "--input", "d={}", "--watch"], {})
        .command,
    ).toEqual({
      kind: "fork",
      workflowId: ID,
      fromNodeIds: ["c"],
      inputs: { c: { prompt: "a=b" }, d: {} },
      watch: true,
    });
  });

  it("refuses a fork without --from, an empty node id, and an --input that is not NODE=<JSON object>", () => {
    const refusals: [string[], string][] = [
      [["fork", ID], "fork: --from required (the node ids to run again from, a,b)"],
      [["fork", "--from", "a"], "fork: workflow ID required"],
      [["fork", ID, "--from", "a,,b"], '--from: "a,,b" has an empty node id'],
      [["fork", ID, "--from", "a", "--input", "{}"], '--input: "{}" is not NODE=JSON'],
      [["fork", ID, "--from", "a", "--input", "a=[1]"], "--input a: must be a JSON object"],
      [["fork", ID, "--from", "a", "--input", "a={}", "--input", "a={}"], '--input: node "a" given twice'],
      [["get", ID, "--from", "a"], "get: --from is not an option of this command"],
    ];
    for (const [argv, message] of refusals) {
      expect(() => parseCliArgs(argv, {}), argv.join(" ")).toThrow(new UsageError(message));
    }
    expect(() => parseCliArgs(["fork", ID, "--from", "a", "--input", "a={"], {})).toThrow(/^--input a: not JSON/);
  });

  it("parses `signal` with --output JSON, --reject with --message, and --request-id", () => {
    expect(parseCliArgs(["signal", ID, "approve", "--output", '{"approved":true}'], {}).command).toEqual({
      kind: "signal",
      signal: {
        workflowId: ID,
        nodeId: "approve",
        output: { approved: true },
        reject: false,
        message: "",
        requestId: "",
      },
    });
    expect(parseCliArgs(["signal", ID, "approve"], {}).command).toMatchObject({ signal: { output: undefined } });
    expect(
      parseCliArgs(["signal", ID, "approve", "--reject", "--message", "too costly", "--request-id", "r1"], {}).command,
    ).toEqual({
      kind: "signal",
      signal: {
        workflowId: ID,
        nodeId: "approve",
        output: undefined,
        reject: true,
        message: "too costly",
        requestId: "r1",
      },
    });
  });

  it("refuses a signal without its node, with a bad --output, or --output with --reject", () => {
    const refusals: [string[], string][] = [
      [["signal"], "signal: workflow ID required"],
      [["signal", ID], "signal: NODE required"],
      [["signal", ID, "a", "b"], 'signal: unexpected argument "b"'],
      [["signal", ID, "a", "--reject", "--output", "1"], "signal: --output and --reject do not go together"],
      [["signal", ID, "a", "--message", "why"], "signal: --message goes with --reject"],
      [["signal", ID, "a", "--request-id", " "], "--request-id: empty"],
      [["get", ID, "--reject"], "get: --reject is not an option of this command"],
    ];
    for (const [argv, message] of refusals) {
      expect(() => parseCliArgs(argv, {}), argv.join(" ")).toThrow(new UsageError(message));
    }
    expect(() => parseCliArgs(["signal", ID, "a", "--output", "{"], {})).toThrow(/^--output: not JSON/);
  });

  it("names commands in messages as they are typed", () => {
    expect(commandName(parseCliArgs(["limits", "set", "k", "--rate", "1"], {}).command)).toBe("limits set");
    expect(commandName(parseCliArgs(["limits", "delete", "k"], {}).command)).toBe("limits delete");
    expect(commandName(parseCliArgs(["pause", ID], {}).command)).toBe("pause");
    expect(commandName(parseCliArgs(["limits"], {}).command)).toBe("limits");
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
      [["get", ID, "--node", ""], "--node: empty"],
      [["list", "--node", "a"], "list: --node is not an option of this command"],
      [["limits", "show"], 'limits: unknown subcommand "show" (list, set, delete)'],
      [["limits", "extra"], 'limits: unknown subcommand "extra" (list, set, delete)'],
      [["limits", "list", "--rate", "1"], "limits list: --rate is not an option of this command"],
      [["limits", "set"], "limits set: KEY required"],
      [["limits", "delete", "a", "b"], 'limits delete: unexpected argument "b"'],
      [["limits", "set", "k"], "limits set: --max-concurrency or --rate required"],
      [["limits", "set", "k", "--max-concurrency", "2", "--burst", "5"], "limits set: --burst applies to a rate"],
      [["limits", "set", "k", "--max-concurrency=-1"], '--max-concurrency: "-1" is not a whole number'],
      [["limits", "set", "k", "--max-concurrency", "2.5"], '--max-concurrency: "2.5" is not a whole number'],
      [["limits", "set", "k", "--max-concurrency", "3000000000"], '"3000000000" is not a whole number 0..2147483647'],
      [["limits", "set", "k", "--rate", "NaN"], '--rate: "NaN" is not a number >= 0'],
      [["limits", "set", "k", "--rate=-5"], '--rate: "-5" is not a number >= 0'],
      [["limits", "set", "k", "--rate", "Infinity"], '--rate: "Infinity" is not a number >= 0'],
      [["limits", "set", "k", "--rate", "5", "--burst", ""], '--burst: "" is not a number >= 0'],
      [["limits", "set", "k", "--rate", "5", "--period", "60"], '--period: "60" is not a duration'],
      [["limits", "set", "k", "--rate", "5", "--period", "0s"], '--period: "0s" is shorter than 1ms'],
      [["limits", "set", " ", "--rate", "5"], "limits set: KEY is empty"],
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

describe("parsePeriod", () => {
  it("reads ms, s, m and h, alone or together, in milliseconds", () => {
    expect(parsePeriod("500ms")).toBe(500);
    expect(parsePeriod("30s")).toBe(30_000);
    expect(parsePeriod("1m")).toBe(60_000);
    expect(parsePeriod("1h")).toBe(3_600_000);
    expect(parsePeriod("1m30s")).toBe(90_000);
    expect(parsePeriod("1.5s")).toBe(1_500);
  });

  it("refuses what is not a duration", () => {
    for (const text of ["", "1", "1d", "m", "-1s", "1s ", "1 s"])
      expect(() => parsePeriod(text), text).toThrow(UsageError);
  });
});
