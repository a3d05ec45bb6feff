import { describe, expect, it } from "vitest";
import { ConfigError } from "./config-error.js";
import {
  readBool,
  readHostPort,
  readInt,
  readList,
  readLogLevel,
  readOptionalString,
  readString,
  readUrl,
} from "./readers.js";

/** The message of the ConfigError `fn` throws. */
function configErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error("expected a ConfigError");
}

describe("readString", () => {
  it("returns the trimmed value when set", () => {
    expect(readString({ NAME: "  value " }, "NAME")).toBe("value");
  });

  it("falls back when unset or blank", () => {
    expect(readString({}, "NAME", "dflt")).toBe("dflt");
    expect(readString({ NAME: "   " }, "NAME", "dflt")).toBe("dflt");
  });

  it("reports a missing required setting by name", () => {
    expect(configErrorOf(() => readString({}, "API_TOKEN"))).toBe("API_TOKEN: required");
    expect(configErrorOf(() => readString({ API_TOKEN: "" }, "API_TOKEN"))).toBe("API_TOKEN: required");
  });
});

describe("readOptionalString", () => {
  it("is undefined when unset or blank and the value otherwise", () => {
    expect(readOptionalString({}, "API_TOKEN")).toBeUndefined();
    expect(readOptionalString({ API_TOKEN: "" }, "API_TOKEN")).toBeUndefined();
    expect(readOptionalString({ API_TOKEN: "s3cret" }, "API_TOKEN")).toBe("s3cret");
  });
});

describe("readInt", () => {
  const bounds = { min: 1, max: 1000 };

  it("parses decimal integers within bounds", () => {
    expect(readInt({ N: "16" }, "N", 4, bounds)).toBe(16);
    expect(readInt({ N: " 1000 " }, "N", 4, bounds)).toBe(1000);
    expect(readInt({ N: "-5" }, "N", 4)).toBe(-5);
    expect(readInt({ N: "+7" }, "N", 4)).toBe(7);
  });

  it("falls back when unset or blank", () => {
    expect(readInt({}, "N", 16, bounds)).toBe(16);
    expect(readInt({ N: "" }, "N", 16, bounds)).toBe(16);
  });

  it("names the range and the bad value", () => {
    expect(configErrorOf(() => readInt({ WORKER_CONCURRENCY: "abc" }, "WORKER_CONCURRENCY", 16, bounds))).toBe(
      'WORKER_CONCURRENCY: must be an integer between 1 and 1000, got "abc"',
    );
  });

  it("rejects fractions, exponents, hex and out-of-range values", () => {
    for (const bad of ["1.5", "1e3", "0x10", "0", "1001", "12abc", "99999999999999999999"]) {
      expect(() => readInt({ N: bad }, "N", 16, bounds)).toThrow(ConfigError);
    }
  });

  it("describes one-sided and missing bounds", () => {
    expect(configErrorOf(() => readInt({ N: "0" }, "N", 1, { min: 1 }))).toBe('N: must be an integer >= 1, got "0"');
    expect(configErrorOf(() => readInt({ N: "9" }, "N", 1, { max: 5 }))).toBe('N: must be an integer <= 5, got "9"');
    expect(configErrorOf(() => readInt({ N: "x" }, "N", 1))).toBe('N: must be an integer, got "x"');
  });
});

describe("readBool", () => {
  it("accepts true/false, 1/0 and yes/no in any case", () => {
    for (const word of ["true", "TRUE", "1", "yes", "Yes"]) expect(readBool({ B: word }, "B", false)).toBe(true);
    for (const word of ["false", "False", "0", "no", "NO"]) expect(readBool({ B: word }, "B", true)).toBe(false);
  });

  it("falls back when unset", () => {
    expect(readBool({}, "B", true)).toBe(true);
    expect(readBool({}, "B", false)).toBe(false);
  });

  it("rejects other words", () => {
    expect(configErrorOf(() => readBool({ PRETTY: "maybe" }, "PRETTY", false))).toBe(
      'PRETTY: must be one of true, false, 1, 0, yes, no, got "maybe"',
    );
  });
});

