import { ConfigError } from "@trellis/config";

/** One entry of NODE_SERVICE_ROUTES: the capabilities `pattern` matches are sent to `address`. */
export interface NodeServiceRoute {
  /** A capability (`web.search`) or a glob where `*` stands for any characters, dots included (`llm.*`). */
  pattern: string;
  /** `host:port` of the NodeService, as gRPC dials it. */
  address: string;
}

const CAPABILITY = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const GLOB = /^[a-z0-9._*-]{1,64}$/;
/** `host:port` or `[v6]:port`; a host name, IPv4 or bracketed IPv6, and a port from 1 to 65535. */
const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/**
 * Parses NODE_SERVICE_ROUTES, `capability-or-glob=host:port,...` (e.g. `llm.*=10.0.0.5:50052,web.search=127.0.0.1:50053`).
 * Entries written `grpcs://host:port` are refused for now: TLS to NodeServices is not supported yet. Throws a
 * ConfigError naming the offending entry.
 */
export function parseNodeServiceRoutes(value: string | undefined, setting = "NODE_SERVICE_ROUTES"): NodeServiceRoute[] {
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
    if (address.startsWith("grpcs://")) {
      throw bad("TLS routes (grpcs://) need NODE_SERVICE_TLS_CA, which this version does not support yet");
    }
    if (address.startsWith("grpc://")) address = address.slice("grpc://".length);
    const port = HOST_PORT.exec(address)?.[1];
    if (port === undefined || Number(port) < 1 || Number(port) > 65_535) {
      throw bad(`"${address}" is not host:port (a port from 1 to 65535)`);
    }
    if (routes.some((r) => r.pattern === pattern)) throw bad(`"${pattern}" is routed twice`);
    routes.push({ pattern, address });
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
