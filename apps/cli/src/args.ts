import { parseArgs } from "node:util";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { WorkflowStatus } from "@trellis/proto";

/** The usage text `trellis --help` prints. */
export const USAGE = `usage: trellis <command> [options]

commands:
  run FILE [--watch [--chunks]]    create a workflow from a YAML or JSON file (a CreateWorkflowRequest in
                                   protobuf JSON form); --watch follows it like \`watch\`
  watch ID [--chunks]              follow a workflow live until it ends: per-node status lines and a progress bar;
                                   --chunks also prints the text running nodes write (their output chunks)
  get ID [--node NODE] [--json]    show a workflow, its usage and budget, and its nodes (--node: one node and its
                                   attempts with what each spent; --json: the Workflow or GetNodeResponse as
                                   protobuf JSON)
  get ID --events                  the workflow's events so far, each with who caused it (actor: the api token)
  list [--status S] [--limit N]    list workflows, newest first (S: pending, running, paused, succeeded, failed,
                                   cancelled; N: 1..1000, default 50)
  cancel|pause|resume|retry ID     apply an action to a workflow
  signal ID NODE [--output JSON] [--reject [--message TEXT]] [--request-id RID]
                                   complete a node that waits for a signal (a node with \`wait\`): PASS with the
                                   output JSON (default null), or with --reject FAIL it (TASK_ERROR, the message);
                                   sent before the node is ready, the signal is kept and completes it then; the
                                   same RID again is answered like the first
  fork ID --from A,B [--input NODE=JSON]... [--watch]
                                   a new workflow from ID (any status): nodes A, B and everything downstream run
                                   again (NODE with the input JSON object given), the others keep their outputs;
                                   --watch follows it like \`watch\`
  limits                           list the flow-control limits: cap, running, waiting, rate, units available,
                                   throttled until
  limits set KEY [--max-concurrency N] [--rate R [--period P] [--burst B] [--unit U]]
                                   create or replace a key's limit (e.g. model:gpt-4o, tenant:acme,
                                   capability:llm.chat); options left out take their defaults: no cap, no rate,
                                   P 1s (500ms, 30s, 1m, 1h), B = R, U "" (one unit per node start) or a usage
                                   unit such as tokens
  limits delete KEY                remove a key's limit; the nodes it held back run
  schedules                        list the cron schedules: cron, time zone, next run, last workflow
  schedules create ID --cron CRON [--timezone TZ] --file FILE
                                   create a schedule: at each tick of the 5-field CRON ("0 7 * * *") in TZ (an
                                   IANA name such as Europe/Paris, default UTC) it creates the workflow of FILE
                                   (YAML or JSON, as for run), labelled schedule=ID
  schedules pause|resume|delete ID pause a schedule (it creates nothing), resume it (from its next tick after
                                   now) or remove it

options:
  --addr HOST:PORT   the api's gRPC address (env TRELLIS_ADDR, default localhost:50051)
  --token TOKEN      bearer token, when the api has API_TOKEN set (env TRELLIS_TOKEN)
  -h, --help         this text

exit codes: 0 success (\`run --watch\` and \`watch\`: the workflow SUCCEEDED), 1 the workflow FAILED or was
CANCELLED, or a call failed, 2 bad usage, 130 interrupted (the workflow keeps running).`;

/** Where the api listens when neither --addr nor TRELLIS_ADDR says. */
export const DEFAULT_ADDR = "localhost:50051";

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
  | { kind: "help" }
  | { kind: "run"; file: string; watch: boolean; chunks?: boolean }
  | { kind: "watch"; workflowId: string; chunks?: boolean }
  | { kind: "get"; workflowId: string; json: boolean; nodeId?: string | undefined; events?: boolean | undefined }
  | { kind: "list"; status: WorkflowStatus | undefined; limit: number }
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
}

