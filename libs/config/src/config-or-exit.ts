import { ConfigError } from "./config-error.js";

/** Where {@link configOrExit} reports and how it stops; `process` unless a test passes its own. */
export interface ExitIo {
  /** Writes one line (newline included) to stderr. */
  writeError(line: string): void;
  /** Ends the process with `code`. */
  exit(code: number): never;
}

const processIo: ExitIo = {
  writeError: (line) => {
    process.stderr.write(line);
  },
  exit: (code) => process.exit(code),
};

/**
 * Runs an app's settings reader; on a {@link ConfigError} prints `trellis <app>: invalid setting: <message>`
 * to stderr and exits with code 2. Any other error is rethrown: it is a bug, not a setting.
 */
export function configOrExit<T>(read: () => T, app: string, io: ExitIo = processIo): T {
  try {
    return read();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.writeError(`trellis ${app}: invalid setting: ${error.message}\n`);
    return io.exit(2);
  }
}
