import { create, fromJson, type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AlreadyExistsError,
  DEFAULT_LIMITS,
  NotFoundError,
  TrellisError,
  type WorkflowLimits,
  assertScheduleId,
  nextScheduleTick,
  quoteForMessage,
  scheduleTimeZone,
  scheduledWorkflowRequest,
  validateCron,
  validateScheduleSpec,
  validateScheduledWorkflow,
} from "@trellis/core";
import { type CreateWorkflowRequest, CreateWorkflowRequestSchema, type Schedule, ScheduleSchema } from "@trellis/proto";
import { asc, eq, sql } from "drizzle-orm";
import { CHANNELS } from "./channels.js";
import { schedules } from "./schema.js";
import type { CreateWorkflowInput, CreateWorkflowResult, ScheduleTicks, UpdateScheduleInput } from "./state-manager.js";
import { type Transactions, type TxContext, notifyAfterCommit } from "./transactions.js";

/** A row of the `schedules` table. */
type ScheduleRow = typeof schedules.$inferSelect;

/** Creates a workflow inside a caller's transaction, as CreateWorkflow does (WorkflowStore.createWorkflow). */
export type CreateWorkflowIn = (ctx: TxContext, input: CreateWorkflowInput) => Promise<CreateWorkflowResult>;

/** A schedule as the API shows it; `next_run_at` is left unset while it is paused (nothing will run then). */
export function scheduleFromRow(row: ScheduleRow): Schedule {
  return create(ScheduleSchema, {
    id: row.id,
    cron: row.cron,
    timezone: row.timezone,
    workflow: workflowOfRow(row),
    paused: row.paused,
    nextRunAt: row.paused ? undefined : timestampFromDate(row.nextRunAt),
    lastWorkflowId: row.lastWorkflowId ?? "",
  });
}

function workflowOfRow(row: Pick<ScheduleRow, "workflow">): CreateWorkflowRequest {
  return fromJson(CreateWorkflowRequestSchema, row.workflow as JsonObject);
}

function workflowJson(workflow: CreateWorkflowRequest): JsonObject {
  return toJson(CreateWorkflowRequestSchema, workflow) as JsonObject;
}

/** A due row taken by {@link ScheduleStore.runDueSchedules}, with PostgreSQL's clock. */
interface DueRow extends Record<string, unknown> {
  id: string;
  cron: string;
  timezone: string;
  workflow: JsonObject;
  next_run_at_ms: number;
  now_ms: number;
}

/**
 * Cron schedules: CreateSchedule, ListSchedules, UpdateSchedule and DeleteSchedule for the api, and the ticks for the
 * scheduler. A tick takes its due row with `FOR UPDATE SKIP LOCKED`, creates the workflow through CreateWorkflow's own
 * code (same validation, rows and events) with the request id `schedule/<id>/<tick>`, and moves `next_run_at` to the
 * first tick after now, in one transaction: however many schedulers run, a tick creates one workflow, and a tick
 * whose transaction did not commit runs again with the same request id. Every change notifies `trellis_schedules`,
 * so the schedulers plan their next wake again.
 */
export class ScheduleStore {
  constructor(
    private readonly transactions: Transactions,
    private readonly createWorkflowIn: CreateWorkflowIn,
    private readonly limits: WorkflowLimits = DEFAULT_LIMITS,
  ) {}

  async createSchedule(schedule: Schedule): Promise<Schedule> {
    const timezone = validateScheduleSpec(schedule, "schedule", this.limits);
    const workflow = schedule.workflow!;
    return this.transactions.write(async (ctx) => {
      const now = await this.now(ctx);
      const [row] = await ctx.tx
        .insert(schedules)
        .values({
          id: schedule.id,
          cron: schedule.cron.trim(),
          timezone,
          workflow: workflowJson(workflow),
          paused: schedule.paused,
          nextRunAt: nextScheduleTick(schedule.cron, timezone, now),
        })
        .onConflictDoNothing({ target: schedules.id })
        .returning();
      if (!row) throw new AlreadyExistsError(`schedule ${quoteForMessage(schedule.id)} already exists`);
      notifyAfterCommit(ctx, CHANNELS.schedules, schedule.id);
      return scheduleFromRow(row);
    });
  }

  async listSchedules(): Promise<Schedule[]> {
    const rows = await this.transactions.db.select().from(schedules).orderBy(asc(schedules.id));
    return rows.map(scheduleFromRow);
  }