describe("readList", () => {
  it("splits on commas, trims and drops empty items", () => {
    expect(readList({ L: " echo, sleep ,,llm.mock, " }, "L")).toEqual(["echo", "sleep", "llm.mock"]);
  });

  it("falls back when unset or blank, to [] by default", () => {
    expect(readList({}, "L")).toEqual([]);
    expect(readList({ L: " " }, "L", ["a"])).toEqual(["a"]);
  });

  it("returns a copy of the fallback", () => {
    const fallback = ["a"];
    const list = readList({}, "L", fallback);
    list.push("b");
    expect(fallback).toEqual(["a"]);
  });
});

describe("readUrl", () => {
  const pg = ["postgres:", "postgresql:"];

  it("accepts a URL with an allowed protocol", () => {
    expect(readUrl({ U: "postgresql://u:p@db:5432/x" }, "U", "postgres://localhost/x", pg)).toBe(
      "postgresql://u:p@db:5432/x",
    );
  });

  it("falls back when unset", () => {
    expect(readUrl({}, "U", "postgres://localhost/x", pg)).toBe("postgres://localhost/x");
  });

  it("rejects another protocol without leaking the password", () => {
    expect(configErrorOf(() => readUrl({ DATABASE_URL: "mysql://root:hunter2@db/x" }, "DATABASE_URL", "", pg))).toBe(
      'DATABASE_URL: must be a postgres: or postgresql: URL, got "mysql://root:***@db/x"',
    );
  });

  it("rejects a string that is not a URL", () => {
    const message = configErrorOf(() => readUrl({ REDIS_URL: "localhost:6379" }, "REDIS_URL", "", ["redis:"]));
    expect(message).toBe('REDIS_URL: must be a redis: URL, got "localhost:6379"');
    expect(configErrorOf(() => readUrl({ U: "not a url" }, "U", "", ["a:", "b:", "c:"]))).toBe(
      'U: must be a a:, b: or c: URL, got "not a url"',
    );
  });
});

describe("readHostPort", () => {
  it.each([
    ["0.0.0.0:50051", { host: "0.0.0.0", port: 50051, address: "0.0.0.0:50051" }],
    [":9464", { host: "0.0.0.0", port: 9464, address: "0.0.0.0:9464" }],
    ["[::1]:80", { host: "::1", port: 80, address: "[::1]:80" }],
    ["[::]:0", { host: "::", port: 0, address: "[::]:0" }],
    ["localhost:50052", { host: "localhost", port: 50052, address: "localhost:50052" }],
    [
      "example-node-service:50052",
      { host: "example-node-service", port: 50052, address: "example-node-service:50052" },
    ],
    ["9464", { host: "0.0.0.0", port: 9464, address: "0.0.0.0:9464" }],
  ])("parses %s", (value, expected) => {
    expect(readHostPort({ ADDR: value }, "ADDR", ":1")).toEqual(expected);
  });

  it("parses the fallback when unset", () => {
    expect(readHostPort({}, "HTTP_ADDR", ":9465")).toEqual({ host: "0.0.0.0", port: 9465, address: "0.0.0.0:9465" });
  });

  it.each(["localhost", "localhost:", "host:65536", "::1:80", "[::1]", "a b:80", "host:port", "http://host:80"])(
    "rejects %s",
    (value) => {
      expect(configErrorOf(() => readHostPort({ GRPC_ADDR: value }, "GRPC_ADDR", ":1"))).toMatch(
        /^GRPC_ADDR: must be host:port with a port from 0 to 65535 .*, got ".*"$/,
      );
    },
  );
});

describe("readLogLevel", () => {
  it("defaults to info and reads LOG_LEVEL in any case", () => {
    expect(readLogLevel({})).toBe("info");
    expect(readLogLevel({ LOG_LEVEL: "DEBUG" })).toBe("debug");
    expect(readLogLevel({ LEVEL: "silent" }, "LEVEL")).toBe("silent");
  });

  it("lists the accepted levels when the value is unknown", () => {
    expect(configErrorOf(() => readLogLevel({ LOG_LEVEL: "verbose" }))).toBe(
      'LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"',
    );
  });
});
