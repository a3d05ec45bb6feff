import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { Redis, type RedisOptions } from "ioredis";
import { freePort } from "./free-port.js";
import { waitFor } from "./wait-for.js";

/**
 * A redis-server of a test file's own, on a port of its own: the only kind of Redis a test may FLUSHALL,
 * SHUTDOWN, CLIENT KILL or give a maxmemory. It keeps its port across stops and restarts.
 */
export interface PrivateRedis {
  port: number;
  /** `redis://127.0.0.1:<port>`, or `rediss://127.0.0.1:<port>` with TLS. */
  url: string;
  /** The ioredis options its connections need (the CA, with TLS). */
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
}

/** Starts a private redis-server (no persistence, `maxmemory-policy noeviction`, as Trellis requires). */
export async function startPrivateRedis(opts: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  installExitHook();
  const port = await freePort();
  const { tls } = opts;
  const url = `${tls ? "rediss" : "redis"}://127.0.0.1:${port}`;
  const options: RedisOptions = tls ? { tls: { ca: readFileSync(tls.ca) } } : {};
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
      "redis-server",
      [
        ...listen,
        "--bind",
        "127.0.0.1",
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
    },
  };
}
