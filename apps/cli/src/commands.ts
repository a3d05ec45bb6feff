import { type JsonObject, type MessageInitShape, fromJson, toJson, toJsonString } from "@bufbuild/protobuf";
import {
  type Timestamp,
  ValueSchema,
  durationFromMs,
  durationMs,
  timestampDate,
  timestampMs,
} from "@bufbuild/protobuf/wkt";
import {
  type CreateWorkflowRequest,
  ErrorKind,
  GetNodeResponseSchema,
  type Limit,
  type LimitSchema,
  type Node,
  type NodeAttempt,
  type NodeError,
  NodeStatus,
  type Schedule,
  type Workflow,
  WorkflowAction,
  type WorkflowEvent,
  WorkflowSchema,
  WorkflowStatus,
} from "@trellis/proto";
import type { ActionName, Command, LimitSpec, ScheduleActionName, SignalSpec } from "./args.js";
import type { ApiConnection } from "./client.js";
import { ChunkText } from "./chunk-text.js";
import { followWorkflow } from "./follow.js";
import type { Output } from "./output.js";
import {
  WorkflowProgress,
  formatAmount,
  formatDuration,
  formatPeriod,
  formatUsage,
  nodeStatusName,
  workflowStatusName,
} from "./render.js";
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
  /** The clock, for "throttled until" (only future times are shown) and running nodes' durations. @default Date.now */
  now?: () => number;
  /** The dashboard's base URL (`http://localhost:3000`): `run` and `fork` print the new workflow's page there. */
  dashboardUrl?: string;
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
      ctx.output.line(command.text);
      return 0;
    case "version":
      ctx.output.line(command.version);
      return 0;
    case "run":
      return run(ctx, command);
    case "watch":
      ctx.output.line(`watching workflow ${command.workflowId}`);
      return watch(ctx, command.workflowId, command.chunks ?? false);
    case "get":
      if (command.events) return getEvents(ctx, command.workflowId);
      return command.nodeId === undefined
        ? get(ctx, command.workflowId, command.json, (ctx.now ?? Date.now)())
        : getNode(ctx, command.workflowId, command.nodeId, command.json);
    case "list":
      return list(ctx, command);
    case "action":
      return act(ctx, command.action, command.workflowId);
    case "fork":
      return fork(ctx, command);
    case "signal":
      return signal(ctx, command.signal);
    case "limits":
      return listLimits(ctx);
    case "set-limit":
      return setLimit(ctx, command.limit);
    case "delete-limit":
      return deleteLimit(ctx, command.key);
    case "schedules":
      return listSchedules(ctx);
    case "create-schedule":
      return createSchedule(ctx, command);
    case "schedule-action":
      return scheduleAction(ctx, command.action, command.id);
    default: {
      const never: never = command;
      throw new Error(`unknown command ${JSON.stringify(never)}`);
    }
  }
}

/** `http://localhost:3000/workflows/<id>`: the workflow's page on the dashboard. */
export function dashboardLink(dashboardUrl: string, workflowId: string): string {
  return `${dashboardUrl.replace(/\/+$/, "")}/workflows/${encodeURIComponent(workflowId)}`;
}

/** `trellis run`: creates the workflow of a file (its input replaced by --input), links it, and follows it with --watch. */
async function run(ctx: CommandContext, command: Extract<Command, { kind: "run" }>): Promise<number> {
  const request = (ctx.readWorkflow ?? readWorkflowFile)(command.file);
  if (command.input !== undefined) request.input = command.input;
  const wf = await ctx.api.client.createWorkflow(request, ctx.api.call(ctx.signal));
  ctx.output.line(`created workflow ${wf.id} (${wf.name}, ${wf.nodes.length} nodes)`);
  if (ctx.dashboardUrl !== undefined) ctx.output.line(`dashboard ${dashboardLink(ctx.dashboardUrl, wf.id)}`);
  return command.watch ? watch(ctx, wf.id, command.chunks ?? false) : 0;
}

