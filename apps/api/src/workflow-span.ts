import type * as grpc from "@grpc/grpc-js";
import { type Span, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { contextOfTraceparent, tracer, tracingEnabled, traceparentOf } from "@trellis/observability";

/** The first value of a metadata key, as text. */
function firstValue(metadata: grpc.Metadata | undefined, key: string): string | undefined {
  const value = metadata?.get(key)[0];
  return value === undefined ? undefined : String(value);
}

/** A workflow's span, started by the RPC that creates the workflow; see {@link startWorkflowSpan}. */
export interface WorkflowSpan {
  /** What to store in workflows.trace_parent: the parent of the node attempts' spans. */
  traceParent: string | undefined;
  /** Ends the span with the created workflow's id (a fork's: its name and source), or the error that refused it. */
  end(outcome: { workflowId: string; created: boolean; name?: string; forkedFrom?: string } | { error: unknown }): void;
}

/**
 * Starts the span of a workflow being created (`trellis.workflow`), the child of the caller's `traceparent` metadata
 * when it sent one; its traceparent is stored with the workflow, so every node attempt's span, in any worker, is its
 * child. Undefined while tracing is off: nothing is read, started or stored.
 */
export function startWorkflowSpan(
  method: "CreateWorkflow" | "ForkWorkflow",
  name: string | undefined,
  metadata: grpc.Metadata | undefined,
): WorkflowSpan | undefined {
  if (!tracingEnabled()) return undefined;
  const parent = contextOfTraceparent(firstValue(metadata, "traceparent"), firstValue(metadata, "tracestate"));
  const span: Span = tracer().startSpan(
    "trellis.workflow",
    {
      kind: SpanKind.SERVER,
      attributes: {
        "rpc.system": "grpc",
        "rpc.service": "workflow.v1.WorkflowService",
        "rpc.method": method,
        ...(name === undefined ? {} : { "trellis.workflow.name": name }),
      },
    },
    parent,
  );
  return {
    traceParent: traceparentOf(span),
    end(outcome) {
      if ("error" in outcome) {
        const error = outcome.error instanceof Error ? outcome.error : new Error(String(outcome.error));
        span.recordException(error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      } else {
        span.setAttribute("trellis.workflow.id", outcome.workflowId);
        if (outcome.name !== undefined) span.setAttribute("trellis.workflow.name", outcome.name);
        if (outcome.forkedFrom !== undefined) span.setAttribute("trellis.workflow.forked_from", outcome.forkedFrom);
        // A request_id replay: the workflow (and its trace) is the first call's.
        if (!outcome.created) span.setAttribute("trellis.workflow.replayed", true);
      }
      span.end();
    },
  };
}
