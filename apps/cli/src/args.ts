import { readFileSync } from "node:fs";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { WorkflowStatus } from "@trellis/proto";
import { Command as CommanderCommand, type CommanderError, Help } from "commander";
import { parseJsonText } from "./json-text.js";

/** What `trellis --help` says below the commands: settings and exit codes. */
const HELP_FOOTER = `
Settings (environment):
  TRELLIS_ADDR           the api's gRPC address (--addr), default localhost:50051
  TRELLIS_TOKEN          bearer token (--token), when the api has API_TOKEN or API_TOKENS_FILE set
  TRELLIS_DASHBOARD_URL  the dashboard \`run\` and \`fork\` link to, default http://localhost:3000

Exit codes: 0 success (\`run --watch\` and \`watch\`: the workflow SUCCEEDED), 1 the workflow FAILED or was
CANCELLED, or a call failed, 2 bad usage, 130 interrupted (the workflow keeps running).

\`trellis COMMAND --help\` shows a command's options.`;

/** Where the api listens when neither --addr nor TRELLIS_ADDR says. */
export const DEFAULT_ADDR = "localhost:50051";

/** Where the dashboard is when TRELLIS_DASHBOARD_URL does not say: the one `npm start` serves. */
export const DEFAULT_DASHBOARD_URL = "http://localhost:3000";

/** The workflow actions the CLI offers, as commands. */
export const ACTIONS = ["cancel", "pause", "resume", "retry"] as const;

/** One of {@link ACTIONS}. */
export type ActionName = (typeof ACTIONS)[number];

/** What `trellis limits set` asks for: a whole Limit, replacing the key's current one. */
export interface LimitSpec {
  key: string;
  /** 0 = no cap. */
  maxConcurrency: number;
  /** Units per period; 0 = no rate. */
  rate: number;
  /** The rate's period; undefined leaves the api's default (1s). */
  periodMs: number | undefined;
  /** Bucket size; undefined leaves the api's default (the rate). */
  burst: number | undefined;
  /** "" = one unit per node start, else a usage unit (e.g. "tokens"). */
  unit: string;
}

/** What `trellis signal` sends: a PASS with an output, or a rejection with a message. */
export interface SignalSpec {
  workflowId: string;
  nodeId: string;
  /** The node's output on PASS (any JSON value); undefined: none. */
  output: JsonValue | undefined;
  reject: boolean;
  /** Why it is rejected (the node's TASK_ERROR); "" on PASS. */
  message: string;
  /** "" = none. */
  requestId: string;
}

/** What the command line asks for. */
export type Command =
  | { kind: "help"; text: string }
  | { kind: "version"; version: string }
  | {
      kind: "run";
      /** A YAML or JSON file, or "-" for standard input. */
      file: string;
      watch: boolean;
      chunks?: boolean;
      /** `--input`: the workflow input, replacing the file's. */
      input?: JsonObject;
    }
  | { kind: "watch"; workflowId: string; chunks?: boolean }
  | { kind: "get"; workflowId: string; json: boolean; nodeId?: string | undefined; events?: boolean | undefined }
  | {
      kind: "list";
      status: WorkflowStatus | undefined;
      limit: number;
      /** `--json`: one JSON document instead of a table. */
      json?: boolean;
      /** `--label k=v`: only workflows carrying every one of these labels. */
      labels?: Record<string, string>;
    }
  | { kind: "action"; action: ActionName; workflowId: string }
  | { kind: "signal"; signal: SignalSpec }
  | { kind: "fork"; workflowId: string; fromNodeIds: string[]; inputs: Record<string, JsonObject>; watch: boolean }
  | { kind: "limits" }
  | { kind: "set-limit"; limit: LimitSpec }
  | { kind: "delete-limit"; key: string }
  | { kind: "schedules" }
  | { kind: "create-schedule"; id: string; cron: string; timezone: string; file: string }
  | { kind: "schedule-action"; action: ScheduleActionName; id: string };

/** What `trellis schedules pause|resume|delete ID` does. */
export type ScheduleActionName = "pause" | "resume" | "delete";

