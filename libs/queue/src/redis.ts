import { type RedisClusterTarget, describeRedisTarget, parseRedisUrl } from "@trellis/config";
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";

/**
 * A connection to where the queues are: one Redis server (ioredis `Redis`) or a Redis Cluster (ioredis `Cluster`,
 * which routes each command to the master of its key's slot and follows failovers). BullMQ takes either.
 */
export type RedisConnection = Redis | Cluster;

/**
 * ioredis options for BullMQ. `maxRetriesPerRequest: null` is what BullMQ workers require (a blocking
 * command must not fail after N retries); queues use the same so a Redis outage delays rather than throws.
 */
export function redisOptions(extra: RedisOptions = {}): RedisOptions {
  return {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    // Reconnect with capped backoff for as long as it takes; callers see commands wait, not fail.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5_000),
    ...extra,
  };
}

/**
 * ioredis options for Redis over TLS with the CA of REDIS_TLS_CA; none without one (a rediss:// URL alone switches
 * ioredis to TLS checked against the system's CAs).
 */
export function redisTlsOptions(tls: { ca: Buffer } | undefined): RedisOptions {
  return tls ? { tls: { ca: tls.ca } } : {};
}

/** Options that are the Cluster's own (the rest go to each node's connection). */
const CLUSTER_LEVEL_OPTIONS = ["lazyConnect", "enableOfflineQueue", "enableReadyCheck"] as const;

/**
 * ioredis Cluster options from a `redis+cluster://` target and the same `extra` options a single server takes: the
 * connection-wide ones (lazyConnect, enableOfflineQueue, enableReadyCheck; retryStrategy as the cluster's
 * reconnection) for the Cluster, the rest (credentials, TLS, maxRetriesPerRequest, connectionName...) for each node.
 */
export function clusterOptions(target: RedisClusterTarget, extra: RedisOptions = {}): ClusterOptions {
  const { retryStrategy, ...merged } = redisOptions(extra);
  const nodeOptions: Record<string, unknown> = { ...merged };
  const own: Record<string, unknown> = {};
  for (const name of CLUSTER_LEVEL_OPTIONS) {
    if (name in nodeOptions) {
      own[name] = nodeOptions[name];
      delete nodeOptions[name];
    }
  }
  if (target.username !== undefined) nodeOptions.username = target.username;
  if (target.password !== undefined) nodeOptions.password = target.password;
  // rediss+cluster:// without REDIS_TLS_CA: TLS checked against the system's CAs, as rediss:// alone.
  if (target.tls && nodeOptions.tls === undefined) nodeOptions.tls = {};
  return {
    ...own,
    clusterRetryStrategy: retryStrategy ? (times: number) => retryStrategy(times) : undefined,
    redisOptions: nodeOptions as ClusterOptions["redisOptions"],
  };
}

/**
 * A Redis connection for BullMQ from `REDIS_URL`, what every app uses: a `redis://` or `rediss://` (TLS) URL gives
 * one server's connection; `redis+cluster://host:port,host:port` (or `rediss+cluster://`) an ioredis Cluster started
 * from those nodes.
 */
export function connectRedis(redisUrl: string, extra: RedisOptions = {}): RedisConnection {
  const target = parseRedisUrl(redisUrl);
  if (target.kind === "cluster") return new Cluster(target.nodes, clusterOptions(target, extra));
  return new Redis(redisUrl, redisOptions(extra));
}

/**
 * A connection to one Redis server from a `redis://` or `rediss://` URL (tests and tools that need a server's own
 * commands); a cluster URL is refused: use {@link connectRedis}.
 */
export function createRedis(redisUrl: string, extra: RedisOptions = {}): Redis {
  if (parseRedisUrl(redisUrl).kind === "cluster") {
    throw new Error("createRedis takes one server's redis:// URL; connectRedis takes a redis+cluster:// one too");
  }
  return new Redis(redisUrl, redisOptions(extra));
}

