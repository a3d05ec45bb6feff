import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait-for.js";

/** The repository root: where the apps are started from. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** The apps a test can start as processes of their own. */
export type TrellisApp = "api" | "scheduler" | "worker" | "dashboard" | "example-node-service";

/** How a process ended. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options of {@link startApp}. */
export interface AppProcessOptions {
  /** Which app: runs `node --import tsx apps/<app>/src/main.ts` from the repository root. */
  app?: TrellisApp;
  /** Another entry point than an app's (a path from the repository root), e.g. a test's helper process. */
  entry?: string;
  /** Its settings. The child gets these plus PATH, HOME, TMPDIR and LANG: nothing else of the test's environment. */
  env: Record<string, string>;
  /** Name in errors and logs. @default app */
  name?: string;
  /** Lines of output kept in memory (oldest dropped first). @default 20000 */
  maxLines?: number;
  /** A command the process is started under, e.g. `ip netns exec <namespace>` (see netns.ts). @default none */
  prefix?: readonly string[];
  /**
   * How {@link AppProcess.waitReady} asks for `/readyz`: the HTTP status, or null when nothing answered.
   * @default GET http://127.0.0.1:<HTTP_ADDR's port>/readyz
   */
  readyz?: () => Promise<number | null>;
  /** Gives the process a stdin pipe ({@link AppProcess.send}); it reads its end when the test process exits. */
  stdin?: boolean;
}

/** A JSON log line of an app (pino), with the fields tests look at. */
export interface AppLogLine {
  level: number;
  msg?: string;
  [field: string]: unknown;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** If the test process ends without cleaning up (a crash, a timeout), its children must not outlive it. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of running) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
  });
}

/**
 * One Trellis app running as a separate process, as in production: started with `node --import tsx` (not
 * `npm run`, which does not forward SIGTERM), its stdout and stderr kept as lines for assertions and errors.
 */
export class AppProcess {
  /** Resolves when the process has exited, however it ended. */
  readonly exited: Promise<ExitStatus>;
  /** Output lines (stdout and stderr interleaved), oldest first. */
  readonly lines: string[] = [];
  private status: ExitStatus | null = null;
  private paused = false;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly env: Readonly<Record<string, string>>,
    private readonly maxLines: number,
    private readonly readyz?: () => Promise<number | null>,
  ) {
    const onData = (stream: NodeJS.ReadableStream) => {
      let partial = "";
      stream.on("data", (chunk: Buffer) => {
        const parts = (partial + chunk.toString("utf8")).split("\n");
        partial = parts.pop() ?? "";
        for (const line of parts) this.push(line);
      });
      stream.on("end", () => {
        if (partial) this.push(partial);
      });
    };
    if (child.stdout) onData(child.stdout);
    if (child.stderr) onData(child.stderr);
    this.exited = new Promise((resolve) => {
      // Resolved once its output is read to the end ("close": the last lines may still be in the pipes when "exit"
      // fires), or 2 s after "exit" should something else hold the pipes open.
      let fallback: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(fallback);
        this.status ??= { code: child.exitCode, signal: child.signalCode };
        running.delete(child);
        resolve(this.status);
      };
      child.once("exit", (code, signal) => {
        running.delete(child);
        this.status = { code, signal };
        fallback = setTimeout(done, 2_000);
        fallback.unref();
      });
      child.once("close", done);
    });
  }

  private push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** How it ended, or null while it runs. */
  get exitStatus(): ExitStatus | null {
    return this.status;
  }

  /** The port of its HTTP side server (`/readyz`), from HTTP_ADDR. */
  get httpPort(): number {
    const addr = this.env.HTTP_ADDR ?? "";
    return Number(addr.slice(addr.lastIndexOf(":") + 1));
  }

  /** Its JSON log lines (lines that are not JSON are left out). */
  logs(): AppLogLine[] {
    const out: AppLogLine[] = [];
    for (const line of this.lines) {
      if (!line.startsWith("{")) continue;
      try {
        out.push(JSON.parse(line) as AppLogLine);
      } catch {
        // A line cut by a kill.
      }
    }
    return out;
  }

  /** The last `n` lines, for error messages. */
  tail(n = 30): string {
    return this.lines.slice(-n).join("\n");
  }

  /** Resolves once `GET /readyz` answers 200; fails at once if the process exits meanwhile. */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const url = this.readyz ? "its /readyz" : `http://127.0.0.1:${this.httpPort}/readyz`;
    const probe =
      this.readyz ??
      (async () => (await fetch(url, { signal: AbortSignal.timeout(1_000) }).catch(() => null))?.status ?? null);
    try {
      await waitFor(
        async () => {
          if (this.status) throw new ExitedError(this.status);
          return (await probe()) === 200;
        },
        { timeoutMs, intervalMs: 100, description: `${this.name} to be ready at ${url}` },
      );
    } catch (error) {
      const why = this.status ? `it exited (${describeExit(this.status)})` : (error as Error).message;
      throw new Error(`${this.name} did not become ready: ${why}\n--- last output of ${this.name}:\n${this.tail()}`);
    }
  }

  /** Resolves with the first log line (from now or earlier) that matches, or fails after `timeoutMs`. */
  async waitForLog(match: (line: AppLogLine) => boolean, timeoutMs = 15_000, description = "a log line") {
    return waitFor(() => this.logs().find(match), {
      timeoutMs,
      intervalMs: 50,
      description: `${this.name}: ${description}`,
    });
  }

  /** Writes a line to its stdin (started with `stdin: true`). */
  send(line: string): void {
    if (!this.child.stdin) throw new Error(`${this.name} has no stdin pipe (start it with stdin: true)`);
    this.child.stdin.write(`${line}\n`);
  }

  /** Sends a signal (SIGKILL, SIGSTOP, SIGCONT, ...). */
  signal(signal: NodeJS.Signals): void {
    if (this.status) return;
    if (signal === "SIGSTOP") this.paused = true;
    if (signal === "SIGCONT") this.paused = false;
    this.child.kill(signal);
  }

  /** `kill -9`, then waits for the exit. */
  async kill(): Promise<ExitStatus> {
    this.signal("SIGKILL");
    return this.exited;
  }

  /** SIGTERM (after SIGCONT if stopped) and waits; SIGKILL when it has not exited after `graceMs`. */
  async stop(graceMs = 10_000): Promise<ExitStatus> {
    if (this.status) return this.status;
    if (this.paused) this.signal("SIGCONT");
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resident set size in bytes (from /proc), or 0 once it has exited. */
  rssBytes(): number {
    if (this.status) return 0;
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, "utf8"));
      return match ? Number(match[1]) * 1024 : 0;
    } catch {
      return 0;
    }
  }
}

