import { ConfigError } from "@trellis/config";

/** One entry of NODE_SERVICE_ROUTES: the capabilities `pattern` matches are sent to `address`. */
export interface NodeServiceRoute {
  /** A capability (`web.search`) or a glob where `*` stands for any characters, dots included (`llm.*`). */
  pattern: string;
  /** `host:port` of the NodeService, as gRPC dials it, or `grpcs://host:port` when it is reached over TLS. */
  address: string;
}

/** How an address says its NodeService is reached over TLS. */
export const TLS_SCHEME = "grpcs://";

const CAPABILITY = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const GLOB = /^[a-z0-9._*-]{1,64}$/;
/** `host:port` or `[v6]:port`; a host name, IPv4 or bracketed IPv6, and a port from 1 to 65535. */
const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/**
 * Parses NODE_SERVICE_ROUTES, `capability-or-glob=host:port,...` (e.g. `llm.*=10.0.0.5:50052,web.search=127.0.0.1:50053`).
 * Entries written `grpcs://host:port` are reached over TLS (their address keeps the `grpcs://`), which needs
 * NODE_SERVICE_TLS_CA: with `tlsConfigured` false they are refused. Throws a ConfigError naming the offending entry.
 */
export function parseNodeServiceRoutes(
  value: string | undefined,
  setting = "NODE_SERVICE_ROUTES",
  tlsConfigured = false,
): NodeServiceRoute[] {
  const routes: NodeServiceRoute[] = [];
  if (value === undefined) return routes;
  for (const raw of value.split(",")) {
    const entry = raw.trim();
    if (entry === "") continue;
    const bad = (reason: string) => ConfigError.invalid(setting, `${JSON.stringify(entry)}: ${reason}`);
    const equals = entry.indexOf("=");
    if (equals < 0) throw bad("expected capability-or-glob=host:port");
    const pattern = entry.slice(0, equals).trim();
    let address = entry.slice(equals + 1).trim();
    if (pattern.includes("*") ? !GLOB.test(pattern) : !CAPABILITY.test(pattern)) {
      throw bad(`"${pattern}" is neither a capability ([a-z0-9][a-z0-9._-]{0,63}) nor a glob of one with *`);
    }
    const tls = address.startsWith(TLS_SCHEME);
    if (tls && !tlsConfigured)
      throw bad("TLS routes (grpcs://) need NODE_SERVICE_TLS_CA (the CA their certificates chain to)");
    if (tls) address = address.slice(TLS_SCHEME.length);
    else if (address.startsWith("grpc://")) address = address.slice("grpc://".length);
    const port = HOST_PORT.exec(address)?.[1];
    if (port === undefined || Number(port) < 1 || Number(port) > 65_535) {
      throw bad(`"${address}" is not host:port (a port from 1 to 65535)`);
    }
    if (routes.some((r) => r.pattern === pattern)) throw bad(`"${pattern}" is routed twice`);
    routes.push({ pattern, address: tls ? `${TLS_SCHEME}${address}` : address });
  }
  return routes;
}

/** Whether a route's pattern matches `capability`: equal, or equal with each `*` standing for any characters. */
export function routeMatches(pattern: string, capability: string): boolean {
  if (!pattern.includes("*")) return pattern === capability;
  const source = pattern
    .split("*")
    .map((part) => part.replace(/[.\\^$+?()[\]{}|-]/g, "\\$&"))
    .join(".*");
  return new RegExp(`^${source}$`).test(capability);
}

/**
 * The address a capability's nodes are sent to: the route naming it exactly, else the first glob that matches it
 * in the order written, else `fallback` (NODE_SERVICE_ADDR). An exact name wins so that `llm.*=a,llm.chat=b` sends
 * llm.chat to b whatever the order.
 */
export function addressFor(routes: readonly NodeServiceRoute[], capability: string, fallback: string): string {
  const exact = routes.find((r) => r.pattern === capability);
  if (exact) return exact.address;
  return routes.find((r) => r.pattern.includes("*") && routeMatches(r.pattern, capability))?.address ?? fallback;
}

/**
 * Parses NODE_SERVICE_ADDR: `host:port` (or any target grpc-js dials, `grpc://` dropped), or `grpcs://host:port` for
 * TLS, which needs NODE_SERVICE_TLS_CA. Throws a ConfigError naming the setting.
 */
export function parseNodeServiceAddress(value: string, setting: string, tlsConfigured: boolean): string {
  if (value.startsWith(TLS_SCHEME)) {
    if (!tlsConfigured)
      throw ConfigError.invalid(setting, `${JSON.stringify(value)}: grpcs:// needs NODE_SERVICE_TLS_CA`);
    const rest = value.slice(TLS_SCHEME.length);
    const port = HOST_PORT.exec(rest)?.[1];
    if (port === undefined || Number(port) < 1 || Number(port) > 65_535) {
      throw ConfigError.invalid(setting, `${JSON.stringify(value)}: not grpcs://host:port (a port from 1 to 65535)`);
    }
    return value;
  }
  return value.startsWith("grpc://") ? value.slice("grpc://".length) : value;
}

/** A dial address without its scheme, and whether it is reached over TLS (`grpcs://`). */
export function splitTlsAddress(address: string): { target: string; tls: boolean } {
  return address.startsWith(TLS_SCHEME)
    ? { target: address.slice(TLS_SCHEME.length), tls: true }
    : { target: address, tls: false };
}
