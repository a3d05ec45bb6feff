import { parseArgs } from "node:util";
import { WorkflowStatus } from "@trellis/proto";

/** The usage text `trellis --help` prints. */
export const USAGE = `usage: trellis <command> [options]

commands:
  run FILE [--watch]               create a workflow from a YAML or JSON file (a CreateWorkflowRequest in
                                   protobuf JSON form); --watch follows it like \`watch\`
  watch ID                         follow a workflow live until it ends: per-node status lines and a progress bar
  get ID [--json]                  show a workflow and its nodes (--json: the whole Workflow as protobuf JSON)
  list [--status S] [--limit N]    list workflows, newest first (S: pending, running, paused, succeeded, failed,
                                   cancelled; N: 1..1000, default 50)
  cancel|pause|resume|retry ID     apply an action to a workflow

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

/** What the command line asks for. */
export type Command =
  | { kind: "help" }
  | { kind: "run"; file: string; watch: boolean }
  | { kind: "watch"; workflowId: string }
  | { kind: "get"; workflowId: string; json: boolean }
  | { kind: "list"; status: WorkflowStatus | undefined; limit: number }
  | { kind: "action"; action: ActionName; workflowId: string };

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

/** The options each command accepts besides --addr, --token and --help. */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  run: ["watch"],
  watch: [],
  get: ["json"],
  list: ["status", "limit"],
  cancel: [],
  pause: [],
  resume: [],
  retry: [],
};

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
  const [name, ...rest] = positionals;
  if (values.help || name === undefined || name === "help") return { command: { kind: "help" }, addr, token };

  const allowed = COMMAND_OPTIONS[name];
  if (allowed === undefined) throw new UsageError(`unknown command "${name}"`);
  for (const option of ["watch", "json", "status", "limit"] as const) {
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
      command = { kind: "run", file: one("FILE"), watch: values.watch ?? false };
      break;
    case "watch":
      command = { kind: "watch", workflowId: one("workflow ID") };
      break;
    case "get":
      command = { kind: "get", workflowId: one("workflow ID"), json: values.json ?? false };
      break;
    case "list":
      none();
      command = {
        kind: "list",
        status: values.status === undefined ? undefined : parseWorkflowStatus(values.status),
        limit: parseLimit(values.limit),
      };
      break;
    default:
      command = { kind: "action", action: name as ActionName, workflowId: one("workflow ID") };
  }
  return { command, addr, token };
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
      json: { type: "boolean" },
      status: { type: "string" },
      limit: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}
