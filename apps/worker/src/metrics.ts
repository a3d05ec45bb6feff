import { Counter, Histogram, type Registry } from "prom-client";

/**
 * Metrics the worker measures itself. `trellis_nodes_finished_total` and `trellis_node_retries_total` are counted
 * from committed events by `eventMetrics` (@trellis/observability), wired into the worker's StateManager.
 */
export interface WorkerMetrics {
  /** `trellis_node_execution_seconds{capability}`. */
  executionSeconds: Histogram<"capability">;
  /** `trellis_node_queue_wait_seconds{capability}`. */
  queueWaitSeconds: Histogram<"capability">;
  /** `trellis_node_usage_total{capability,unit}`: what recorded attempts spent, as their NodeService reported. */
  usage: Counter<"capability" | "unit">;
}

const SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** Registers the worker's metrics on `registry`. */
export function createWorkerMetrics(registry: Registry): WorkerMetrics {
  return {
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
    usage: new Counter({
      name: "trellis_node_usage_total",
      help: "What recorded node attempts spent (tokens, cost_usd, ...), by capability and unit.",
      labelNames: ["capability", "unit"],
      registers: [registry],
    }),
  };
}
