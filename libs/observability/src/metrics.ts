import { collectDefaultMetrics, Registry } from "prom-client";

/** Options of {@link createMetricsRegistry}. */
export interface MetricsRegistryOptions {
  /** The app name, added as the `app` label of every metric. */
  app: string;
  /** Also collect Node's process metrics (CPU, memory, event loop lag, GC, handles). @default true */
  collectDefault?: boolean;
}

/**
 * prom-client's default gauges named like counters, which `promtool check metrics` rejects ("non-counter metrics
 * should not have _total suffix"). Nothing is lost without them: `nodejs_active_handles{type}` and its siblings carry
 * the same counts by type.
 */
const MISNAMED_DEFAULT_METRICS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/**
 * A prom-client Registry of one app, with `app` as a default label. A fresh registry each call, never the global
 * one, so several apps can share a process (`npm start`) and tests do not see each other's metrics.
 */
export function createMetricsRegistry(opts: MetricsRegistryOptions): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ app: opts.app });
  if (opts.collectDefault ?? true) {
    collectDefaultMetrics({ register: registry });
    for (const name of MISNAMED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }
  return registry;
}
