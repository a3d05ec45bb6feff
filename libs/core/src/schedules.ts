import { CronExpressionParser } from "cron-parser";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Node } from "@trellis/proto";
import { validateWorkflowNodes } from "./dag.js";
import { InvalidArgumentError, ResourceExhaustedError } from "./errors.js";
import { validateBudget } from "./flow-control.js";
import { inputByteLength } from "./input.js";
import { validateLabels } from "./labels.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
import { validateName } from "./names.js";
import { validateNodeFlowControl } from "./node-spec.js";
import { validateStorableJson, validateStorableText } from "./storable.js";
import { quoteForMessage } from "./text.js";

/** What a schedule id may look like: chosen by the caller, unique. */
export const SCHEDULE_ID_PATTERN = /^[A-Za-z0-9_.-]{1,128}$/;

/** The time zone of a schedule that names none. */
export const DEFAULT_SCHEDULE_TIMEZONE = "UTC";

/** The label every workflow a schedule creates carries, with the schedule's id as its value. */
export const SCHEDULE_LABEL = "schedule";

/**
 * How far ahead a cron expression must fire at least once. Eight years covers every expression that fires at all
 * (February 29 comes back within eight years, 2096 to 2104 being the longest gap); one that does not fire in them is
 * refused as never firing.
 */
export const CRON_HORIZON_MS = 8 * 366 * 86_400_000;

/** Longest cron expression accepted, in characters. */
export const MAX_CRON_LENGTH = 256;

/** A workflow request as a schedule stores it: what each tick passes to CreateWorkflow. */
export interface ScheduledWorkflow {
  name: string;
  nodes: readonly Node[];
  input?: JsonObject | undefined;
  labels?: Readonly<Record<string, string>> | undefined;
  requestId?: string | undefined;
  budget?: Readonly<Record<string, number>> | undefined;
}

/** Throws InvalidArgumentError unless `id` is a well-formed schedule id (`required` when empty). */
export function assertScheduleId(id: string, field = "id"): void {
  if (id === "") throw new InvalidArgumentError(field, "required");
  if (!SCHEDULE_ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(field, `${quoteForMessage(id)} must match [A-Za-z0-9_.-]{1,128}`);
  }
}

/**
 * The IANA time zone a schedule runs in: `UTC` for an empty one. Throws InvalidArgumentError for a name the runtime's
 * time-zone database does not know (`Mars/Olympus`) or that is no zone name (`+01:00`).
 */
export function scheduleTimeZone(timezone: string, field = "timezone"): string {
  if (timezone === "") return DEFAULT_SCHEDULE_TIMEZONE;
  try {
    // Throws RangeError for an unknown zone: the same database (ICU's) that the cron computation uses through Luxon.
    new Intl.DateTimeFormat("en-US", { timeZone: timezone });
  } catch {
    throw new InvalidArgumentError(
      field,
      `unknown time zone ${quoteForMessage(timezone)} (an IANA name such as Europe/Paris)`,
    );
  }
  return timezone;
}

/**
 * Throws InvalidArgumentError unless `cron` is a 5-field cron expression (minute hour day-of-month month day-of-week:
 * numbers, names, `*`, `,`, `-`, `/`, `L`, `#`) that fires within {@link CRON_HORIZON_MS} in `timezone`. Seconds
 * (a sixth field), `@daily`-style macros and `H` (random, so two schedulers would disagree) are refused.
 */
export function validateCron(cron: string, timezone: string, field = "cron", now = new Date()): void {
  if (cron.trim() === "") throw new InvalidArgumentError(field, "required");
  if (cron.length > MAX_CRON_LENGTH)
    throw new InvalidArgumentError(field, `must be at most ${MAX_CRON_LENGTH} characters`);
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== 5) {
    throw new InvalidArgumentError(
      field,
      `${quoteForMessage(cron)} has ${fields.length} fields; expected 5 (minute hour day-of-month month day-of-week)`,
    );
  }
  if (/[Hh@?]/.test(cron)) {
    throw new InvalidArgumentError(field, `${quoteForMessage(cron)}: H, ? and @ are not supported`);
  }
  let next: Date;
  try {
    next = CronExpressionParser.parse(cron, { currentDate: now, tz: timezone }).next().toDate();
  } catch (error) {
    throw new InvalidArgumentError(
      field,
      `${quoteForMessage(cron)} is not a valid cron expression: ${reasonOf(error)}`,
    );
  }
  if (next.getTime() - now.getTime() > CRON_HORIZON_MS) {
    throw new InvalidArgumentError(field, `${quoteForMessage(cron)} never fires`);
  }
}

