/**
 * SQLSTATEs that say PostgreSQL cannot be used right now, though it may be in a moment: connection exceptions
 * (class 08), the server shutting down or starting (57P01-57P03), too many connections (53300).
 */
const TRANSIENT_SQLSTATES = /^(08...|57P0[123]|53300)$/;

/** Node socket errors of a connection that was refused, reset or timed out. */
const SOCKET_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/** Messages node-postgres uses for a connection that is gone, or that could not be had in time. */
const CONNECTION_MESSAGES =
  /Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|Connection is not open|the database system is (starting up|shutting down)|terminating connection/i;

/**
 * Whether `error` (or one of its causes: Drizzle wraps driver errors) means PostgreSQL was unreachable or dropped the
 * connection, rather than refusing the statement: an outage to retry, not a bug. The api answers UNAVAILABLE for it.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 5; depth++) {
    if (typeof e !== "object") return false;
    const { code, message, cause } = e as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === "string" && (TRANSIENT_SQLSTATES.test(code) || SOCKET_CODES.has(code))) return true;
    if (typeof message === "string" && CONNECTION_MESSAGES.test(message)) return true;
    if (e instanceof AggregateError && e.errors.some((inner) => isDatabaseUnavailable(inner))) return true;
    e = cause;
  }
  return false;
}
