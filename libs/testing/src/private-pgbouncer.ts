import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, chmodSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import pg from "pg";
import { freePort } from "./free-port.js";
import { waitFor } from "./wait-for.js";

/**
 * A pgbouncer of a test file's own (Debian's `pgbouncer`), on a free port, with its configuration in a temporary
 * directory, in front of the test's own database only.
 */
export interface PrivatePgBouncer {
  port: number;
  /** The test database through pgbouncer: same user, password and database name as the direct URL. */
  url: string;
  /** The direct URL it pools connections to. */
  serverUrl: string;
  /** The pgbouncer.ini it runs with. */
  config: string;
  /** Whether the process runs. */
  readonly running: boolean;
  /** Its last lines of output (for a failing test's message). */
  tail(): string;
  /** Runs a command of pgbouncer's admin console (`SHOW POOLS`, `SHOW STATS`, ...) and returns its rows. */
  admin(command: string): Promise<Record<string, unknown>[]>;
  /** Stops it (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
  close(): Promise<void>;
}

/** Options of {@link startPrivatePgBouncer}. */
export interface PrivatePgBouncerOptions {
  /** The direct URL of the database to pool (a test database on 127.0.0.1:5432, say). */
  serverUrl: string;
  /** `pool_mode`. @default "transaction" */
  poolMode?: "session" | "transaction" | "statement";
  /** `default_pool_size`: server connections per (database, user). @default 20 */
  defaultPoolSize?: number;
  /** `max_client_conn`. @default 200 */
  maxClientConn?: number;
}

/** Where Debian installs it; /usr/sbin is often off a non-root PATH. */
const KNOWN_PATHS = ["/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/bin/pgbouncer"];

/** The pgbouncer binary: on the PATH or where Debian puts it; undefined when it is not installed. */
export function pgbouncerBinary(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const candidates = [
    ...(env.PATH ?? "")
      .split(delimiter)
      .filter(Boolean)
      .map((dir) => join(dir, "pgbouncer")),
  ];
  for (const path of [...candidates, ...KNOWN_PATHS]) {
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/**
 * Why the PgBouncer tests should be skipped, or undefined when they should run: they run whenever pgbouncer is
 * installed, and under CI (`CI` set) a missing pgbouncer fails the test instead of skipping it.
 */
export function pgbouncerSkipReason(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (pgbouncerBinary(env) !== undefined) return undefined;
  if (env.CI) throw new Error("pgbouncer is missing under CI: install the Debian package `pgbouncer` (see .ci/run)");
  return "pgbouncer is not installed (apt-get install -y pgbouncer); CI is unset, so the PgBouncer test is skipped";
}

const processes = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of processes) child.kill("SIGKILL");
  });
}

/** A value of pgbouncer.ini's `[databases]` connection string, quoted when needed. */
function connValue(value: string): string {
  return /^[A-Za-z0-9_.-]+$/.test(value) ? value : `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

/**
 * Starts a private pgbouncer in front of the database of `serverUrl`: `auth_type = trust` towards the tests (the
 * user must be in the auth_file, which holds its password for the server login), the pool mode asked for
 * (transaction by default), no Unix socket. The user is an admin of the console (`admin`). Run as root, it drops
 * to `nobody` (pgbouncer refuses to run as root).
 */
export async function startPrivatePgBouncer(options: PrivatePgBouncerOptions): Promise<PrivatePgBouncer> {
  const binary = pgbouncerBinary();
  if (binary === undefined) throw new Error("pgbouncer is not installed (apt-get install -y pgbouncer)");
  installExitHook();
  const server = new URL(options.serverUrl);
  const user = decodeURIComponent(server.username || "postgres");
  const password = decodeURIComponent(server.password);
  const database = decodeURIComponent(server.pathname.replace(/^\//, ""));
  if (!database) throw new Error(`startPrivatePgBouncer: ${options.serverUrl} names no database`);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "trellis-pgbouncer-"));
  const config = join(dir, "pgbouncer.ini");
  const authFile = join(dir, "userlist.txt");
  const quoted = (value: string) => `"${value.replace(/"/g, '""')}"`;
  writeFileSync(authFile, `${quoted(user)} ${quoted(password)}\n`);
  const serverHost = server.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1";
  writeFileSync(
    config,
    [
      "[databases]",
      `${connValue(database)} = host=${connValue(serverHost)} port=${server.port || "5432"} dbname=${connValue(database)}`,
      "",
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${authFile}`,
      `admin_users = ${user}`,
      `pool_mode = ${options.poolMode ?? "transaction"}`,
      `default_pool_size = ${options.defaultPoolSize ?? 20}`,
      `max_client_conn = ${options.maxClientConn ?? 200}`,
      // pgbouncer tracks application_name itself; other startup parameters some clients send are ignored.
      "ignore_startup_parameters = extra_float_digits",
      "log_connections = 0",
      "log_disconnections = 0",
      "",
    ].join("\n"),
  );
  const asRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (asRoot) {
    // It drops to `nobody`, who must be able to read its configuration again on a RELOAD.
    chmodSync(dir, 0o755);
    chmodSync(config, 0o644);
    chmodSync(authFile, 0o644);
  }
  const child = spawn(binary, [...(asRoot ? ["-u", "nobody"] : []), config], { stdio: ["ignore", "pipe", "pipe"] });
  processes.add(child);
  let output = "";
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-8_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  let running = true;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      running = false;
      processes.delete(child);
      resolve();
    });
  });

  const url = new URL(options.serverUrl);
  url.hostname = "127.0.0.1";
  url.port = String(port);
  const adminUrl = new URL(url);
  adminUrl.pathname = "/pgbouncer";

  const close = async () => {
    if (running) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitFor(
      async () => {
        if (!running) throw new Error(`pgbouncer exited:\n${output}`);
        const probe = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 2_000 });
        probe.on("error", () => undefined);
        try {
          await probe.connect();
          await probe.query("select 1");
          return true;
        } catch {
          return false;
        } finally {
          await probe.end().catch(() => undefined);
        }
      },
      { timeoutMs: 15_000, intervalMs: 100, description: `pgbouncer on port ${port}` },
    );
  } catch (error) {
    await close();
    throw new Error(`${(error as Error).message}\n${output}`, { cause: error });
  }

  return {
    port,
    url: url.toString(),
    serverUrl: options.serverUrl,
    config,
    get running() {
      return running;
    },
    tail: () => output,
    async admin(command) {
      const client = new pg.Client({ connectionString: adminUrl.toString() });
      client.on("error", () => undefined);
      await client.connect();
      try {
        // The console speaks the simple query protocol only.
        const result = await client.query(command);
        return result.rows as Record<string, unknown>[];
      } finally {
        await client.end().catch(() => undefined);
      }
    },
    close,
  };
}
