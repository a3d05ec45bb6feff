import { create, type JsonObject } from "@bufbuild/protobuf";
import { DurationSchema, type Duration } from "@bufbuild/protobuf/wkt";
import { type Node, NodeSchema, type RetryPolicy, RetryPolicySchema } from "@trellis/proto";
import { durationToMs, isValidDuration } from "./durations.js";
import { InvalidArgumentError } from "./errors.js";
import { validateLimitKeys, validatePriority } from "./flow-control.js";
import { assertCapability, assertNodeId } from "./ids.js";
import { validateInput } from "./input.js";
import { validateLabels } from "./labels.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
import { validateName } from "./names.js";
import { MAX_NODE_TIMEOUT_MS, MAX_RETRY_ATTEMPTS, MAX_RETRY_BACKOFF_MS } from "./retry.js";
import { quoteForMessage } from "./text.js";
import { copyWait, validateNotBefore, validateWait } from "./waits.js";

/**
 * Throws InvalidArgumentError unless `parentIds` are at most `maxParents` ids, none repeated and none
 * equal to `nodeId`. Whether each parent exists is the graph's question, not this one.
 */
export function validateParentIds(
  parentIds: readonly string[],
  nodeId: string,
  field: string,
  limits: WorkflowLimits = DEFAULT_LIMITS,
): void {
  if (parentIds.length > limits.maxParents) {
    throw new InvalidArgumentError(field, `at most ${limits.maxParents} parents are allowed, got ${parentIds.length}`);
  }
  // Most nodes have a parent or two: compare pairwise then, and only build a set for long lists.
  const seen = parentIds.length > 8 ? new Set<string>() : undefined;
  for (let j = 0; j < parentIds.length; j++) {
    const parentId = parentIds[j]!;
    if (parentId === nodeId) throw new InvalidArgumentError(`${field}[${j}]`, "a node cannot be its own parent");
    const repeated = seen === undefined ? parentIds.indexOf(parentId) < j : seen.has(parentId);
    if (repeated) throw new InvalidArgumentError(`${field}[${j}]`, `duplicate parent ${quoteForMessage(parentId)}`);
    seen?.add(parentId);
  }
}

function validateBackoff(d: Duration | undefined, field: string): number | undefined {
  if (d === undefined) return undefined;
  if (!isValidDuration(d)) throw new InvalidArgumentError(field, "must be a valid duration");
  const ms = durationToMs(d);
  if (ms < 0) throw new InvalidArgumentError(field, "must not be negative");
  if (ms > MAX_RETRY_BACKOFF_MS) throw new InvalidArgumentError(field, "must be at most 24h");
  return ms;
}

/**
 * Throws InvalidArgumentError unless `policy` has `max_attempts` in 0..100, non-negative backoffs of at
 * most 24h, and `max_backoff >= initial_backoff` when both are set (non-zero).
 */
export function validateRetryPolicy(policy: RetryPolicy | undefined, field: string): void {
  if (policy === undefined) return;
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 0 || policy.maxAttempts > MAX_RETRY_ATTEMPTS) {
    throw new InvalidArgumentError(`${field}.max_attempts`, `must be between 0 and ${MAX_RETRY_ATTEMPTS}`);
  }
  const initial = validateBackoff(policy.initialBackoff, `${field}.initial_backoff`);
  const max = validateBackoff(policy.maxBackoff, `${field}.max_backoff`);
  if (initial !== undefined && max !== undefined && initial > 0 && max > 0 && max < initial) {
    throw new InvalidArgumentError(`${field}.max_backoff`, "must not be less than initial_backoff");
  }
}

/** Throws InvalidArgumentError unless `timeout`, when set, is a duration greater than 0 and at most 24h. */
export function validateTimeout(timeout: Duration | undefined, field: string): void {
  if (timeout === undefined) return;
  if (!isValidDuration(timeout)) throw new InvalidArgumentError(field, "must be a valid duration");
  const ms = durationToMs(timeout);
  if (ms <= 0) throw new InvalidArgumentError(field, "must be greater than 0");
  if (ms > MAX_NODE_TIMEOUT_MS) throw new InvalidArgumentError(field, "must be at most 24h");
}

/**
 * Checks a node's flow-control fields: `priority` in 0..10 and its `limit_keys` (see validateLimitKeys), with field
 * paths under `field` (`nodes[3].priority`). Cheap: the api runs it before calling the StateManager, which checks
 * again with the rest of the node.
 */
export function validateNodeFlowControl(node: Pick<Node, "priority" | "limitKeys">, field: string): void {
  validatePriority(node.priority, `${field}.priority`);
  validateLimitKeys(node.limitKeys, `${field}.limit_keys`);
}

/**
 * Checks everything about one node that does not depend on the rest of the graph: id, name,
 * capability, parent list, input size, retry policy, timeout, labels, priority and limit keys, with
 * field paths under `field` (e.g. `nodes[3].capability`). Output-only fields are ignored.
 */
export function validateNodeSpec(node: Node, field: string, limits: WorkflowLimits = DEFAULT_LIMITS): void {
  assertNodeId(node.id, `${field}.id`);
  validateName(node.name, `${field}.name`);
  // A node that waits for a signal needs no capability (no NodeService runs it).
  if (!(node.wait !== undefined && node.capability === "")) assertCapability(node.capability, `${field}.capability`);
  validateWait(node.wait, `${field}.wait`);
  validateNotBefore(node.notBefore, `${field}.not_before`);
  validateParentIds(node.parentIds, node.id, `${field}.parent_ids`, limits);
  validateInput(node.input, `${field}.input`, limits);
  validateRetryPolicy(node.retryPolicy, `${field}.retry_policy`);
  validateTimeout(node.timeout, `${field}.timeout`);
  validateLabels(node.labels, `${field}.labels`, limits);
  validateNodeFlowControl(node, field);
}

/** A deep copy of `d`. */
export function copyDuration(d: Duration): Duration {
  return create(DurationSchema, { seconds: d.seconds, nanos: d.nanos });
}

/** A deep copy of `policy`. */
export function copyRetryPolicy(policy: RetryPolicy): RetryPolicy {
  return create(RetryPolicySchema, {
    maxAttempts: policy.maxAttempts,
    initialBackoff: policy.initialBackoff === undefined ? undefined : copyDuration(policy.initialBackoff),
    maxBackoff: policy.maxBackoff === undefined ? undefined : copyDuration(policy.maxBackoff),
    retryTaskErrors: policy.retryTaskErrors,
  });
}

/** A deep copy of a JSON object. */
export function copyJsonObject(value: JsonObject): JsonObject {
  return structuredClone(value);
}

/**
 * A new node as it is stored: a deep copy of the caller's fields, `name` defaulted to the id, and every
 * output-only field (workflow_id, status, output, error, attempt, timestamps, held_by) cleared.
 */
export function normalizeNewNode(node: Node): Node {
  return create(NodeSchema, {
    id: node.id,
    name: node.name === "" ? node.id : node.name,
    capability: node.capability,
    parentIds: [...node.parentIds],
    input: node.input === undefined ? undefined : copyJsonObject(node.input),
    retryPolicy: node.retryPolicy === undefined ? undefined : copyRetryPolicy(node.retryPolicy),
    timeout: node.timeout === undefined ? undefined : copyDuration(node.timeout),
    labels: { ...node.labels },
    priority: node.priority,
    limitKeys: [...node.limitKeys],
    wait: node.wait === undefined ? undefined : copyWait(node.wait),
    notBefore: node.notBefore === undefined ? undefined : { ...node.notBefore },
  });
}
