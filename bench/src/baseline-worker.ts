/**
 * The raw-BullMQ baseline's worker, run as its own process by the bench (as the engine's worker is): one BullMQ
 * Worker of WORKER_CONCURRENCY on one queue, calling the no-op NodeService's ExecuteNode once per job, with no
 * PostgreSQL. Two modes (BASELINE_MODE):
 *
 * - `throughput`: jobs are added by the bench; reports when BASELINE_COUNT jobs have completed;
 * - `chain`: the bench adds job 0; each job, after its ExecuteNode call, adds the next (up to BASELINE_COUNT).
 *
 * Talks to the bench over IPC: sends `{type: "ready"}` once it pulls jobs, then `{type: "done", lastCompletedAt}`
 * (nowMs) or `{type: "error", message}`. Other settings: REDIS_URL, QUEUE_PREFIX, BASELINE_QUEUE,
 * NODE_SERVICE_ADDR, BASELINE_WORKFLOW_ID (the workflow id it puts in each request, for the service's records).
 */
import { Queue, Worker } from "bullmq";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ExecutionStatus, NodeService, NodeStatus, createGrpcClient } from "@trellis/proto";
import { createRedis } from "@trellis/queue";
import { nowMs } from "./harness/clock.js";
import { NOOP_CAPABILITY } from "./harness/workflows.js";

/** What the bench learns from this process. */
export type BaselineMessage =
  | { type: "ready" }
  | { type: "done"; lastCompletedAt: number; completed: number }
  | { type: "error"; message: string };

/** Data of one baseline job. */
export interface BaselineJob {
  index: number;
}

function setting(name: string): string {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`baseline-worker: ${name} is required\n`);
    process.exit(2);
  }
  return value;
}

function send(message: BaselineMessage): void {
  process.send?.(message);
}

const mode = setting("BASELINE_MODE");
const queueName = setting("BASELINE_QUEUE");
const prefix = setting("QUEUE_PREFIX");
const redisUrl = setting("REDIS_URL");
const count = Number(setting("BASELINE_COUNT"));
const concurrency = Number(setting("WORKER_CONCURRENCY"));
const workflowId = setting("BASELINE_WORKFLOW_ID");
const client = createGrpcClient(NodeService, setting("NODE_SERVICE_ADDR"));
const queue =
  mode === "chain" ? new Queue<BaselineJob>(queueName, { connection: createRedis(redisUrl), prefix }) : null;

async function executeNode(index: number): Promise<void> {
  const nodeId = `n-${index}`;
  const deadline = Date.now() + 30_000;
  const response = await client.executeNode(
    {
      node: { id: nodeId, workflowId, capability: NOOP_CAPABILITY, status: NodeStatus.RUNNING, attempt: 1 },
      context: {
        workflowId,
        workflowName: "baseline",
        attempt: 1,
        idempotencyKey: `${workflowId}/${nodeId}`,
        deadline: timestampFromMs(deadline),
      },
    },
    { deadline },
  );
  if (response.status !== ExecutionStatus.SUCCESS) throw new Error(`ExecuteNode answered status ${response.status}`);
}

let completed = 0;
const worker = new Worker<BaselineJob>(
  queueName,
  async (job) => {
    await executeNode(job.data.index);
    const next = job.data.index + 1;
    if (queue && next < count) {
      await queue.add("chain", { index: next }, { jobId: `c-${next}`, removeOnComplete: true });
    }
  },
  { connection: createRedis(redisUrl), prefix, concurrency },
);
worker.on("completed", (job) => {
  completed++;
  const last = mode === "chain" ? job.data.index === count - 1 : completed === count;
  if (last) send({ type: "done", lastCompletedAt: nowMs(), completed });
});
worker.on("failed", (job, error) => send({ type: "error", message: `job ${job?.id} failed: ${error.message}` }));
worker.on("error", (error) => send({ type: "error", message: `worker error: ${error.message}` }));

async function shutdown(): Promise<void> {
  await Promise.race([worker.close(), new Promise((resolve) => setTimeout(resolve, 5_000))]);
  await queue?.close();
  client.close();
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown());
process.once("SIGINT", () => void shutdown());
process.once("disconnect", () => void shutdown());

await worker.waitUntilReady();
send({ type: "ready" });