/** How a command is named in messages: `list`, `cancel`, `limits set`. */
export function commandName(command: Command): string {
  switch (command.kind) {
    case "action":
      return command.action;
    case "set-limit":
      return "limits set";
    case "delete-limit":
      return "limits delete";
    case "create-schedule":
      return "schedules create";
    case "schedule-action":
      return `schedules ${command.action}`;
    default:
      return command.kind;
  }
}

/** A parsed command line: the command and how to reach the api. */
export interface CliArgs {
  command: Command;
  /** `host:port` of the api. */
  addr: string;
  /** Bearer token, if any. */
  token: string | undefined;
  /** The dashboard's base URL, without a trailing slash (`http://localhost:3000`). */
  dashboardUrl: string;
}

/** A command line that cannot be run; the message says why (exit code 2). */
export class UsageError extends Error {
  override readonly name = "UsageError";
  /** The command it is about (`run`, `limits set`), "" for the command line as a whole. */
  declare readonly command: string;

  constructor(message: string, command = "") {
    super(message);
    // Not enumerable: two UsageErrors with one message compare equal, whichever command raised them.
    Object.defineProperty(this, "command", { value: command, enumerable: false });
  }
}

/** What {@link parseCliArgs} needs besides the command line and the environment. */
export interface ParseOptions {
  /** What `--version` prints. @default the CLI package's version */
  version?: string;
  /** Reads the file of `--input @FILE`. @default readFileSync(path, "utf8") */
  readFile?: (path: string) => string;
}

const STATUS_NAMES = ["pending", "running", "paused", "succeeded", "failed", "cancelled"] as const;

/** `running`, `RUNNING` or `WORKFLOW_STATUS_RUNNING` -> WorkflowStatus.RUNNING. */
export function parseWorkflowStatus(text: string): WorkflowStatus {
  const name = text
    .trim()
    .toLowerCase()
    .replace(/^workflow_status_/, "");
  if (!(STATUS_NAMES as readonly string[]).includes(name)) {
    throw new UsageError(`--status: "${text}" is not one of ${STATUS_NAMES.join(", ")}`);
  }
  return WorkflowStatus[name.toUpperCase() as keyof typeof WorkflowStatus];
}

function parseLimit(text: string | undefined): number {
  if (text === undefined) return 50;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 1000)
    throw new UsageError(`--limit: "${text}" is not a whole number 1..1000`);
  return n;
}

/** A whole number 0..2^31-1 (an int32 count). */
function parseCount(text: string, flag: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n > 2_147_483_647) {
    throw new UsageError(`--${flag}: "${text}" is not a whole number 0..2147483647`);
  }
  return n;
}

