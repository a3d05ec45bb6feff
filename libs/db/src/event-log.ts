import type { NewEvent } from "./transactions.js";

/** The slice of a pino logger that eventLogger needs. */
export interface EventLogSink {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/**
 * The level of an event's log line: `warn` for a node that FAILed (`node.status_changed` to FAIL) and for a workflow
 * that FAILED, `info` for every other change (a retry included: the attempt's failure is in the event's data).
 */
export function eventLogLevel(e: Pick<NewEvent, "type" | "workflowStatus" | "nodeStatus">): "info" | "warn" {
  if (e.nodeStatus === "FAIL") return "warn";
  if (e.type === "workflow.status_changed" && e.workflowStatus === "FAILED") return "warn";
  return "info";
}

/**
 * An `onEvents` hook for PgStateManager that writes one log line per committed event, with the event type in `event`
 * and the workflow, node and statuses as fields: the one line a node's change gets at info (warn when it FAILs; see
 * {@link eventLogLevel}). Each event is committed, so logged, by exactly one process.
 */
export function eventLogger(logger: EventLogSink): (events: readonly NewEvent[]) => void {
  return (events) => {
    for (const e of events) {
      const data = (e.data ?? {}) as { capability?: unknown; attempt?: unknown };
      logger[eventLogLevel(e)](
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
