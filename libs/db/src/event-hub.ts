import { isTerminalWorkflowStatus } from "@trellis/core";
import type { WorkflowEvent } from "@trellis/proto";
import { CHANNELS } from "./channels.js";
import { PgListener } from "./listener.js";
import type { StateManager } from "./state-manager.js";

/** Options of a WorkflowEventHub. */
export interface WorkflowEventHubOptions {
  stateManager: StateManager;
  databaseUrl: string;
  /** Fallback poll when no notification arrives (a lost LISTEN connection, say). @default 1000 */
  fallbackPollMs?: number;
  /** Events read per query; also the most a follower holds in memory. @default 500 */
  pageSize?: number;
  onError?: (error: Error) => void;
}

/**
 * Follows workflows' committed events for any number of readers over one LISTEN connection: a reader
 * replays events after its sequence, then is woken by `NOTIFY trellis_events` (or the fallback poll).
 */
export class WorkflowEventHub {
  private readonly listener: PgListener;
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly fallbackPollMs: number;
  private readonly pageSize: number;

  constructor(private readonly options: WorkflowEventHubOptions) {
    this.fallbackPollMs = options.fallbackPollMs ?? 1_000;
    this.pageSize = options.pageSize ?? 500;
    this.listener = new PgListener({
      databaseUrl: options.databaseUrl,
      channels: [CHANNELS.events],
      onError: options.onError,
      // After a reconnect anything may have been missed: wake every reader to re-read.
      onConnect: () => this.wakeAll(),
    });
    this.listener.on("notification", (_channel, payload) => {
      const workflowId = payload.slice(0, payload.lastIndexOf(":"));
      this.wake(workflowId);
    });
  }

  /** Opens the LISTEN connection. */
  start(): Promise<void> {
    return this.listener.start();
  }

  /** Whether the LISTEN connection is up. */
  get connected(): boolean {
    return this.listener.connected;
  }

  private wake(workflowId: string): void {
    const set = this.waiters.get(workflowId);
    if (!set) return;
    this.waiters.delete(workflowId);
    for (const resolve of set) resolve();
  }

  private wakeAll(): void {
    for (const workflowId of [...this.waiters.keys()]) this.wake(workflowId);
  }

  private waitForChange(workflowId: string, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.waiters.get(workflowId)?.delete(done);
        resolve();
      };
      const timer = setTimeout(done, this.fallbackPollMs);
      signal.addEventListener("abort", done, { once: true });
      let set = this.waiters.get(workflowId);
      if (!set) {
        set = new Set();
        this.waiters.set(workflowId, set);
      }
      set.add(done);
    });
  }

  /**
   * Yields the workflow's events with sequence > afterSequence in order, then follows live; ends after the
   * workflow's terminal event (or at once when the workflow already ended and nothing is left), or on abort.
   * Throws NotFoundError for an unknown workflow. The consumer's pace is the producer's: nothing is buffered
   * beyond one page.
   */
  async *follow(workflowId: string, afterSequence: number, signal: AbortSignal): AsyncGenerator<WorkflowEvent> {
    const { stateManager } = this.options;
    const workflow = await stateManager.getWorkflowStatus(workflowId);
    let after = afterSequence;
    let finished = isTerminalWorkflowStatus(workflow);
    while (!signal.aborted) {
      // Register before reading so a notification between the read and the wait is not lost.
      const changed = this.waitForChange(workflowId, signal);
      const events = await stateManager.listEvents(workflowId, after, this.pageSize);
      for (const event of events) {
        if (signal.aborted) return;
        yield event;
        after = Number(event.sequence);
        // The rest of the terminal transaction's events (e.g. each node CANCELLED) are committed with it: the
        // stream ends once they are read too.
        // Every event carries the workflow's status when it was written: a RETRY after FAILED reopens it.
        finished = isTerminalWorkflowStatus(event.workflowStatus);
      }
      if (events.length === this.pageSize) continue;
      if (finished) return;
      await changed;
      if (!signal.aborted) finished = isTerminalWorkflowStatus(await stateManager.getWorkflowStatus(workflowId));
    }
  }

  /** Closes the LISTEN connection and releases every waiting reader. */
  async close(): Promise<void> {
    this.wakeAll();
    await this.listener.close();
  }
}
