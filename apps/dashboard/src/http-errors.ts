import { TrellisError, type TrellisErrorCode } from "@trellis/core";

/** The HTTP status a typed Trellis error answers with on the dashboard's JSON API. */
export function httpStatusOf(code: TrellisErrorCode): number {
  switch (code) {
    case "INVALID_ARGUMENT":
    case "RESOURCE_EXHAUSTED":
      return 400;
    case "UNAUTHENTICATED":
      return 401;
    case "NOT_FOUND":
      return 404;
    case "FAILED_PRECONDITION":
    case "ALREADY_EXISTS":
    case "ABORTED":
      return 409;
    default: {
      const unknown: never = code;
      throw new Error(`unmapped error code ${String(unknown)}`);
    }
  }
}

/** The JSON body of an error answer: `{"error": {"code": "NOT_FOUND", "message": "..."}}`. */
export interface ErrorBody {
  error: { code: TrellisErrorCode | "INTERNAL"; message: string };
}

/** How a thrown error is answered: typed errors say what was wrong, anything else is a 500 without details. */
export function errorAnswer(error: unknown): { status: number; body: ErrorBody } {
  if (error instanceof TrellisError) {
    return { status: httpStatusOf(error.code), body: { error: { code: error.code, message: error.message } } };
  }
  return { status: 500, body: { error: { code: "INTERNAL", message: "internal error" } } };
}
