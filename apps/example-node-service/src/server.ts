import { type CallEnd, serve } from "@trellis/node-sdk";
import type { Logger } from "pino";
import { Counter, Histogram, type Registry } from "prom-client";
import { EXAMPLE_HANDLERS, isExampleCapability } from "./capabilities.js";

/** Largest request the service accepts: node inputs and parent outputs can be big. */
export const MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Options of {@link startExampleNodeService}. */
export interface ExampleNodeServiceOptions {
  /** Interface to listen on, e.g. `0.0.0.0`, or `127.0.0.1` in tests. */
  host: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Every call and cancellation is logged here at debug, a deadline at info, trouble at warn and error. */
  logger: Logger;
  /** Where the execution metrics are registered; none means no metrics. */
  registry?: Registry;
  /**
   * How long `close()` lets calls in flight finish before cancelling them (they answer UNAVAILABLE, which the
   * worker retries). @default 5000
   */
  shutdownGraceMs?: number;
}

/** A listening example NodeService, from {@link startExampleNodeService}. */
export interface RunningExampleNodeService {
  /** `host:port` it listens on, with the real port. */
  address: string;
  /** The port actually bound. */
  port: number;
  /** Stops taking calls, lets those in flight finish within the grace period, then stops. Safe to call twice. */
  close(): Promise<void>;
}

/** Counts each call's outcome and time, labelled by capability (unknown ones as `unknown`, to bound the label). */
function executionMetrics(registry: Registry | undefined): ((call: CallEnd) => void) | undefined {
  if (registry === undefined) return undefined;
  const executions = new Counter({
    name: "trellis_example_node_executions_total",
    help: "ExecuteNode calls answered by the example NodeService, by capability and outcome.",
    labelNames: ["capability", "outcome"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "trellis_example_node_execution_duration_seconds",
    help: "Time the example NodeService took to answer ExecuteNode, by capability.",
    labelNames: ["capability"],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600],
    registers: [registry],
  });
  return ({ capability, outcome, durationMs }) => {
    const label = isExampleCapability(capability) ? capability : "unknown";
    executions.inc({ capability: label, outcome });
    duration.observe({ capability: label }, durationMs / 1000);
  };
}

/**
 * Starts the example `workflow.v1.NodeService` (echo, sleep, fail, flaky, llm.mock, llm.metered, llm.stream, plan)
 * on `@trellis/node-sdk`'s `serve()`: ExecuteNode, ExecuteNodeStream and grpc.health.v1, requests up to
 * {@link MAX_RECEIVE_MESSAGE_BYTES}. Resolves once listening; rejects when the address cannot be bound. A call its
 * caller cancels stops its work (a `sleep` ends at once).
 */
export async function startExampleNodeService(opts: ExampleNodeServiceOptions): Promise<RunningExampleNodeService> {
  const onCallEnd = executionMetrics(opts.registry);
  const service = await serve(EXAMPLE_HANDLERS, {
    host: opts.host,
    port: opts.port,
    maxReceiveMessageBytes: MAX_RECEIVE_MESSAGE_BYTES,
    shutdownGraceMs: opts.shutdownGraceMs ?? 5000,
    logger: opts.logger,
    ...(onCallEnd ? { onCallEnd } : {}),
  });
  return { address: service.address, port: service.port, close: () => service.close() };
}
