import type { PgEventRelayStore, RelayEvent, RelayPosition } from "@trellis/db";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { createEventRelayMetrics, type EventRelayMetrics } from "./metrics.js";

/** What the relay needs of its PostgreSQL side (a PgEventRelayStore). */
export type EventRelayStore = Pick<
  PgEventRelayStore,
  "holdsLock" | "tryLock" | "loadCursor" | "readBatch" | "saveCursor" | "reset"
>;

/** Options of the EventRelay. */
export interface EventRelayOptions {
  /** Its own PostgreSQL connection, lock and cursor; the relay closes it on stop. */
  store: EventRelayStore;
  /** Its own Redis connection, whose commands fail rather than wait forever; the relay closes it on stop. */
  redis: Pick<Redis, "multi" | "disconnect">;
  /** The stream's key. */
  streamKey: string;
  logger: Logger;
  /** Where `trellis_events_relayed_total` and `trellis_event_relay_lag_seconds` are registered, if anywhere. */
  registry?: Registry;
  /** Approximate length the stream is trimmed to (`XADD MAXLEN ~`). @default 1000000 */
  maxLen?: number;
  /** Poll under LISTEN/NOTIFY, for events no notification announced. @default 1000 */
  pollMs?: number;
  /** Events read and published at once (one MULTI). @default 1000 */
  batchSize?: number;
  /** How often a relay that does not hold the lock tries to take it. @default 5000 */
  lockRetryMs?: number;
  /** The clock, in epoch milliseconds. @default Date.now */
  now?: () => number;
}

/** The fields of one stream entry for `event`, as XADD takes them: field, value, field, value, ... */
export function streamEntryFields(event: RelayEvent): string[] {
  return [
    "workflow_id",
    event.workflowId,
    "sequence",
    String(event.sequence),
    "type",
    event.type,
    "node_id",
    event.nodeId ?? "",
    "workflow_status",
    event.workflowStatus,
    "node_status",
    event.nodeStatus ?? "",
    "time",
    event.time.toISOString(),
    "data",
    JSON.stringify(event.data),
  ];
}

