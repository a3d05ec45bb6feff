import { execFile, spawnSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./free-port.js";

const run = promisify(execFile);

/**
 * A PostgreSQL server of a test file's own (initdb in a temporary directory, its own port): the only kind a test
 * may stop and start. The shared server on 5432 must never be restarted.
 */
export interface PrivatePostgres {
  port: number;
  /**
   * `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication): the test's way in. On a network host
   * (option `host`) it names the server's Unix socket instead (`...?host=<dir>`), which the test reaches from the
   * root namespace.
   */
  serverUrl: string;
  /** On a network host: `postgres://postgres@<address>:<port>/postgres`, the other hosts' way in; else serverUrl. */
  networkUrl: string;
  /** Where its data, socket and log live. */
  dir: string;
  /** Starts it (again) and waits until it accepts connections. */
  start(): Promise<void>;
  /** `pg_ctl stop`: `fast` closes sessions and checkpoints; `immediate` is a crash (recovery at the next start). */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  /** Stops it for good and removes its directory. */
  close(): Promise<void>;
}

/** The bin directory of the newest PostgreSQL installed under /usr/lib/postgresql, or null. */
export function postgresBinDir(): string | null {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], "bin") : null;
}

/** Why a private PostgreSQL cannot be made here, or undefined when it can. */
export function privatePostgresSkipReason(): string | undefined {
  if (!postgresBinDir()) return "no PostgreSQL server binaries under /usr/lib/postgresql";
  if (process.getuid?.() === 0 && spawnSync("id", ["-u", "postgres"]).status !== 0) {
    return "running as root without a postgres user to run PostgreSQL as";
  }
  return undefined;
}

const clusters = new Set<string>();
let exitHookInstalled = false;

function installExitHook(bin: string, asPostgres: (argv: string[]) => [string, string[]]): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const data of clusters) {
      const [cmd, args] = asPostgres([join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop"]);
      spawnSync(cmd, args, { stdio: "ignore" });
    }
  });
}

/** Options of {@link startPrivatePostgres}. */
export interface PrivatePostgresOptions {
  /** Keep fsync and full-page writes on, as a production server (for measurements). @default false: a throwaway */
  durable?: boolean;
  /** More server settings, `name=value` each (passed as `-c name=value`), e.g. `shared_preload_libraries=...`. */
  settings?: readonly string[];
  /**
   * PEM file paths of a server certificate and its key: `ssl=on`, and TCP connections are accepted over TLS only
   * (`hostssl` in pg_hba.conf; a plaintext one is refused).
   */
  ssl?: { cert: string; key: string };
  /**
   * Run it on a host of a network of namespaces (a NetHost of netns.ts): started under the host's `prefix`
   * (`ip netns exec <namespace>`), listening on its address (and its own loopback) on port 5432, and accepting
   * connections from `network` (its CIDR) in pg_hba.conf. @default none: 127.0.0.1 of this machine, a free port
   */
  host?: { prefix: readonly string[]; address: string; network: string };
}

/** Creates (initdb) and starts a private PostgreSQL cluster on a free port; fsync off unless `durable`. */
export async function startPrivatePostgres(opts: PrivatePostgresOptions = {}): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("no PostgreSQL server binaries under /usr/lib/postgresql");
  // PostgreSQL refuses to run as root: run its binaries as the postgres user then.
  const root = process.getuid?.() === 0;
  const asPostgres = (argv: string[]): [string, string[]] =>
    root ? ["runuser", ["-u", "postgres", "--", ...argv]] : [argv[0]!, argv.slice(1)];
  installExitHook(bin, asPostgres);
  const dir = mkdtempSync(join(tmpdir(), "trellis-pg-"));
  /** Makes a file of `dir` the server's own (it runs as postgres when the tests run as root). */
  let own: (path: string) => void = () => undefined;
  if (root) {
    const uid = Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout.trim());
    const gid = Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim());
    chownSync(dir, uid, gid);
    own = (path) => chownSync(path, uid, gid);
  }
  const data = join(dir, "data");
  const { host } = opts;
  // A namespace of its own has every port free.
  const port = host ? 5432 : await freePort();
  /** Runs a PostgreSQL binary (as postgres when root), under `prefix` (e.g. `ip netns exec <namespace>`) if given. */
  const exec = async (argv: string[], prefix: readonly string[] = []) => {
    const [postgresCmd, postgresArgs] = asPostgres(argv);
    const [cmd, ...args] = [...prefix, postgresCmd, ...postgresArgs];
    try {
      return await run(cmd!, args, { timeout: 60_000 });
    } catch (error) {
      const e = error as { stderr?: string; stdout?: string; message: string };
      throw new Error(`${argv.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}`);
    }
  };
  await exec([join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
  clusters.add(data);
  const ssl: string[] = [];
  if (opts.ssl) {
    // PostgreSQL refuses a key readable by others: copies of its own, mode 0600.
    for (const [from, to] of [
      [opts.ssl.cert, "server.crt"],
      [opts.ssl.key, "server.key"],
    ] as const) {
      copyFileSync(from, join(dir, to));
      own(join(dir, to));
    }
    chmodSync(join(dir, "server.key"), 0o600);
    ssl.push("-c ssl=on", `-c ssl_cert_file=${join(dir, "server.crt")}`, `-c ssl_key_file=${join(dir, "server.key")}`);
    writeFileSync(
      join(data, "pg_hba.conf"),
      "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    );
  }
  if (host) {
    const line = `${opts.ssl ? "hostssl" : "host"} all all ${host.network} trust\n`;
    appendFileSync(join(data, "pg_hba.conf"), line);
  }
  const options = [
    ...ssl,
    `-p ${port}`,
    `-k ${dir}`,
    `-c listen_addresses=${host ? `${host.address},127.0.0.1` : "127.0.0.1"}`,
    ...(opts.durable ? [] : ["-c fsync=off", "-c full_page_writes=off"]),
    "-c max_connections=200",
    ...(opts.settings ?? []).map((setting) => `-c ${setting}`),
  ].join(" ");
  const start = async () => {
    await exec(
      [join(bin, "pg_ctl"), "-D", data, "-o", options, "-l", join(dir, "log"), "-w", "-t", "60", "start"],
      host?.prefix,
    );
  };
  const stop = async (mode: "fast" | "immediate" = "fast") => {
    await exec([join(bin, "pg_ctl"), "-D", data, "-m", mode, "-w", "-t", "60", "stop"]);
  };
  await start();
  const localUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    port,
    serverUrl: host ? `postgres://postgres@localhost:${port}/postgres?host=${encodeURIComponent(dir)}` : localUrl,
    networkUrl: host ? `postgres://postgres@${host.address}:${port}/postgres` : localUrl,
    dir,
    start,
    stop,
    async close() {
      await stop("immediate").catch(() => undefined);
      clusters.delete(data);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