/**
 * The first tick of `cron` in `timezone` strictly after `after`. Daylight-saving days: a tick at a local time that
 * does not exist (02:30 on the spring-forward day in Europe/Berlin) runs an hour later, at 03:30 local time; a tick at
 * a local time that happens twice (02:30 on the fall-back day) runs once, at the first of them. Expressions that fire
 * every hour or more often keep firing by the wall clock through both hours of a fall-back day.
 */
export function nextScheduleTick(cron: string, timezone: string, after: Date): Date {
  return CronExpressionParser.parse(cron, { currentDate: after, tz: timezone }).next().toDate();
}

/** The idempotency key of a schedule's tick: a tick run again (a retry, a second scheduler) creates nothing new. */
export function scheduleRequestId(scheduleId: string, tick: Date): string {
  return `schedule/${scheduleId}/${tick.toISOString()}`;
}

/** The workflow a schedule's tick creates: its template, labelled `schedule: <id>`, with the tick's request id. */
export function scheduledWorkflowRequest(
  scheduleId: string,
  workflow: ScheduledWorkflow,
  tick: Date,
): ScheduledWorkflow & { labels: Record<string, string>; requestId: string } {
  return {
    ...workflow,
    labels: { ...workflow.labels, [SCHEDULE_LABEL]: scheduleId },
    requestId: scheduleRequestId(scheduleId, tick),
  };
}

/**
 * Checks a CreateWorkflow request as CreateWorkflow does (name, input, labels, budget, request id, the whole DAG),
 * with every field path under `field` (`schedule.workflow.nodes[0].capability`; `""` for the request's own names).
 */
export function validateWorkflowRequest(
  request: ScheduledWorkflow,
  field = "",
  limits: WorkflowLimits = DEFAULT_LIMITS,
): void {
  const at = (name: string) => (field === "" ? name : `${field}.${name}`);
  validateName(request.name, at("name"));
  if (request.requestId !== undefined && request.requestId.length > 256) {
    throw new InvalidArgumentError(at("request_id"), "must be at most 256 characters");
  }
  validateStorableText(request.requestId ?? "", at("request_id"));
  validateStorableJson(request.input, at("input"));
  validateLabels(request.labels ?? {}, at("labels"), limits);
  validateBudget(request.budget ?? {}, at("budget"));
  if (inputByteLength(request.input) > limits.maxInputBytes) {
    throw new ResourceExhaustedError(at("input"), `exceeds ${limits.maxInputBytes} bytes`);
  }
  for (const [i, node] of request.nodes.entries()) validateNodeFlowControl(node, `${at("nodes")}[${i}]`);
  validateWorkflowNodes(request.nodes, limits, at("nodes"));
}

/** What a schedule is made of, as CreateSchedule receives it. */
export interface ScheduleSpec {
  id: string;
  cron: string;
  /** IANA name; `""` means UTC. */
  timezone: string;
  workflow?: ScheduledWorkflow | undefined;
}

/**
 * Checks a whole schedule (id, cron, time zone, and its workflow as each tick will create it: labelled, with a tick's
 * request id), field paths under `field` (`schedule.cron`). Returns its time zone (`UTC` for an empty one).
 */
export function validateScheduleSpec(
  spec: ScheduleSpec,
  field = "schedule",
  limits: WorkflowLimits = DEFAULT_LIMITS,
  now = new Date(),
): string {
  assertScheduleId(spec.id, `${field}.id`);
  const timezone = scheduleTimeZone(spec.timezone, `${field}.timezone`);
  validateCron(spec.cron, timezone, `${field}.cron`, now);
  validateScheduledWorkflow(spec.id, spec.workflow, `${field}.workflow`, limits);
  return timezone;
}

/**
 * Checks the workflow a schedule's ticks create, as CreateWorkflow would see it (with the `schedule` label and a
 * tick's request id added). Its own `request_id` must be empty: each tick sets one.
 */
export function validateScheduledWorkflow(
  scheduleId: string,
  workflow: ScheduledWorkflow | undefined,
  field = "schedule.workflow",
  limits: WorkflowLimits = DEFAULT_LIMITS,
): void {
  if (workflow === undefined) throw new InvalidArgumentError(field, "required");
  if ((workflow.requestId ?? "") !== "") {
    throw new InvalidArgumentError(`${field}.request_id`, "must be empty: each tick sets its own");
  }
  if (workflow.labels !== undefined && Object.hasOwn(workflow.labels, SCHEDULE_LABEL)) {
    throw new InvalidArgumentError(`${field}.labels`, `${quoteForMessage(SCHEDULE_LABEL)} is set by each tick`);
  }
  validateWorkflowRequest(scheduledWorkflowRequest(scheduleId, workflow, new Date(0)), field, limits);
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
