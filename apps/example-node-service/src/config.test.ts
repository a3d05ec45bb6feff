import { ConfigError } from "@trellis/config";
import { describe, expect, it } from "vitest";
import { readExampleNodeServiceConfig } from "./config.js";

describe("readExampleNodeServiceConfig", () => {
  it("listens on 0.0.0.0:50052 with HTTP on :9467 and level info by default", () => {
    expect(readExampleNodeServiceConfig({})).toEqual({
      listen: { host: "0.0.0.0", port: 50052, address: "0.0.0.0:50052" },
      http: { host: "0.0.0.0", port: 9467, address: "0.0.0.0:9467" },
      logLevel: "info",
    });
  });

  it("reads NODE_SERVICE_LISTEN_ADDR, HTTP_ADDR and LOG_LEVEL", () => {
    const config = readExampleNodeServiceConfig({
      NODE_SERVICE_LISTEN_ADDR: "127.0.0.1:6000",
      HTTP_ADDR: "[::1]:7000",
      LOG_LEVEL: "debug",
    });

    expect(config.listen.address).toBe("127.0.0.1:6000");
    expect(config.http.address).toBe("[::1]:7000");
    expect(config.logLevel).toBe("debug");
  });

  it("rejects a malformed listen address naming the variable", () => {
    expect(() => readExampleNodeServiceConfig({ NODE_SERVICE_LISTEN_ADDR: "nope" })).toThrow(ConfigError);
    expect(() => readExampleNodeServiceConfig({ NODE_SERVICE_LISTEN_ADDR: "nope" })).toThrow(
      /^NODE_SERVICE_LISTEN_ADDR: /,
    );
  });
});
