/**
 * A setting that is missing or malformed. Its message is one line, `<VARIABLE>: <reason>`, e.g.
 * `WORKER_CONCURRENCY: must be an integer between 1 and 1000, got "abc"`.
 */
export class ConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }

  /** A ConfigError for `setting` with the message `<setting>: <reason>`. */
  static invalid(setting: string, reason: string): ConfigError {
    return new ConfigError(`${setting}: ${reason}`);
  }
}
