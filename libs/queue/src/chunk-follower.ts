import type { Redis } from "ioredis";
import { NodeStatus, type Workflow, type WorkflowEvent } from "@trellis/proto";
import { type AttemptRef, chunkEvent, chunkStreamKey, decodeChunkEntry } from "./output-chunks.js";
import { type RedisConnection, clusterNodeOf, duplicateRedis, isCluster, keySlotOf } from "./redis.js";

/** How long, at most, a watcher waits for the rest of an ended attempt's chunks before it sends the ending event. */
export const DEFAULT_CHUNK_DRAIN_MS = 1_000;

/** Entries read per stream and call. */
const READ_COUNT = 500;

/** The longest a blocking read waits before it looks at its set of streams again (a safety net under UNBLOCK). */
const BLOCK_MS = 1_000;

/** Events a watcher holds between its producers (durable events, chunks) and its writer. */
const MAILBOX_SIZE = 1_000;

/** Options of {@link followWithChunks}. */
export interface FollowWithChunksOptions {
  /**
   * A command connection (not blocked by anyone); the follower makes a blocking one of its own from it. A Redis
   * Cluster's too: the streams are then hash-tagged by workflow, so one XREAD reads them all from one slot.
   */
  redis: RedisConnection;
  /** `QUEUE_PREFIX` of the workers that publish the chunks. */
  queuePrefix: string;
  workflowId: string;
  /** The workflow's durable events after the watcher's sequence: replayed, then live, ending after the terminal one. */
  events: AsyncIterable<WorkflowEvent>;
  /**
   * Every node's attempt when the watch started, and whether it was RUNNING then: the running ones are followed from
   * their first chunk at once; attempts that had ended by then are not followed when their events are replayed.
   */
  nodes: ReadonlyMap<string, { attempt: number; running: boolean }>;
  signal: AbortSignal;
  /** How long an ended attempt's last chunks are awaited. @default DEFAULT_CHUNK_DRAIN_MS */
  drainMs?: number;
  /** Redis failed: the watch goes on without chunks. */
  onError?: (error: unknown) => void;
  /**
   * How long one blocking XREAD waits when no stream is added or written (a new stream interrupts it at once).
   * Tests set it long, so that a chunk read in time shows the interruption worked. @default 1000
   */
  blockMs?: number;
}

/**
 * A workflow's durable events with the output chunks of its running attempts interleaved (type
 * `node.output_chunk`, sequence 0, each attempt's chunks in order). An attempt is followed from its first chunk
 * when it is running at the start or starts later, and until its node's attempt ends (its durable event): the
 * chunks still on their way are sent first, waiting at most `drainMs` for the attempt's end marker. Redis failing
 * ends the chunks, not the durable events.
 */
export async function* followWithChunks(options: FollowWithChunksOptions): AsyncGenerator<WorkflowEvent> {
  const inner = new AbortController();
  const abort = () => inner.abort();
  options.signal.addEventListener("abort", abort, { once: true });
  const box = new Mailbox<WorkflowEvent>(MAILBOX_SIZE, inner.signal);
  const streams = new AttemptStreams(options, (event) => box.put(event), inner.signal);
  const drainMs = options.drainMs ?? DEFAULT_CHUNK_DRAIN_MS;
  const followed = new Map<string, number>();
  const follow = (nodeId: string, attempt: number) => {
    followed.set(nodeId, attempt);
    streams.follow({ workflowId: options.workflowId, nodeId, attempt });
  };
  const finish = (nodeId: string) => {
    const attempt = followed.get(nodeId);
    if (attempt === undefined) return Promise.resolve();
    followed.delete(nodeId);
    return streams.finish({ workflowId: options.workflowId, nodeId, attempt }, drainMs);
  };
  for (const [nodeId, node] of options.nodes) if (node.running) follow(nodeId, node.attempt);

  const pump = (async () => {
    try {
      for await (const event of options.events) {
        const current = followed.get(event.nodeId);
        if (current !== undefined && endsAttempt(event, current)) await finish(event.nodeId);
        const started = startedAttempt(event);
        if (started !== undefined && followed.get(event.nodeId) !== started) {
          const known = options.nodes.get(event.nodeId);
          // An attempt that had ended before the watch started is history: its chunks are not replayed.
          if (known === undefined || started > known.attempt || (started === known.attempt && known.running)) {
            follow(event.nodeId, started);
          }
        }
        await box.put(event);
        if (inner.signal.aborted) return;
      }
      // The workflow ended: whatever is still followed ended with it.
      await Promise.all([...followed.keys()].map(finish));
      box.close();
    } catch (error) {
      box.close(error);
    }
  })();
  try {
    yield* box;
  } finally {
    inner.abort();
    options.signal.removeEventListener("abort", abort);
    streams.close();
    // Not awaited: a consumer that stops early leaves the durable source to its own signal.
    void pump;
  }
}

