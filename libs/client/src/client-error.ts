import * as grpc from "@grpc/grpc-js";

/** The name of a gRPC status code, as the api and its docs spell it: `NOT_FOUND`, `UNAVAILABLE`, ... */
export type GrpcCodeName = keyof typeof grpc.status;

/**
 * A call to the api that failed: the gRPC status code (number and name) and the api's message. The api's messages
 * name the offending field and the reason (`nodes[1].parent_ids: unknown node "x"`), so `details` is worth showing.
 */
export class TrellisClientError extends Error {
  override readonly name = "TrellisClientError";

  constructor(
    /** The gRPC status code. */
    readonly code: grpc.status,
    /** What the api (or grpc-js, for a connection error) said. */
    readonly details: string,
    /** The trailing metadata of the call, when there was a call. */
    readonly metadata: grpc.Metadata | undefined = undefined,
    options?: { cause?: unknown },
  ) {
    super(`${grpcCodeName(code)}: ${details}`, options);
  }

  /** The code's name: `NOT_FOUND`, `PERMISSION_DENIED`, ... */
  get codeName(): GrpcCodeName {
    return grpcCodeName(this.code);
  }
}

/** The name of a gRPC status code; `UNKNOWN` for a number grpc-js does not know. */
export function grpcCodeName(code: grpc.status): GrpcCodeName {
  const name = grpc.status[code];
  return (typeof name === "string" ? name : "UNKNOWN") as GrpcCodeName;
}

/** The gRPC status code an error carries (a grpc-js ServiceError or a {@link TrellisClientError}), if any. */
export function grpcCode(error: unknown): grpc.status | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "number" ? (code as grpc.status) : undefined;
}

/** A grpc-js error as a {@link TrellisClientError}; anything without a gRPC status is returned as it is. */
export function toClientError(error: unknown): unknown {
  if (error instanceof TrellisClientError) return error;
  const code = grpcCode(error);
  if (code === undefined) return error;
  const { details, metadata } = error as { details?: unknown; metadata?: unknown };
  return new TrellisClientError(
    code,
    typeof details === "string" ? details : error instanceof Error ? error.message : "",
    metadata instanceof grpc.Metadata ? metadata : undefined,
    { cause: error },
  );
}
