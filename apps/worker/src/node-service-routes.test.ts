import { ConfigError } from "@trellis/config";
import { describe, expect, it } from "vitest";
import { addressFor, parseNodeServiceRoutes, routeMatches } from "./node-service-routes.js";

describe("parseNodeServiceRoutes", () => {
  it("reads capability-or-glob=host:port entries in the order written, spaces and empty entries ignored", () => {
    expect(parseNodeServiceRoutes("llm.*=10.0.0.5:50052, web.search = 127.0.0.1:50053,,py.x=[::1]:7")).toEqual([
      { pattern: "llm.*", address: "10.0.0.5:50052" },
      { pattern: "web.search", address: "127.0.0.1:50053" },
      { pattern: "py.x", address: "[::1]:7" },
    ]);
    expect(parseNodeServiceRoutes(undefined)).toEqual([]);
    expect(parseNodeServiceRoutes("*=ns:1,a=grpc://ns-a.svc:50052")).toEqual([
      { pattern: "*", address: "ns:1" },
      { pattern: "a", address: "ns-a.svc:50052" },
    ]);
  });

  it.each([
    ["llm.chat", '"llm.chat": expected capability-or-glob=host:port'],
    ["LLM=a:1", '"LLM=a:1": "LLM" is neither a capability'],
    ["=a:1", '"=a:1": "" is neither a capability'],
    ["llm.*=10.0.0.5", '"llm.*=10.0.0.5": "10.0.0.5" is not host:port'],
    ["llm.*=10.0.0.5:0", '"llm.*=10.0.0.5:0": "10.0.0.5:0" is not host:port'],
    ["llm.*=a:70000", '"llm.*=a:70000": "a:70000" is not host:port'],
    ["llm.*=http://a:1", '"llm.*=http://a:1": "http://a:1" is not host:port'],
    ["a=x:1,a=y:2", '"a=y:2": "a" is routed twice'],
  ])("refuses %j with a one-line error naming the entry", (value, message) => {
    let error: unknown;
    try {
      parseNodeServiceRoutes(value);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message.startsWith(`NODE_SERVICE_ROUTES: ${message}`)).toBe(true);
    expect((error as Error).message).not.toContain("\n");
  });

  it("refuses grpcs:// entries without NODE_SERVICE_TLS_CA, keeps them (scheme included) with it", () => {
    expect(
      parseNodeServiceRoutes("llm.*=grpcs://10.0.0.5:50052,web.search=grpc://h:1", "NODE_SERVICE_ROUTES", true),
    ).toEqual([
      { pattern: "llm.*", address: "grpcs://10.0.0.5:50052" },
      { pattern: "web.search", address: "h:1" },
    ]);
    expect(() => parseNodeServiceRoutes("llm.*=grpcs://10.0.0.5", "NODE_SERVICE_ROUTES", true)).toThrow(
      '"10.0.0.5" is not host:port',
    );
    expect(() => parseNodeServiceRoutes("llm.*=grpcs://10.0.0.5:50052")).toThrow(
      'NODE_SERVICE_ROUTES: "llm.*=grpcs://10.0.0.5:50052": TLS routes (grpcs://) need NODE_SERVICE_TLS_CA (the CA their certificates chain to)',
    );
  });
});

describe("routeMatches", () => {
  it("matches a capability exactly, and a glob with * standing for any characters, dots included", () => {
    expect(routeMatches("web.search", "web.search")).toBe(true);
    expect(routeMatches("web.search", "web.searches")).toBe(false);
    expect(routeMatches("llm.*", "llm.chat")).toBe(true);
    expect(routeMatches("llm.*", "llm.chat.v2")).toBe(true);
    expect(routeMatches("llm.*", "llm")).toBe(false);
    expect(routeMatches("llm.*", "llmXchat")).toBe(false);
    expect(routeMatches("*.search", "web.search")).toBe(true);
    expect(routeMatches("*", "anything")).toBe(true);
  });
});

describe("addressFor", () => {
  const routes = parseNodeServiceRoutes("llm.*=a:1,*.chat=b:2,llm.chat=c:3");

  it("sends an exactly named capability to its route, whatever the order written", () => {
    expect(addressFor(routes, "llm.chat", "default:9")).toBe("c:3");
  });

  it("else the first glob that matches in the order written, else NODE_SERVICE_ADDR", () => {
    expect(addressFor(routes, "llm.embed", "default:9")).toBe("a:1");
    expect(addressFor(routes, "web.chat", "default:9")).toBe("b:2");
    expect(addressFor(routes, "web.search", "default:9")).toBe("default:9");
    expect(addressFor([], "llm.chat", "default:9")).toBe("default:9");
  });
});
