import { type Context, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { NodeResult, RecordOutcome, StartedNode } from "@trellis/db";
import { ErrorKind } from "@trellis/proto";
import { contextOfTraceparent, traceHeadersOf, tracer, tracingEnabled } from "@trellis/observability";

/**
 * The spans of one node attempt, in the workflow's trace (its stored traceparent is the parent):
 * `trellis.node.attempt` from the node's queuing to its recorded result, with children `trellis.node.queued` (time in
 * the queue), `workflow.v1.NodeService/ExecuteNode` (the call, whose context reaches the NodeService as its
 * `traceparent` metadata) and `trellis.node.record` (the result's transaction). Only made while tracing is on.
 */
export class AttemptSpans {
  private readonly attempt: Span;
  private call: Span | undefined;
  private record: Span | undefined;
  private ended = false;
  /** The workflow's context with the attempt's span: the parent of the other three. */
  private readonly context: Context;

  private constructor(started: StartedNode) {
    const now = Date.now();
    const parent = contextOfTraceparent(started.traceParent);
    // The attempt began when its node was queued (a node started locally by its parent's PASS: just now).
    const queuedAt = started.queuedAt && started.queuedAt.getTime() <= now ? started.queuedAt.getTime() : now;
    this.attempt = tracer().startSpan(
      "trellis.node.attempt",
      {
        kind: SpanKind.CONSUMER,
        startTime: queuedAt,
        attributes: {
          "trellis.workflow.id": started.node.workflowId,
          "trellis.workflow.name": started.workflowName,
          "trellis.node.id": started.node.id,
          "trellis.node.attempt": started.attempt,
          "trellis.node.capability": started.node.capability,
        },
      },
      parent,
    );
    this.context = trace.setSpan(parent, this.attempt);
    tracer()
      .startSpan(
        "trellis.node.queued",
        { startTime: queuedAt, attributes: { "trellis.node.id": started.node.id } },
        this.context,
      )
      .end(now);
  }

  /** The attempt's spans, or undefined while tracing is off (nothing is made). */
  static start(started: StartedNode): AttemptSpans | undefined {
    return tracingEnabled() ? new AttemptSpans(started) : undefined;
  }

  /** Starts the NodeService call's span; returns the metadata that carries it (`traceparent`, `tracestate`). */
  startCall(address?: string): Record<string, string> {
    this.call = tracer().startSpan(
      "workflow.v1.NodeService/ExecuteNode",
      {
        kind: SpanKind.CLIENT,
        attributes: {
          "rpc.system": "grpc",
          "rpc.service": "workflow.v1.NodeService",
          "rpc.method": "ExecuteNode",
          ...(address ? { "server.address": address } : {}),
        },
      },
      this.context,
    );
    return traceHeadersOf(this.call, this.context);
  }

  /** Ends the call's span with what the NodeService answered. */
  endCall(result: NodeResult): void {
    if (!this.call) return;
    if (result.kind === "error") {
      this.call.setAttribute("trellis.error.kind", ErrorKind[result.errorKind] ?? String(result.errorKind));
      this.call.setStatus({ code: SpanStatusCode.ERROR, message: result.message });
    } else if (result.kind === "throttled") {
      this.call.setAttribute("trellis.throttled.retry_after_ms", result.retryAfterMs);
    }
    this.call.end();
    this.call = undefined;
  }

  /** Starts the span of the result's recording. */
  startRecord(): void {
    this.record = tracer().startSpan("trellis.node.record", {}, this.context);
  }

  /** Ends the attempt with how its result was recorded, or the error that stopped it. */
  end(outcome: { recorded: RecordOutcome } | { error: unknown }): void {
    if (this.ended) return;
    this.ended = true;
    const failure = "error" in outcome ? outcome.error : undefined;
    for (const span of [this.call, this.record]) {
      if (!span) continue;
      if (failure !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: String(failure) });
      span.end();
    }
    if ("error" in outcome) {
      const error = outcome.error instanceof Error ? outcome.error : new Error(String(outcome.error));
      this.attempt.recordException(error);
      this.attempt.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    } else {
      const { recorded } = outcome;
      this.attempt.setAttribute("trellis.node.outcome", recorded.outcome);
      if (recorded.outcome === "failed" || recorded.outcome === "retry") {
        this.attempt.setStatus({ code: SpanStatusCode.ERROR, message: "message" in recorded ? recorded.message : "" });
      }
    }
    this.attempt.end();
  }
}
