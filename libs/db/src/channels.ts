/** PostgreSQL LISTEN/NOTIFY channels. Payloads are small JSON or plain ids. */
export const CHANNELS = {
  /** Nodes may have become ready: the scheduler should claim. Payload: workflow id. */
  ready: "trellis_ready",
  /** Events were committed for a workflow. Payload: `<workflow id>:<last sequence>`. */
  events: "trellis_events",
  /** Running nodes were cancelled: workers abort their calls. Payload: JSON {workflowId, nodeIds}. */
  cancel: "trellis_cancel",
  /** A schedule was created, changed or deleted: schedulers plan their next tick again. Payload: schedule id. */
  schedules: "trellis_schedules",
} as const;
