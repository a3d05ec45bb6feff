import { describe, expect, it } from "vitest";
import { ConfigError } from "./config-error.js";
import { configOrExit, type ExitIo } from "./config-or-exit.js";
import { readInt } from "./readers.js";

/** An ExitIo that records what it was asked to do instead of ending the test process. */
function recordingIo(): ExitIo & { lines: string[]; codes: number[] } {
  const lines: string[] = [];
  const codes: number[] = [];
  return {
    lines,
    codes,
    writeError: (line) => {
      lines.push(line);
    },
    exit: (code) => {
      codes.push(code);
      throw new Error(`exit ${code}`);
    },
  };
}

describe("configOrExit", () => {
  it("returns what the reader returns", () => {
    expect(configOrExit(() => ({ concurrency: 4 }), "worker", recordingIo())).toEqual({ concurrency: 4 });
  });

  it("prints one line naming the app and the setting, then exits with 2", () => {
    const io = recordingIo();
    expect(() =>
      configOrExit(
        () => readInt({ WORKER_CONCURRENCY: "abc" }, "WORKER_CONCURRENCY", 16, { min: 1, max: 1000 }),
        "worker",
        io,
      ),
    ).toThrow("exit 2");
    expect(io.lines).toEqual([
      'trellis worker: invalid setting: WORKER_CONCURRENCY: must be an integer between 1 and 1000, got "abc"\n',
    ]);
    expect(io.codes).toEqual([2]);
  });

  it("accepts a ConfigError built from a whole message", () => {
    const io = recordingIo();
    expect(() =>
      configOrExit(
        () => {
          throw new ConfigError("WORKER_CAPABILITIES: required");
        },
        "worker",
        io,
      ),
    ).toThrow("exit 2");
    expect(io.lines).toEqual(["trellis worker: invalid setting: WORKER_CAPABILITIES: required\n"]);
  });

  it("rethrows errors that are not ConfigErrors", () => {
    const io = recordingIo();
    expect(() =>
      configOrExit(
        () => {
          throw new TypeError("bug");
        },
        "api",
        io,
      ),
    ).toThrow(TypeError);
    expect(io.lines).toEqual([]);
    expect(io.codes).toEqual([]);
  });
});
