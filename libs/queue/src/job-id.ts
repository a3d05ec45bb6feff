/**
 * The one format of a node's BullMQ job id: `<workflow>/<node>/<queue generation>`. Deterministic, so a repeated add
 * of the same queueing is harmless; BullMQ forbids ':' and node ids cannot hold '/'. The queue generation grows each
 * time the node is put on a queue, so a job of an older queueing can tell it is not the node's current one.
 */
export function jobIdFor(workflowId: string, nodeId: string, queueGen: number): string {
  return `${workflowId}/${nodeId}/${queueGen}`;
}

/** The queue generation in a job id made by {@link jobIdFor}; undefined for any other id. */
export function queueGenOfJobId(jobId: string | undefined): number | undefined {
  const match = jobId === undefined ? null : /\/(\d+)$/.exec(jobId);
  return match ? Number(match[1]) : undefined;
}

/** The parts of a job id made by {@link jobIdFor}; undefined for any other id. */
export function parseJobId(jobId: string): { workflowId: string; nodeId: string; queueGen: number } | undefined {
  const match = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/(.+)\/(\d+)$/i.exec(jobId);
  return match ? { workflowId: match[1]!, nodeId: match[2]!, queueGen: Number(match[3]) } : undefined;
}