/** A finite number >= 0 (`100000`, `0.5`, `1e5`). */
function parseAmount(text: string, flag: string): number {
  const n = text.trim() === "" ? Number.NaN : Number(text);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${flag}: "${text}" is not a number >= 0`);
  return n;
}

const PERIOD_UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** `500ms`, `30s`, `1m`, `1h`, `1m30s` -> milliseconds (at least 1). */
export function parsePeriod(text: string): number {
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(text) ? text.match(/\d+(?:\.\d+)?(?:ms|s|m|h)/g) : null;
  if (parts === null) throw new UsageError(`--period: "${text}" is not a duration such as 500ms, 30s, 1m or 1h`);
  let ms = 0;
  for (const part of parts) {
    const unit = /[a-z]+$/.exec(part)![0];
    ms += Number(part.slice(0, -unit.length)) * PERIOD_UNIT_MS[unit]!;
  }
  ms = Math.round(ms);
  if (ms < 1) throw new UsageError(`--period: "${text}" is shorter than 1ms`);
  return ms;
}

/** The CLI package's version (apps/cli/package.json), what `trellis --version` prints. */
export function cliVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: string };
  return pkg.version ?? "0.0.0";
}

/** The options a command was given, as commander hands them over. */
type Values = Record<string, string | boolean | string[] | undefined>;

/** Thrown from commander's exit hook when it printed help or the version instead of running a command. */
class Printed extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** `trellis limits set` -> `limits set`. */
function pathOf(command: CommanderCommand): string {
  const names: string[] = [];
  for (let c: CommanderCommand | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** Every command of the tree under `root`, `root` included. */
function allCommands(root: CommanderCommand): CommanderCommand[] {
  return [root, ...root.commands.flatMap((c) => allCommands(c as CommanderCommand))];
}

/** `repeatable` option values collected in order. */
const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/**
 * Parses `argv` (without `node` and the script) and the environment into a {@link CliArgs}; throws UsageError for
 * an unknown command or option, a missing or extra argument, or a bad value. `--help` (any command's) and `--version`
 * come back as the `help` and `version` commands, with the text to print.
 */
export function parseCliArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  options: ParseOptions = {},
): CliArgs {
  let command: Command | undefined;
  let globals: Values = {};
  let printed = "";
  const readFile = options.readFile ?? ((path: string) => readFileSync(path, "utf8"));
  const set = (made: Command, cmd: CommanderCommand): void => {
    command = made;
    globals = cmd.optsWithGlobals();
  };

  const program = new CommanderCommand("trellis")
    .description("Trellis CLI: create, follow and steer workflows through the Trellis api.")
    .version(options.version ?? cliVersion(), "-v, --version", "print the version")
    .option("--addr <HOST:PORT>", "the api's gRPC address (env TRELLIS_ADDR, default localhost:50051)")
    .option("--token <TOKEN>", "bearer token, when the api has API_TOKEN set (env TRELLIS_TOKEN)")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .configureHelp({
      helpWidth: 110,
      showGlobalOptions: true,
      // `limits [list|set|delete]` rather than commander's `limits [command...]`.
      subcommandTerm: (cmd) =>
        cmd.commands.length > 0
          ? `${cmd.name()} [${cmd.commands.map((c) => c.name()).join("|")}]`
          : new Help().subcommandTerm(cmd),
    })
    .configureOutput({
      writeOut: (text) => {
        printed += text;
      },
      writeErr: (text) => {
        printed += text;
      },
      outputError: () => {},
    })
    .addHelpText("after", HELP_FOOTER);

  program
    .command("run")
    .summary("create a workflow from a YAML or JSON file (FILE, or - for standard input)")
    .description(
      "Create a workflow from a YAML or JSON file: a CreateWorkflowRequest in protobuf JSON form (`parentIds` or `parent_ids`); FILE - reads it from standard input. Prints the workflow's id and its dashboard link.",
    )
    .argument("<FILE>", "the workflow file, or - for standard input")
    .option("--watch", "follow the workflow like `watch` until it ends (exit 0 only when it SUCCEEDED)")
    .option("--chunks", "with --watch: also print the text running nodes write")
    .option("--input <JSON|@FILE>", "the workflow input (a JSON object, or @file.json), replacing the file's")
    .action((file: string, values: Values, cmd: CommanderCommand) => {
      const input = values.input === undefined ? {} : { input: parseWorkflowInput(values.input as string, readFile) };
      set({ kind: "run", file, watch: values.watch === true, ...chunksOf(values.chunks), ...input }, cmd);
    });

  program
    .command("watch")
    .summary("follow a workflow live until it ends")
    .description(
      "Follow a workflow live until it ends: per-node status lines and a progress bar (replayed from its start).",
    )
    .argument("<ID>", "the workflow id")
    .option("--chunks", "also print the text running nodes write (their output chunks)")
    .action((workflowId: string, values: Values, cmd: CommanderCommand) => {
      set({ kind: "watch", workflowId, ...chunksOf(values.chunks) }, cmd);
    });

  program
    .command("get")
    .summary("show a workflow and its nodes, one node's attempts, or its events")
    .description(
      "Show a workflow, its usage and budget, and its nodes: status, attempts, duration of the last attempt, output (shortened) and why a node waits or failed.",
    )
    .argument("<ID>", "the workflow id")
    .option("--node <NODE>", "one node and every attempt it made, with what each spent")
    .option("--json", "the Workflow (or with --node the GetNodeResponse) as protobuf JSON")
    .option("--events", "the workflow's events so far, each with who caused it (actor: the api token)")
    .action((workflowId: string, values: Values, cmd: CommanderCommand) => {
      const node = values.node as string | undefined;
      if (node?.trim() === "") throw new UsageError("--node: empty", "get");
      if (values.events && (node !== undefined || values.json)) {
        throw new UsageError("get: --events does not go with --node or --json", "get");
      }
      set(
        {
          kind: "get",
          workflowId,
          json: values.json === true,
          nodeId: node,
          events: values.events as boolean | undefined,
        },
        cmd,
      );
    });

  program
    .command("list")
    .summary("list workflows, newest first")
    .description("List workflows, newest first.")
    .option("--status <S>", "only this status: pending, running, paused, succeeded, failed, cancelled")
    .option("--label <KEY=VALUE>", "only workflows with this label (repeatable: all of them)", collect)
    .option("--limit <N>", "at most N workflows, 1..1000 (default 50)")
    .option("--json", "one JSON document: {workflows: [...]} in protobuf JSON form")
    .action((values: Values, cmd: CommanderCommand) => {
      const labels = values.label === undefined ? {} : { labels: parseLabels(values.label as string[]) };
      set(
        {
          kind: "list",
          status: values.status === undefined ? undefined : parseWorkflowStatus(values.status as string),
          limit: parseLimit(values.limit as string | undefined),
          ...(values.json ? { json: true } : {}),
          ...labels,
        },
        cmd,
      );
    });

  for (const action of ACTIONS) {
    program
      .command(action)
      .summary(`${action} a workflow`)
      .description(`Apply ${action.toUpperCase()} to a workflow and print its new status.`)
      .argument("<ID>", "the workflow id")
      .action((workflowId: string, _values: Values, cmd: CommanderCommand) => {
        set({ kind: "action", action, workflowId }, cmd);
      });
  }

  program
    .command("signal")
    .summary("complete a node that waits for a signal (PASS with an output, or --reject)")
    .description(
      "Complete a node that waits for a signal (a node with `wait`): PASS with the output JSON (default null), or with --reject FAIL it (TASK_ERROR, the message). Sent before the node is ready, the signal is kept and completes it then; the same request id again is answered like the first.",
    )
    .argument("<ID>", "the workflow id")
    .argument("<NODE>", "the waiting node's id")
    .option("--output <JSON>", "the node's output on PASS")
    .option("--reject", "FAIL the node instead")
    .option("--message <TEXT>", "with --reject: why")
    .option("--request-id <RID>", "idempotency key: the same one again is answered like the first")
    .action((workflowId: string, nodeId: string, values: Values, cmd: CommanderCommand) => {
      set({ kind: "signal", signal: signalSpec(workflowId, nodeId, values) }, cmd);
    });

  program
    .command("fork")
    .summary("a new workflow from another: some nodes run again, the others keep their outputs")
    .description(
      "A new workflow from ID (any status): the nodes of --from and everything downstream run again (with --input's new inputs), the others keep their outputs.",
    )
    .argument("<ID>", "the workflow to fork")
    .option("--from <A,B>", "the node ids to run again from (required)")
    .option("--input <NODE=JSON>", "a new input (a JSON object) for a node that runs again (repeatable)", collect)
    .option("--watch", "follow the new workflow like `watch`")
    .action((workflowId: string, values: Values, cmd: CommanderCommand) => {
      set(
        {
          kind: "fork",
          workflowId,
          fromNodeIds: parseFrom(values.from as string | undefined),
          inputs: parseInputs((values.input as string[] | undefined) ?? []),
          watch: values.watch === true,
        },
        cmd,
      );
    });

  const limits = program
    .command("limits")
    .summary("list, set or delete flow-control limits (no subcommand: list)")
    .description("The flow-control limits (docs/flow-control.md); without a subcommand, `limits list`.")
    .usage("[list | set KEY [options] | delete KEY]")
    .argument("[command...]")
    .action(([sub]: string[], _values: Values, cmd: CommanderCommand) => {
      if (sub !== undefined) throw new UsageError(`limits: unknown subcommand "${sub}" (list, set, delete)`, "limits");
      set({ kind: "limits" }, cmd);
    });
  limits
    .command("list")
    .description("List the limits: cap, running, waiting, rate, units available, throttled until.")
    .action((_values: Values, cmd: CommanderCommand) => set({ kind: "limits" }, cmd));
  limits
    .command("set")
    .description(
      "Create or replace a key's limit (e.g. model:gpt-4o, tenant:acme, capability:llm.chat); options left out take their defaults: no cap, no rate, period 1s, burst = rate, one unit per node start.",
    )
    .argument("<KEY>", "the limit key")
    .option("--max-concurrency <N>", "at most N nodes of the key at once")
    .option("--rate <R>", "R units per period")
    .option("--period <P>", "the rate's period: 500ms, 30s, 1m, 1h (default 1s)")
    .option("--burst <B>", "the bucket's size (default R)")
    .option("--unit <U>", 'a usage unit such as tokens (default "": one unit per node start)')
    .action((key: string, values: Values, cmd: CommanderCommand) => {
      set({ kind: "set-limit", limit: limitSpec(key, values) }, cmd);
    });
  limits
    .command("delete")
    .description("Remove a key's limit; the nodes it held back run.")
    .argument("<KEY>", "the limit key")
    .action((key: string, _values: Values, cmd: CommanderCommand) => set({ kind: "delete-limit", key }, cmd));

  const schedules = program
    .command("schedules")
    .summary("list, create, pause, resume or delete cron schedules (no subcommand: list)")
    .description("The cron schedules; without a subcommand, `schedules list`.")
    .usage("[list | create ID [options] | pause|resume|delete ID]")
    .argument("[command...]")
    .action(([sub]: string[], _values: Values, cmd: CommanderCommand) => {
      if (sub !== undefined) {
        throw new UsageError(
          `schedules: unknown subcommand "${sub}" (list, create, pause, resume, delete)`,
          "schedules",
        );
      }
      set({ kind: "schedules" }, cmd);
    });
  schedules
    .command("list")
    .description("List the schedules: cron, time zone, next run, last workflow.")
    .action((_values: Values, cmd: CommanderCommand) => set({ kind: "schedules" }, cmd));
  schedules
    .command("create")
    .description(
      'Create a schedule: at each tick of the 5-field CRON ("0 7 * * *") in TZ it creates the workflow of FILE (YAML ' +
        "or JSON, as for run), labelled schedule=ID.",
    )
    .argument("<ID>", "the schedule id")
    .option("--cron <CRON>", 'the 5-field cron, e.g. "0 7 * * *" (required)')
    .option("--timezone <TZ>", "an IANA time zone such as Europe/Paris (default UTC)")
    .option("--file <FILE>", "the workflow to create (required)")
    .action((id: string, values: Values, cmd: CommanderCommand) => {
      if (values.cron === undefined) {
        throw new UsageError('schedules create: --cron required (e.g. "0 7 * * *")', "schedules create");
      }
      if (values.file === undefined) {
        throw new UsageError("schedules create: --file required (the workflow to create)", "schedules create");
      }
      set(
        {
          kind: "create-schedule",
          id,
          cron: values.cron as string,
          timezone: (values.timezone as string | undefined) ?? "",
          file: values.file as string,
        },
        cmd,
      );
    });
  for (const action of ["pause", "resume", "delete"] as const) {
    schedules
      .command(action)
      .description(
        action === "pause"
          ? "Pause a schedule: it creates nothing until resumed."
          : action === "resume"
            ? "Resume a schedule, from its next tick after now."
            : "Remove a schedule.",
      )
      .argument("<ID>", "the schedule id")
      .action((id: string, _values: Values, cmd: CommanderCommand) =>
        set({ kind: "schedule-action", action, id }, cmd),
      );
  }

  const optionsOfOthers = new Map<string, string>();
  for (const cmd of allCommands(program)) {
    for (const option of cmd.options) if (option.long) optionsOfOthers.set(option.long, pathOf(cmd));
    cmd.exitOverride((error) => {
      if (error.exitCode === 0 || error.code === "commander.help") throw new Printed(error.code);
      throw usageErrorOf(error, cmd, optionsOfOthers);
    });
  }

  try {
    if (argv.length === 0) program.help();
    program.parse([...argv], { from: "user" });
  } catch (error) {
    if (error instanceof Printed) {
      const shown: Command =
        error.code === "commander.version"
          ? { kind: "version", version: printed.trim() }
          : { kind: "help", text: printed.trimEnd() };
      // Help and the version need no api: settings that would stop a command do not stop them.
      return { command: shown, addr: DEFAULT_ADDR, token: undefined, dashboardUrl: DEFAULT_DASHBOARD_URL };
    }
    throw error;
  }
  if (command === undefined) throw new UsageError("no command (`trellis --help` lists them)");
  return { command, ...connection(globals, env) };
}

/** --addr, --token and the dashboard's address, from the flags, else the environment, else the defaults. */
function connection(values: Values, env: Record<string, string | undefined>): Omit<CliArgs, "command"> {
  const addr = (values.addr as string | undefined) ?? env.TRELLIS_ADDR ?? DEFAULT_ADDR;
  if (addr.trim() === "") throw new UsageError("--addr: empty");
  const token = (values.token as string | undefined) ?? (env.TRELLIS_TOKEN || undefined);
  return { addr, token, dashboardUrl: parseDashboardUrl(env.TRELLIS_DASHBOARD_URL || DEFAULT_DASHBOARD_URL) };
}

/** TRELLIS_DASHBOARD_URL: an http(s) URL, returned without its trailing slashes. */
export function parseDashboardUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`TRELLIS_DASHBOARD_URL: "${text}" is not a URL such as http://localhost:3000`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`TRELLIS_DASHBOARD_URL: "${text}" is not an http or https URL`);
  }
  return text.trim().replace(/\/+$/, "");
}

