import { type Reconnect, type WorkflowEventSource, resumingWatch } from "@trellis/client";
import type { WorkflowEvent, WorkflowStatus } from "@trellis/proto";

export { grpcCode } from "@trellis/client";
export type { Reconnect, WorkflowEventSource };

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

/**
 * Follows a workflow's events until it ends and returns its final status: the client's resuming watch
 * ({@link resumingWatch}), each durable event handed to `onEvent` once and in order, chunks to `onChunk`.
 */
export async function followWorkflow(
  source: WorkflowEventSource,
  workflowId: string,
  opts: FollowOptions,
): Promise<WorkflowStatus> {
  const { onEvent, onChunk, ...watchOptions } = opts;
  const events = resumingWatch(source, workflowId, watchOptions);
  for (;;) {
    const next = await events.next();
    if (next.done) return next.value;
    if (next.value.sequence === 0n) onChunk?.(next.value);
    else onEvent(next.value);
  }
}
