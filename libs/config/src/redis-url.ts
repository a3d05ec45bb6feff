import { ConfigError } from "./config-error.js";
import { redactUrl } from "./readers.js";

/** Schemes of one Redis server: `redis:`, and `rediss:` for TLS. */
export const REDIS_SERVER_PROTOCOLS = ["redis:", "rediss:"] as const;

/** Schemes of a Redis Cluster given by some of its nodes: `redis+cluster:`, and `rediss+cluster:` for TLS. */
export const REDIS_CLUSTER_PROTOCOLS = ["redis+cluster:", "rediss+cluster:"] as const;

/** Every scheme `REDIS_URL` accepts. */
export const REDIS_URL_PROTOCOLS: readonly string[] = [...REDIS_SERVER_PROTOCOLS, ...REDIS_CLUSTER_PROTOCOLS];

/** The port of a node written without one, as in `redis://host`. */
export const DEFAULT_REDIS_PORT = 6379;

/** One Redis server, as ioredis takes its URL (`redis://[user:password@]host[:port][/db]`). */
export interface RedisServerTarget {
  kind: "server";
  url: string;
  /** `rediss:`. */
  tls: boolean;
}

/** A node of a Redis Cluster. */
export interface RedisClusterNode {
  /** Host name or IP, without brackets for IPv6. */
  host: string;
  port: number;
}

/**
 * A Redis Cluster: the nodes the clients start from (any of its masters or replicas; the rest of the cluster is
 * learned from them with CLUSTER SLOTS), and the credentials every node takes.
 */
export interface RedisClusterTarget {
  kind: "cluster";
  nodes: RedisClusterNode[];
  username?: string;
  password?: string;
  /** `rediss+cluster:`. */
  tls: boolean;
}

/** Where the apps find Redis (`REDIS_URL`). */
export type RedisTarget = RedisServerTarget | RedisClusterTarget;

/** Whether `value` names a Redis Cluster (`redis+cluster:` or `rediss+cluster:`), without checking the rest. */
export function isRedisClusterUrl(value: string): boolean {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(value.trim())?.[1]?.toLowerCase();
  return scheme === "redis+cluster" || scheme === "rediss+cluster";
}

/**
 * Parses a `REDIS_URL`: one server (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS), or a Redis Cluster
 * (`redis+cluster://[user:password@]host:port[,host:port...]`, `rediss+cluster://` for TLS; a node without a port is on
 * 6379, an IPv6 node is written `[::1]:7000`). Errors are ConfigErrors naming `setting`, one line, with the password
 * hidden.
 */
export function parseRedisUrl(value: string, setting = "REDIS_URL"): RedisTarget {
  const trimmed = value.trim();
  const shown = JSON.stringify(redactUrl(trimmed));
  const schemes = REDIS_URL_PROTOCOLS;
  const wrongScheme = () =>
    ConfigError.invalid(setting, `must be a ${schemes.slice(0, -1).join(", ")} or ${schemes.at(-1)} URL, got ${shown}`);
  if (isRedisClusterUrl(trimmed)) return parseClusterUrl(trimmed, setting, shown);
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw wrongScheme();
  }
  if (!(REDIS_SERVER_PROTOCOLS as readonly string[]).includes(url.protocol)) throw wrongScheme();
  return { kind: "server", url: trimmed, tls: url.protocol === "rediss:" };
}

function parseClusterUrl(value: string, setting: string, shown: string): RedisClusterTarget {
  const fail = (reason: string) => ConfigError.invalid(setting, reason);
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(?:([^@/?#]*)@)?([^/?#]*)([^?#]*)([?#].*)?$/.exec(value);
  if (match === null) {
    throw fail(`a Redis Cluster URL is redis+cluster://[user:password@]host:port[,host:port...], got ${shown}`);
  }
  const [, rawScheme, userinfo, hosts, path, rest] = match;
  const scheme = `${rawScheme!.toLowerCase()}:`;
  if (rest !== undefined) {
    throw fail(`a ${scheme} URL takes no query or fragment (${JSON.stringify(rest)}), got ${shown}`);
  }
  if (path !== "" && path !== "/" && path !== "/0") {
    throw fail(`a Redis Cluster has only database 0: remove ${JSON.stringify(path)} from the URL, got ${shown}`);
  }
  if (hosts === "") {
    throw fail(`a ${scheme} URL needs at least one node (${scheme}//host:port,host:port), got ${shown}`);
  }
  const nodes: RedisClusterNode[] = [];
  const seen = new Set<string>();
  hosts!.split(",").forEach((item, i) => {
    const node = parseNode(item);
    if (node === undefined) {
      throw fail(
        `node ${i + 1} of the ${scheme} URL must be host or host:port with a port from 1 to 65535 ` +
          `(e.g. 10.0.0.1:7000, redis-1:7000, [::1]:7000), got ${JSON.stringify(item)}`,
      );
    }
    const key = `${node.host}:${node.port}`;
    if (seen.has(key)) throw fail(`node ${JSON.stringify(item)} is listed twice in the ${scheme} URL`);
    seen.add(key);
    nodes.push(node);
  });
  const target: RedisClusterTarget = { kind: "cluster", nodes, tls: scheme === "rediss+cluster:" };
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(":");
    const username = colon < 0 ? userinfo : userinfo.slice(0, colon);
    const password = colon < 0 ? undefined : userinfo.slice(colon + 1);
    try {
      if (username !== "") target.username = decodeURIComponent(username);
      if (password !== undefined && password !== "") target.password = decodeURIComponent(password);
    } catch {
      throw fail(`the user or password of the ${scheme} URL is not valid percent-encoding, got ${shown}`);
    }
  }
  return target;
}

/** `host`, `host:port` or `[v6]:port`; undefined when malformed. */
function parseNode(item: string): RedisClusterNode | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9_.-]+))(?::(\d{1,5}))?$/.exec(item);
  if (match === null) return undefined;
  const port = match[3] === undefined ? DEFAULT_REDIS_PORT : Number(match[3]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: (match[1] ?? match[2])!, port };
}

/** Where a target is, for messages: `host:port` of a server, `cluster host:port,host:port` of a cluster. */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.kind === "server") return new URL(target.url).host;
  return `cluster ${target.nodes.map((n) => (n.host.includes(":") ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)).join(",")}`;
}
