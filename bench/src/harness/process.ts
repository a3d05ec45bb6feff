import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, readFileSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { sleep } from "./clock.js";
import { type Deadline, waitFor } from "./deadline.js";
import { REPO_ROOT } from "./paths.js";

/** How a child process ended. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options of {@link ManagedProcess.start}. */
export interface ProcessOptions {
  /** Short name used in logs and errors, e.g. `api`. */
  name: string;
  /** TypeScript entry point, relative to the repository root; run as `node --import tsx <script>`. */
  script: string;
  /** Environment of the child (merged over the bench's own). */
  env: Record<string, string>;
  /** Directory the child's stdout and stderr are written to, as `<name>.log`. */
  logDir: string;
  /** Opens an IPC channel (for the bench's own helper processes). */
  ipc?: boolean;
}

const TAIL_LINES = 40;

/**
 * A child process started by the bench: `node --import tsx <script>` from the repository root (not `npm run`,
 * which would not forward SIGTERM). Its output goes to a log file and the last lines are kept for errors.
 */
export class ManagedProcess {
  /** Resolves when the process has exited, however. */
  readonly exited: Promise<ExitStatus>;
  /** Path of the log file. */
  readonly logFile: string;
  private readonly tailLines: string[] = [];
  private exitStatus: ExitStatus | null = null;
  private stopping = false;
  private readonly log: WriteStream;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
    logDir: string,
  ) {
    this.logFile = join(logDir, `${name}.log`);
    this.log = createWriteStream(this.logFile, { flags: "a" });
    let partial = "";
    const onData = (chunk: Buffer) => {
      this.log.write(chunk);
      const text = partial + chunk.toString("utf8");
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        this.tailLines.push(line);
        if (this.tailLines.length > TAIL_LINES) this.tailLines.shift();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitStatus = { code, signal };
        this.log.end();
        resolve(this.exitStatus);
      });
    });
  }

  /** Spawns the process (it is not ready yet: see {@link waitHttpReady}). */
  static start(options: ProcessOptions): ManagedProcess {
    // BENCH_NODE_ARGS adds Node.js flags to every app, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile them.
    const extra = (process.env.BENCH_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
    const child = spawn(process.execPath, [...extra, "--import", "tsx", options.script], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...options.env },
      stdio: options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
    });
    return new ManagedProcess(options.name, child, options.logDir);
  }

  /** The OS process id. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The last lines the process printed. */
  tail(): string {
    return this.tailLines.join("\n");
  }

  /** Throws when the process has exited although nobody stopped it. */
  assertRunning(): void {
    if (this.exitStatus && !this.stopping) {
      const how = this.exitStatus.signal ?? `code ${this.exitStatus.code}`;
      throw new Error(`${this.name} exited unexpectedly (${how}); last output (${this.logFile}):\n${this.tail()}`);
    }
  }

  /** Polls `http://<address>/readyz` until it answers 200. */
  async waitHttpReady(address: string, deadline: Deadline): Promise<void> {
    await waitFor(`${this.name} /readyz at ${address}`, deadline, async () => {
      this.assertRunning();
      try {
        const response = await fetch(`http://${address}/readyz`, { signal: AbortSignal.timeout(2_000) });
        await response.arrayBuffer();
        return response.status === 200 ? true : undefined;
      } catch {
        return undefined;
      }
    });
  }

  /** Resident set size of the process now, in bytes (VmRSS of /proc/<pid>/status); null when unreadable. */
  rssBytes(): number | null {
    return readProcStatusKb(this.pid, "VmRSS");
  }

  /** Peak resident set size so far, in bytes (VmHWM); null when unreadable. */
  peakRssBytes(): number | null {
    return readProcStatusKb(this.pid, "VmHWM");
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. Safe to call twice. */
  async stop(graceMs = 10_000): Promise<ExitStatus> {
    this.stopping = true;
    if (this.exitStatus) return this.exitStatus;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => {
      if (!this.exitStatus) {
        process.stderr.write(`bench: ${this.name} did not stop within ${graceMs} ms of SIGTERM; killing it\n`);
        this.child.kill("SIGKILL");
      }
    }, graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
      // Let the log stream flush before the caller reads the file.
      await sleep(0);
    }
  }
}

/** A `<key>: <n> kB` line of /proc/<pid>/status, in bytes. */
function readProcStatusKb(pid: number, key: string): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m").exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}
