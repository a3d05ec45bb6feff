import { Queue } from "bullmq";
import { createRedis } from "@trellis/queue";
import type { BaselineJob, BaselineMessage } from "../baseline-worker.js";
import type { BenchContext } from "./context.js";
import { cleanup } from "./cleanup.js";
import { type Deadline, within } from "./deadline.js";
import { ResourceMonitor } from "./monitor.js";
import { ManagedProcess } from "./process.js";
import { benchRedisUrl, deleteRedisPrefix } from "./redis.js";

/** Options of {@link withBaselineWorker}. */
export interface BaselineWorkerOptions {
  mode: "throughput" | "chain";
  /** Short name for logs and the queue prefix. */
  label: string;
  /** Jobs in all (throughput) or the chain's length. */
  count: number;
  concurrency: number;
  nodeServiceAddr: string;
  logDir: string;
}

/** A running baseline worker process (bench/src/baseline-worker.ts) on a fresh queue prefix. */
export interface BaselineWorker {
  prefix: string;
  queue: string;
  /** The workflow id its ExecuteNode requests carry (the no-op service records calls under it). */
  workflowId: string;
  /** The worker's process id. */
  pid: number;
  /** Resolves with the time (nowMs) the last job completed; rejects on a job failure or process death. */
  done(deadline: Deadline): Promise<number>;
}

/** Starts a baseline worker, waits until it pulls jobs, runs `fn`, then stops it and deletes its Redis keys. */
export async function withBaselineWorker<T>(
  options: BaselineWorkerOptions,
  deadline: Deadline,
  fn: (worker: BaselineWorker) => Promise<T>,
): Promise<T> {
  const stamp = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const prefix = `bench-${options.label}-${stamp}`;
  const queue = "baseline";
  const workflowId = `${options.label}-${stamp}`;
  const child = ManagedProcess.start({
    name: `${options.label}-baseline-worker`,
    script: "bench/src/baseline-worker.ts",
    env: {
      BASELINE_MODE: options.mode,
      BASELINE_QUEUE: queue,
      BASELINE_COUNT: String(options.count),
      BASELINE_WORKFLOW_ID: workflowId,
      QUEUE_PREFIX: prefix,
      REDIS_URL: benchRedisUrl(),
      WORKER_CONCURRENCY: String(options.concurrency),
      NODE_SERVICE_ADDR: options.nodeServiceAddr,
    },
    logDir: options.logDir,
    ipc: true,
  });
  const teardown = async () => {
    await child.stop();
    await deleteRedisPrefix(prefix);
  };
  const unregister = cleanup.add(`baseline worker ${options.label}`, teardown);
  const messages = new Promise<BaselineMessage & { type: "done" }>((resolve, reject) => {
    child.child.on("message", (raw) => {
      const message = raw as BaselineMessage;
      if (message.type === "done") resolve(message);
      if (message.type === "error") reject(new Error(`baseline worker: ${message.message}`));
    });
    void child.exited.then(() => reject(new Error(`baseline worker exited early:\n${child.tail()}`)));
  });
  messages.catch(() => undefined);
  try {
    await within(
      "the baseline worker to start",
      deadline,
      new Promise<void>((resolve, reject) => {
        child.child.on("message", (raw) => {
          if ((raw as BaselineMessage).type === "ready") resolve();
        });
        void child.exited.then(() => reject(new Error(`baseline worker exited early:\n${child.tail()}`)));
      }),
    );
    return await fn({
      prefix,
      queue,
      workflowId,
      pid: child.pid,
      done: async (doneDeadline) =>
        (await within("the baseline jobs to complete", doneDeadline, messages)).lastCompletedAt,
    });
  } finally {
    await teardown();
    unregister();
  }
}

/** What a baseline workload gets from {@link withBaselineQueue}. */
export interface BaselineRun {
  worker: BaselineWorker;
  /** The worker's queue, for adding the jobs. */
  queue: Queue<BaselineJob>;
  /** Started on the worker and the NodeService; stop it when the jobs are done. */
  monitor: ResourceMonitor;
}

/**
 * A baseline workload's frame: a baseline worker of the bench's concurrency on the shared NodeService, a queue
 * to add its jobs to, and a resource monitor running; the queue and its connection are closed afterwards.
 */
export async function withBaselineQueue<T>(
  ctx: BenchContext,
  mode: BaselineWorkerOptions["mode"],
  label: string,
  count: number,
  deadline: Deadline,
  fn: (run: BaselineRun) => Promise<T>,
): Promise<T> {
  const options = {
    mode,
    label,
    count,
    concurrency: ctx.workerConcurrency,
    nodeServiceAddr: ctx.nodeService.address,
    logDir: ctx.logDir,
  };
  return withBaselineWorker(options, deadline, async (worker) => {
    const redis = createRedis(benchRedisUrl());
    const queue = new Queue<BaselineJob>(worker.queue, { connection: redis, prefix: worker.prefix });
    try {
      const monitor = await ResourceMonitor.start({
        "baseline-worker": worker.pid,
        "node-service": ctx.nodeService.pid,
      });
      return await fn({ worker, queue, monitor });
    } finally {
      await queue.close();
      redis.disconnect();
    }
  });
}
