/** One registered cleanup action. */
interface Action {
  label: string;
  run: () => Promise<void> | void;
}

/**
 * Everything the bench must undo however it ends (child processes, databases, Redis keys), run last-in
 * first-out. Normal code unregisters what it tore down itself; `runAll` handles errors, SIGINT and SIGTERM.
 */
export class Cleanup {
  private readonly actions: Action[] = [];
  private running: Promise<void> | null = null;

  /** Whether `runAll` has begun (the bench is stopping: later failures are its consequence, not news). */
  get stopping(): boolean {
    return this.running !== null;
  }

  /** Registers `run`; the returned function unregisters it (call it after tearing down normally). */
  add(label: string, run: () => Promise<void> | void): () => void {
    const action: Action = { label, run };
    this.actions.push(action);
    return () => {
      const index = this.actions.indexOf(action);
      if (index >= 0) this.actions.splice(index, 1);
    };
  }

  /** Runs every registered action, newest first, each bounded by `timeoutMs`; failures are reported, not thrown. */
  runAll(timeoutMs = 15_000): Promise<void> {
    this.running ??= (async () => {
      while (this.actions.length > 0) {
        const action = this.actions.pop()!;
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(action.run),
            new Promise<void>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`did not finish within ${timeoutMs} ms`)), timeoutMs);
            }),
          ]);
        } catch (error) {
          process.stderr.write(`bench: cleanup of ${action.label} failed: ${(error as Error).message}\n`);
        } finally {
          clearTimeout(timer);
        }
      }
    })();
    return this.running;
  }

  /** On SIGINT/SIGTERM: runs every action, then exits with 130/143. */
  handleSignals(): void {
    const onSignal = (signal: NodeJS.Signals, code: number) => {
      process.stderr.write(`\nbench: ${signal}: stopping every process it started and dropping its databases\n`);
      void this.runAll().finally(() => process.exit(code));
    };
    process.once("SIGINT", () => onSignal("SIGINT", 130));
    process.once("SIGTERM", () => onSignal("SIGTERM", 143));
  }
}

/** The bench's one cleanup registry. */
export const cleanup = new Cleanup();
