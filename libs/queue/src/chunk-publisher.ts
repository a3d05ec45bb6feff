import type { OutputChunk } from "@trellis/proto";
import { type AttemptRef, CHUNK_FIELDS, chunkStreamKey } from "./output-chunks.js";
import { type RedisConnection, isCluster } from "./redis.js";

/** Where a ChunkPublisher reports that Redis went away and came back (once each). */
export interface ChunkPublisherLogger {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}

/** Options of a ChunkPublisher. */
export interface ChunkPublisherOptions {
  /**
   * A connection of its own, made to fail fast (`enableOfflineQueue: false`): while Redis is away chunks are
   * dropped, never queued in memory. A Redis Cluster's too: the streams are then hash-tagged by workflow.
   */
  redis: RedisConnection;
  /** `QUEUE_PREFIX`: the streams are `<prefix>:chunks:<workflow>/<node>/<attempt>`. */
  queuePrefix: string;
  /** How long an attempt's stream lives after its last write (`CHUNK_RETENTION_MS`). */
  retentionMs: number;
  /** Chunks kept per attempt (`CHUNK_MAX_PER_ATTEMPT`); later ones are dropped. */
  maxPerAttempt: number;
  /** Bytes of text and data kept per attempt (`CHUNK_MAX_BYTES_PER_ATTEMPT`); later chunks are dropped. */
  maxBytesPerAttempt: number;
  logger: ChunkPublisherLogger;
  /** Chunks waiting for Redis at most (a Redis slower than the NodeService); more are dropped. @default 50000 */
  maxPending?: number;
  /** Entries written per pipeline at most. @default 2000 */
  batchSize?: number;
}

/** The chunks of one running attempt: push them as they arrive, end once the call is over. */
export interface AttemptChunks {
  /** Queues a chunk for Redis; never waits, never throws. Chunks over a bound are counted and dropped. */
  push(chunk: OutputChunk): void;
  /** Writes the attempt's end marker (readers stop there). Idempotent. */
  end(): void;
  /** Chunks pushed so far, kept or not. */
  readonly pushed: number;
  /** Chunks dropped so far (over a bound, too many waiting, or Redis away). */
  readonly dropped: number;
  /** Of those, the chunks dropped for the attempt's own bounds (count or bytes); the rest are logged by the publisher. */
  readonly overBounds: number;
}

interface PendingEntry {
  key: string;
  /** The workflow: on a cluster, the entries of one workflow (one slot) go in one pipeline. */
  workflowId: string;
  fields: (string | Buffer)[];
  /** The attempt the entry counts against when it cannot be written. */
  attempt: AttemptState | null;
}

interface AttemptState {
  pushed: number;
  dropped: number;
  overBounds: number;
  bytes: number;
  ended: boolean;
}

/**
 * Publishes node attempts' output chunks to one Redis Stream per attempt, off the durable path: `push` only appends to
 * memory; whatever arrived meanwhile is written in one pipeline (XADD with MAXLEN, then PEXPIRE per stream), one
 * pipeline at a time, so 10,000 chunks a second cost a few round trips, not 10,000. A Redis that is away or slow
 * loses chunks (logged once per outage), never the node's result.
 */
export class ChunkPublisher {
  private pending: PendingEntry[] = [];
  private scheduled = false;
  private writing: Promise<void> | null = null;
  private redisAway = false;
  private overflowing = false;
  private readonly maxPending: number;
  private readonly batchSize: number;

  constructor(private readonly options: ChunkPublisherOptions) {
    this.maxPending = options.maxPending ?? 50_000;
    this.batchSize = options.batchSize ?? 2_000;
  }