/** A command line that cannot be run; the message says why (exit code 2). */
export class UsageError extends Error {
  override readonly name = "UsageError";
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

/** The options of every command, besides --addr, --token and --help. */
const OPTION_NAMES = [
  "watch",
  "chunks",
  "json",
  "status",
  "limit",
  "node",
  "max-concurrency",
  "rate",
  "period",
  "burst",
  "unit",
  "from",
  "input",
  "cron",
  "timezone",
  "file",
  "output",
  "reject",
  "message",
  "request-id",
  "events",
] as const;

type OptionName = (typeof OPTION_NAMES)[number];

/** The options each command accepts besides --addr, --token and --help. */
const COMMAND_OPTIONS: Record<string, readonly OptionName[]> = {
  run: ["watch", "chunks"],
  watch: ["chunks"],
  get: ["json", "node", "events"],
  list: ["status", "limit"],
  cancel: [],
  pause: [],
  resume: [],
  retry: [],
  fork: ["from", "input", "watch"],
  signal: ["output", "reject", "message", "request-id"],
  "limits list": [],
  "limits set": ["max-concurrency", "rate", "period", "burst", "unit"],
  "limits delete": [],
  "schedules list": [],
  "schedules create": ["cron", "timezone", "file"],
  "schedules pause": [],
  "schedules resume": [],
  "schedules delete": [],
};

/** The subcommands of `trellis schedules` (none means list). */
const SCHEDULES_SUBCOMMANDS = ["list", "create", "pause", "resume", "delete"] as const;

/** The subcommands of `trellis limits` (none means list). */
const LIMITS_SUBCOMMANDS = ["list", "set", "delete"] as const;

/**
 * Parses `argv` (without `node` and the script) and the environment into a {@link CliArgs}; throws UsageError for
 * an unknown command or option, a missing or extra argument, or a bad value.
 */
export function parseCliArgs(argv: readonly string[], env: Record<string, string | undefined>): CliArgs {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const addr = values.addr ?? env.TRELLIS_ADDR ?? DEFAULT_ADDR;
  if (addr.trim() === "") throw new UsageError("--addr: empty");
  const token = values.token ?? (env.TRELLIS_TOKEN || undefined);
  let [name, ...rest] = positionals;
  if (values.help || name === undefined || name === "help") return { command: { kind: "help" }, addr, token };
  if (name === "limits") {
    const sub = rest[0] ?? "list";
    if (!(LIMITS_SUBCOMMANDS as readonly string[]).includes(sub)) {
      throw new UsageError(`limits: unknown subcommand "${sub}" (${LIMITS_SUBCOMMANDS.join(", ")})`);
    }
    name = `limits ${sub}`;
    rest = rest.slice(1);
  }
  if (name === "schedules") {
    const sub = rest[0] ?? "list";
    if (!(SCHEDULES_SUBCOMMANDS as readonly string[]).includes(sub)) {
      throw new UsageError(`schedules: unknown subcommand "${sub}" (${SCHEDULES_SUBCOMMANDS.join(", ")})`);
    }
    name = `schedules ${sub}`;
    rest = rest.slice(1);
  }

  const allowed = COMMAND_OPTIONS[name];
  if (allowed === undefined) throw new UsageError(`unknown command "${name}"`);
  for (const option of OPTION_NAMES) {
    if (values[option] !== undefined && !allowed.includes(option)) {
      throw new UsageError(`${name}: --${option} is not an option of this command`);
    }
  }
  const one = (what: string): string => {
    if (rest.length === 0) throw new UsageError(`${name}: ${what} required`);
    if (rest.length > 1) throw new UsageError(`${name}: unexpected argument "${rest[1]}"`);
    return rest[0]!;
  };
  const none = (): void => {
    if (rest.length > 0) throw new UsageError(`${name}: unexpected argument "${rest[0]}"`);
  };

  let command: Command;
  switch (name) {
    case "run":
      command = { kind: "run", file: one("FILE"), watch: values.watch ?? false, ...chunksOf(values.chunks) };
      break;
    case "watch":
      command = { kind: "watch", workflowId: one("workflow ID"), ...chunksOf(values.chunks) };
      break;
    case "get": {
      const workflowId = one("workflow ID");
      if (values.node?.trim() === "") throw new UsageError("--node: empty");
      if (values.events && (values.node !== undefined || values.json)) {
        throw new UsageError("get: --events does not go with --node or --json");
      }
      command = { kind: "get", workflowId, json: values.json ?? false, nodeId: values.node, events: values.events };
      break;
    }
    case "list":
      none();
      command = {
        kind: "list",
        status: values.status === undefined ? undefined : parseWorkflowStatus(values.status),
        limit: parseLimit(values.limit),
      };
      break;
    case "fork":
      command = {
        kind: "fork",
        workflowId: one("workflow ID"),
        fromNodeIds: parseFrom(values.from),
        inputs: parseInputs(values.input ?? []),
        watch: values.watch ?? false,
      };
      break;
    case "signal":
      command = { kind: "signal", signal: signalSpec(rest, values) };
      break;
    case "limits list":
      none();
      command = { kind: "limits" };
      break;
    case "limits set":
      command = { kind: "set-limit", limit: limitSpec(one("KEY"), values) };
      break;
    case "limits delete":
      command = { kind: "delete-limit", key: one("KEY") };
      break;
    case "schedules list":
      none();
      command = { kind: "schedules" };
      break;
    case "schedules create": {
      const id = one("schedule ID");
      if (values.cron === undefined) throw new UsageError('schedules create: --cron required (e.g. "0 7 * * *")');
      if (values.file === undefined) throw new UsageError("schedules create: --file required (the workflow to create)");
      command = { kind: "create-schedule", id, cron: values.cron, timezone: values.timezone ?? "", file: values.file };
      break;
    }
    case "schedules pause":
    case "schedules resume":
    case "schedules delete":
      command = {
        kind: "schedule-action",
        action: name.slice("schedules ".length) as ScheduleActionName,
        id: one("schedule ID"),
      };
      break;
    default:
      command = { kind: "action", action: name as ActionName, workflowId: one("workflow ID") };
  }
  return { command, addr, token };
}

/** `trellis signal ID NODE [--output JSON] [--reject] [--message TEXT] [--request-id RID]`. */
function signalSpec(
  rest: readonly string[],
  values: Partial<Record<OptionName, string | boolean | string[]>>,
): SignalSpec {
  const [workflowId, nodeId, extra] = rest;
  if (workflowId === undefined) throw new UsageError("signal: workflow ID required");
  if (nodeId === undefined || nodeId.trim() === "") throw new UsageError("signal: NODE required");
  if (extra !== undefined) throw new UsageError(`signal: unexpected argument "${extra}"`);
  const reject = values.reject === true;
  const outputText = values.output as string | undefined;
  const message = (values.message as string | undefined) ?? "";
  if (reject && outputText !== undefined) throw new UsageError("signal: --output and --reject do not go together");
  if (!reject && values.message !== undefined) throw new UsageError("signal: --message goes with --reject");
  let output: JsonValue | undefined;
  if (outputText !== undefined) {
    try {
      output = JSON.parse(outputText) as JsonValue;
    } catch (error) {
      throw new UsageError(`--output: not JSON (${(error as Error).message})`);
    }
  }
  const requestId = (values["request-id"] as string | undefined) ?? "";
  if (values["request-id"] !== undefined && requestId.trim() === "") throw new UsageError("--request-id: empty");
  return { workflowId, nodeId, output, reject, message, requestId };
}

/** `--from a,b`: the node ids a fork runs again from (at least one). */
function parseFrom(text: string | undefined): string[] {
  if (text === undefined) throw new UsageError("fork: --from required (the node ids to run again from, a,b)");
  const ids = text.split(",").map((id) => id.trim());
  if (ids.some((id) => id === "")) throw new UsageError(`--from: "${text}" has an empty node id`);
  return ids;
}

/** `--input node={"k":1}`, repeatable: a new input (a JSON object) per re-run node. */
function parseInputs(texts: readonly string[]): Record<string, JsonObject> {
  const inputs: Record<string, JsonObject> = {};
  for (const text of texts) {
    const eq = text.indexOf("=");
    const nodeId = eq < 0 ? "" : text.slice(0, eq).trim();
    if (nodeId === "") throw new UsageError(`--input: "${text}" is not NODE=JSON`);
    if (nodeId in inputs) throw new UsageError(`--input: node "${nodeId}" given twice`);
    let value: unknown;
    try {
      value = JSON.parse(text.slice(eq + 1));
    } catch (error) {
      throw new UsageError(`--input ${nodeId}: not JSON (${(error as Error).message})`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new UsageError(`--input ${nodeId}: must be a JSON object`);
    }
    inputs[nodeId] = value as JsonObject;
  }
  return inputs;
}

/** The limit `trellis limits set KEY ...` describes; the api checks the key and the bounds it knows. */
function limitSpec(key: string, values: Partial<Record<OptionName, string | boolean | string[]>>): LimitSpec {
  const option = (name: OptionName) => values[name] as string | undefined;
  const maxConcurrency = option("max-concurrency");
  const rate = option("rate");
  if (key.trim() === "") throw new UsageError("limits set: KEY is empty");
  if (maxConcurrency === undefined && rate === undefined) {
    throw new UsageError(
      "limits set: --max-concurrency or --rate required (`trellis limits delete KEY` removes a limit)",
    );
  }
  if (rate === undefined) {
    for (const name of ["period", "burst", "unit"] as const) {
      if (option(name) !== undefined) throw new UsageError(`limits set: --${name} applies to a rate: --rate required`);
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
function chunksOf(chunks: boolean | undefined): { chunks?: boolean } {
  return chunks ? { chunks: true } : {};
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      addr: { type: "string" },
      token: { type: "string" },
      watch: { type: "boolean" },
      chunks: { type: "boolean" },
      json: { type: "boolean" },
      events: { type: "boolean" },
      status: { type: "string" },
      limit: { type: "string" },
      node: { type: "string" },
      "max-concurrency": { type: "string" },
      rate: { type: "string" },
      period: { type: "string" },
      burst: { type: "string" },
      unit: { type: "string" },
      from: { type: "string" },
      input: { type: "string", multiple: true },
      cron: { type: "string" },
      timezone: { type: "string" },
      file: { type: "string" },
      output: { type: "string" },
      reject: { type: "boolean" },
      message: { type: "string" },
      "request-id": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}