/**
 * Commander's messages, prefixed with the command they are about and worded as the CLI's own: `get: workflow ID
 * required`, `cancel: unexpected argument "x"`, `list: unknown option '--verbose'`; an option of another command says
 * so.
 */
function usageErrorOf(error: CommanderError, cmd: CommanderCommand, options: Map<string, string>): UsageError {
  const path = pathOf(cmd);
  let message = error.message.replace(/^error: /, "").replace(/\n/g, " ");
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  switch (error.code) {
    case "commander.unknownOption":
      if (options.has(quoted)) message = `${quoted} is not an option of this command`;
      break;
    case "commander.unknownCommand":
      message = message.replace(/^unknown command '[^']*'/, `unknown command "${quoted}"`);
      break;
    case "commander.missingArgument":
      message = `${quoted === "ID" ? (path.startsWith("schedules") ? "schedule ID" : "workflow ID") : quoted} required`;
      break;
    case "commander.excessArguments":
      message = `unexpected argument "${cmd.args[cmd.registeredArguments.length] ?? ""}"`;
      break;
  }
  return new UsageError(path === "" ? message : `${path}: ${message}`, path);
}

/** `trellis signal ID NODE [--output JSON] [--reject] [--message TEXT] [--request-id RID]`. */
function signalSpec(workflowId: string, nodeId: string, values: Values): SignalSpec {
  if (nodeId.trim() === "") throw new UsageError("signal: NODE required", "signal");
  const reject = values.reject === true;
  const outputText = values.output as string | undefined;
  const message = (values.message as string | undefined) ?? "";
  if (reject && outputText !== undefined) {
    throw new UsageError("signal: --output and --reject do not go together", "signal");
  }
  if (!reject && values.message !== undefined) throw new UsageError("signal: --message goes with --reject", "signal");
  let output: JsonValue | undefined;
  if (outputText !== undefined) {
    try {
      output = JSON.parse(outputText) as JsonValue;
    } catch (error) {
      throw new UsageError(`--output: not JSON (${(error as Error).message})`, "signal");
    }
  }
  const requestId = (values.requestId as string | undefined) ?? "";
  if (values.requestId !== undefined && requestId.trim() === "") {
    throw new UsageError("--request-id: empty", "signal");
  }
  return { workflowId, nodeId, output, reject, message, requestId };
}

