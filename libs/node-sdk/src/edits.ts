import { create, fromJson, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { EditType, type NodeEdit, NodeEditSchema, type NodeSchema } from "./gen/workflow/v1/workflow_pb.js";

/** A retry policy in milliseconds; every field left out keeps the engine's default. */
export interface RetryPolicySpec {
  /** Attempts in all, the first included. @default 3 */
  maxAttempts?: number;
  /** Wait before the first retry, doubled each retry. @default 1000 */
  initialBackoffMs?: number;
  /** Longest wait between attempts. @default 60000 */
  maxBackoffMs?: number;
  /** Retry TASK_ERRORs too. @default false */
  retryTaskErrors?: boolean;
}

/** What makes a node a wait node: completed by SignalNode (or its timeout), never by a NodeService. */
export interface WaitSpec {
  /** How long to wait; left out, for ever. */
  timeoutMs?: number;
  /** On timeout: true fails the node (TASK_ERROR "timed out"), false passes it with `timeoutOutput`. @default false */
  failOnTimeout?: boolean;
  /** The output of a node that timed out without failing. */
  timeoutOutput?: JsonValue;
}

/** The fields of a node an UPDATE edit may change. */
export interface NodeFields {
  /** Human label. @default the id */
  name?: string;
  /** The capability that runs it (routes it to workers that have it). */
  capability?: string;
  /** Nodes that must PASS before it runs. */
  parents?: string[];
  /** Its input (a JSON object). */
  input?: JsonObject;
  /** Its retry policy. */
  retryPolicy?: RetryPolicySpec;
  /** Time allowed per attempt. @default 300000 */
  timeoutMs?: number;
  /** Its labels. */
  labels?: Record<string, string>;
}

/** A node to insert: its id, and any of the fields of a new node. */
export interface NodeSpec extends NodeFields {
  /** Unique within its workflow: `[A-Za-z0-9_.-]{1,128}`. */
  id: string;
  /** Makes it a wait node (its capability may then be left out). */
  wait?: WaitSpec;
  /** A ready node waits until then before it runs. */
  notBefore?: Date;
  /** Flow-control keys (see the flow-control docs). */
  limitKeys?: string[];
  /** Higher runs first among ready nodes of the same capability. @default 0 */
  priority?: number;
}

type NodeInit = MessageInitShape<typeof NodeSchema>;

/** The update_mask path of each field of {@link NodeFields}. */
const UPDATE_PATHS: Record<keyof NodeFields, string> = {
  name: "name",
  capability: "capability",
  parents: "parent_ids",
  input: "input",
  retryPolicy: "retry_policy",
  timeoutMs: "timeout",
  labels: "labels",
};

function retryPolicyInit(spec: RetryPolicySpec): NonNullable<NodeInit["retryPolicy"]> {
  return {
    maxAttempts: spec.maxAttempts ?? 0,
    initialBackoff: spec.initialBackoffMs === undefined ? undefined : durationFromMs(spec.initialBackoffMs),
    maxBackoff: spec.maxBackoffMs === undefined ? undefined : durationFromMs(spec.maxBackoffMs),
    retryTaskErrors: spec.retryTaskErrors ?? false,
  };
}

function fieldsInit(fields: NodeFields): NodeInit {
  const node: NodeInit = {};
  if (fields.name !== undefined) node.name = fields.name;
  if (fields.capability !== undefined) node.capability = fields.capability;
  if (fields.parents !== undefined) node.parentIds = [...fields.parents];
  if (fields.input !== undefined) node.input = fields.input;
  if (fields.retryPolicy !== undefined) node.retryPolicy = retryPolicyInit(fields.retryPolicy);
  if (fields.timeoutMs !== undefined) node.timeout = durationFromMs(fields.timeoutMs);
  if (fields.labels !== undefined) node.labels = { ...fields.labels };
  return node;
}

/**
 * Collects the graph edits of one attempt: `ctx.edits.insert(...)`, `.update(...)`, `.delete(...)`. They are sent
 * with the node's success and applied atomically with its PASS (a rejected batch fails the node with TASK_ERROR); an
 * attempt that fails sends none.
 */
export class EditsBuilder {
  readonly #edits: NodeEdit[] = [];

  /** Inserts a new node; `parents` may name this node, other new nodes or existing ones. */
  insert(spec: NodeSpec): this {
    const node: NodeInit = { ...fieldsInit(spec), id: spec.id };
    if (spec.wait !== undefined) {
      node.wait = {
        timeout: spec.wait.timeoutMs === undefined ? undefined : durationFromMs(spec.wait.timeoutMs),
        failOnTimeout: spec.wait.failOnTimeout ?? false,
        timeoutOutput:
          spec.wait.timeoutOutput === undefined ? undefined : fromJson(ValueSchema, spec.wait.timeoutOutput),
      };
    }
    if (spec.notBefore !== undefined) node.notBefore = timestampFromDate(spec.notBefore);
    if (spec.limitKeys !== undefined) node.limitKeys = [...spec.limitKeys];
    if (spec.priority !== undefined) node.priority = spec.priority;
    this.#edits.push(create(NodeEditSchema, { type: EditType.INSERT, node }));
    return this;
  }

  /** Changes the given fields of a node that has not started (e.g. rewires a join with `parents`); others are kept. */
  update(id: string, fields: NodeFields): this {
    const paths = (Object.keys(UPDATE_PATHS) as (keyof NodeFields)[])
      .filter((key) => fields[key] !== undefined)
      .map((key) => UPDATE_PATHS[key]);
    if (paths.length === 0) throw new TypeError(`update of node "${id}" changes no field`);
    this.#edits.push(
      create(NodeEditSchema, { type: EditType.UPDATE, node: { ...fieldsInit(fields), id }, updateMask: { paths } }),
    );
    return this;
  }

  /** Removes a node that has not started. */
  delete(id: string): this {
    this.#edits.push(create(NodeEditSchema, { type: EditType.DELETE, nodeId: id }));
    return this;
  }

  /** The edits so far, in the order they were made (the order the engine applies them). */
  list(): readonly NodeEdit[] {
    return this.#edits;
  }
}
