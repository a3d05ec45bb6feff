import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis, type RedisOptions } from "ioredis";
import { freePort } from "./free-port.js";
import { waitFor } from "./wait-for.js";

/**
 * A redis-server of a test file's own, on a port of its own: the only kind of Redis a test may FLUSHALL,
 * SHUTDOWN, CLIENT KILL or give a maxmemory. It keeps its port across stops and restarts.
 */
export interface PrivateRedis {
  port: number;
  /** `redis://127.0.0.1:<port>`, or `rediss://127.0.0.1:<port>` with TLS; on a network host `redis://<address>:6379`. */
  url: string;
  /**
   * The ioredis options the test's connections need (the CA, with TLS). On a network host: `path`, the server's Unix
   * socket, which the test reaches from the root namespace (ioredis prefers it to the URL's address).
   */
  options: RedisOptions;
  /** Whether the server process runs. */
  readonly running: boolean;
  /** A connection for the test (no retries: a command fails while the server is down). */
  client(): Redis;
  /** Starts the server again on the same port (empty: nothing is saved). */
  start(): Promise<void>;
  /** `SHUTDOWN NOSAVE`, and waits until the process has exited. */
  shutdown(): Promise<void>;
  /** `kill -9`, and waits until the process has exited. */
  kill(): Promise<void>;
  /** Stops it for good and closes the test's connections. */
  close(): Promise<void>;
}

const servers = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const server of servers) server.kill("SIGKILL");
  });
}

/** Options of {@link startPrivateRedis}. */
export interface PrivateRedisOptions {
  /**
   * PEM file paths: serve TLS only (`--tls-port`, `--port 0`) with this server certificate; clients need not present
   * one (`--tls-auth-clients no`). The server must be built with TLS (Debian's is).
   */
  tls?: { cert: string; key: string; ca: string };
  /**
   * Run it on a host of a network of namespaces (a NetHost of netns.ts): started under the host's `prefix`
   * (`ip netns exec <namespace>`), listening on its address (and its own loopback) on port 6379 with protected mode
   * off (the apps of the other hosts connect without a password), plus a Unix socket for the test. Not with `tls`.
   */
  host?: { prefix: readonly string[]; address: string };
}

/** Starts a private redis-server (no persistence, `maxmemory-policy noeviction`, as Trellis requires). */
export async function startPrivateRedis(opts: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  installExitHook();
  const { tls, host } = opts;
  if (tls && host) throw new Error("startPrivateRedis: tls and host together are not supported");
  // A namespace of its own has every port free.
  const port = host ? 6379 : await freePort();
  const socketDir = host ? mkdtempSync(join(tmpdir(), "trellis-redis-")) : null;
  const socket = socketDir ? join(socketDir, "redis.sock") : null;
  const url = host ? `redis://${host.address}:${port}` : `${tls ? "rediss" : "redis"}://127.0.0.1:${port}`;
  const options: RedisOptions = tls ? { tls: { ca: readFileSync(tls.ca) } } : socket ? { path: socket } : {};
  const bind = host
    ? [
        "--bind",
        host.address,
        "127.0.0.1",
        "--protected-mode",
        "no",
        "--unixsocket",
        socket!,
        "--unixsocketperm",
        "700",
      ]
    : ["--bind", "127.0.0.1"];
  const listen = tls
    ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.cert, "--tls-key-file", tls.key].concat([
        "--tls-ca-cert-file",
        tls.ca,
        "--tls-auth-clients",
        "no",
      ])
    : ["--port", String(port)];
  const clients: Redis[] = [];
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let output = "";

  const start = async () => {
    if (child) return;
    output = "";
    const server = spawn(
      host?.prefix[0] ?? "redis-server",
      [
        ...(host ? [...host.prefix.slice(1), "redis-server"] : []),
        ...listen,
        ...bind,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--maxmemory-policy",
        "noeviction",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    servers.add(server);
    child = server;
    server.stdout?.on("data", (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4_000);
    });
    server.stderr?.on("data", (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4_000);
    });
    exited = new Promise((resolve) => {
      server.once("exit", () => {
        servers.delete(server);
        if (child === server) child = null;
        resolve();
      });
    });
    const probe = new Redis(url, { ...options, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on("error", () => undefined);
    try {
      await waitFor(
        async () => {
          if (child !== server) throw new Error(`redis-server exited: ${output}`);
          if (probe.status !== "ready") await probe.connect().catch(() => undefined);
          return (await probe.ping().catch(() => "")) === "PONG";
        },
        { timeoutMs: 10_000, intervalMs: 50, description: `redis-server on port ${port}` },
      );
    } finally {
      probe.disconnect();
    }
  };

  await start();
  return {
    port,
    url,
    options,
    get running() {
      return child !== null;
    },
    client() {
      const client = new Redis(url, { ...options, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on("error", () => undefined);
      clients.push(client);
      return client;
    },
    start,
    async shutdown() {
      if (!child) return;
      const admin = new Redis(url, { ...options, maxRetriesPerRequest: 0, retryStrategy: () => null });
      admin.on("error", () => undefined);
      // The server closes the connection without answering SHUTDOWN.
      await admin.call("SHUTDOWN", "NOSAVE").catch(() => undefined);
      admin.disconnect();
      await exited;
    },
    async kill() {
      child?.kill("SIGKILL");
      await exited;
    },
    async close() {
      for (const client of clients.splice(0)) client.disconnect();
      child?.kill("SIGKILL");
      await exited;
      if (socketDir) rmSync(socketDir, { recursive: true, force: true });
    },
  };
}
