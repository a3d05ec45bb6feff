import { WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_ADDR,
  DEFAULT_DASHBOARD_URL,
  UsageError,
  cliVersion,
  commandName,
  parseCliArgs,
  parsePeriod,
  parseWorkflowStatus,
} from "./args.js";

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
    for (const argv of [["--help"], ["-h"], ["help"], []]) {
      const help = parseCliArgs(argv, {}).command;
      expect(help, argv.join(" ")).toMatchObject({ kind: "help" });
      const text = (help as { text: string }).text;
      expect(text).toMatch(/^Usage: trellis \[options\] \[command\]/);
      for (const name of ["run", "watch", "get", "list", "cancel", "signal", "fork", "limits", "schedules"]) {
        expect(text).toMatch(new RegExp(`^ {2}${name}\\b`, "m"));
      }
      expect(text).toContain("TRELLIS_DASHBOARD_URL");
      expect(text).toContain("Exit codes: 0 success");
    }
  });

  it("gives each command its own --help, listing its flags and the global ones", () => {
    for (const argv of [
      ["run", "--help"],
      ["run", "x.json", "--help"],
      ["help", "run"],
      ["run", "-h"],
    ]) {
      const help = parseCliArgs(argv, {}).command as { kind: string; text: string };
      expect(help.kind, argv.join(" ")).toBe("help");
      expect(help.text).toMatch(/^Usage: trellis run \[options\] <FILE>/);
      for (const flag of ["--watch", "--chunks", "--input <JSON|@FILE>", "--addr <HOST:PORT>", "--token <TOKEN>"]) {
        expect(help.text, flag).toContain(flag);
      }
      expect(help.text).not.toContain("--status");
    }
    const list = parseCliArgs(["list", "--help"], {}).command as { text: string };
    for (const flag of ["--status <S>", "--label <KEY=VALUE>", "--limit <N>", "--json"])
      expect(list.text).toContain(flag);
    const set = parseCliArgs(["limits", "set", "--help"], {}).command as { text: string };
    expect(set.text).toMatch(/^Usage: trellis limits set \[options\] <KEY>/);
    expect(set.text).toContain("--max-concurrency <N>");
  });

  it("answers --version and -v with the CLI package's version", () => {
    expect(parseCliArgs(["--version"], {}, { version: "1.2.3" }).command).toEqual({
      kind: "version",
      version: "1.2.3",
    });
    expect(parseCliArgs(["-v"], {}).command).toEqual({ kind: "version", version: cliVersion() });
    expect(cliVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("rejects unknown commands and options, missing and extra arguments, and options of other commands", () => {
    const cases: [string[], string][] = [
      [["launch"], 'unknown command "launch"'],
      [["list", "--verbose"], "list: unknown option '--verbose'"],
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

describe("run: stdin and --input", () => {
  const files: Record<string, string> = {
    "input.json": '{"topic": "agents", "depth": 2}',
    "list.json": "[1, 2]",
    "broken.json": '{\n  "topic": "agents",\n  depth: 2\n}',
  };
  const readFile = (path: string): string => {
    const text = files[path];
    if (text === undefined) throw Object.assign(new Error(`ENOENT: no such file, open '${path}'`), { code: "ENOENT" });
    return text;
  };
  const parse = (argv: string[]) => parseCliArgs(argv, {}, { readFile }).command;

  it("takes - as the file (standard input) and --input as inline JSON or @file, replacing the file's input", () => {
    expect(parse(["run", "-"])).toEqual({ kind: "run", file: "-", watch: false });
    expect(parse(["run", "-", "--watch", "--input", '{"topic":"x"}'])).toEqual({
      kind: "run",
      file: "-",
      watch: true,
      input: { topic: "x" },
    });
    expect(parse(["run", "wf.yaml", "--input", "@input.json"])).toMatchObject({ input: { topic: "agents", depth: 2 } });
  });

  it("names --input, and the file, when the JSON is bad, the file is missing or the value is not an object", () => {
    const cases: [string, RegExp][] = [
      ['{"topic": ', /^--input: not JSON at line 1, column 11: Unexpected end of JSON input/],
      ["{nope}", /^--input: not JSON at line 1, column 2: .*\n\n\{nope\}\n \^$/],
      ["@missing.json", /^--input: missing\.json: no such file$/],
      ["@", /^--input: @ without a file name/],
      ["@broken.json", /^--input broken\.json: not JSON at line 3, column 3: .*\n\n {2}depth: 2\n {2}\^$/],
      ["@list.json", /^--input list\.json: must be a JSON object, got a list$/],
      ["42", /^--input: must be a JSON object, got a number$/],
    ];
    for (const [value, message] of cases) {
      expect(() => parse(["run", "wf.yaml", "--input", value]), value).toThrow(UsageError);
      expect(() => parse(["run", "wf.yaml", "--input", value]), value).toThrow(message);
    }
  });
});

describe("list: --json and --label", () => {
  it("parses --json and repeated --label KEY=VALUE into a label selector", () => {
    expect(parseCliArgs(["list", "--json"], {}).command).toEqual({
      kind: "list",
      status: undefined,
      limit: 50,
      json: true,
    });
    expect(
      parseCliArgs(["list", "--label", "team=search", "--label", "env=a=b", "--label", "empty="], {}).command,
    ).toEqual({ kind: "list", status: undefined, limit: 50, labels: { team: "search", env: "a=b", empty: "" } });
  });

  it("takes a label or a fork's node named like an Object property (constructor, __proto__) as any other", () => {
    const list = parseCliArgs(["list", "--label", "constructor=x", "--label", "__proto__=y"], {}).command;
    expect(list.kind === "list" && Object.entries(list.labels ?? {})).toEqual([
      ["constructor", "x"],
      ["__proto__", "y"],
    ]);
    const fork = parseCliArgs(["fork", ID, "--from", "constructor", "--input", 'constructor={"a":1}'], {}).command;
    expect(fork.kind === "fork" && Object.entries(fork.inputs)).toEqual([["constructor", { a: 1 }]]);
  });

  it("refuses a label that is not KEY=VALUE, or one key with two values", () => {
    const cases: [string[], string][] = [
      [["list", "--label", "team"], '--label: "team" is not KEY=VALUE'],
      [["list", "--label", "=x"], '--label: "=x" is not KEY=VALUE'],
      [["list", "--label", "a=1", "--label", "a=2"], '--label: "a" given twice with different values'],
      [["list", "--label"], "list: option '--label <KEY=VALUE>' argument missing"],
    ];
    for (const [argv, message] of cases) {
      expect(() => parseCliArgs(argv, {}), argv.join(" ")).toThrow(new UsageError(message));
    }
  });
});

describe("TRELLIS_DASHBOARD_URL", () => {
  it("defaults to the local dashboard and drops trailing slashes", () => {
    expect(parseCliArgs(["list"], {}).dashboardUrl).toBe(DEFAULT_DASHBOARD_URL);
    expect(DEFAULT_DASHBOARD_URL).toBe("http://localhost:3000");
    const env = { TRELLIS_DASHBOARD_URL: "https://trellis.example.com/ops/" };
    expect(parseCliArgs(["list"], env).dashboardUrl).toBe("https://trellis.example.com/ops");
  });

  it("refuses what is not an http(s) URL, except for --help and --version", () => {
    expect(() => parseCliArgs(["list"], { TRELLIS_DASHBOARD_URL: "localhost:3000" })).toThrow(
      /^TRELLIS_DASHBOARD_URL: "localhost:3000" is not an http or https URL$/,
    );
    expect(() => parseCliArgs(["list"], { TRELLIS_DASHBOARD_URL: "not a url" })).toThrow(/is not a URL/);
    expect(parseCliArgs(["--help"], { TRELLIS_DASHBOARD_URL: "not a url" }).command.kind).toBe("help");
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
