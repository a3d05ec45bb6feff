import type { NewEvent } from "./transactions.js";

/** The slice of a pino logger that eventLogger needs. */
export interface EventLogSink {
  info(fields: Record<string, unknown>, message: string): void;
}

/**
 * An `onEvents` hook for PgStateManager that writes one log line per committed event, with the event
 * type in `event` and the workflow, node and statuses as fields.
 */
export function eventLogger(logger: EventLogSink): (events: readonly NewEvent[]) => void {
  return (events) => {
    for (const e of events) {
      const data = (e.data ?? {}) as { capability?: unknown; attempt?: unknown };
      logger.info(
        {
          event: e.type,
          workflow_id: e.workflowId,
          node_id: e.nodeId ?? undefined,
          capability: typeof data.capability === "string" ? data.capability : undefined,
          attempt: typeof data.attempt === "number" ? data.attempt : undefined,
          sequence: e.sequence,
          workflow_status: e.workflowStatus,
          node_status: e.nodeStatus ?? undefined,
          data: e.data,
        },
        e.type,
      );
    }
  };
}