/** `--from a,b`: the node ids a fork runs again from (at least one). */
function parseFrom(text: string | undefined): string[] {
  if (text === undefined) throw new UsageError("fork: --from required (the node ids to run again from, a,b)", "fork");
  const ids = text.split(",").map((id) => id.trim());
  if (ids.some((id) => id === "")) throw new UsageError(`--from: "${text}" has an empty node id`, "fork");
  return ids;
}

/** `--input node={"k":1}`, repeatable: a new input (a JSON object) per re-run node. */
function parseInputs(texts: readonly string[]): Record<string, JsonObject> {
  // A Map, then own properties: a node or label named `constructor` or `__proto__` is a key like any other.
  const inputs = new Map<string, JsonObject>();
  for (const text of texts) {
    const eq = text.indexOf("=");
    const nodeId = eq < 0 ? "" : text.slice(0, eq).trim();
    if (nodeId === "") throw new UsageError(`--input: "${text}" is not NODE=JSON`, "fork");
    if (inputs.has(nodeId)) throw new UsageError(`--input: node "${nodeId}" given twice`, "fork");
    let value: unknown;
    try {
      value = JSON.parse(text.slice(eq + 1));
    } catch (error) {
      throw new UsageError(`--input ${nodeId}: not JSON (${(error as Error).message})`, "fork");
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new UsageError(`--input ${nodeId}: must be a JSON object`, "fork");
    }
    inputs.set(nodeId, value as JsonObject);
  }
  return Object.fromEntries(inputs);
}

