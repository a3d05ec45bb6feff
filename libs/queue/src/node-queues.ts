import { Queue } from "bullmq";
import { NODE_JOB_NAME, nodeJobOptions, type NodeJobData } from "./node-job.js";
import { type RedisConnection, isCluster, mastersOf } from "./redis.js";

/**
 * The BullMQ queue name of a capability. On a Redis Cluster it is hash-tagged, `{<capability>}`, as BullMQ requires
 * (every key of a queue, `<prefix>:{<capability>}:<suffix>`, in one slot; different capabilities in different slots,
 * so spread over the masters). On one server it is the capability itself, as it always was: the keys of a
 * deployment that upgrades stay where its queued jobs are.
 */
export function queueNameOf(capability: string, hashTagged: boolean): string {
  return hashTagged ? `{${capability}}` : capability;
}

/** The capability of a queue name made by {@link queueNameOf}. */
export function capabilityOfQueueName(name: string, hashTagged: boolean): string {
  return hashTagged && name.startsWith("{") && name.endsWith("}") ? name.slice(1, -1) : name;
}

/** A node to put on its capability's queue. */
export interface NodeToEnqueue {
  workflowId: string;
  nodeId: string;
  capability: string;
  jobId: string;
  retryPolicy: NodeJobData["retryPolicy"];
  delayMs?: number;
  /** 0..10, higher taken first. @default 0 */
  priority?: number;
}

/** Where a job is, as BullMQ reports it; "unknown" means Redis has no such job. */
export type JobState = Awaited<ReturnType<Queue["getJobState"]>>;

/**
 * One BullMQ queue per capability (queue name = capability, hash-tagged on a Redis Cluster: see queueNameOf;
 * prefix = QUEUE_PREFIX), created on first use and sharing one Redis connection.
 */
export class NodeQueues {
  private readonly queues = new Map<string, Queue<NodeJobData>>();
  /** Whether queue names are hash-tagged: the connection is a Redis Cluster's. */
  readonly hashTagged: boolean;

  constructor(
    private readonly connection: RedisConnection,
    readonly prefix: string,
  ) {
    this.hashTagged = isCluster(connection);
  }

  /** The BullMQ queue name of a capability (for a Worker on the same connection). */
  nameOf(capability: string): string {
    return queueNameOf(capability, this.hashTagged);
  }

  /** The queue of a capability. */
  queue(capability: string): Queue<NodeJobData> {
    let queue = this.queues.get(capability);
    if (!queue) {
      queue = new Queue<NodeJobData>(this.nameOf(capability), { connection: this.connection, prefix: this.prefix });
      this.queues.set(capability, queue);
    }
    return queue;
  }

  /** Adds one job per node with addBulk per capability; an id already present is left as it is. */
  async enqueue(nodes: readonly NodeToEnqueue[]): Promise<void> {
    const byCapability = new Map<string, NodeToEnqueue[]>();
    for (const node of nodes) {
      const list = byCapability.get(node.capability) ?? [];
      list.push(node);
      byCapability.set(node.capability, list);
    }
    await Promise.all(
      [...byCapability].map(([capability, list]) =>
        this.queue(capability).addBulk(
          list.map((n) => ({
            name: NODE_JOB_NAME,
            data: { workflowId: n.workflowId, nodeId: n.nodeId, retryPolicy: n.retryPolicy },
            opts: nodeJobOptions(n.jobId, n.retryPolicy, n.delayMs, n.priority),
          })),
        ),
      ),
    );
  }

  /** The state of each job, in order. */
  async jobStates(jobs: readonly { capability: string; jobId: string }[]): Promise<JobState[]> {
    return Promise.all(jobs.map((j) => this.queue(j.capability).getJobState(j.jobId)));
  }

  /** Ids of up to `limit` jobs of a capability that no worker has taken yet (waiting, prioritized, delayed), oldest first. */
  waitingJobIds(capability: string, limit: number): Promise<string[]> {
    return this.queue(capability).getRanges(["wait", "prioritized", "delayed", "paused"], 0, limit - 1, true);
  }

  /** Removes waiting or delayed jobs (active ones are left to find their node changed). */
  async remove(jobs: readonly { capability: string; jobId: string }[]): Promise<void> {
    await Promise.all(
      jobs.map(async (j) => {
        try {
          await this.queue(j.capability).remove(j.jobId);
        } catch {
          // A locked (active) job cannot be removed; its worker drops it when it sees the node's status.
        }
      }),
    );
  }

  /**
   * Capabilities with a queue in Redis under this prefix (including ones this process never used). On a cluster every
   * master is scanned: each holds the queues of its slots.
   */
  async discover(): Promise<string[]> {
    const found = new Set<string>();
    for (const node of mastersOf(this.connection)) {
      let cursor = "0";
      do {
        const [next, keys] = await node.scan(cursor, "MATCH", `${this.prefix}:*:meta`, "COUNT", 1000);
        cursor = next;
        for (const key of keys) {
          found.add(capabilityOfQueueName(key.slice(this.prefix.length + 1, -":meta".length), this.hashTagged));
        }
      } while (cursor !== "0");
    }
    for (const name of this.queues.keys()) found.add(name);
    return [...found].sort();
  }

  /** Closes every queue (not the shared connection). */
  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}