/** `trellis fork`: a new workflow from another, re-running from some nodes; followed with --watch. */
async function fork(ctx: CommandContext, command: Extract<Command, { kind: "fork" }>): Promise<number> {
  const wf = await ctx.api.client.forkWorkflow(
    { workflowId: command.workflowId, fromNodeIds: command.fromNodeIds, inputs: command.inputs },
    ctx.api.call(ctx.signal),
  );
  const rerun = wf.nodes.filter((n) => n.status !== NodeStatus.PASS).length;
  const kept = wf.nodes.length - rerun;
  ctx.output.line(
    `forked workflow ${wf.id} from ${command.workflowId} (${wf.name}: ${kept} node${kept === 1 ? "" : "s"} kept, ${rerun} to run again)`,
  );
  if (ctx.dashboardUrl !== undefined) ctx.output.line(`dashboard ${dashboardLink(ctx.dashboardUrl, wf.id)}`);
  return command.watch ? watch(ctx, wf.id) : 0;
}

/**
 * `trellis signal`: completes (PASS with the output) or rejects (FAIL) a node with `wait`, and says what became of it:
 * done now, or kept until the node is ready.
 */
async function signal(ctx: CommandContext, spec: SignalSpec): Promise<number> {
  const node = await ctx.api.client.signalNode(
    {
      workflowId: spec.workflowId,
      nodeId: spec.nodeId,
      output: spec.output === undefined ? undefined : fromJson(ValueSchema, spec.output),
      reject: spec.reject,
      message: spec.message,
      requestId: spec.requestId,
    },
    ctx.api.call(ctx.signal),
  );
  for (const line of describeSignaled(node, spec.reject)) ctx.output.line(line);
  return 0;
}

/** What a signal did to its node: `node approve PASS (signaled)`, or kept while the node is not ready yet. */
export function describeSignaled(node: Node, reject: boolean): string[] {
  switch (node.status) {
    case NodeStatus.PASS:
      return [`node ${node.id} PASS (signaled)`];
    case NodeStatus.FAIL:
      return [`node ${node.id} FAIL (${reject ? "rejected" : "signaled"})  ${errorText(node.error)}`.trimEnd()];
    case NodeStatus.PENDING:
      return [
        `signal kept: node ${node.id} is PENDING; the signal ${reject ? "rejects" : "completes"} it the moment it is ready`,
      ];
    default:
      return [`node ${node.id} ${nodeStatusName(node.status)}`];
  }
}

/** `waiting for a signal (times out 2026-12-03T14:00:00Z)`, `waiting until 2026-12-04T07:00:00Z`, or "". */
function waitingText(n: Node): string {
  if (n.status !== NodeStatus.WAITING) return "";
  if (n.wait) {
    const timeoutMs = n.wait.timeout === undefined ? 0 : durationMs(n.wait.timeout);
    return timeoutMs > 0 ? `waiting for a signal (timeout ${formatDuration(timeoutMs)})` : "waiting for a signal";
  }
  return n.notBefore ? `waiting until ${time(n.notBefore)}` : "waiting";
}

/**
 * Follows a workflow over WatchWorkflow until it ends: one line per node change, a live bar on a terminal, the final
 * bar and a summary; with `chunks`, the text running nodes write, line by line. 0 when it SUCCEEDED, else 1.
 */
