/**
 * Orders nodes round-robin across their workflows (first node of each, then the second of each, ...), so that
 * the jobs of one claim alternate between workflows: a wide workflow does not hold the queue's head for all the
 * others, and the jobs a worker runs at once seldom wait on one workflow's row lock.
 */
export function interleaveByWorkflow<T extends { workflowId: string }>(items: readonly T[]): T[] {
  const byWorkflow = new Map<string, T[]>();
  for (const item of items) {
    const list = byWorkflow.get(item.workflowId);
    if (list) list.push(item);
    else byWorkflow.set(item.workflowId, [item]);
  }
  if (byWorkflow.size < 2) return [...items];
  const lists = [...byWorkflow.values()];
  const out: T[] = [];
  for (let i = 0; out.length < items.length; i++) {
    for (const list of lists) if (i < list.length) out.push(list[i]!);
  }
  return out;
}
