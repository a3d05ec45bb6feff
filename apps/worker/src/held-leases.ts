import type { HeldLease } from "@trellis/db";

/** A running node this process holds, with the means to abort its call. */
export interface HeldNode extends HeldLease {
  controller: AbortController;
  /**
   * Called before its start was written (the lease is empty until it is): the node is QUEUED in PostgreSQL under this
   * job's generation, so no lease check applies to it.
   */
  unstarted?: { queueGen: number } | undefined;
}

/** The nodes this worker is running right now, keyed by `<workflow>/<node>`. */
export class HeldLeases {
  private readonly held = new Map<string, HeldNode>();

  /** Starts tracking a node. */
  add(node: HeldNode): void {
    this.held.set(`${node.workflowId}/${node.nodeId}`, node);
  }

  /** Stops tracking a node (only if it is still the same lease). */
  delete(node: HeldLease): void {
    if (this.under(node)) this.held.delete(`${node.workflowId}/${node.nodeId}`);
  }

  /** The node held under exactly this lease (not a newer attempt of the same node), if any. */
  private under(lease: HeldLease): HeldNode | undefined {
    const node = this.held.get(`${lease.workflowId}/${lease.nodeId}`);
    return node?.lease === lease.lease ? node : undefined;
  }

  /** Whether this exact lease is held. */
  holds(lease: HeldLease): boolean {
    return this.under(lease) !== undefined;
  }

  /** Aborts the call held under exactly this lease (not a newer attempt of the same node); whether it did. */
  abortLease(lease: HeldLease, reason: string): boolean {
    const node = this.under(lease);
    if (!node || node.controller.signal.aborted) return false;
    node.controller.abort(new Error(reason));
    return true;
  }

  /**
   * Aborts the call of a node called before its start was written, if it is held under that queue generation (its
   * job was taken off the queue: the node was cancelled or paused); whether it did.
   */
  abortUnstarted(workflowId: string, nodeId: string, queueGen: number, reason: string): boolean {
    const node = this.held.get(`${workflowId}/${nodeId}`);
    if (!node || node.unstarted?.queueGen !== queueGen || node.controller.signal.aborted) return false;
    node.controller.abort(new Error(reason));
    return true;
  }

  /** Every held node whose start is written (the ones a lease check applies to). */
  started(): HeldNode[] {
    return [...this.held.values()].filter((n) => !n.unstarted);
  }

  /** Aborts the calls of the given nodes of a workflow; returns how many were aborted. */
  abort(workflowId: string, nodeIds: readonly string[], reason: string): number {
    let aborted = 0;
    for (const nodeId of nodeIds) {
      const node = this.held.get(`${workflowId}/${nodeId}`);
      if (node && !node.controller.signal.aborted) {
        node.controller.abort(new Error(reason));
        aborted++;
      }
    }
    return aborted;
  }

  /** How many nodes are held. */
  get size(): number {
    return this.held.size;
  }
}
