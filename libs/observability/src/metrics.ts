import { collectDefaultMetrics, Registry } from "prom-client";

/** Options of {@link createMetricsRegistry}. */
export interface MetricsRegistryOptions {
  /** The app name, added as the `app` label of every metric. */
  app: string;
  /** Also collect Node's process metrics (CPU, memory, event loop lag, GC, handles). @default true */
  collectDefault?: boolean;
}

/**
 * A prom-client Registry of one app, with `app` as a default label. A fresh registry each call, never the global
 * one, so several apps can share a process (`npm start`) and tests do not see each other's metrics.
 */
export function createMetricsRegistry(opts: MetricsRegistryOptions): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ app: opts.app });
  if (opts.collectDefault ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}