/** The attempt a `node.status_changed` to RUNNING starts, if the event is one. */
function startedAttempt(event: WorkflowEvent): number | undefined {
  if (event.type !== "node.status_changed" || event.nodeStatus !== NodeStatus.RUNNING) return undefined;
  return attemptOf(event);
}

function attemptOf(event: WorkflowEvent): number | undefined {
  const attempt = event.data?.attempt;
  return typeof attempt === "number" ? attempt : undefined;
}

/**
 * Whether a durable event of a node ends its attempt `attempt`: a later attempt starts, or the node leaves RUNNING
 * (PASS, FAIL, a retry or THROTTLED back to QUEUED: each names its attempt; CANCELLED names none). Replayed events of
 * earlier attempts name smaller ones and end nothing.
 */
function endsAttempt(event: WorkflowEvent, attempt: number): boolean {
  const named = attemptOf(event);
  if (event.nodeStatus === NodeStatus.RUNNING) return named !== undefined && named > attempt;
  if (named !== undefined) return named >= attempt;
  return event.nodeStatus === NodeStatus.CANCELLED;
}

/** A bounded queue between producers that wait for room and one consumer that iterates it. */
class Mailbox<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private closed = false;
  private failure: { error: unknown } | null = null;
  private wakeReader: (() => void) | null = null;
  private readonly roomWaiters: (() => void)[] = [];

  constructor(
    private readonly capacity: number,
    private readonly signal: AbortSignal,
  ) {
    signal.addEventListener("abort", () => this.close(), { once: true });
  }

  /** Adds an item once there is room (resolves at once when closed: the item is dropped). */
  async put(item: T): Promise<void> {
    while (this.items.length >= this.capacity && !this.closed) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    if (this.closed) return;
    this.items.push(item);
    this.wakeReader?.();
  }

  close(error?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    if (error !== undefined) this.failure = { error };
    this.wakeReader?.();
    for (const resolve of this.roomWaiters.splice(0)) resolve();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) {
        this.roomWaiters.shift()?.();
        yield item;
        continue;
      }
      if (this.failure) throw this.failure.error;
      if (this.closed || this.signal.aborted) return;
      await new Promise<void>((resolve) => {
        this.wakeReader = resolve;
      });
      this.wakeReader = null;
    }
  }
}

interface FollowedStream {
  ref: AttemptRef;
  /** The id after which to read: `0` (from the first entry) until something was read. */
  lastId: string;
  /** Set once the attempt's durable end was seen: resolves when its end marker is read, or at the deadline. */
  ending: (() => void) | null;
}

/**
 * The chunk streams one watcher follows, read with one blocking XREAD over all of them on a connection of its own;
 * a stream added while it blocks interrupts it (CLIENT UNBLOCK from the command connection). On a Redis Cluster the
 * streams share the workflow's slot: the XREAD goes (through ioredis) to the master serving it, whose connections
 * give the CLIENT ID to unblock and carry the CLIENT UNBLOCK.
 */
class AttemptStreams {
  private readonly streams = new Map<string, FollowedStream>();
  private readonly hashTagged: boolean;
  private connection: RedisConnection | null = null;
  private connectionId: number | null = null;
  /** Where CLIENT UNBLOCK is sent: the command connection, or on a cluster its connection to the reading master. */
  private unblockVia: Redis | null = null;
  /** On a cluster: the workflow's slot, and the CLIENT ID of the blocking connection's link to each master. */
  private slot: number | null = null;
  private readonly nodeIds = new WeakMap<Redis, number>();
  private loop: Promise<void> | null = null;
  private wakeLoop: (() => void) | null = null;
  private blocked = false;
  private round = 0;
  private failed = false;

