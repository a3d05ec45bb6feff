import { ConfigError, type Env, readInt } from "@trellis/config";
import { type RetentionBatch, deleteFinishedWorkflows } from "@trellis/db";
import type pg from "pg";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";

/** Default of `RETENTION_DAYS`: finished workflows are kept 30 days. */
export const DEFAULT_RETENTION_DAYS = 30;

/** Retention of finished workflows (`RETENTION_DAYS`, `RETENTION_INTERVAL_MS`, `RETENTION_BATCH_SIZE`). */
export interface RetentionSettings {
  /** Finished workflows whose finished_at is older than this many days (a fraction allowed) are deleted. */
  days: number;
  /** How often the scheduler looks for them. @default 60000 */
  intervalMs: number;
  /** Workflows deleted per transaction at most. @default 500 */
  batchSize: number;
}

/** The shortest retention `RETENTION_DAYS` accepts: one second (about 0.0000116 days). */
export const MIN_RETENTION_MS = 1_000;
/** The longest: 36500 days. */
export const MAX_RETENTION_DAYS = 36_500;

/**
 * Reads `RETENTION_DAYS` (a number of days, decimals allowed: `0.0005` is 43.2 s; default 30; `0` or `off` keeps
 * everything: undefined), `RETENTION_INTERVAL_MS` and `RETENTION_BATCH_SIZE`. The last two are read even when
 * retention is off, so a mistake in them shows at once.
 */
export function readRetentionSettings(env: Env): RetentionSettings | undefined {
  const intervalMs = readInt(env, "RETENTION_INTERVAL_MS", 60_000, { min: 1_000, max: 86_400_000 });
  const batchSize = readInt(env, "RETENTION_BATCH_SIZE", 500, { min: 1, max: 10_000 });
  const raw = env.RETENTION_DAYS?.trim() ?? "";
  if (raw === "") return { days: DEFAULT_RETENTION_DAYS, intervalMs, batchSize };
  if (raw.toLowerCase() === "off") return undefined;
  const got = `got ${JSON.stringify(raw)}`;
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(raw)) {
    throw ConfigError.invalid(
      "RETENTION_DAYS",
      `must be a number of days (decimals allowed, e.g. 30 or 0.5), or 0 or "off" to keep finished workflows forever, ${got}`,
    );
  }
  const days = Number(raw);
  if (days < 0) {
    throw ConfigError.invalid(
      "RETENTION_DAYS",
      `must not be negative (0 or "off" keeps finished workflows forever), ${got}`,
    );
  }
  if (days === 0) return undefined;
  if (days > MAX_RETENTION_DAYS) {
    throw ConfigError.invalid("RETENTION_DAYS", `must be at most ${MAX_RETENTION_DAYS} days, ${got}`);
  }
  if (days * 86_400_000 < MIN_RETENTION_MS) {
    throw ConfigError.invalid(
      "RETENTION_DAYS",
      `must be at least one second (0.0000116 days), or 0 or "off" to keep finished workflows forever, ${got}`,
    );
  }
  return { days, intervalMs, batchSize };
}

/** Registers `trellis_retention_deleted_workflows_total`. */
export function createRetentionCounter(registry: Registry): Counter {
  return new Counter({
    name: "trellis_retention_deleted_workflows_total",
    help: "Finished workflows this scheduler deleted (with their nodes, edges, events and attempts) under RETENTION_DAYS.",
    registers: [registry],
  });
}

/** Options of {@link Retention}. */
export interface RetentionOptions extends RetentionSettings {
  pool: pg.Pool;
  logger: Logger;
  /** `trellis_retention_deleted_workflows_total`. @default none */
  deleted?: Counter;
  /** The clock (tests). @default Date.now */
  now?: () => number;
  /** Sleep between two batches, as a multiple of the last batch's duration. @default 4 */
  pauseFactor?: number;
  /** Deletes one batch. @default deleteFinishedWorkflows */
  deleteBatch?: typeof deleteFinishedWorkflows;
}

/** What one retention pass did. */
export interface RetentionPass {
  batches: number;
  workflows: number;
}

/**
 * Deletes finished workflows older than `days`: every `intervalMs` a pass deletes batches of at most `batchSize`
 * workflows (one transaction each, deleteFinishedWorkflows) until a batch comes back short. Between two batches it
 * sleeps `pauseFactor` times as long as the last one took (4: retention keeps one connection of the scheduler's pool
 * busy a fifth of the time at most), and the hot path (claims, results, which never touch a finished workflow's rows) never waits for it.
 * A failed batch is logged and the pass ends; the next one retries.
 */
export class Retention {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private stopped = true;
  /** Set by stop(): a pass in progress ends after its current batch. */
  private stopRequested = false;
  private readonly now: () => number;
  private readonly deleteBatch: typeof deleteFinishedWorkflows;

  constructor(private readonly options: RetentionOptions) {
    this.now = options.now ?? Date.now;
    this.deleteBatch = options.deleteBatch ?? deleteFinishedWorkflows;
  }

  /** Starts the passes: the first one right away. */
  start(): void {
    this.stopped = false;
    this.stopRequested = false;
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.pass()
        .catch(() => undefined)
        .finally(() => {
          this.running = null;
          this.schedule(this.options.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass: batches until one comes back short (or retention is stopped). */
  async pass(): Promise<RetentionPass> {
    const { pool, logger, batchSize, days } = this.options;
    const total: RetentionPass = { batches: 0, workflows: 0 };
    const before = new Date(this.now() - days * 86_400_000);
    for (;;) {
      const started = performance.now();
      let batch: RetentionBatch;
      try {
        batch = await this.deleteBatch(pool, { before, batchSize });
      } catch (error) {
        logger.warn({ err: error, retentionDays: days }, "retention batch failed; the next pass retries");
        return total;
      }
      const ms = Math.round(performance.now() - started);
      total.batches++;
      total.workflows += batch.workflows;
      if (batch.workflows > 0) {
        this.options.deleted?.inc(batch.workflows);
        logger.info(
          {
            retentionDays: days,
            workflows: batch.workflows,
            nodes: batch.nodes,
            edges: batch.edges,
            events: batch.events,
            attempts: batch.attempts,
            oldestFinishedAt: batch.oldestFinishedAt?.toISOString(),
            before: before.toISOString(),
            ms,
          },
          "retention: deleted finished workflows",
        );
      }
      if (batch.workflows < batchSize || this.stopRequested) return total;
      await new Promise((resolve) => setTimeout(resolve, ms * (this.options.pauseFactor ?? 4)).unref());
    }
  }

  /** Stops the passes and waits for the one in progress (which ends after its current batch). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopRequested = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (this.running) await this.running;
  }
}
