import type { StateManager } from "@trellis/db";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";

/** Options of the ScheduleTicker. */
export interface ScheduleTickerOptions {
  stateManager: Pick<StateManager, "runDueSchedules">;
  logger: Logger;
  /** The longest sleep between two looks at the schedules (SCHEDULER_POLL_MS). @default 1000 */
  pollMs?: number;
  /** Due schedules taken per transaction. @default 50 */
  batchSize?: number;
  /** Called with the id of each workflow a tick created (an in-process scheduler claims its nodes at once). */
  onWorkflowCreated?: (workflowId: string) => void;
  /** `trellis_schedule_ticks_total{result}` (see {@link createScheduleTickCounter}). @default none */
  ticks?: Counter<"result">;
}

/**
 * Registers `trellis_schedule_ticks_total{result}`: the ticks this scheduler ran, by `result`: `created` (the tick's
 * workflow), `replayed` (its request id had created it already) or `refused` (CreateWorkflow refused it).
 */
export function createScheduleTickCounter(registry: Registry): Counter<"result"> {
  const counter = new Counter({
    name: "trellis_schedule_ticks_total",
    help: "Schedule ticks this scheduler ran, by result: created, replayed (created before) or refused.",
    labelNames: ["result"],
    registers: [registry],
  });
  for (const result of ["created", "replayed", "refused"]) counter.inc({ result }, 0);
  return counter;
}

/**
 * Runs the cron schedules: each pass creates the workflows of the due schedules (runDueSchedules: one workflow per
 * tick, whatever the number of schedulers), then sleeps until the earliest next tick, at most `pollMs`. Woken early
 * by `wake()` (a schedule was created or changed: LISTEN trellis_schedules). Passes never overlap.
 */
export class ScheduleTicker {
  private running: Promise<void> | null = null;
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = true;
  private readonly pollMs: number;
  private readonly batchSize: number;

  constructor(private readonly options: ScheduleTickerOptions) {
    this.pollMs = options.pollMs ?? 1_000;
    this.batchSize = options.batchSize ?? 50;
  }

  /** Runs a first pass; the next ones follow by themselves. */
  start(): void {
    this.stopped = false;
    this.wake();
  }

  /** Asks for a pass as soon as possible. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.dirty = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.running = this.passes().finally(() => {
      this.running = null;
    });
  }

  private async passes(): Promise<void> {
    let sleepMs = this.pollMs;
    do {
      this.dirty = false;
      try {
        sleepMs = await this.pass();
      } catch (error) {
        sleepMs = this.pollMs;
        this.options.logger.error({ err: error }, "schedule pass failed; the next poll retries");
      }
    } while ((this.dirty || sleepMs === 0) && !this.stopped);
    if (this.stopped) return;
    this.timer = setTimeout(() => this.wake(), sleepMs);
    this.timer.unref();
  }

  /** One pass: runs the due schedules (a batch); returns how long to sleep before the next (0: more are due). */
  async pass(): Promise<number> {
    const { ticks, nextDueInMs } = await this.options.stateManager.runDueSchedules(this.batchSize);
    for (const t of ticks) {
      const fields = { schedule: t.scheduleId, tick: t.tick.toISOString(), nextRunAt: t.nextRunAt.toISOString() };
      this.options.ticks?.inc({ result: t.workflowId === null ? "refused" : t.created ? "created" : "replayed" });
      if (t.workflowId !== null) {
        this.options.logger.info({ ...fields, workflowId: t.workflowId, created: t.created }, "schedule tick");
        if (t.created) this.options.onWorkflowCreated?.(t.workflowId);
      }
      if (t.refused !== undefined) {
        const what = t.workflowId === null ? "schedule tick refused by CreateWorkflow; skipped" : "schedule paused";
        this.options.logger.warn({ ...fields, reason: t.refused }, what);
      }
    }
    if (ticks.length >= this.batchSize) return 0;
    // A due row left (nextDueInMs <= 0) is another scheduler's, in its tick now: look again at the next poll.
    if (nextDueInMs === null || nextDueInMs <= 0) return this.pollMs;
    // A few ms late rather than early: a pass a hair before the tick (clocks) finds nothing and sleeps again.
    return Math.min(this.pollMs, Math.ceil(nextDueInMs) + 5);
  }

  /** Resolves once no pass is running. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Stops the ticks and waits for the pass in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.idle();
  }
}