  constructor(
    private readonly options: FollowWithChunksOptions,
    private readonly emit: (event: WorkflowEvent) => Promise<void>,
    private readonly signal: AbortSignal,
  ) {
    this.hashTagged = isCluster(options.redis);
  }

  follow(ref: AttemptRef): void {
    if (this.failed) return;
    const key = chunkStreamKey(this.options.queuePrefix, ref, this.hashTagged);
    if (this.streams.has(key)) return;
    this.streams.set(key, { ref, lastId: "0", ending: null });
    this.loop ??= this.run().catch((error: unknown) => this.fail(error));
    this.wakeLoop?.();
    this.interrupt();
  }

  /** Waits for the rest of an ended attempt's chunks (its end marker), at most `drainMs`; then stops following it. */
  async finish(ref: AttemptRef, drainMs: number): Promise<void> {
    const key = chunkStreamKey(this.options.queuePrefix, ref, this.hashTagged);
    const stream = this.streams.get(key);
    if (!stream || this.failed) {
      this.streams.delete(key);
      return;
    }
    const done = new Promise<void>((resolve) => {
      stream.ending = resolve;
    });
    // The bound is for chunks not yet in Redis (a worker that died, or is slow to publish): chunks already there are
    // all sent, however far behind this watcher reads.
    const timer = setTimeout(() => {
      void this.endWritten(key).then((written) => {
        if (!written) stream.ending?.();
      });
    }, drainMs);
    try {
      // Nothing read and no stream: the attempt sent no chunks (a NodeService that does not stream).
      if (stream.lastId === "0" && (await this.options.redis.exists(key).catch(() => 0)) === 0) return;
      await done;
    } finally {
      clearTimeout(timer);
      if (this.streams.get(key) === stream) this.streams.delete(key);
    }
  }

  /** Whether the attempt's end marker is in its stream (its last entry). */
  private async endWritten(key: string): Promise<boolean> {
    try {
      const last = await this.options.redis.xrevrangeBuffer(key, "+", "-", "COUNT", 1);
      const entry = last[0];
      return entry !== undefined && decodeChunkEntry(entry[0].toString(), entry[1]).kind === "end";
    } catch {
      return false;
    }
  }

  close(): void {
    this.streams.clear();
    this.wakeLoop?.();
    this.interrupt();
    this.connection?.disconnect();
  }

  private fail(error: unknown): void {
    if (this.signal.aborted) return;
    this.failed = true;
    this.options.onError?.(error);
    for (const stream of this.streams.values()) stream.ending?.();
    this.streams.clear();
    this.connection?.disconnect();
  }

