import { NodeStatus } from "@trellis/proto";

/**
 * The status a node starts in given its parents' statuses: SKIPPED when any parent is FAIL or
 * SKIPPED (it can never run), else CANCELLED when any parent is CANCELLED, else PENDING.
 */
export function initialStatusForParents(parentStatuses: readonly NodeStatus[]): NodeStatus {
  let cancelled = false;
  for (const s of parentStatuses) {
    if (s === NodeStatus.FAIL || s === NodeStatus.SKIPPED) return NodeStatus.SKIPPED;
    if (s === NodeStatus.CANCELLED) cancelled = true;
  }
  return cancelled ? NodeStatus.CANCELLED : NodeStatus.PENDING;
}

/** How many of a node's parents have not passed yet; the node is ready to queue at 0. */
export function countPendingParents(parentStatuses: readonly NodeStatus[]): number {
  let pending = 0;
  for (const s of parentStatuses) if (s !== NodeStatus.PASS) pending++;
  return pending;
}