/** A Redis failure while publishing: the relay keeps its lock and publishes the batch again. */
class PublishError extends Error {
  constructor(cause: unknown) {
    super(`publishing to Redis failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = "PublishError";
  }
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
// After a read that found events held back by a running transaction, the next read comes this soon, doubling up to
// pollMs: such a transaction usually commits within milliseconds, and it may write no event (so no NOTIFY comes).
const MIN_HELD_BACK_RETRY_MS = 10;
// stop() lets a round finish for this long before it closes the connections under it.
const STOP_GRACE_MS = 2_000;

/**
 * Publishes every committed workflow event to a Redis Stream, at least once, each workflow's events in sequence
 * order. Only the holder of the stream key's PostgreSQL advisory lock publishes; the others retry the lock. A round
 * reads a batch after the stored cursor, XADDs it in one MULTI, then stores the cursor: a crash in between publishes
 * the batch again. Woken by `wake()` (wired to the events NOTIFY channel) and by a poll. Failures of PostgreSQL or
 * Redis are logged and retried with a backoff (100 ms doubling to 5 s); they never escape.
 */
export class EventRelay {
  private readonly abort = new AbortController();
  private readonly metrics: EventRelayMetrics | null;
  private readonly now: () => number;
  private loop: Promise<void> | null = null;
  /** The stored cursor while this relay holds the lock; null otherwise. */
  private cursor: RelayPosition | null = null;
  /** Time of the oldest event not yet published, as far as the last round knows; null when caught up. */
  private behindSince: Date | null = null;
  private standingBy = false;
  private woken = false;
  private wakeup: (() => void) | null = null;
  private heldBackRetryMs = MIN_HELD_BACK_RETRY_MS;

  constructor(private readonly options: EventRelayOptions) {
    this.now = options.now ?? Date.now;
    this.metrics = options.registry ? createEventRelayMetrics(options.registry, () => this.lagSeconds()) : null;
  }

  /** Starts relaying in the background. */
  start(): void {
    this.loop ??= this.run().catch((error: unknown) => {
      // run() handles every failure of a round; this is a bug, and still must not take the scheduler down.
      this.options.logger.error({ err: error, streamKey: this.options.streamKey }, "event relay stopped");
    });
  }

  /** Asks for a round as soon as possible (new events were committed). */
  wake(): void {
    this.woken = true;
    this.wakeup?.();
  }

  /** Whether this relay holds the lock and publishes. */
  get publishing(): boolean {
    return this.cursor !== null;
  }

  /**
   * Seconds since the time of the oldest event not yet published: the last one published while a backlog remains,
   * the first of a batch that could not be published, or the first held back by a running transaction. 0 when
   * caught up, and on a relay that does not hold the lock.
   */
  lagSeconds(): number {
    if (!this.behindSince) return 0;
    return Math.max(0, (this.now() - this.behindSince.getTime()) / 1_000);
  }

  /** Stops after the round in progress, releases the lock and closes both connections. */
  async stop(): Promise<void> {
    this.abort.abort();
    const loop = this.loop ?? Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, STOP_GRACE_MS);
    });
    await Promise.race([loop, grace]);
    clearTimeout(timer);
    // Anything still waiting on a connection fails now, and the loop ends.
    this.options.redis.disconnect();
    await this.options.store.reset();
    await loop;
    this.cursor = null;
    this.behindSince = null;
  }

  private async run(): Promise<void> {
    const { logger, streamKey } = this.options;
    let failures = 0;
    while (!this.abort.signal.aborted) {
      let pause: { ms: number; wakeable: boolean };
      try {
        pause = await this.round();
        failures = 0;
      } catch (error) {
        if (this.abort.signal.aborted) break;
        failures++;
        const ms = Math.min(MIN_BACKOFF_MS * 2 ** (failures - 1), MAX_BACKOFF_MS);
        const failed = error instanceof PublishError ? "Redis" : "PostgreSQL";
        logger.warn({ err: error, streamKey, retryInMs: ms }, `event relay: ${failed} failed; retrying`);
        if (!(error instanceof PublishError)) {
          // The connection may be broken: drop it (and the lock) and take the lock again, from the stored cursor.
          this.cursor = null;
          await this.options.store.reset();
        }
        pause = { ms, wakeable: false };
      }
      await this.pause(pause.ms, pause.wakeable);
    }
  }

  /** One round; returns how long to wait before the next one, and whether a wake() may cut that short. */
  private async round(): Promise<{ ms: number; wakeable: boolean }> {
    const { store, logger, streamKey } = this.options;
    const pollMs = this.options.pollMs ?? 1_000;
    const batchSize = this.options.batchSize ?? 1_000;
    if (!this.cursor || !store.holdsLock) {
      this.cursor = null;
      if (!(await store.tryLock())) {
        this.behindSince = null;
        if (!this.standingBy) logger.info({ streamKey }, "event relay: another process holds the lock; standing by");
        this.standingBy = true;
        return { ms: this.options.lockRetryMs ?? 5_000, wakeable: false };
      }
      this.standingBy = false;
      this.cursor = await store.loadCursor();
      logger.info({ streamKey, cursor: this.cursor }, "event relay: holding the lock; publishing from the cursor");
    }
    this.woken = false;
    const { events, heldBackSince } = await store.readBatch(this.cursor, batchSize);
    const last = events.at(-1);
    if (last) {
      this.behindSince = events[0]!.time;
      await this.publish(events);
      const position = { txId: last.txId, workflowId: last.workflowId, sequence: last.sequence };
      await store.saveCursor(position);
      this.cursor = position;
      this.metrics?.relayed.inc(events.length);
      logger.debug({ streamKey, events: events.length }, "event relay: published");
    }
    if (last && events.length >= batchSize) {
      this.behindSince = last.time;
      return { ms: 0, wakeable: true };
    }
    this.behindSince = heldBackSince;
    if (!heldBackSince) {
      this.heldBackRetryMs = MIN_HELD_BACK_RETRY_MS;
      return { ms: pollMs, wakeable: true };
    }
    const ms = Math.min(this.heldBackRetryMs, pollMs);
    this.heldBackRetryMs = Math.min(this.heldBackRetryMs * 2, pollMs);
    return { ms, wakeable: true };
  }

  /** XADDs the batch in one MULTI: all of it or none of it is appended. */
  private async publish(events: readonly RelayEvent[]): Promise<void> {
    const { redis, streamKey } = this.options;
    const maxLen = this.options.maxLen ?? 1_000_000;
    const multi = redis.multi();
    for (const event of events) multi.xadd(streamKey, "MAXLEN", "~", maxLen, "*", ...streamEntryFields(event));
    let results: [Error | null, unknown][] | null;
    try {
      results = await multi.exec();
    } catch (error) {
      throw new PublishError(error);
    }
    if (!results) throw new PublishError(new Error("the MULTI was discarded"));
    for (const [error] of results) if (error) throw new PublishError(error);
  }

  /** Waits `ms`, or less when stopped, or when woken if `wakeable` (at once if a wake came during the round). */
  private async pause(ms: number, wakeable: boolean): Promise<void> {
    const { signal } = this.abort;
    if (ms <= 0 || signal.aborted || (wakeable && this.woken)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wakeup = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      if (wakeable) this.wakeup = done;
    });
  }
}
