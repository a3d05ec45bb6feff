import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Cluster, Redis } from "ioredis";
import { freePort } from "./free-port.js";
import { waitFor } from "./wait-for.js";

const run = promisify(execFile);

/** One redis-server of a {@link PrivateRedisCluster}. */
export interface ClusterServer {
  port: number;
  /** `127.0.0.1:<port>`. */
  address: string;
  /** Its process id (while it runs). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** `kill -9`, and waits until the process has exited. */
  kill(): Promise<void>;
}

/** A node as `CLUSTER NODES` describes it. */
export interface ClusterNodeInfo {
  id: string;
  /** `127.0.0.1:<port>`. */
  address: string;
  port: number;
  role: "master" | "replica";
  /** The id of its master, for a replica. */
  masterId: string | null;
  /** Flagged `fail` (or `fail?`) by the node asked. */
  failing: boolean;
  connected: boolean;
  /** Slot ranges served, for a master: `[first, last]`. */
  slots: [number, number][];
}

/**
 * A Redis Cluster of a test file's own: three masters with one replica each (six Debian redis-server processes on free
 * ports, their nodes.conf in a temporary directory), made with `redis-cli --cluster create --cluster-replicas 1`. The
 * only kind of cluster a test may kill a node of. Every process is killed and the directory removed on close, or when
 * the test process exits.
 */
export interface PrivateRedisCluster {
  /** `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...`: the REDIS_URL of the apps, every node a startup node. */
  url: string;
  servers: readonly ClusterServer[];
  /** The directory of the nodes' files. */
  dir: string;
  /** A cluster connection for the test (ioredis Cluster); closed with the cluster. */
  client(): Cluster;
  /** A connection to one server (no retries); closed with the cluster. */
  serverClient(port: number): Redis;
  /** `CLUSTER KEYSLOT key`. */
  keySlot(key: string): Promise<number>;
  /** The nodes as a running server sees them (`CLUSTER NODES`). */
  nodes(): Promise<ClusterNodeInfo[]>;
  /** The master that serves `slot` now. */
  masterOf(slot: number): Promise<ClusterNodeInfo>;
  /**
   * Waits until every running server reports `cluster_state:ok`, knows every other running server, no running master
   * lacks a connected replica it had, and every slot is served by a running master.
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every server and removes the directory. */
  close(): Promise<void>;
}

/** Options of {@link startPrivateRedisCluster}. */
export interface PrivateRedisClusterOptions {
  /** `cluster-node-timeout`: how long a master may be unreachable before its replica takes over. @default 1000 */
  nodeTimeoutMs?: number;
}

const processes = new Set<ChildProcess>();
const directories = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of processes) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
    for (const dir of directories) rmSync(dir, { recursive: true, force: true });
  });
}

/** Parses `CLUSTER NODES`. */
export function parseClusterNodes(text: string): ClusterNodeInfo[] {
  const nodes: ClusterNodeInfo[] = [];
  for (const line of text.trim().split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts.length < 8) continue;
    const [id, addressField, flagField, master, , , , linkState, ...slotFields] = parts;
    const address = addressField!.split("@")[0]!;
    const flags = flagField!.split(",");
    const slots: [number, number][] = [];
    for (const field of slotFields) {
      if (field.startsWith("[")) continue; // a slot being migrated
      const [first, last] = field.split("-");
      slots.push([Number(first), Number(last ?? first)]);
    }
    nodes.push({
      id: id!,
      address,
      port: Number(address.slice(address.lastIndexOf(":") + 1)),
      role: flags.includes("master") ? "master" : "replica",
      masterId: master === "-" ? null : master!,
      failing: flags.includes("fail") || flags.includes("fail?"),
      connected: linkState === "connected",
      slots,
    });
  }
  return nodes;
}