  /** Starts the chunks of one attempt. */
  open(ref: AttemptRef): AttemptChunks {
    const key = chunkStreamKey(this.options.queuePrefix, ref, isCluster(this.options.redis));
    const { workflowId } = ref;
    const state: AttemptState = { pushed: 0, dropped: 0, overBounds: 0, bytes: 0, ended: false };
    const { maxPerAttempt, maxBytesPerAttempt } = this.options;
    return {
      push: (chunk) => {
        if (state.ended) return;
        const index = state.pushed++;
        const size = chunk.text.length + chunk.data.byteLength + chunk.channel.length;
        if (index >= maxPerAttempt || state.bytes + size > maxBytesPerAttempt) {
          state.dropped++;
          state.overBounds++;
          return;
        }
        if (!this.roomFor()) {
          state.dropped++;
          return;
        }
        state.bytes += size;
        const fields: (string | Buffer)[] = [
          CHUNK_FIELDS.index,
          String(index),
          CHUNK_FIELDS.channel,
          chunk.channel,
          CHUNK_FIELDS.text,
          chunk.text,
        ];
        if (chunk.data.byteLength > 0) {
          fields.push(CHUNK_FIELDS.data, Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength));
        }
        this.enqueue({ key, workflowId, fields, attempt: state });
      },
      end: () => {
        if (state.ended) return;
        state.ended = true;
        // Nothing was sent: no stream to end (a NodeService that does not stream costs no Redis write).
        if (state.pushed === 0) return;
        // The end marker is written even when chunks were dropped for want of room, so readers stop waiting.
        this.enqueue({
          key,
          workflowId,
          fields: [CHUNK_FIELDS.end, String(state.pushed), CHUNK_FIELDS.dropped, String(state.dropped)],
          attempt: null,
        });
      },
      get pushed() {
        return state.pushed;
      },
      get dropped() {
        return state.dropped;
      },
      get overBounds() {
        return state.overBounds;
      },
    };
  }

  /** Resolves once every chunk pushed so far was written (or dropped). */
  async flush(): Promise<void> {
    while (this.writing || this.pending.length > 0) {
      if (!this.writing) this.write();
      await this.writing;
    }
  }

  private roomFor(): boolean {
    if (this.pending.length < this.maxPending) {
      this.overflowing = false;
      return true;
    }
    if (!this.overflowing) {
      this.overflowing = true;
      this.options.logger.warn(
        { pending: this.pending.length },
        "output chunks arrive faster than Redis takes them; dropping chunks",
      );
    }
    return false;
  }

  private enqueue(entry: PendingEntry): void {
    this.pending.push(entry);
    if (this.scheduled || this.writing) return;
    this.scheduled = true;
    // Whatever else arrives in this turn of the event loop goes in the same pipeline.
    setImmediate(() => {
      this.scheduled = false;
      if (!this.writing) this.write();
    });
  }

  private write(): void {
    const batch = this.pending.splice(0, this.batchSize);
    if (batch.length === 0) return;
    this.writing = this.send(batch).finally(() => {
      this.writing = null;
      if (this.pending.length > 0) this.write();
    });
  }

  private async send(batch: PendingEntry[]): Promise<void> {
    if (!isCluster(this.options.redis)) return this.sendPipeline(batch);
    // A cluster pipeline's keys must be served by one node: one pipeline per workflow (one slot), sent together.
    const byWorkflow = new Map<string, PendingEntry[]>();
    for (const entry of batch) {
      const list = byWorkflow.get(entry.workflowId);
      if (list) list.push(entry);
      else byWorkflow.set(entry.workflowId, [entry]);
    }
    await Promise.all([...byWorkflow.values()].map((entries) => this.sendPipeline(entries)));
  }

  private async sendPipeline(batch: PendingEntry[]): Promise<void> {
    const { redis, maxPerAttempt, retentionMs } = this.options;
    const pipeline = redis.pipeline();
    const keys = new Set<string>();
    for (const entry of batch) {
      // MAXLEN is a second bound: the count per attempt is already capped here.
      pipeline.xadd(entry.key, "MAXLEN", "~", maxPerAttempt + 1, "*", ...entry.fields);
      keys.add(entry.key);
    }
    for (const key of keys) pipeline.pexpire(key, retentionMs);
    try {
      const replies = (await pipeline.exec()) ?? [];
      const failed = replies.find(([error]) => error !== null);
      if (failed) throw failed[0];
      if (this.redisAway) {
        this.redisAway = false;
        this.options.logger.info({}, "output chunks are published again");
      }
    } catch (error) {
      for (const entry of batch) if (entry.attempt) entry.attempt.dropped++;
      if (!this.redisAway) {
        this.redisAway = true;
        this.options.logger.warn(
          { err: error, chunks: batch.length },
          "Redis cannot take output chunks; dropping them until it can (node results are not affected)",
        );
      }
    }
  }
}