class ExitedError extends Error {
  constructor(status: ExitStatus) {
    super(`exited (${describeExit(status)})`);
  }
}

/** "code 1" or "signal SIGKILL". */
export function describeExit(status: ExitStatus): string {
  return status.signal ? `signal ${status.signal}` : `code ${status.code}`;
}

/** Starts an app as a process of its own; it is not ready yet (see {@link AppProcess.waitReady}). */
export function startApp(options: AppProcessOptions): AppProcess {
  installExitHook();
  const base: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "TMPDIR", "LANG"]) {
    const value = process.env[name];
    if (value !== undefined) base[name] = value;
  }
  const env = { ...base, ...options.env };
  const entry = options.entry ?? (options.app ? `apps/${options.app}/src/main.ts` : undefined);
  if (!entry) throw new Error("startApp: give an app or an entry");
  const argv = [process.execPath, "--import", "tsx", entry];
  const [command, ...args] = [...(options.prefix ?? []), ...argv];
  const child = spawn(command!, args, {
    cwd: REPO_ROOT,
    env,
    stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"],
  });
  // A test that has gone must not make a write to the pipe crash it.
  child.stdin?.on("error", () => undefined);
  running.add(child);
  return new AppProcess(options.name ?? options.app ?? entry, child, env, options.maxLines ?? 20_000, options.readyz);
}

/** Every process started through it, so a test file can stop them all in afterAll whatever happened. */
export class AppGroup {
  private readonly all: AppProcess[] = [];

  /** Starts an app and tracks it. */
  start(options: AppProcessOptions): AppProcess {
    const app = startApp(options);
    this.all.push(app);
    return app;
  }

  /** Every tracked process, started first first. */
  get processes(): readonly AppProcess[] {
    return this.all;
  }

  /** Stops every tracked process that still runs (SIGTERM, then SIGKILL after `graceMs`). */
  async stopAll(graceMs = 5_000): Promise<void> {
    await Promise.all(this.all.map((app) => app.stop(graceMs)));
  }
}
