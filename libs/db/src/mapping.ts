import { create, fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import {
  durationFromMs,
  durationMs,
  timestampFromDate,
  ValueSchema,
  type Duration,
  type Value,
} from "@bufbuild/protobuf/wkt";
import {
  ErrorKind,
  LimitSchema,
  NodeAttemptSchema,
  NodeSchema,
  NodeStatus,
  RetryPolicySchema,
  WorkflowEventSchema,
  WorkflowSchema,
  WorkflowStatus,
  WaitSchema,
  type Limit,
  type Node,
  type NodeAttempt,
  type RetryPolicy,
  type Wait,
  type Workflow,
  type WorkflowEvent,
} from "@trellis/proto";
import { getTableColumns } from "drizzle-orm";
import { type nodeAttempts, nodes, type workflowEvents, type workflows } from "./schema.js";
import type { LimitState } from "./state-manager.js";

/** A node row as selected by Drizzle. */
export type NodeRow = typeof nodes.$inferSelect;
/** A workflow row as selected by Drizzle. */
export type WorkflowRow = typeof workflows.$inferSelect;
/** An event row as selected by Drizzle. */
export type EventRow = typeof workflowEvents.$inferSelect;
/** A `node_attempts` row as selected by Drizzle. */
export type AttemptRow = typeof nodeAttempts.$inferSelect;

/** Stored workflow status name. */
export type WorkflowStatusName = WorkflowRow["status"];
/** Stored node status name. */
export type NodeStatusName = NodeRow["status"];
/** Stored error kind name. */
export type ErrorKindName = NonNullable<NodeRow["errorKind"]>;

/** Stored name of a workflow status ("RUNNING"). */
export function workflowStatusToName(status: WorkflowStatus): WorkflowStatusName {
  const name = WorkflowStatus[status];
  if (!name || status === WorkflowStatus.UNSPECIFIED) throw new Error(`not a storable workflow status: ${status}`);
  return name as WorkflowStatusName;
}

/** Protobuf enum value of a stored workflow status. */
export function workflowStatusFromName(name: WorkflowStatusName): WorkflowStatus {
  return WorkflowStatus[name];
}

/** Stored name of a node status ("PASS"). */
export function nodeStatusToName(status: NodeStatus): NodeStatusName {
  const name = NodeStatus[status];
  if (!name || status === NodeStatus.UNSPECIFIED) throw new Error(`not a storable node status: ${status}`);
  return name as NodeStatusName;
}

/** Protobuf enum value of a stored node status. */
export function nodeStatusFromName(name: NodeStatusName): NodeStatus {
  return NodeStatus[name];
}

/** Stored name of an error kind. */
export function errorKindToName(kind: ErrorKind): ErrorKindName {
  return kind === ErrorKind.INFRA_ERROR ? "INFRA_ERROR" : "TASK_ERROR";
}

/** A RetryPolicy in its protobuf JSON form for the jsonb column, or null when unset. */
export function retryPolicyToJson(policy: RetryPolicy | undefined): JsonObject | null {
  return policy ? (toJson(RetryPolicySchema, policy) as JsonObject) : null;
}

/** The RetryPolicy stored in a jsonb column (its protobuf JSON form), or undefined when unset. */
export function retryPolicyFromJson(json: unknown): RetryPolicy | undefined {
  return json ? fromJson(RetryPolicySchema, json as JsonObject) : undefined;
}

/** A google.protobuf.Value in JSON form for a jsonb column, or null when unset. */
export function valueToJson(value: Value | undefined): JsonValue | null {
  return value ? toJson(ValueSchema, value) : null;
}

/** A google.protobuf.Value from a jsonb column. */
export function valueFromJson(json: unknown): Value | undefined {
  return json === null || json === undefined ? undefined : fromJson(ValueSchema, json as JsonValue);
}

/** A Duration's length in ms, or null when unset. */
export function durationToMs(duration: Duration | undefined): number | null {
  return duration ? Math.round(durationMs(duration)) : null;
}

/**
 * A node row from a raw query (snake_case columns, driver values) as Drizzle would map it, using each
 * column's own driver mapping.
 */
export function nodeRowFromRaw(raw: Record<string, unknown>): NodeRow {
  const row: Record<string, unknown> = {};
  for (const [key, column] of Object.entries(getTableColumns(nodes))) {
    const value = raw[column.name];
    row[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value);
  }
  return row as NodeRow;
}

/** The protobuf Node of a stored row. */
export function nodeFromRow(row: NodeRow): Node {
  return create(NodeSchema, {
    id: row.id,
    workflowId: row.workflowId,
    name: row.name,
    capability: row.capability,
    parentIds: row.parentIds,
    input: row.input as JsonObject,
    status: nodeStatusFromName(row.status),
    output: valueFromJson(row.output),
    error: row.errorKind ? { kind: ErrorKind[row.errorKind], message: row.errorMessage ?? "" } : undefined,
    attempt: row.attempt,
    retryPolicy: retryPolicyFromJson(row.retryPolicy),
    timeout: row.timeoutMs === null ? undefined : durationFromMs(row.timeoutMs),
    labels: row.labels,
    createdAt: timestampFromDate(row.createdAt),
    updatedAt: timestampFromDate(row.updatedAt),
    startedAt: row.startedAt ? timestampFromDate(row.startedAt) : undefined,
    finishedAt: row.finishedAt ? timestampFromDate(row.finishedAt) : undefined,
    priority: row.priority,
    limitKeys: row.limitKeys,
    heldBy: row.heldBy ?? "",
    wait: waitFromJson(row.wait),
    notBefore: row.notBefore ? timestampFromDate(row.notBefore) : undefined,
    insertedBy: row.insertedBy,
  });
}

/** A node's Wait as stored (protobuf JSON), or null for none. */
export function waitToJson(wait: Wait | undefined): Record<string, unknown> | null {
  return wait ? (toJson(WaitSchema, wait) as Record<string, unknown>) : null;
}

/** The Wait of a stored node, or undefined for none. */
export function waitFromJson(json: unknown): Wait | undefined {
  return json === null || json === undefined ? undefined : fromJson(WaitSchema, json as JsonValue);
}

/** The protobuf NodeAttempt of a stored `node_attempts` row: its outcome is the status, its end the finish. */
export function attemptFromRow(row: AttemptRow): NodeAttempt {
  return create(NodeAttemptSchema, {
    attempt: row.attempt,
    status: row.outcome,
    // A THROTTLED attempt has no error kind (it was no failure) but keeps the provider's message.
    error: row.errorKind
      ? { kind: ErrorKind[row.errorKind], message: row.errorMessage ?? "" }
      : row.errorMessage
        ? { kind: ErrorKind.UNSPECIFIED, message: row.errorMessage }
        : undefined,
    workerId: row.workerId ?? "",
    startedAt: row.startedAt ? timestampFromDate(row.startedAt) : undefined,
    finishedAt: timestampFromDate(row.endedAt),
    usage: row.usage,
  });
}

/** The protobuf Limit of a limit and its live state (`available` 0 when the limit has no rate). */
export function limitToProto(state: LimitState): Limit {
  return create(LimitSchema, {
    key: state.key,
    maxConcurrency: state.maxConcurrency,
    rate: state.rate,
    period: durationFromMs(state.periodMs),
    burst: state.burst,
    unit: state.unit,
    throttledUntil: state.throttledUntil ? timestampFromDate(state.throttledUntil) : undefined,
    running: state.running,
    waiting: BigInt(state.waiting),
    available: state.available ?? 0,
  });
}

/** The protobuf Workflow of a stored row, with the given nodes. */
export function workflowFromRow(row: WorkflowRow, nodeList: Node[] = []): Workflow {
  return create(WorkflowSchema, {
    id: row.id,
    name: row.name,
    status: workflowStatusFromName(row.status),
    nodes: nodeList,
    input: row.input as JsonObject,
    labels: row.labels,
    createdAt: timestampFromDate(row.createdAt),
    updatedAt: timestampFromDate(row.updatedAt),
    finishedAt: row.finishedAt ? timestampFromDate(row.finishedAt) : undefined,
    usage: row.usage,
    budget: row.budget,
  });
}

/** The protobuf WorkflowEvent of a stored row. */
export function eventFromRow(row: EventRow): WorkflowEvent {
  return create(WorkflowEventSchema, {
    sequence: BigInt(row.sequence),
    workflowId: row.workflowId,
    nodeId: row.nodeId ?? "",
    type: row.type,
    workflowStatus: workflowStatusFromName(row.workflowStatus),
    nodeStatus: row.nodeStatus ? nodeStatusFromName(row.nodeStatus) : NodeStatus.UNSPECIFIED,
    time: timestampFromDate(row.time),
    data: row.data as JsonObject,
  });
}
