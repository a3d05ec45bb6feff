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
  /**
   * Queued nodes were taken off their queues (CANCEL, PAUSE): schedulers remove their jobs from Redis. Payload: JSON
   * {@link UnqueuedJobs}, several notifications for many jobs (see unqueuedPayloads).
   */
  unqueued: "trellis_unqueued",
} as const;

/** The payload of a {@link CHANNELS}.unqueued notification: the BullMQ jobs that no longer have a QUEUED node. */
export interface UnqueuedJobs {
  workflowId: string;
  jobs: { capability: string; jobId: string }[];
}

/** Largest payload written: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
const MAX_PAYLOAD_BYTES = 7_000;

/** The payloads announcing `jobs`, each under PostgreSQL's limit (none when there are no jobs). */
export function unqueuedPayloads(workflowId: string, jobs: readonly { capability: string; jobId: string }[]): string[] {
  const payloads: string[] = [];
  let batch: UnqueuedJobs["jobs"] = [];
  let bytes = 0;
  const flush = () => {
    if (batch.length > 0) payloads.push(JSON.stringify({ workflowId, jobs: batch } satisfies UnqueuedJobs));
    batch = [];
    bytes = 0;
  };
  for (const job of jobs) {
    const size = Buffer.byteLength(job.capability) + Buffer.byteLength(job.jobId) + 40;
    if (bytes + size > MAX_PAYLOAD_BYTES - 100) flush();
    batch.push({ capability: job.capability, jobId: job.jobId });
    bytes += size;
  }
  flush();
  return payloads;
}

/** Reads an {@link UnqueuedJobs} payload; null when it is not one. */
export function parseUnqueuedJobs(payload: string): UnqueuedJobs | null {
  try {
    const value = JSON.parse(payload) as Partial<UnqueuedJobs>;
    if (typeof value.workflowId !== "string" || !Array.isArray(value.jobs)) return null;
    const jobs = value.jobs.filter(
      (j): j is UnqueuedJobs["jobs"][number] => typeof j?.capability === "string" && typeof j?.jobId === "string",
    );
    return { workflowId: value.workflowId, jobs };
  } catch {
    return null;
  }
}