  /** Interrupts a blocking read so it picks up a changed set of streams. */
  private interrupt(): void {
    if (!this.blocked || this.connectionId === null || this.unblockVia === null) return;
    const round = this.round;
    const id = this.connectionId;
    const via = this.unblockVia;
    void (async () => {
      // The read may not have reached Redis yet: try until it is unblocked or has returned by itself.
      for (let i = 0; i < 50 && this.blocked && this.round === round && !this.signal.aborted; i++) {
        const unblocked = await via.client("UNBLOCK", id).catch(() => 0);
        if (unblocked === 1) return;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
  }

  /**
   * On a cluster, before each read: the master that serves the workflow's slot now (it changes on a failover), the
   * CLIENT ID of the blocking connection's link to it, and the command connection's link to it for CLIENT UNBLOCK.
   * Until they are known a read is not interrupted (it returns by itself within BLOCK_MS).
   */
  private async findReadingMaster(connection: RedisConnection, key: string): Promise<void> {
    const command = this.options.redis;
    if (!isCluster(connection) || !isCluster(command)) return;
    this.slot ??= await keySlotOf(command, key);
    const reader = clusterNodeOf(connection, this.slot);
    const unblocker = clusterNodeOf(command, this.slot);
    if (reader === undefined || unblocker === undefined) {
      this.connectionId = null;
      this.unblockVia = null;
      return;
    }
    let id = this.nodeIds.get(reader);
    if (id === undefined) {
      id = Number(await reader.client("ID"));
      this.nodeIds.set(reader, id);
    }
    this.connectionId = id;
    this.unblockVia = unblocker;
  }

  private async run(): Promise<void> {
    const connection = duplicateRedis(this.options.redis, { lazyConnect: true, enableOfflineQueue: false });
    connection.on("error", () => undefined);
    this.connection = connection;
    await connection.connect();
    if (!isCluster(connection) && !isCluster(this.options.redis)) {
      this.connectionId = Number(await connection.client("ID"));
      this.unblockVia = this.options.redis;
    }
    const blockMs = this.options.blockMs ?? BLOCK_MS;
    while (!this.signal.aborted) {
      if (this.streams.size === 0) {
        await new Promise<void>((resolve) => {
          this.wakeLoop = resolve;
          if (this.streams.size > 0 || this.signal.aborted) resolve();
        });
        this.wakeLoop = null;
        continue;
      }
      if (isCluster(connection)) {
        // Before the keys are taken: a stream added during this wait is in this read (nothing interrupts it yet).
        await this.findReadingMaster(connection, this.streams.keys().next().value!);
        if (this.signal.aborted) return;
        if (this.streams.size === 0) continue;
      }
      const keys = [...this.streams.keys()];
      const ids = keys.map((key) => this.streams.get(key)!.lastId);
      this.round++;
      this.blocked = true;
      let reply: [Buffer, [Buffer, Buffer[]][]][] | null;
      try {
        reply = (await connection.xreadBuffer("COUNT", READ_COUNT, "BLOCK", blockMs, "STREAMS", ...keys, ...ids)) as
          | [Buffer, [Buffer, Buffer[]][]][]
          | null;
      } finally {
        this.blocked = false;
      }
      if (this.signal.aborted) return;
      for (const [keyBytes, entries] of reply ?? []) {
        const key = keyBytes.toString();
        for (const [idBytes, fields] of entries) {
          const stream = this.streams.get(key);
          if (!stream) break;
          stream.lastId = idBytes.toString();
          const entry = decodeChunkEntry(stream.lastId, fields);
          if (entry.kind === "end") {
            this.streams.delete(key);
            stream.ending?.();
            break;
          }
          await this.emit(chunkEvent(stream.ref, entry.index, entry.chunk, entry.timeMs));
          if (this.signal.aborted) return;
        }
      }
    }
  }
}

/** A workflow's durable events, replayed then live (a WorkflowEventHub). */
export interface DurableEventSource {
  follow(workflowId: string, afterSequence: number, signal: AbortSignal): AsyncIterable<WorkflowEvent>;
}

/** Options of a {@link WorkflowChunkSource}. */
export interface WorkflowChunkSourceOptions {
  events: DurableEventSource;
  /** The workflow as it is now (GetWorkflow): which attempts run; throws NotFoundError for an unknown workflow. */
  getWorkflow: (workflowId: string) => Promise<Workflow>;
  /** A command connection that fails fast (`enableOfflineQueue: false`), to a server or a cluster. */
  redis: RedisConnection;
  /** `QUEUE_PREFIX` of the workers. */
  queuePrefix: string;
  /** How long an ended attempt's last chunks are awaited. @default DEFAULT_CHUNK_DRAIN_MS */
  drainMs?: number;
  /** Redis failed during a watch (it goes on without chunks). */
  onError?: (error: unknown) => void;
}

/** WatchWorkflow with `include_chunks`: the durable events with the running attempts' chunks interleaved. */
export class WorkflowChunkSource implements DurableEventSource {
  constructor(private readonly options: WorkflowChunkSourceOptions) {}

  async *follow(workflowId: string, afterSequence: number, signal: AbortSignal): AsyncGenerator<WorkflowEvent> {
    const { options } = this;
    // Read before the durable events: an attempt that starts after this is seen starting among them.
    const workflow = await options.getWorkflow(workflowId);
    yield* followWithChunks({
      redis: options.redis,
      queuePrefix: options.queuePrefix,
      workflowId,
      events: options.events.follow(workflowId, afterSequence, signal),
      nodes: new Map(
        workflow.nodes.map((node) => [node.id, { attempt: node.attempt, running: node.status === NodeStatus.RUNNING }]),
      ),
      signal,
      drainMs: options.drainMs,
      onError: options.onError,
    });
  }
}