  async updateSchedule(id: string, update: UpdateScheduleInput): Promise<Schedule> {
    assertScheduleId(id, "schedule.id");
    return this.transactions.write(async (ctx) => {
      const [current] = await ctx.tx.select().from(schedules).where(eq(schedules.id, id)).for("update");
      if (!current) throw new NotFoundError(`schedule ${quoteForMessage(id)} not found`);
      const cron = update.cron?.trim() ?? current.cron;
      const timezone =
        update.timezone === undefined ? current.timezone : scheduleTimeZone(update.timezone, "schedule.timezone");
      const paused = update.paused ?? current.paused;
      const now = await this.now(ctx);
      if (update.cron !== undefined || update.timezone !== undefined)
        validateCron(cron, timezone, "schedule.cron", now);
      if (update.workflow !== undefined)
        validateScheduledWorkflow(id, update.workflow, "schedule.workflow", this.limits);
      // A new cron or zone, or a resume, counts from now: ticks missed while paused are not replayed.
      const replan = update.cron !== undefined || update.timezone !== undefined || (current.paused && !paused);
      const [row] = await ctx.tx
        .update(schedules)
        .set({
          cron,
          timezone,
          paused,
          ...(update.workflow !== undefined ? { workflow: workflowJson(update.workflow) } : {}),
          ...(replan ? { nextRunAt: nextScheduleTick(cron, timezone, now) } : {}),
          updatedAt: now,
        })
        .where(eq(schedules.id, id))
        .returning();
      notifyAfterCommit(ctx, CHANNELS.schedules, id);
      return scheduleFromRow(row!);
    });
  }

  async deleteSchedule(id: string): Promise<boolean> {
    assertScheduleId(id, "id");
    return this.transactions.write(async (ctx) => {
      const deleted = await ctx.tx.delete(schedules).where(eq(schedules.id, id)).returning({ id: schedules.id });
      if (deleted.length > 0) notifyAfterCommit(ctx, CHANNELS.schedules, id);
      return deleted.length > 0;
    });
  }

  /**
   * Runs up to `limit` due schedules, oldest due first, in one transaction. A due row held by another scheduler is
   * skipped (it is running that tick). The tick is the row's `next_run_at`, however late: a schedule whose ticks were
   * missed while no scheduler ran creates one workflow for the first of them, and goes on at the first tick after now
   * (the others are not replayed). A workflow CreateWorkflow refuses (a limit lowered since the schedule was made)
   * is reported in the result and skipped: the schedule moves on.
   */
  async runDueSchedules(limit: number): Promise<ScheduleTicks> {
    const ticks = await this.transactions.write(async (ctx) => {
      // PostgreSQL's clock decides what is due and what comes next: every scheduler agrees whatever its own clock.
      const { rows } = await ctx.tx.execute<DueRow>(sql`
        select id, cron, timezone, workflow,
               extract(epoch from next_run_at)::float8 * 1000 as next_run_at_ms,
               extract(epoch from clock_timestamp())::float8 * 1000 as now_ms
          from schedules
         where not paused and next_run_at <= clock_timestamp()
         order by next_run_at, id
         limit ${limit}
           for update skip locked`);
      const done: ScheduleTicks["ticks"] = [];
      for (const row of rows) {
        const tick = new Date(Math.round(row.next_run_at_ms));
        const now = new Date(row.now_ms);
        const request = scheduledWorkflowRequest(row.id, workflowOfRow(row), tick);
        let workflowId: string | null = null;
        let created = false;
        let refused: string | undefined;
        try {
          const result = await this.createWorkflowIn(ctx, request);
          workflowId = result.workflow.id;
          created = result.created;
        } catch (error) {
          // Refused before anything was written, so the transaction goes on; anything else rolls the batch back.
          if (!(error instanceof TrellisError)) throw error;
          refused = error.message;
        }
        let nextRunAt: Date | null = null;
        try {
          nextRunAt = nextScheduleTick(row.cron, row.timezone, now > tick ? now : tick);
        } catch (error) {
          // Checked when stored, so only a time-zone database changed under it could do this: pause the schedule
          // rather than fail every tick of every schedule in the batch.
          refused = `${refused ? `${refused}; ` : ""}no next tick (${(error as Error).message}): schedule paused`;
        }
        await ctx.tx
          .update(schedules)
          .set({
            ...(nextRunAt !== null ? { nextRunAt } : { paused: true }),
            lastRunAt: now,
            ...(workflowId !== null ? { lastWorkflowId: workflowId } : {}),
            updatedAt: now,
          })
          .where(eq(schedules.id, row.id));
        done.push({
          scheduleId: row.id,
          tick,
          workflowId,
          created,
          nextRunAt: nextRunAt ?? tick,
          ...(refused ? { refused } : {}),
        });
      }
      return done;
    });
    return { ticks, nextDueInMs: await this.nextDueInMs() };
  }

  /** Milliseconds until the earliest not-paused schedule is due by PostgreSQL's clock (<= 0: due); null for none. */
  async nextDueInMs(): Promise<number | null> {
    const { rows } = await this.transactions.db.execute<{ ms: number | null }>(sql`
      select extract(epoch from (min(next_run_at) - clock_timestamp()))::float8 * 1000 as ms
        from schedules where not paused`);
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? null : Number(ms);
  }

  private async now(ctx: TxContext): Promise<Date> {
    const { rows } = await ctx.tx.execute<{ now_ms: number }>(
      sql`select extract(epoch from clock_timestamp())::float8 * 1000 as now_ms`,
    );
    return new Date(Number(rows[0]!.now_ms));
  }
}
