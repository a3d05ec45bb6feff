import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Metrics the scheduler exports. */
export interface SchedulerMetrics {
  /** `trellis_scheduler_pass_seconds`. */
  passSeconds: Histogram;
  /** `trellis_nodes_unroutable{capability}`. */
  unroutable: Gauge<"capability">;
  /** `trellis_workers{capability}`. */
  workers: Gauge<"capability">;
  /** `trellis_nodes{status}`. */
  nodes: Gauge<"status">;
  /** `trellis_workflows_active{status}`. */
  workflowsActive: Gauge<"status">;
  /** `trellis_queue_jobs{capability,state}`. */
  queueJobs: Gauge<"capability" | "state">;
}

/** Registers the scheduler's metrics on `registry`. */
export function createSchedulerMetrics(registry: Registry): SchedulerMetrics {
  return {
    passSeconds: new Histogram({
      name: "trellis_scheduler_pass_seconds",
      help: "Duration of one scheduler pass (claim ready nodes and enqueue them).",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    unroutable: new Gauge({
      name: "trellis_nodes_unroutable",
      help: "QUEUED nodes whose capability no live worker serves.",
      labelNames: ["capability"],
      registers: [registry],
    }),
    workers: new Gauge({
      name: "trellis_workers",
      help: "Live workers per capability (heartbeat younger than WORKER_STALE_MS).",
      labelNames: ["capability"],
      registers: [registry],
    }),
    nodes: new Gauge({
      name: "trellis_nodes",
      help: "Unfinished nodes per status.",
      labelNames: ["status"],
      registers: [registry],
    }),
    workflowsActive: new Gauge({
      name: "trellis_workflows_active",
      help: "Unfinished workflows per status (PENDING, RUNNING, PAUSED).",
      labelNames: ["status"],
      registers: [registry],
    }),
    queueJobs: new Gauge({
      name: "trellis_queue_jobs",
      help: "BullMQ jobs per capability queue and job state.",
      labelNames: ["capability", "state"],
      registers: [registry],
    }),
  };
}

/** Metrics of the Redis Stream relay, registered only when it is on (EVENTS_REDIS_STREAM). */
export interface EventRelayMetrics {
  /** `trellis_events_relayed_total`. */
  relayed: Counter;
  /** `trellis_event_relay_lag_seconds`, read from `lagSeconds` at each scrape. */
  lagSeconds: Gauge;
}

/** Registers the relay's metrics on `registry`; the lag gauge asks `lagSeconds` when scraped. */
export function createEventRelayMetrics(registry: Registry, lagSeconds: () => number): EventRelayMetrics {
  return {
    relayed: new Counter({
      name: "trellis_events_relayed_total",
      help: "Workflow events this process published to the Redis Stream (a batch published again after a failure counts again).",
      registers: [registry],
    }),
    lagSeconds: new Gauge({
      name: "trellis_event_relay_lag_seconds",
      help: "Age of the oldest workflow event not yet published to the Redis Stream; 0 when caught up or not the publishing replica.",
      registers: [registry],
      collect() {
        this.set(lagSeconds());
      },
    }),
  };
}