export async function watch(ctx: CommandContext, workflowId: string, chunks = false): Promise<number> {
  const { output } = ctx;
  const text = chunks ? new ChunkText((line) => output.line(line)) : undefined;
  const progress = new WorkflowProgress({ color: output.color });
  const redraw = () => {
    const since = progress.startedAtMs;
    output.live(progress.bar(30, since === undefined ? 0 : Date.now() - since));
  };
  const timer = output.interactive ? setInterval(redraw, ctx.liveRefreshMs ?? 200) : undefined;
  try {
    const status = await followWorkflow(ctx.api.events, workflowId, {
      signal: ctx.signal,
      includeChunks: chunks,
      onChunk: (event) => text?.add(event),
      onEvent: (event) => {
        // A node's text so far is printed before the line saying its attempt ended.
        if (event.nodeId) text?.end(event.nodeId);
        const line = progress.apply(event);
        if (line !== undefined) output.line(line);
        if (output.interactive) redraw();
      },
      onReconnect: ({ reason, afterSequence, delayMs }) =>
        output.error(
          `  event stream interrupted (${reason}); resuming after event ${afterSequence} in ${formatDuration(delayMs)}`,
        ),
    });
    text?.endAll();
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

function errorText(error: NodeError | undefined): string {
  if (!error?.message) return "";
  return `${error.kind ? `${ErrorKind[error.kind] ?? error.kind}: ` : ""}${error.message}`;
}

/**
 * `usage cost_usd=0.02 tokens=1234 · budget tokens=200000 (reached)`, or undefined when the workflow has neither. A
 * unit is "reached" when its usage is at its budget or over: the workflow was then paused.
 */
export function usageLine(wf: Pick<Workflow, "usage" | "budget">): string | undefined {
  const parts: string[] = [];
  if (Object.keys(wf.usage).length > 0) parts.push(`usage ${formatUsage(wf.usage)}`);
  const budget = Object.keys(wf.budget).sort();
  if (budget.length > 0) {
    const units = budget.map((unit) => {
      const reached = (wf.usage[unit] ?? 0) >= wf.budget[unit]!;
      return `${unit}=${formatAmount(wf.budget[unit]!)}${reached ? " (reached)" : ""}`;
    });
    parts.push(`budget ${units.join(" ")}`);
  }
  return parts.length > 0 ? parts.join(" · ") : undefined;
}

/** What the DETAIL column says of a node: the limit holding it back, and its error (a FAIL, or a retry's cause). */
function nodeDetail(n: Node): string {
  const held = n.heldBy ? `held by ${n.heldBy}` : "";
  const error = n.status !== NodeStatus.PASS ? errorText(n.error) : "";
  return [waitingText(n), held, error].filter(Boolean).join(" · ");
}

/** Longest OUTPUT cell of `trellis get`, in characters; longer outputs end with "…" (`--node --json` shows them whole). */
export const OUTPUT_WIDTH = 40;

/** `text` cut to `width` characters, the last one "…" when cut. */
export function truncate(text: string, width: number): string {
  const chars = [...text];
  return chars.length <= width
    ? text
    : `${chars
        .slice(0, width - 1)
        .join("")
        .trimEnd()}…`;
}

/** A node's output as compact JSON on one line, shortened to OUTPUT_WIDTH; "-" without one. */
function outputCell(n: Node): string {
  if (n.output === undefined) return "-";
  return truncate(JSON.stringify(toJson(ValueSchema, n.output)), OUTPUT_WIDTH);
}

/**
 * How long a node's current (last) attempt ran: from its start to its end, or to `nowMs` while it runs (marked "…");
 * "-" before it started.
 */
function durationCell(n: Node, nowMs: number): string {
  if (n.startedAt === undefined) return "-";
  if (n.finishedAt !== undefined) return took(n.startedAt, n.finishedAt);
  if (n.status !== NodeStatus.RUNNING) return "-";
  return `${formatDuration(nowMs - timestampMs(n.startedAt))}…`;
}

/**
 * A workflow and its nodes, for people: per node its attempts (started so far), the DURATION of its last attempt, its
 * OUTPUT (shortened) and a DETAIL saying why it waits or failed. PRIORITY and LIMIT KEYS columns appear only when some
 * node has a priority or limit keys, so workflows without flow control read as they always did.
 */
export function describeWorkflow(wf: Workflow, nowMs: number = Date.now()): string[] {
  const lines = [
    `workflow ${wf.id}  ${wf.name}  ${workflowStatusName(wf.status)}`,
    [
      `created ${time(wf.createdAt)}`,
      wf.finishedAt ? `finished ${time(wf.finishedAt)}` : `updated ${time(wf.updatedAt)}`,
      Object.keys(wf.labels).length > 0 ? `labels ${labels(wf.labels)}` : "",
    ]
      .filter(Boolean)
      .join(" · "),
  ];
  const usage = usageLine(wf);
  if (usage !== undefined) lines.push(usage);
  lines.push("");
  const flowControl = wf.nodes.some((n) => n.priority !== 0 || n.limitKeys.length > 0);
  const head = ["NODE", "CAPABILITY", "STATUS", "ATTEMPTS", "DURATION", "PARENTS"];
  const tail = ["OUTPUT", "DETAIL"];
  const rows = [flowControl ? [...head, "PRIORITY", "LIMIT KEYS", ...tail] : [...head, ...tail]];
  for (const n of wf.nodes) {
    const row = [
      n.id,
      n.capability,
      nodeStatusName(n.status),
      String(n.attempt),
      durationCell(n, nowMs),
      n.parentIds.join(",") || "-",
    ];
    if (flowControl) row.push(String(n.priority), n.limitKeys.join(",") || "-");
    rows.push([...row, outputCell(n), nodeDetail(n)]);
  }
  return [...lines, ...table(rows)];
}

function took(from: Timestamp | undefined, to: Timestamp | undefined): string {
  return from === undefined || to === undefined ? "-" : formatDuration(timestampMs(to) - timestampMs(from));
}

/** One node, its flow control and its ended attempts with what each spent, for people. */
export function describeNode(node: Node, attempts: readonly NodeAttempt[]): string[] {
  const name = node.name && node.name !== node.id ? ` (${node.name})` : "";
  const lines = [
    [
      `node ${node.id}${name}`,
      node.capability,
      nodeStatusName(node.status),
      node.heldBy ? `held by ${node.heldBy}` : "",
      node.insertedBy ? `inserted by ${node.insertedBy}` : "",
      waitingText(node),
    ]
      .filter(Boolean)
      .join("  "),
    [
      `workflow ${node.workflowId}`,
      `attempt ${node.attempt}`,
      `priority ${node.priority}`,
      `limit keys ${[...node.limitKeys, `capability:${node.capability}`].join(",")}`,
    ].join(" · "),
    [
      `created ${time(node.createdAt)}`,
      node.startedAt ? `started ${time(node.startedAt)}` : "",
      node.finishedAt ? `finished ${time(node.finishedAt)}` : "",
    ]
      .filter(Boolean)
      .join(" · "),
  ];
  const error = node.status !== NodeStatus.PASS ? errorText(node.error) : "";
  if (error) lines.push(`error ${error}`);
  lines.push("");
  if (attempts.length === 0) return [...lines, "no attempt has ended yet"];
  const rows = [["ATTEMPT", "STATUS", "STARTED", "TOOK", "WORKER", "USAGE", "ERROR"]];
  for (const a of attempts) {
    rows.push([
      String(a.attempt),
      a.status,
      time(a.startedAt),
      took(a.startedAt, a.finishedAt),
      a.workerId || "-",
      formatUsage(a.usage) || "-",
      errorText(a.error),
    ]);
  }
  return [...lines, ...table(rows)];
}

/** `100000 tokens/1m`, `10 starts/1s`; "-" without a rate. */
function rateText(limit: Limit): string {
  if (limit.rate === 0) return "-";
  const periodMs = limit.period === undefined ? 1_000 : durationMs(limit.period);
  return `${formatAmount(limit.rate)} ${limit.unit || "starts"}/${formatPeriod(periodMs)}`;
}

/** `cap 3, rate 100000 tokens/1m, burst 150000` */
export function limitSummary(limit: Limit): string {
  const parts: string[] = [];
  if (limit.maxConcurrency > 0) parts.push(`cap ${limit.maxConcurrency}`);
  if (limit.rate > 0) parts.push(`rate ${rateText(limit)}`, `burst ${formatAmount(limit.burst || limit.rate)}`);
  return parts.length > 0 ? parts.join(", ") : "no cap, no rate";
}

/**
 * The limits as a table: a key's cap, the nodes holding it (RUNNING: queued or running) and held back by it
 * (WAITING), its rate, the units left in its bucket (negative after a usage debit larger than what was left) and
 * until when a THROTTLED answer paused it (past times are shown as "-").
 */
export function describeLimits(limits: readonly Limit[], nowMs: number): string[] {
  if (limits.length === 0) return ["no limits (`trellis limits set KEY --max-concurrency N` adds one)"];
  const rows = [["KEY", "CAP", "RUNNING", "WAITING", "RATE", "BURST", "AVAILABLE", "THROTTLED UNTIL"]];
  for (const l of limits) {
    const throttled = l.throttledUntil !== undefined && timestampMs(l.throttledUntil) > nowMs;
    rows.push([
      l.key,
      l.maxConcurrency > 0 ? String(l.maxConcurrency) : "-",
      String(l.running),
      String(l.waiting),
      rateText(l),
      l.rate > 0 ? formatAmount(l.burst || l.rate) : "-",
      l.rate > 0 ? formatAmount(l.available) : "-",
      throttled ? time(l.throttledUntil) : "-",
    ]);
  }
  return table(rows);
}

/** The SetLimit request of a {@link LimitSpec}: fields left out keep the api's defaults. */
export function limitOfSpec(spec: LimitSpec): MessageInitShape<typeof LimitSchema> {
  return {
    key: spec.key,
    maxConcurrency: spec.maxConcurrency,
    rate: spec.rate,
    period: spec.periodMs === undefined ? undefined : durationFromMs(spec.periodMs),
    burst: spec.burst ?? 0,
    unit: spec.unit,
  };
}

async function get(ctx: CommandContext, workflowId: string, json: boolean, nowMs: number): Promise<number> {
  const workflow = await ctx.api.client.getWorkflow({ workflowId }, ctx.api.call(ctx.signal));
  if (json) ctx.output.line(toJsonString(WorkflowSchema, workflow, { prettySpaces: 2 }));
  else for (const line of describeWorkflow(workflow, nowMs)) ctx.output.line(line);
  return 0;
}

/** How long `get --events` waits for one more event before it takes the replay as complete (running workflows). */
const EVENTS_IDLE_MS = 500;

/** One line per event: sequence, time, type, node, status, and the actor when a token caused it. */
export function describeEvent(event: WorkflowEvent): string {
  const time =
    event.time === undefined
      ? "-"
      : timestampDate(event.time)
          .toISOString()
          .replace(/\.\d+Z$/, "Z");
  const status = event.nodeId === "" ? workflowStatusName(event.workflowStatus) : nodeStatusName(event.nodeStatus);
  const actor = event.data?.actor;
  return [
    String(event.sequence).padStart(4),
    time,
    event.type.padEnd(24),
    (event.nodeId === "" ? "-" : event.nodeId).padEnd(12),
    status.padEnd(10),
    typeof actor === "string" ? `actor=${actor}` : "",
  ]
    .join("  ")
    .trimEnd();
}

/**
 * `get ID --events`: the committed events (a WatchWorkflow replay), with their actors. A finished workflow's stream
 * ends by itself; a running one's is cut once no event came for EVENTS_IDLE_MS.
 */
async function getEvents(ctx: CommandContext, workflowId: string): Promise<number> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  ctx.signal.addEventListener("abort", stop, { once: true });
  let idle = setTimeout(stop, EVENTS_IDLE_MS * 4);
  try {
    for await (const event of ctx.api.events.watch(workflowId, 0n, controller.signal)) {
      clearTimeout(idle);
      ctx.output.line(describeEvent(event));
      idle = setTimeout(stop, EVENTS_IDLE_MS);
    }
  } catch (error) {
    if (!controller.signal.aborted || ctx.signal.aborted) throw error;
  } finally {
    clearTimeout(idle);
    ctx.signal.removeEventListener("abort", stop);
  }
  return 0;
}

async function getNode(ctx: CommandContext, workflowId: string, nodeId: string, json: boolean): Promise<number> {
  const response = await ctx.api.client.getNode({ workflowId, nodeId }, ctx.api.call(ctx.signal));
  if (json) ctx.output.line(toJsonString(GetNodeResponseSchema, response, { prettySpaces: 2 }));
  else for (const line of describeNode(response.node!, response.attempts)) ctx.output.line(line);
  return 0;
}

async function listLimits(ctx: CommandContext): Promise<number> {
  const limits = await ctx.api.client.listLimits(ctx.api.call(ctx.signal));
  for (const line of describeLimits(limits, (ctx.now ?? Date.now)())) ctx.output.line(line);
  return 0;
}

async function setLimit(ctx: CommandContext, spec: LimitSpec): Promise<number> {
  const limit = await ctx.api.client.setLimit({ limit: limitOfSpec(spec) }, ctx.api.call(ctx.signal));
  ctx.output.line(`limit ${limit.key} set: ${limitSummary(limit)}`);
  return 0;
}

async function deleteLimit(ctx: CommandContext, key: string): Promise<number> {
  await ctx.api.client.deleteLimit({ key }, ctx.api.call(ctx.signal));
  ctx.output.line(`limit ${key} deleted`);
  return 0;
}

/** The schedules as a table: cron, zone, PAUSED or ACTIVE, the next tick (none while paused), the last workflow. */
export function describeSchedules(schedules: readonly Schedule[]): string[] {
  if (schedules.length === 0) {
    return ['no schedules (`trellis schedules create ID --cron "0 7 * * *" --file FILE` adds one)'];
  }
  const rows = [["ID", "CRON", "TIMEZONE", "STATE", "NEXT RUN", "WORKFLOW", "LAST WORKFLOW"]];
  for (const s of schedules) {
    rows.push([
      s.id,
      s.cron,
      s.timezone,
      s.paused ? "PAUSED" : "ACTIVE",
      s.paused ? "-" : time(s.nextRunAt),
      s.workflow?.name || "-",
      s.lastWorkflowId || "-",
    ]);
  }
  return table(rows);
}

/** `nightly: 0 7 * * * Europe/Paris, next run 2026-12-04T06:00:00Z` (or `paused`). */
function scheduleSummary(s: Schedule): string {
  return `${s.id}: ${s.cron} ${s.timezone}, ${s.paused ? "paused" : `next run ${time(s.nextRunAt)}`}`;
}

async function listSchedules(ctx: CommandContext): Promise<number> {
  const schedules = await ctx.api.client.listSchedules(ctx.api.call(ctx.signal));
  for (const line of describeSchedules(schedules)) ctx.output.line(line);
  return 0;
}

async function createSchedule(
  ctx: CommandContext,
  command: Extract<Command, { kind: "create-schedule" }>,
): Promise<number> {
  const workflow = (ctx.readWorkflow ?? readWorkflowFile)(command.file);
  const schedule = await ctx.api.client.createSchedule(
    { schedule: { id: command.id, cron: command.cron, timezone: command.timezone, workflow } },
    ctx.api.call(ctx.signal),
  );
  ctx.output.line(`created schedule ${scheduleSummary(schedule)}`);
  return 0;
}

async function scheduleAction(ctx: CommandContext, action: ScheduleActionName, id: string): Promise<number> {
  if (action === "delete") {
    await ctx.api.client.deleteSchedule({ id }, ctx.api.call(ctx.signal));
    ctx.output.line(`schedule ${id} deleted`);
    return 0;
  }
  const schedule = await ctx.api.client.updateSchedule(
    { schedule: { id, paused: action === "pause" }, updateMask: { paths: ["paused"] } },
    ctx.api.call(ctx.signal),
  );
  ctx.output.line(`${action === "pause" ? "paused" : "resumed"} schedule ${scheduleSummary(schedule)}`);
  return 0;
}

/**
 * `trellis list`: pages through ListWorkflows (status and label filters) up to the limit; a table, or with --json one
 * document `{"workflows": [...], "nextPageToken": "..."}` (the token only when more are left).
 */
async function list(ctx: CommandContext, command: Extract<Command, { kind: "list" }>): Promise<number> {
  const { status, limit } = command;
  const labelSelector = command.labels ?? {};
  const workflows: Workflow[] = [];
  let pageToken = "";
  do {
    const page = await ctx.api.client.listWorkflows(
      { pageSize: Math.min(500, limit - workflows.length), pageToken, status, labelSelector },
      ctx.api.call(ctx.signal),
    );
    workflows.push(...page.workflows);
    pageToken = page.nextPageToken;
  } while (pageToken !== "" && workflows.length < limit);
  if (command.json) {
    const document: JsonObject = { workflows: workflows.map((w) => toJson(WorkflowSchema, w)) };
    if (pageToken !== "") document.nextPageToken = pageToken;
    ctx.output.line(JSON.stringify(document, null, 2));
    return 0;
  }
  if (workflows.length === 0) {
    const which = status === undefined ? "workflows" : `${workflowStatusName(status)} workflows`;
    const labelled = Object.keys(labelSelector).length > 0 ? ` labelled ${labels(labelSelector)}` : "";
    ctx.output.line(`no ${which}${labelled}`);
    return 0;
  }
  const rows = [["ID", "STATUS", "CREATED", "NAME"]];
  for (const w of workflows) rows.push([w.id, workflowStatusName(w.status), time(w.createdAt), w.name]);
  for (const line of table(rows)) ctx.output.line(line);
  if (pageToken !== "") ctx.output.error(`(first ${workflows.length}; --limit shows more)`);
  return 0;
}

async function act(ctx: CommandContext, action: ActionName, workflowId: string): Promise<number> {
  const workflow = await ctx.api.client.updateWorkflow(
    { workflowId, action: ACTION_OF[action] },
    ctx.api.call(ctx.signal),
  );
  ctx.output.line(`workflow ${workflow.id} ${workflowStatusName(workflow.status)}`);
  return 0;
}