/** A connection to one server of the cluster that does not retry (connect() it; disconnect() it when done). */
function oneShotClient(port: number): Redis {
  const client = new Redis({
    host: "127.0.0.1",
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on("error", () => undefined);
  return client;
}

/** Starts a private Redis Cluster: 3 masters, 1 replica each (`maxmemory-policy noeviction`, no persistence). */
export async function startPrivateRedisCluster(opts: PrivateRedisClusterOptions = {}): Promise<PrivateRedisCluster> {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), "trellis-redis-cluster-"));
  directories.add(dir);
  const ports: number[] = [];
  while (ports.length < 6) {
    const port = await freePort();
    // The cluster bus listens on port + 10000: both must be free, and distinct from the other nodes'.
    if (port + 10_000 > 65_535 || ports.includes(port) || ports.some((p) => p + 10_000 === port)) continue;
    ports.push(port);
  }
  const clients: (Redis | Cluster)[] = [];
  const servers: (ClusterServer & { exited: Promise<void>; output: () => string })[] = ports.map((port) => {
    let output = "";
    const child = spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        join(dir, `nodes-${port}.conf`),
        "--cluster-node-timeout",
        String(opts.nodeTimeoutMs ?? 1_000),
        // A replica takes over however long ago it last heard from its master (a test kills masters at any time).
        "--cluster-replica-validity-factor",
        "0",
        "--dir",
        dir,
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
    processes.add(child);
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    let running = true;
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => {
        running = false;
        processes.delete(child);
        resolve();
      });
    });
    return {
      port,
      address: `127.0.0.1:${port}`,
      get pid() {
        return running ? child.pid : undefined;
      },
      get running() {
        return running;
      },
      async kill() {
        if (running) child.kill("SIGKILL");
        await exited;
      },
      exited,
      output: () => output,
    };
  });

  const serverClient = (port: number): Redis => {
    const client = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on("error", () => undefined);
    clients.push(client);
    return client;
  };
  /** Asks the first running server that answers. */
  const ask = async <T>(command: (client: Redis) => Promise<T>): Promise<T> => {
    let last: unknown = new Error("no server of the cluster runs");
    for (const server of servers) {
      if (!server.running) continue;
      const client = oneShotClient(server.port);
      try {
        await client.connect();
        return await command(client);
      } catch (error) {
        last = error;
      } finally {
        client.disconnect();
      }
    }
    throw last;
  };
  const nodes = async () => parseClusterNodes(String(await ask((c) => c.cluster("NODES"))));

  const cluster: PrivateRedisCluster = {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`,
    servers,
    dir,
    client() {
      const client = new Cluster(
        ports.map((port) => ({ host: "127.0.0.1", port })),
        { redisOptions: { maxRetriesPerRequest: 1 } },
      );
      client.on("error", () => undefined);
      clients.push(client);
      return client;
    },
    serverClient,
    keySlot: (key) => ask(async (c) => Number(await c.cluster("KEYSLOT", key))),
    nodes,
    async masterOf(slot) {
      const found = (await nodes()).find(
        (n) => n.role === "master" && !n.failing && n.slots.some(([a, b]) => slot >= a && slot <= b),
      );
      if (!found) throw new Error(`no master serves slot ${slot}`);
      return found;
    },
    async waitHealthy(timeoutMs = 30_000) {
      const running = servers.filter((s) => s.running);
      await waitFor(
        async () => {
          for (const server of running) {
            const client = oneShotClient(server.port);
            try {
              await client.connect();
              const info = String(await client.cluster("INFO"));
              if (!/cluster_state:ok/.test(info)) return false;
              const seen = parseClusterNodes(String(await client.cluster("NODES")));
              const live = seen.filter((n) => running.some((s) => s.address === n.address));
              if (live.length !== running.length || live.some((n) => n.failing || !n.connected)) return false;
              // Every slot by a running master.
              const served = live
                .filter((n) => n.role === "master")
                .reduce((sum, n) => sum + n.slots.reduce((s, [a, b]) => s + b - a + 1, 0), 0);
              if (served !== 16_384) return false;
              // A replica that runs is in sync with its master.
              if (live.find((n) => n.address === server.address)?.role === "replica") {
                const replication = await client.info("replication");
                if (!/master_link_status:up/.test(replication)) return false;
              }
            } finally {
              client.disconnect();
            }
          }
          return true;
        },
        { timeoutMs, intervalMs: 100, description: "the Redis Cluster to be healthy (cluster_state:ok)" },
      );
    },
    async close() {
      for (const client of clients.splice(0)) client.disconnect();
      await Promise.all(servers.map((s) => s.kill()));
      rmSync(dir, { recursive: true, force: true });
      directories.delete(dir);
    },
  };

  try {
    for (const server of servers) {
      await waitFor(
        async () => {
          if (!server.running) throw new Error(`redis-server on port ${server.port} exited: ${server.output()}`);
          const client = oneShotClient(server.port);
          try {
            await client.connect();
            return (await client.ping()) === "PONG";
          } finally {
            client.disconnect();
          }
        },
        { timeoutMs: 10_000, intervalMs: 50, description: `redis-server on port ${server.port}` },
      );
    }
    // redis-cli (Debian's redis-tools) makes the first three masters and gives each one of the others as replica.
    await run(
      "redis-cli",
      ["--cluster", "create", ...servers.map((s) => s.address), "--cluster-replicas", "1", "--cluster-yes"],
      { timeout: 60_000 },
    );
    await cluster.waitHealthy(60_000);
  } catch (error) {
    await cluster.close();
    throw error;
  }
  return cluster;
}
