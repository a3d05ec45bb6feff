import type { Logger } from "pino";

/** Options of {@link GracefulShutdown}. */
export interface GracefulShutdownOptions {
  /** The longest one closer may take before it is counted as failed and the next one runs. @default 25000 */
  timeoutMs?: number;
}

/** One named resource to release at shutdown. */
interface Closer {
  name: string;
  close: () => Promise<void> | void;
}

/** The signals {@link GracefulShutdown.listen} handles. */
const SIGNALS = ["SIGTERM", "SIGINT"] as const;

/**
 * Releases an app's resources in the reverse order they were acquired: stop taking work first, close pools last.
 * Owns `signal`, which aborts the moment shutdown starts so loops and waits can stop.
 */
export class GracefulShutdown {
  /** Aborted (with an `AbortError`) when shutdown starts. */
  readonly signal: AbortSignal;

  readonly #logger: Logger;
  readonly #timeoutMs: number;
  readonly #controller = new AbortController();
  readonly #closers: Closer[] = [];
  #running: Promise<boolean> | undefined;
  #finished = false;
  #signalsReceived = 0;

  constructor(logger: Logger, opts: GracefulShutdownOptions = {}) {
    this.#logger = logger;
    this.#timeoutMs = opts.timeoutMs ?? 25_000;
    this.signal = this.#controller.signal;
  }

  /** Registers a resource; closers run in reverse order of `add`. Added after shutdown finished, it closes at once. */
  add(name: string, close: () => Promise<void> | void): void {
    if (this.#finished) {
      this.#logger.warn({ closer: name }, `${name} was added after shutdown; closing it now`);
      void this.#closeOne({ name, close });
      return;
    }
    // While shutdown runs, this lands on top of the stack and closes next.
    this.#closers.push({ name, close });
  }

  /**
   * Handles SIGTERM and SIGINT: the first runs {@link shutdown} then exits 0, or 1 if a closer failed or timed out;
   * a second signal while shutting down exits 1 at once. Call once per process.
   */
  listen(): void {
    for (const name of SIGNALS) {
      process.on(name, () => this.#onSignal(name));
    }
  }

  /** Runs every closer, each bounded by the timeout, logging each; resolves when all are done. Idempotent. */
  async shutdown(reason: string): Promise<void> {
    await this.#run(reason);
  }

  /** Whether shutdown has started. */
  get started(): boolean {
    return this.#running !== undefined;
  }

  #onSignal(name: string): void {
    this.#signalsReceived += 1;
    if (this.#signalsReceived > 1) {
      this.#logger.warn({ signal: name }, "second signal during shutdown, exiting now");
      process.exit(1);
    }
    void this.#run(name)
      .then(async (ok) => {
        await this.#flushLog();
        return ok;
      })
      .then((ok) => process.exit(ok ? 0 : 1));
  }

  /**
   * Waits (at most 5 s) until the log's buffered lines are written: pino's stdout stream writes asynchronously,
   * and a process that exits with a write in flight loses those lines or prints them after later ones.
   */
  async #flushLog(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        try {
          this.#logger.flush(() => resolve());
        } catch {
          resolve();
        }
      }),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 5_000);
      }),
    ]);
    clearTimeout(timer);
  }

  #run(reason: string): Promise<boolean> {
    this.#running ??= this.#closeAll(reason);
    return this.#running;
  }

  async #closeAll(reason: string): Promise<boolean> {
    const started = performance.now();
    this.#logger.info({ reason }, "shutting down");
    this.#controller.abort(new DOMException(`shutting down: ${reason}`, "AbortError"));
    let ok = true;
    for (let closer = this.#closers.pop(); closer !== undefined; closer = this.#closers.pop()) {
      ok = (await this.#closeOne(closer)) && ok;
    }
    this.#finished = true;
    const ms = Math.round(performance.now() - started);
    if (ok) this.#logger.info({ ms }, "shutdown complete");
    else this.#logger.error({ ms }, "shutdown finished with errors");
    return ok;
  }

  /** Closes one resource within the timeout; never rejects. */
  async #closeOne({ name, close }: Closer): Promise<boolean> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${name} did not close within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    try {
      await Promise.race([Promise.resolve().then(close), timeout]);
      this.#logger.info({ closer: name, ms: Math.round(performance.now() - started) }, `closed ${name}`);
      return true;
    } catch (error) {
      this.#logger.error({ closer: name, err: error }, `closing ${name} failed`);
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}