/**
 * `run --input '{"topic":"agents"}'` or `--input @input.json`: the workflow input, a JSON object. A bad value, an
 * unreadable file or text that is not a JSON object is a UsageError naming --input (and the file, with the line and
 * column of a JSON error).
 */
export function parseWorkflowInput(text: string, readFile: (path: string) => string): JsonObject {
  let json = text;
  let source = "";
  if (text.startsWith("@")) {
    const path = text.slice(1);
    if (path === "") throw new UsageError("--input: @ without a file name (--input @input.json)", "run");
    source = ` ${path}`;
    try {
      json = readFile(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === "ENOENT" ? "no such file" : `cannot read: ${(error as Error).message}`;
      throw new UsageError(`--input: ${path}: ${why}`, "run");
    }
  }
  const parsed = parseJsonText(json);
  if (!parsed.ok) {
    const where = parsed.line === undefined ? "" : ` at line ${parsed.line}, column ${parsed.column}`;
    const excerpt = parsed.excerpt === undefined ? "" : `\n\n${parsed.excerpt}`;
    throw new UsageError(`--input${source}: not JSON${where}: ${parsed.message}${excerpt}`, "run");
  }
  const value = parsed.value;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const got = value === null ? "null" : Array.isArray(value) ? "a list" : `a ${typeof value}`;
    throw new UsageError(`--input${source}: must be a JSON object, got ${got}`, "run");
  }
  return value as JsonObject;
}

