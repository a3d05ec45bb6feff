import * as grpc from "@grpc/grpc-js";
import { type WorkflowEvent, WorkflowStatus } from "@trellis/proto";
import { isFinalWorkflowStatus } from "./render.js";

/** Where a follower reads a workflow's events and, when a stream ends early, its status. */
export interface WorkflowEventSource {
  /**
   * WatchWorkflow: the committed events after `afterSequence`, then live ones; ends after the terminal event. With
   * `includeChunks`, the running nodes' output chunks too (sequence 0).
   */
  watch(
    workflowId: string,
    afterSequence: bigint,
    signal: AbortSignal,
    includeChunks?: boolean,
  ): AsyncIterable<WorkflowEvent>;
  /** The workflow's current status (GetWorkflow). */
  status(workflowId: string, signal: AbortSignal): Promise<WorkflowStatus>;
}

/** A stream that broke and is about to be resumed. */
export interface Reconnect {
  /** Why: the gRPC status of the broken stream, or that it ended before the workflow did. */
  reason: string;
  /** Events after this sequence are asked for next. */
  afterSequence: bigint;
  /** Wait before reconnecting. */
  delayMs: number;
}

/** Options of {@link followWorkflow}. */
export interface FollowOptions {
  /** Called with every event once, in sequence order, across reconnects. */
  onEvent: (event: WorkflowEvent) => void;
  /** Asks for the running nodes' output chunks (WatchWorkflow `include_chunks`). @default false */
  includeChunks?: boolean;
  /**
   * Called with each output chunk event as it arrives; a resumed stream sends a running attempt's chunks again from
   * its first (skip those by attempt and chunk index).
   */
  onChunk?: (event: WorkflowEvent) => void;
  /** Called before each reconnect. */
  onReconnect?: (reconnect: Reconnect) => void;
  /** Stops following (the promise rejects with the signal's reason). */
  signal: AbortSignal;
  /** How long reconnects may keep failing, with no event in between, before giving up. @default 300000 */
  giveUpAfterMs?: number;
  /** First wait before a reconnect, doubled each time up to `maxDelayMs`. @default 250 */
  initialDelayMs?: number;
  /** @default 5000 */
  maxDelayMs?: number;
  /** @default Date.now */
  now?: () => number;
}

/** The type of a chunk event (sequence 0, with `attempt`, `chunk_index` and `chunk`). */
const OUTPUT_CHUNK_EVENT = "node.output_chunk";

/** Codes after which a stream is worth reopening: the server restarted, a proxy cut it, the network blinked. */
const TRANSIENT_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
]);

/** The gRPC status code of an error from grpc-js, if it carries one. */
export function grpcCode(error: unknown): grpc.status | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "number" ? (code as grpc.status) : undefined;
}

function describeError(error: unknown): string {
  const code = grpcCode(error);
  const details = (error as { details?: unknown }).details;
  if (code !== undefined)
    return `${grpc.status[code] ?? code}${typeof details === "string" && details ? `: ${details}` : ""}`;
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Follows a workflow's events until it ends and returns its final status. When the stream breaks with a transient
 * gRPC status (or ends while the workflow is still unfinished) it is reopened after the last sequence seen, with
 * backoff, so every event is handed to `onEvent` exactly once and in order. A permanent status (NOT_FOUND,
 * UNAUTHENTICATED, ...) or reconnects failing for longer than `giveUpAfterMs` reject.
 */
export async function followWorkflow(
  source: WorkflowEventSource,
  workflowId: string,
  opts: FollowOptions,
): Promise<WorkflowStatus> {
  const now = opts.now ?? Date.now;
  const initialDelayMs = opts.initialDelayMs ?? 250;
  const maxDelayMs = opts.maxDelayMs ?? 5_000;
  const giveUpAfterMs = opts.giveUpAfterMs ?? 300_000;
  let after = 0n;
  let status = WorkflowStatus.UNSPECIFIED;
  let delayMs = initialDelayMs;
  let failingSince: number | undefined;

  const reconnect = async (reason: string) => {
    failingSince ??= now();
    if (now() - failingSince > giveUpAfterMs) {
      throw new Error(`lost the event stream of workflow ${workflowId} (${reason}) and could not resume it`);
    }
    opts.onReconnect?.({ reason, afterSequence: after, delayMs });
    await sleep(delayMs, opts.signal);
    delayMs = Math.min(maxDelayMs, delayMs * 2);
  };

  for (;;) {
    opts.signal.throwIfAborted();
    try {
      for await (const event of source.watch(workflowId, after, opts.signal, opts.includeChunks ?? false)) {
        // Chunks are outside the durable sequence (theirs is 0).
        if (event.type === OUTPUT_CHUNK_EVENT) {
          opts.onChunk?.(event);
          continue;
        }
        // A resumed stream starts after `after`; a duplicate would only come from a misbehaving server.
        if (event.sequence <= after) continue;
        after = event.sequence;
        status = event.workflowStatus;
        failingSince = undefined;
        delayMs = initialDelayMs;
        opts.onEvent(event);
      }
      if (isFinalWorkflowStatus(status)) return status;
      // Ended without a terminal event: either nothing was left of a finished workflow, or the stream stopped early.
      const current = await source.status(workflowId, opts.signal);
      if (isFinalWorkflowStatus(current)) return current;
      await reconnect(`the stream ended while the workflow is ${WorkflowStatus[current] ?? current}`);
    } catch (error) {
      if (opts.signal.aborted) throw opts.signal.reason;
      const code = grpcCode(error);
      if (code === undefined || !TRANSIENT_CODES.has(code)) throw error;
      await reconnect(describeError(error));
    }
  }
}
