/** The gRPC status code a {@link TrellisError} maps to. */
export type TrellisErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "ALREADY_EXISTS"
  | "UNAUTHENTICATED"
  | "ABORTED";

/** Base class of every error Trellis reports to a caller; `code` decides the gRPC status. */
export abstract class TrellisError extends Error {
  /** The gRPC status code this error maps to. */
  abstract readonly code: TrellisErrorCode;
}

function fieldMessage(field: string, reason: string): string {
  return field === "" ? reason : `${field}: ${reason}`;
}

/** A malformed request: `field` is the offending field path (e.g. `nodes[3].id`), `reason` says why. */
export class InvalidArgumentError extends TrellisError {
  override readonly code = "INVALID_ARGUMENT" as const;

  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(fieldMessage(field, reason));
    this.name = "InvalidArgumentError";
  }
}

/** A request that exceeds a size or count limit; `field` names what is too big. */
export class ResourceExhaustedError extends TrellisError {
  override readonly code = "RESOURCE_EXHAUSTED" as const;

  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(fieldMessage(field, reason));
    this.name = "ResourceExhaustedError";
  }
}

/** An unknown workflow or node. */
export class NotFoundError extends TrellisError {
  override readonly code = "NOT_FOUND" as const;

  constructor(message: string) {
    super(message);
    this.name = "NotFoundError";
  }
}

/** An action the current state forbids (editing a RUNNING node, resuming a running workflow, ...). */
export class FailedPreconditionError extends TrellisError {
  override readonly code = "FAILED_PRECONDITION" as const;

  constructor(message: string) {
    super(message);
    this.name = "FailedPreconditionError";
  }
}

/** Something the caller tried to create exists already. */
export class AlreadyExistsError extends TrellisError {
  override readonly code = "ALREADY_EXISTS" as const;

  constructor(message: string) {
    super(message);
    this.name = "AlreadyExistsError";
  }
}

/** A call without a valid token when one is configured. */
export class UnauthenticatedError extends TrellisError {
  override readonly code = "UNAUTHENTICATED" as const;

  constructor(message: string) {
    super(message);
    this.name = "UnauthenticatedError";
  }
}

/** A concurrency conflict (another writer got there first); the caller may retry. */
export class AbortedError extends TrellisError {
  override readonly code = "ABORTED" as const;

  constructor(message: string) {
    super(message);
    this.name = "AbortedError";
  }
}