/** `--label team=search --label env=prod`: the labels every listed workflow must carry. */
function parseLabels(texts: readonly string[]): Record<string, string> {
  const labels = new Map<string, string>();
  for (const text of texts) {
    const eq = text.indexOf("=");
    const key = eq < 0 ? "" : text.slice(0, eq).trim();
    if (key === "") throw new UsageError(`--label: "${text}" is not KEY=VALUE`, "list");
    const value = text.slice(eq + 1);
    if (labels.has(key) && labels.get(key) !== value) {
      throw new UsageError(`--label: "${key}" given twice with different values`, "list");
    }
    labels.set(key, value);
  }
  return Object.fromEntries(labels);
}

/** The limit `trellis limits set KEY ...` describes; the api checks the key and the bounds it knows. */
function limitSpec(key: string, values: Values): LimitSpec {
  const option = (name: string) => values[name] as string | undefined;
  const maxConcurrency = option("maxConcurrency");
  const rate = option("rate");
  if (key.trim() === "") throw new UsageError("limits set: KEY is empty", "limits set");
  if (maxConcurrency === undefined && rate === undefined) {
    throw new UsageError(
      "limits set: --max-concurrency or --rate required (`trellis limits delete KEY` removes a limit)",
      "limits set",
    );
  }
  if (rate === undefined) {
    for (const name of ["period", "burst", "unit"] as const) {
      if (option(name) !== undefined) {
        throw new UsageError(`limits set: --${name} applies to a rate: --rate required`, "limits set");
      }
    }
  }
  const period = option("period");
  const burst = option("burst");
  return {
    key,
    maxConcurrency: maxConcurrency === undefined ? 0 : parseCount(maxConcurrency, "max-concurrency"),
    rate: rate === undefined ? 0 : parseAmount(rate, "rate"),
    periodMs: period === undefined ? undefined : parsePeriod(period),
    burst: burst === undefined ? undefined : parseAmount(burst, "burst"),
    unit: option("unit") ?? "",
  };
}

/** `--chunks`, set only when given (so commands without it compare equal to before). */
function chunksOf(chunks: string | boolean | string[] | undefined): { chunks?: boolean } {
  return chunks ? { chunks: true } : {};
}
