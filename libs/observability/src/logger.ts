import { type DestinationStream, type Logger, pino } from "pino";
import pretty from "pino-pretty";

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** The app name, written as `app` on every line. */
  app: string;
  /** The pino level (`fatal` ... `trace`, or `silent`). */
  level: string;
  /**
   * Human-readable colored lines instead of JSON, for a developer's terminal: one line per entry (pino-pretty
   * `singleLine`, the message by {@link prettyMessage}). @default false
   */
  pretty?: boolean;
  /** Where lines go. @default stdout */
  destination?: NodeJS.WritableStream;
}

/** The fields {@link prettyMessage} writes itself (or that a terminal does not need), left out of a pretty line. */
const PRETTY_IGNORED = [
  "pid",
  "hostname",
  "app",
  "event",
  "workflow_id",
  "node_id",
  "capability",
  "attempt",
  "sequence",
  "workflow_status",
  "node_status",
  "data",
];

function text(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : typeof value === "number" ? String(value) : undefined;
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

/** `TASK_ERROR: message` of an event's `data.error`. */
function errorText(data: Record<string, unknown>): string | undefined {
  const error = record(data.error);
  const message = text(error.message);
  if (message === undefined) return undefined;
  return text(error.kind) ? `${String(error.kind)}: ${message}` : message;
}

/** What an event line says, e.g. `node b RUNNING (attempt 2)` or `node c FAIL: TASK_ERROR: no such city`. */
function eventText(log: Record<string, unknown>): string {
  const event = String(log.event);
  const data = record(log.data);
  const node = text(log.node_id);
  const attempt = text(log.attempt);
  const from = text(data.from);
  switch (event) {
    case "node.status_changed": {
      const parts = [`node ${node} ${from ? `${from} -> ` : ""}${text(log.node_status)}`];
      if (attempt) parts.push(`(attempt ${attempt})`);
      const detail = errorText(data) ?? text(data.reason);
      return detail ? `${parts.join(" ")}: ${detail}` : parts.join(" ");
    }
    case "node.retry_scheduled":
      return `node ${node} attempt ${attempt ?? "?"} failed, retry in ${text(data.delayMs) ?? "?"}ms: ${errorText(data) ?? ""}`;
    case "workflow.status_changed": {
      const why = text(data.action) ?? text(data.reason);
      return `workflow ${from ? `${from} -> ` : ""}${text(log.workflow_status)}${why ? ` (${why})` : ""}`;
    }
    case "workflow.created":
      return `workflow created${text(data.nodeCount) ? ` with ${String(data.nodeCount)} nodes` : ""}`;
    default: {
      const status = text(log.node_status);
      const why = text(data.reason);
      return [event, node && `node ${node}`, status, why && `(${why})`].filter(Boolean).join(" ");
    }
  }
}

/**
 * pino-pretty's messageFormat: `[app] message`, a committed event as a sentence (`[worker] node a QUEUED -> RUNNING
 * (attempt 1)`), then the workflow, node, capability and attempt of any line that has them, so a terminal shows one
 * readable line per entry. The other fields follow inline (singleLine).
 */
export function prettyMessage(log: Record<string, unknown>, messageKey: string): string {
  const app = text(log.app);
  const parts = [app ? `[${app}]` : "", log.event === undefined ? String(log[messageKey] ?? "") : eventText(log)];
  const capability = text(log.capability);
  if (log.event === undefined) {
    if (text(log.node_id)) parts.push(`node=${String(log.node_id)}`);
    if (text(log.attempt)) parts.push(`attempt=${String(log.attempt)}`);
  }
  if (capability) parts.push(`[${capability}]`);
  if (text(log.workflow_id)) parts.push(`wf=${String(log.workflow_id)}`);
  return parts.filter((p) => p !== "").join(" ");
}

/** Fields whose values never reach the logs. */
const REDACTED_PATHS = ["authorization", "*.authorization", "apiToken", "*.apiToken", "password", "*.password"];

/**
 * A pino logger writing one JSON object a line (to stdout unless told otherwise), with `app` on every line,
 * the level as its name (`"level":"info"`) and an ISO-8601 `time`. Errors go under `err`.
 */
export function createLogger(opts: LoggerOptions): Logger {
  const stream: DestinationStream | undefined = opts.pretty
    ? // In-process and synchronous, so the last lines before process.exit are not lost.
      pretty({
        destination: opts.destination ?? 1,
        sync: true,
        translateTime: "SYS:HH:MM:ss.l",
        // One line per entry: the message as prettyMessage writes it, then the fields it did not, inline.
        singleLine: true,
        messageFormat: prettyMessage,
        ignore: PRETTY_IGNORED.join(","),
      })
    : (opts.destination ??
      // Asynchronous, as pino's default; minLength 1 (every line is still written at once) makes logger.flush(cb)
      // wait until the writes in flight are done, which GracefulShutdown does before the process exits.
      pino.destination({ dest: 1, minLength: 1 }));
  return pino(
    {
      level: opts.level,
      base: { app: opts.app },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    },
    stream,
  );
}
