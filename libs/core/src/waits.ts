import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Node, type SignalNodeRequest, type Wait, WaitSchema } from "@trellis/proto";
import { durationToMs, isValidDuration } from "./durations.js";
import { InvalidArgumentError } from "./errors.js";
import { valueProblem } from "./storable.js";

/** The longest a wait may last (`wait.timeout`): a year. */
export const MAX_WAIT_TIMEOUT_MS = 366 * 24 * 3_600_000;

/** How far ahead `not_before` may be: a year from now (the horizon). A time in the past means "now". */
export const MAX_NOT_BEFORE_AHEAD_MS = 366 * 24 * 3_600_000;

/** Checks a node's `wait`: a timeout of 0 (for ever) up to a year, and an output PostgreSQL can store. */
export function validateWait(wait: Wait | undefined, field: string): void {
  if (wait === undefined) return;
  if (wait.timeout !== undefined) {
    if (!isValidDuration(wait.timeout)) throw new InvalidArgumentError(`${field}.timeout`, "must be a valid duration");
    const ms = durationToMs(wait.timeout);
    if (ms < 0) throw new InvalidArgumentError(`${field}.timeout`, "must not be negative (0 waits for ever)");
    if (ms > MAX_WAIT_TIMEOUT_MS) throw new InvalidArgumentError(`${field}.timeout`, "must be at most 366 days");
  }
  const problem = valueProblem(wait.timeoutOutput);
  if (problem) throw new InvalidArgumentError(`${field}.timeout_output${problem.path}`, problem.reason);
}

/** Checks a `not_before`: a valid timestamp at most a year ahead of `nowMs` (in the past: the node runs at once). */
export function validateNotBefore(notBefore: Timestamp | undefined, field: string, nowMs = Date.now()): void {
  if (notBefore === undefined) return;
  const { seconds, nanos } = notBefore;
  if (!Number.isInteger(nanos) || nanos < 0 || nanos > 999_999_999 || seconds < -62_135_596_800n) {
    throw new InvalidArgumentError(field, "must be a valid timestamp");
  }
  if (timestampMs(notBefore) > nowMs + MAX_NOT_BEFORE_AHEAD_MS) {
    throw new InvalidArgumentError(field, "must be at most 366 days ahead");
  }
}

/** A deep copy of a Wait. */
export function copyWait(wait: Wait): Wait {
  return create(WaitSchema, {
    timeout: wait.timeout ? { seconds: wait.timeout.seconds, nanos: wait.timeout.nanos } : undefined,
    failOnTimeout: wait.failOnTimeout,
    timeoutOutput: wait.timeoutOutput ? create(ValueSchema, structuredClone(wait.timeoutOutput)) : undefined,
  });
}

/** Whether a node is completed by SignalNode rather than by a NodeService. */
export function waitsForSignal(node: Pick<Node, "wait">): boolean {
  return node.wait !== undefined;
}

/** The longest `message` of a rejecting signal (it becomes the node's error). */
export const MAX_SIGNAL_MESSAGE_CHARS = 16_384;

/** The longest `request_id` of a signal. */
export const MAX_SIGNAL_REQUEST_ID_CHARS = 128;

/**
 * Checks the fields of a SignalNode request beyond its ids (the api's RPC and the dashboard's signal route): an
 * output PostgreSQL can store, a bounded message and request_id, no edits with a rejection. The edits themselves are
 * checked against the graph when they are applied.
 */
export function validateSignalRequest(
  request: Pick<SignalNodeRequest, "output" | "message" | "reject" | "edits" | "requestId">,
): void {
  const problem = valueProblem(request.output);
  if (problem) throw new InvalidArgumentError(`output${problem.path}`, problem.reason);
  if (request.message.length > MAX_SIGNAL_MESSAGE_CHARS) {
    throw new InvalidArgumentError("message", `must be at most ${MAX_SIGNAL_MESSAGE_CHARS} characters`);
  }
  if (request.reject && request.edits.length > 0) {
    throw new InvalidArgumentError("edits", "must be empty when the signal rejects the node");
  }
  if (request.requestId.length > MAX_SIGNAL_REQUEST_ID_CHARS) {
    throw new InvalidArgumentError("request_id", `must be at most ${MAX_SIGNAL_REQUEST_ID_CHARS} characters`);
  }
}
