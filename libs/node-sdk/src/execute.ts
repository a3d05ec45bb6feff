import { create, type JsonObject, type JsonValue, fromJson, toJson } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Handlers, NodeContext } from "./context.js";
import { EditsBuilder } from "./edits.js";
import { InfraError, TaskError, Throttled } from "./errors.js";
import {
  type ExecuteNodeRequest,
  type ExecuteNodeResponse,
  ExecuteNodeResponseSchema,
  ExecutionStatus,
} from "./gen/workflow/v1/node_service_pb.js";
import type { OutputChunk } from "./gen/workflow/v1/workflow_pb.js";

/** Receives the chunks a handler emits, in order (set when the caller streams). */
export type ChunkSink = (chunk: Pick<OutputChunk, "channel" | "text">) => void;

/** Options of {@link executeNode}. */
export interface ExecuteOptions {
  /** Aborts the handler's `ctx.signal`. */
  signal: AbortSignal;
  /** Where `ctx.emit` chunks go; none: they are dropped (ExecuteNode). */
  onChunk?: ChunkSink;
}

/** A stored output as JSON; an unset Value (no output recorded) reads as null rather than throwing. */
function valueToJson(value: Value): JsonValue {
  return value.kind.case === undefined ? null : toJson(ValueSchema, value);
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** The handler's answer for a thrown error: INFRA_ERROR and THROTTLED only when typed so, TASK_ERROR otherwise. */
function failureOf(error: unknown): Pick<ExecuteNodeResponse, "status" | "errorMessage" | "retryAfter"> {
  if (error instanceof Throttled) {
    return {
      status: ExecutionStatus.THROTTLED,
      errorMessage: error.message,
      retryAfter: error.retryAfterMs === undefined ? undefined : durationFromMs(error.retryAfterMs),
    };
  }
  if (error instanceof InfraError) return { status: ExecutionStatus.INFRA_ERROR, errorMessage: errorMessage(error) };
  if (error instanceof TaskError) return { status: ExecutionStatus.TASK_ERROR, errorMessage: error.message };
  return { status: ExecutionStatus.TASK_ERROR, errorMessage: errorMessage(error) };
}

/**
 * Runs the handler of `request`'s capability and builds its ExecuteNodeResponse: the returned JSON as output with the
 * edits on success, TaskError / InfraError / Throttled (any other error: TASK_ERROR with its message) otherwise, and
 * the usage in every case. An unknown capability is a TASK_ERROR naming it. Rejects (with the signal's reason) only
 * when `signal` aborted before the handler ended badly: the caller is gone or the service is stopping, so no answer
 * is owed.
 */
export async function executeNode(
  handlers: Handlers,
  request: ExecuteNodeRequest,
  options: ExecuteOptions,
): Promise<ExecuteNodeResponse> {
  const { signal, onChunk } = options;
  signal.throwIfAborted();
  const node = request.node;
  const context = request.context;
  const capability = node?.capability ?? "";
  const usage: Record<string, number> = {};
  const handler = Object.hasOwn(handlers, capability) ? handlers[capability] : undefined;
  if (handler === undefined) {
    return create(ExecuteNodeResponseSchema, {
      status: ExecutionStatus.TASK_ERROR,
      errorMessage: `unknown capability ${JSON.stringify(capability)}`,
    });
  }
  const parents: Record<string, JsonValue> = {};
  for (const [parentId, output] of Object.entries(context?.parentOutputs ?? {})) {
    parents[parentId] = valueToJson(output);
  }
  let ended = false;
  const ctx: NodeContext = {
    node: {
      id: node?.id ?? "",
      name: node?.name || node?.id || "",
      capability,
      labels: { ...(node?.labels ?? {}) },
    },
    workflow: { id: context?.workflowId ?? node?.workflowId ?? "", name: context?.workflowName ?? "" },
    workflowInput: context?.workflowInput ?? {},
    parents,
    attempt: context?.attempt ?? node?.attempt ?? 0,
    idempotencyKey: context?.idempotencyKey ?? "",
    deadline: context?.deadline === undefined ? undefined : timestampDate(context.deadline),
    signal,
    edits: new EditsBuilder(),
    usage(values) {
      for (const [key, value] of Object.entries(values)) {
        if (!Number.isFinite(value)) throw new TypeError(`usage.${key} must be a finite number, got ${value}`);
        usage[key] = (usage[key] ?? 0) + value;
      }
    },
    emit(text, emitOptions = {}) {
      // A chunk after the result would arrive after the stream ended.
      if (ended || signal.aborted) return;
      onChunk?.({ channel: emitOptions.channel ?? "output", text });
    },
    request,
  };
  const input: JsonObject = node?.input ?? {};
  try {
    const output = await handler(input, ctx);
    return create(ExecuteNodeResponseSchema, {
      status: ExecutionStatus.SUCCESS,
      output: fromJson(ValueSchema, output === undefined ? null : output),
      edits: [...ctx.edits.list()],
      usage,
    });
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    return create(ExecuteNodeResponseSchema, { ...failureOf(error), usage });
  } finally {
    ended = true;
  }
}
