import * as grpc from "@grpc/grpc-js";
import { type WorkflowEvent, WorkflowStatus } from "@trellis/proto";
import { TrellisClientError, grpcCode, grpcCodeName } from "./client-error.js";

/** Where a watch reads a workflow's events and, when a stream ends early, its status. */
export interface WorkflowEventSource {
  /**
   * One WatchWorkflow stream: the committed events after `afterSequence`, then live ones; ends after the terminal
   * event. With `includeChunks`, the running nodes' output chunks too (sequence 0).
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

/** A stream that broke and is about to be reopened. */
export interface Reconnect {
  /** Why: the gRPC status of the broken stream, or that it ended before the workflow did. */
  reason: string;
  /** Events after this sequence are asked for next. */
  afterSequence: bigint;
  /** The wait before reopening it. */
  delayMs: number;
}

/** Options of a resuming watch ({@link TrellisClient.watch}). */
export interface WatchOptions {
  /** Start after this event (e.g. the last one a previous watch saw); 0 replays the workflow from its start. @default 0n */
  afterSequence?: bigint;
  /**
   * Also yield the running nodes' output chunks (type `node.output_chunk`, sequence 0). A reopened stream sends a
   * running attempt's chunks again from its first: tell them apart by `attempt` and `chunkIndex`. @default false
   */
  includeChunks?: boolean;
  /** Stops the watch: the iterator throws the signal's reason. */
  signal?: AbortSignal;
  /** Called before each reconnect (to tell a user the stream is being resumed). */
  onReconnect?: (reconnect: Reconnect) => void;
  /** How long reconnects may keep failing, with no event in between, before the watch gives up. @default 300000 */
  giveUpAfterMs?: number;
  /** First wait before a reconnect, doubled each time up to `maxDelayMs`. @default 250 */
  initialDelayMs?: number;
  /** Longest wait between reconnects. @default 5000 */
  maxDelayMs?: number;
  /** The clock. @default Date.now */
  now?: () => number;
}

/** The type of a chunk event (sequence 0, with `attempt`, `chunkIndex` and `chunk`). */
export const OUTPUT_CHUNK_EVENT = "node.output_chunk";

/** Codes after which a stream is worth reopening: the api restarted, a proxy cut it, the network blinked. */
const TRANSIENT_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
]);

/** Whether a workflow in this status has ended (SUCCEEDED, FAILED or CANCELLED). */
export function isFinalWorkflowStatus(status: WorkflowStatus): boolean {
  return status === WorkflowStatus.SUCCEEDED || status === WorkflowStatus.FAILED || status === WorkflowStatus.CANCELLED;
}

function describeError(error: unknown): string {
  const code = grpcCode(error);
  if (code === undefined) return error instanceof Error ? error.message : String(error);
  const details = (error as { details?: unknown }).details;
  return `${grpcCodeName(code)}${typeof details === "string" && details ? `: ${details}` : ""}`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A workflow's events, in sequence order, each once, until the workflow ends; the generator returns its final
 * status. When the stream breaks with a transient gRPC status (or ends while the workflow is unfinished) it is
 * reopened after the last sequence yielded, with backoff, so no event is lost or yielded twice. Chunk events
 * (sequence 0) pass through and play no part in resuming. A permanent status (NOT_FOUND, UNAUTHENTICATED, ...) is
 * thrown at once; reconnects failing for longer than `giveUpAfterMs` throw UNAVAILABLE.
 */
export async function* resumingWatch(
  source: WorkflowEventSource,
  workflowId: string,
  options: WatchOptions = {},
): AsyncGenerator<WorkflowEvent, WorkflowStatus, undefined> {
  const now = options.now ?? Date.now;
  const initialDelayMs = options.initialDelayMs ?? 250;
  const maxDelayMs = options.maxDelayMs ?? 5_000;
  const giveUpAfterMs = options.giveUpAfterMs ?? 300_000;
  // Aborted by the caller's signal and when the consumer stops iterating early (the finally below).
  const controller = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  let after = options.afterSequence ?? 0n;
  let status = WorkflowStatus.UNSPECIFIED;
  let delayMs = initialDelayMs;
  let failingSince: number | undefined;

  const reconnect = async (reason: string, cause: unknown) => {
    failingSince ??= now();
    if (now() - failingSince > giveUpAfterMs) {
      throw new TrellisClientError(
        grpc.status.UNAVAILABLE,
        `lost the event stream of workflow ${workflowId} (${reason}) and could not resume it`,
        undefined,
        { cause },
      );
    }
    options.onReconnect?.({ reason, afterSequence: after, delayMs });
    await sleep(delayMs, signal);
    delayMs = Math.min(maxDelayMs, delayMs * 2);
  };

  try {
    for (;;) {
      signal.throwIfAborted();
      try {
        for await (const event of source.watch(workflowId, after, signal, options.includeChunks ?? false)) {
          // Chunks are outside the durable sequence (theirs is 0).
          if (event.type === OUTPUT_CHUNK_EVENT) {
            yield event;
            continue;
          }
          // A resumed stream starts after `after`; a duplicate would only come from a misbehaving server.
          if (event.sequence <= after) continue;
          after = event.sequence;
          status = event.workflowStatus;
          failingSince = undefined;
          delayMs = initialDelayMs;
          yield event;
        }
        if (isFinalWorkflowStatus(status)) return status;
        // Ended without a terminal event: nothing was left of a finished workflow, or the stream stopped early.
        const current = await source.status(workflowId, signal);
        if (isFinalWorkflowStatus(current)) return current;
        await reconnect(`the stream ended while the workflow is ${WorkflowStatus[current] ?? current}`, undefined);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        const code = grpcCode(error);
        if (code === undefined || !TRANSIENT_CODES.has(code)) throw error;
        await reconnect(describeError(error), error);
      }
    }
  } finally {
    controller.abort(new Error("the watch ended"));
  }
}
