import { toJsonString } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type CreateWorkflowRequest,
  ErrorKind,
  NodeStatus,
  type Workflow,
  WorkflowAction,
  WorkflowSchema,
  WorkflowStatus,
} from "@trellis/proto";
import type { ActionName, Command } from "./args.js";
import { USAGE } from "./args.js";
import type { ApiConnection } from "./client.js";
import { followWorkflow } from "./follow.js";
import type { Output } from "./output.js";
import { WorkflowProgress, formatDuration, nodeStatusName, workflowStatusName } from "./render.js";
import { readWorkflowFile } from "./workflow-file.js";

/** What a command needs: the api, where to write, and a signal that Ctrl-C aborts. */
export interface CommandContext {
  api: ApiConnection;
  output: Output;
  signal: AbortSignal;
  /** Reads a workflow file. @default readWorkflowFile */
  readWorkflow?: (path: string) => CreateWorkflowRequest;
  /** How often the live progress bar is redrawn on a terminal. @default 200 */
  liveRefreshMs?: number;
}

const ACTION_OF: Record<ActionName, WorkflowAction> = {
  cancel: WorkflowAction.CANCEL,
  pause: WorkflowAction.PAUSE,
  resume: WorkflowAction.RESUME,
  retry: WorkflowAction.RETRY,
};

/** Runs one command; resolves with the process exit code. gRPC and file errors reject (main prints them). */
export async function runCommand(command: Command, ctx: CommandContext): Promise<number> {
  switch (command.kind) {
    case "help":
      ctx.output.line(USAGE);
      return 0;
    case "run":
      return run(ctx, command.file, command.watch);
    case "watch":
      ctx.output.line(`watching workflow ${command.workflowId}`);
      return watch(ctx, command.workflowId);
    case "get":
      return get(ctx, command.workflowId, command.json);
    case "list":
      return list(ctx, command.status, command.limit);
    case "action":
      return act(ctx, command.action, command.workflowId);
    default: {
      const never: never = command;
      throw new Error(`unknown command ${JSON.stringify(never)}`);
    }
  }
}

async function run(ctx: CommandContext, file: string, follow: boolean): Promise<number> {
  const request = (ctx.readWorkflow ?? readWorkflowFile)(file);
  const { workflow } = await ctx.api.client.createWorkflow(request, ctx.api.call(ctx.signal));
  const wf = workflow!;
  ctx.output.line(`created workflow ${wf.id} (${wf.name}, ${wf.nodes.length} nodes)`);
  return follow ? watch(ctx, wf.id) : 0;
}

/**
 * Follows a workflow over WatchWorkflow until it ends: one line per node change, a live bar on a terminal, the final
 * bar and a summary. 0 when it SUCCEEDED, else 1.
 */
export async function watch(ctx: CommandContext, workflowId: string): Promise<number> {
  const { output } = ctx;
  const progress = new WorkflowProgress({ color: output.color });
  const redraw = () => {
    const since = progress.startedAtMs;
    output.live(progress.bar(30, since === undefined ? 0 : Date.now() - since));
  };
  const timer = output.interactive ? setInterval(redraw, ctx.liveRefreshMs ?? 200) : undefined;
  try {
    const status = await followWorkflow(ctx.api.events, workflowId, {
      signal: ctx.signal,
      onEvent: (event) => {
        const line = progress.apply(event);
        if (line !== undefined) output.line(line);
        if (output.interactive) redraw();
      },
      onReconnect: ({ reason, afterSequence, delayMs }) =>
        output.error(
          `  event stream interrupted (${reason}); resuming after event ${afterSequence} in ${formatDuration(delayMs)}`,
        ),
    });
    progress.status = status;
    output.live(undefined);
    output.line(progress.bar());
    output.line(progress.summary(workflowId));
    return status === WorkflowStatus.SUCCEEDED ? 0 : 1;
  } finally {
    clearInterval(timer);
    output.live(undefined);
  }
}

function time(ts: Timestamp | undefined): string {
  return ts === undefined
    ? "-"
    : timestampDate(ts)
        .toISOString()
        .replace(/\.\d+Z$/, "Z");
}

function labels(map: Record<string, string>): string {
  return Object.entries(map)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

/** Lays out rows as columns separated by two spaces, the last column unpadded. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd(),
  );
}

/** A workflow and its nodes, for people. */
export function describeWorkflow(wf: Workflow): string[] {
  const lines = [
    `workflow ${wf.id}  ${wf.name}  ${workflowStatusName(wf.status)}`,
    [
      `created ${time(wf.createdAt)}`,
      wf.finishedAt ? `finished ${time(wf.finishedAt)}` : `updated ${time(wf.updatedAt)}`,
      Object.keys(wf.labels).length > 0 ? `labels ${labels(wf.labels)}` : "",
    ]
      .filter(Boolean)
      .join(" · "),
    "",
  ];
  const rows = [["NODE", "CAPABILITY", "STATUS", "ATTEMPT", "PARENTS", "DETAIL"]];
  for (const n of wf.nodes) {
    // A FAIL node's error, or the last failed attempt of a node waiting for its retry.
    const error = n.status !== NodeStatus.PASS && n.error?.message ? n.error : undefined;
    const detail = error ? `${error.kind ? `${ErrorKind[error.kind]}: ` : ""}${error.message}` : "";
    rows.push([n.id, n.capability, nodeStatusName(n.status), String(n.attempt), n.parentIds.join(",") || "-", detail]);
  }
  return [...lines, ...table(rows)];
}

async function get(ctx: CommandContext, workflowId: string, json: boolean): Promise<number> {
  const { workflow } = await ctx.api.client.getWorkflow({ workflowId }, ctx.api.call(ctx.signal));
  if (json) ctx.output.line(toJsonString(WorkflowSchema, workflow!, { prettySpaces: 2 }));
  else for (const line of describeWorkflow(workflow!)) ctx.output.line(line);
  return 0;
}

async function list(ctx: CommandContext, status: WorkflowStatus | undefined, limit: number): Promise<number> {
  const workflows: Workflow[] = [];
  let pageToken = "";
  do {
    const page = await ctx.api.client.listWorkflows(
      { pageSize: Math.min(500, limit - workflows.length), pageToken, status },
      ctx.api.call(ctx.signal),
    );
    workflows.push(...page.workflows);
    pageToken = page.nextPageToken;
  } while (pageToken !== "" && workflows.length < limit);
  if (workflows.length === 0) {
    ctx.output.line(status === undefined ? "no workflows" : `no ${workflowStatusName(status)} workflows`);
    return 0;
  }
  const rows = [["ID", "STATUS", "CREATED", "NAME"]];
  for (const w of workflows) rows.push([w.id, workflowStatusName(w.status), time(w.createdAt), w.name]);
  for (const line of table(rows)) ctx.output.line(line);
  if (pageToken !== "") ctx.output.error(`(first ${workflows.length}; --limit shows more)`);
  return 0;
}

async function act(ctx: CommandContext, action: ActionName, workflowId: string): Promise<number> {
  const { workflow } = await ctx.api.client.updateWorkflow(
    { workflowId, action: ACTION_OF[action] },
    ctx.api.call(ctx.signal),
  );
  ctx.output.line(`workflow ${workflow!.id} ${workflowStatusName(workflow!.status)}`);
  return 0;
}