/** A new connection to the same Redis (server or cluster) as `connection`, with some options changed. */
export function duplicateRedis(
  connection: RedisConnection,
  override: Pick<RedisOptions, "lazyConnect" | "enableOfflineQueue"> = {},
): RedisConnection {
  if (connection instanceof Cluster) return connection.duplicate(undefined, override);
  return connection.duplicate(override);
}

/** Whether `connection` is a Redis Cluster's. */
export function isCluster(connection: RedisConnection): connection is Cluster {
  return connection.isCluster;
}

/** The node key (`host:port`) ioredis gives a connection of a Cluster's pool. */
function nodeKeyOf(node: Redis): string {
  return `${node.options.host ?? "127.0.0.1"}:${node.options.port ?? 6379}`;
}

/** The hash slot of `key` in a cluster (CLUSTER KEYSLOT: the cluster's own hashing, hash tags included). */
export async function keySlotOf(cluster: Cluster, key: string): Promise<number> {
  return Number(await cluster.cluster("KEYSLOT", key));
}

/**
 * The connection of a Cluster's pool to the master that serves `slot` now (the one ioredis sends the slot's commands
 * to), or undefined while the slots are not known.
 */
export function clusterNodeOf(cluster: Cluster, slot: number): Redis | undefined {
  const master = cluster.slots[slot]?.[0];
  if (master === undefined) return undefined;
  return cluster.nodes("all").find((node) => nodeKeyOf(node) === master);
}

/** Every master of a cluster, or the one server: where a scan must look to see every key. */
export function mastersOf(connection: RedisConnection): Redis[] {
  return isCluster(connection) ? connection.nodes("master") : [connection];
}

/**
 * Fails fast (within `timeoutMs`) unless Redis at `redisUrl` answers PING (a cluster: its state is ok, every slot
 * served); reports its maxmemory-policy, which must be `noeviction` for BullMQ (a cluster: every master's). Uses a
 * throwaway connection that does not retry.
 */
export async function checkRedis(
  redisUrl: string,
  timeoutMs = 5_000,
  extra: RedisOptions = {},
): Promise<{ evictionPolicy: string }> {
  const target = parseRedisUrl(redisUrl);
  const probeOptions: RedisOptions = {
    ...extra,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    enableOfflineQueue: false,
  };
  const probe =
    target.kind === "cluster"
      ? new Cluster(target.nodes, { ...clusterOptions(target, probeOptions), slotsRefreshTimeout: timeoutMs })
      : new Redis(redisUrl, probeOptions);
  // A failed TLS handshake (a certificate the CA does not sign) reaches only the error event; connect() itself then
  // rejects with "Connection is closed.", which says nothing of why.
  let cause: Error | undefined;
  probe.on("error", (error: Error) => {
    cause ??= (error as Error & { lastNodeError?: Error }).lastNodeError ?? error;
  });
  try {
    await probe.connect();
    if (isCluster(probe)) {
      const info = String(await probe.cluster("INFO"));
      const state = /cluster_state:(\w+)/.exec(info)?.[1] ?? "unknown";
      if (state !== "ok") throw new Error(`cluster_state is ${state} (not every slot is served)`);
    } else {
      await probe.ping();
    }
    const policies = new Set<string>();
    for (const node of mastersOf(probe)) {
      try {
        const reply = (await node.config("GET", "maxmemory-policy")) as string[];
        policies.add(reply[1] ?? "unknown");
      } catch {
        // CONFIG may be disabled (managed Redis): the policy cannot be checked, which is not an error.
        policies.add("unknown");
      }
    }
    // A cluster whose masters differ reports the first policy that is not noeviction.
    const evictionPolicy = [...policies].find((p) => p !== "noeviction") ?? "noeviction";
    return { evictionPolicy };
  } catch (error) {
    const where =
      target.kind === "cluster" ? `Redis ${describeRedisTarget(target)}` : `Redis at ${describeRedisTarget(target)}`;
    const message = cause && cause.message !== (error as Error).message ? `${cause.message}` : (error as Error).message;
    throw new Error(`${where} is not reachable: ${message}`);
  } finally {
    probe.disconnect();
  }
}
