import { InvalidArgumentError } from "./errors.js";
import { quoteForMessage } from "./text.js";

/** What a node id may look like: chosen by the caller, unique within its workflow. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9_.-]{1,128}$/;

/** What a capability may look like; it routes a node to the workers that have it. */
export const CAPABILITY_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** A UUID of any version, either case. */
export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `id` is a well-formed node id. */
export function isValidNodeId(id: string): boolean {
  return NODE_ID_PATTERN.test(id);
}

/** Whether `capability` is a well-formed capability name. */
export function isValidCapability(capability: string): boolean {
  return CAPABILITY_PATTERN.test(capability);
}

/** Whether `id` is a UUID (any version, case-insensitive). */
export function isUuid(id: string): boolean {
  return UUID_PATTERN.test(id);
}

/** Throws InvalidArgumentError unless `id` is a UUID. */
export function assertWorkflowId(id: string, field = "workflow_id"): void {
  if (!isUuid(id)) throw new InvalidArgumentError(field, `${quoteForMessage(id)} is not a UUID`);
}

/** Throws InvalidArgumentError unless `id` is a well-formed node id (`required` when empty). */
export function assertNodeId(id: string, field = "node_id"): void {
  if (id === "") throw new InvalidArgumentError(field, "required");
  if (!isValidNodeId(id)) {
    throw new InvalidArgumentError(field, `${quoteForMessage(id)} must match [A-Za-z0-9_.-]{1,128}`);
  }
}

/** Throws InvalidArgumentError unless `capability` is a well-formed capability (`required` when empty). */
export function assertCapability(capability: string, field = "capability"): void {
  if (capability === "") throw new InvalidArgumentError(field, "required");
  if (!isValidCapability(capability)) {
    throw new InvalidArgumentError(field, `${quoteForMessage(capability)} must match [a-z0-9][a-z0-9._-]{0,63}`);
  }
}
