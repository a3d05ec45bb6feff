import { type DestinationStream, type Logger, pino } from "pino";
import pretty from "pino-pretty";

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** The app name, written as `app` on every line. */
  app: string;
  /** The pino level (`fatal` ... `trace`, or `silent`). */
  level: string;
  /** Human-readable colored lines instead of JSON, for a developer's terminal. @default false */
  pretty?: boolean;
  /** Where lines go. @default stdout */
  destination?: NodeJS.WritableStream;
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
        ignore: "pid,hostname",
      })
    : opts.destination;
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
