import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { TrellisError, type TrellisErrorCode } from "@trellis/core";
import { isDatabaseUnavailable } from "@trellis/db";
import type { Logger } from "pino";

/** The status a failed call ends with: a gRPC code and a message for the caller. */
export interface CallError {
  code: grpc.status;
  details: string;
}

/** The gRPC status of each typed Trellis error code. */
export function grpcStatusOf(code: TrellisErrorCode): grpc.status {
  switch (code) {
    case "INVALID_ARGUMENT":
      return grpc.status.INVALID_ARGUMENT;
    case "NOT_FOUND":
      return grpc.status.NOT_FOUND;
    case "FAILED_PRECONDITION":
      return grpc.status.FAILED_PRECONDITION;
    case "RESOURCE_EXHAUSTED":
      return grpc.status.RESOURCE_EXHAUSTED;
    case "ALREADY_EXISTS":
      return grpc.status.ALREADY_EXISTS;
    case "UNAUTHENTICATED":
      return grpc.status.UNAUTHENTICATED;
    case "ABORTED":
      return grpc.status.ABORTED;
    default: {
      const unknown: never = code;
      throw new Error(`unmapped Trellis error code ${String(unknown)}`);
    }
  }
}

/**
 * The one place an error becomes a gRPC status. A TrellisError keeps its message, which names the field and the
 * reason. PostgreSQL unreachable (down, restarting, the connection dropped) is UNAVAILABLE: the call changed
 * nothing (every write is one transaction) and may be retried. Anything else is a bug the caller cannot act on: it
 * becomes INTERNAL with a correlation id, and the same id is logged at error with the stack, which never reaches
 * the caller.
 */
export function toCallError(error: unknown, logger: Logger, method: string): CallError {
  if (error instanceof TrellisError) return { code: grpcStatusOf(error.code), details: error.message };
  if (isDatabaseUnavailable(error)) {
    logger.warn({ err: error, method }, "PostgreSQL unavailable during a gRPC call");
    return { code: grpc.status.UNAVAILABLE, details: "the database is unavailable; retry later" };
  }
  const correlationId = randomUUID();
  logger.error({ err: error, method, correlation_id: correlationId }, "unexpected error in gRPC call");
  return { code: grpc.status.INTERNAL, details: `internal error (correlation id ${correlationId})` };
}
