import { Counter, Gauge, type Registry } from "prom-client";

/** One key's live figures, as `StateManager.listLimits()` gives them (a `LimitState` is one). */
export interface LimitSample {
  key: string;
  /** QUEUED or RUNNING nodes holding the key now. */
  running: number;
  /** Ready nodes held back by a limit now that hold the key. */
  waiting: number;
  /** THROTTLED answers that paused the key so far. */
  throttledTotal: number;
}

/** Options of {@link registerLimitMetrics}. */
export interface LimitMetricsOptions {
  /** Told when `listLimits` fails during a scrape; the series keep their last values. @default ignore */
  onError?: (error: unknown) => void;
}

/** The flow-control metrics, refreshed from `listLimits` at each scrape. */
export interface LimitMetrics {
  /** `trellis_limit_running{key}`. */
  running: Gauge<"key">;
  /** `trellis_limit_waiting{key}`. */
  waiting: Gauge<"key">;
  /** `trellis_limit_throttled_total{key}`. */
  throttledTotal: Counter<"key">;
}

/**
 * Registers `trellis_limit_running{key}`, `trellis_limit_waiting{key}` and `trellis_limit_throttled_total{key}` on
 * `registry`, read from `listLimits` when scraped: one call per scrape shared by the three series, whose keys are
 * exactly those it returns (a deleted limit's series go). The counter is PostgreSQL's running total, so it is the same
 * whichever scheduler replica is scraped, and starts again from 0 only when the key's limit row is deleted and
 * created anew (Prometheus reads that as a counter reset).
 */
export function registerLimitMetrics(
  registry: Registry,
  listLimits: () => Promise<readonly LimitSample[]>,
  options: LimitMetricsOptions = {},
): LimitMetrics {
  let refreshing: Promise<void> | undefined;
  const refresh = (): Promise<void> => {
    // The registry asks the three series in the same turn: the first starts the read, the others wait for it.
    refreshing ??= Promise.resolve()
      .then(listLimits)
      .then(
        (limits) => {
          metrics.running.reset();
          metrics.waiting.reset();
          metrics.throttledTotal.reset();
          for (const { key, running, waiting, throttledTotal } of limits) {
            metrics.running.set({ key }, running);
            metrics.waiting.set({ key }, waiting);
            metrics.throttledTotal.inc({ key }, throttledTotal);
          }
        },
        (error: unknown) => options.onError?.(error),
      )
      .finally(() => {
        refreshing = undefined;
      });
    return refreshing;
  };
  const metrics: LimitMetrics = {
    running: new Gauge({
      name: "trellis_limit_running",
      help: "Nodes holding a flow-control key now (QUEUED or RUNNING), per key with a limit or a throttle.",
      labelNames: ["key"],
      registers: [registry],
      collect: refresh,
    }),
    waiting: new Gauge({
      name: "trellis_limit_waiting",
      help: "Ready nodes held back (PENDING with held_by) that hold a flow-control key, per key.",
      labelNames: ["key"],
      registers: [registry],
      collect: refresh,
    }),
    throttledTotal: new Counter({
      name: "trellis_limit_throttled_total",
      help: "THROTTLED answers that paused a flow-control key, per key (kept in PostgreSQL, the same on every replica).",
      labelNames: ["key"],
      registers: [registry],
      collect: refresh,
    }),
  };
  return metrics;
}
