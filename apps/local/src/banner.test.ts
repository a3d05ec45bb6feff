import { describe, expect, it } from "vitest";
import { bannerText, capabilityRoutes } from "./banner.js";

const base = {
  api: "localhost:50051",
  dashboard: "http://localhost:3000/",
  metricsPorts: { api: 9464, scheduler: 9465, worker: 9466, exampleNodeService: 9467 },
  capabilities: ["echo", "sleep", "llm.mock"],
  routes: [],
  nodeServiceAddr: "127.0.0.1:50052",
  exampleNodeService: "127.0.0.1:50052",
};

describe("npm start banner", () => {
  it("sends every capability to the one NodeService without NODE_SERVICE_ROUTES", () => {
    const text = bannerText(base);
    expect(text).toContain("worker               echo, sleep, llm.mock -> 127.0.0.1:50052   metrics :9466/metrics");
    expect(text).toContain("example NodeService  grpc://127.0.0.1:50052   metrics :9467/metrics");
  });

  it("shows where NODE_SERVICE_ROUTES sends each capability", () => {
    const text = bannerText({
      ...base,
      capabilities: ["echo", "llm.mock", "py.echo", "py.upper"],
      routes: [
        { pattern: "py.*", address: "127.0.0.1:50062" },
        { pattern: "llm.mock", address: "grpcs://llm.internal:443" },
      ],
    });
    expect(text).toContain("worker               metrics :9466/metrics");
    expect(text).toContain("    echo -> 127.0.0.1:50052\n");
    expect(text).toContain("    llm.mock -> grpcs://llm.internal:443   (NODE_SERVICE_ROUTES)");
    expect(text).toContain("    py.echo, py.upper -> 127.0.0.1:50062   (NODE_SERVICE_ROUTES)");
    expect(text).not.toContain("echo, llm.mock");
  });

  it("groups capabilities by address, an exact route before a glob", () => {
    expect(
      capabilityRoutes(
        ["llm.chat", "llm.embed", "web.search"],
        [
          { pattern: "llm.*", address: "a:1" },
          { pattern: "llm.chat", address: "b:2" },
        ],
        "c:3",
      ),
    ).toEqual([
      { address: "b:2", capabilities: ["llm.chat"], routed: true },
      { address: "a:1", capabilities: ["llm.embed"], routed: true },
      { address: "c:3", capabilities: ["web.search"], routed: false },
    ]);
  });
});
