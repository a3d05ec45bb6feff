import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { ExecuteNodeRequest } from "./gen/workflow/v1/node_service_pb.js";
import type { EditsBuilder } from "./edits.js";

/** The node an attempt runs, as stored. */
export interface NodeInfo {
  /** Its id within the workflow. */
  id: string;
  /** Its human label. */
  name: string;
  /** The capability it asked for (the handler's key). */
  capability: string;
  /** Its labels. */
  labels: Record<string, string>;
}

/** Options of {@link NodeContext.emit}. */
export interface EmitOptions {
  /** The chunk's channel, e.g. "tokens" or "log". @default "output" */
  channel?: string;
}

/** What a handler knows about the attempt it runs, and how it adds edits, usage and streamed chunks to it. */
export interface NodeContext {
  /** The node: id, name, capability, labels. */
  node: NodeInfo;
  /** The workflow's id and name. */
  workflow: { id: string; name: string };
  /** The workflow-level input, handed to every node. */
  workflowInput: JsonObject;
  /** The outputs of the node's parents, by parent id (a parent that recorded no output reads as null). */
  parents: Record<string, JsonValue>;
  /** 1-based attempt number; every start moves it on, throttled ones included. */
  attempt: number;
  /** `<workflow_id>/<node_id>`: the same for every attempt, to deduplicate side effects (payments, e-mails). */
  idempotencyKey: string;
  /** When the worker stops waiting for this attempt; undefined when it set none. */
  deadline: Date | undefined;
  /**
   * Aborts when the worker cancels the call (the workflow was cancelled, the node's lease was lost), when the deadline
   * passes, or when the service's shutdown grace period ends. Pass it to fetch, timers and SDKs so work stops.
   */
  signal: AbortSignal;
  /** Graph edits sent with this attempt's success. */
  edits: EditsBuilder;
  /** Adds to what this attempt spent, e.g. `{tokens: 12, cost_usd: 0.001}`; repeated calls are summed. */
  usage(values: Record<string, number>): void;
  /**
   * Streams a piece of output (a model's tokens, a log line) to watchers while the node runs. Sent only when the
   * worker called ExecuteNodeStream; ignored under ExecuteNode. The final output is still what the handler returns.
   */
  emit(text: string, options?: EmitOptions): void;
  /** The request as received, for what the fields above leave out. */
  request: ExecuteNodeRequest;
}

/** One capability: takes the node's input and context, returns its output (plain JSON) or throws. */
export type Handler = (
  input: JsonObject,
  ctx: NodeContext,
) => JsonValue | undefined | Promise<JsonValue | undefined> | PromiseLike<JsonValue | undefined>;

/** Handlers by capability, e.g. `{ "llm.chat": async (input, ctx) => ({ answer }) }`. */
export type Handlers = Readonly<Record<string, Handler>>;
