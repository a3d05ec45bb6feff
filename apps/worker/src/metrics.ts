import { Counter, Histogram, type Registry } from "prom-client";

/** Metrics the worker exports. */
export interface WorkerMetrics {
  nodesFinished: Counter<"capability" | "status" | "error_kind">;
  retries: Counter<"capability">;
  executionSeconds: Histogram<"capability">;
  queueWaitSeconds: Histogram<"capability">;
}

const SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** Registers the worker's metrics on `registry`. */
export function createWorkerMetrics(registry: Registry): WorkerMetrics {
  return {
    nodesFinished: new Counter({
      name: "trellis_nodes_finished_total",
      help: "Node attempts that ended the node, by capability, final status and error kind.",
      labelNames: ["capability", "status", "error_kind"],
      registers: [registry],
    }),
    retries: new Counter({
      name: "trellis_node_retries_total",
      help: "Node attempts that failed and were scheduled for a retry.",
      labelNames: ["capability"],
      registers: [registry],
    }),
    executionSeconds: new Histogram({
      name: "trellis_node_execution_seconds",
      help: "Duration of ExecuteNode calls.",
      labelNames: ["capability"],
      buckets: SECONDS,
      registers: [registry],
    }),
    queueWaitSeconds: new Histogram({
      name: "trellis_node_queue_wait_seconds",
      help: "Time from QUEUED to RUNNING.",
      labelNames: ["capability"],
      buckets: SECONDS,
      registers: [registry],
    }),
  };
}
