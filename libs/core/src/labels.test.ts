import { describe, expect, it } from "vitest";
import { InvalidArgumentError, ResourceExhaustedError } from "./errors.js";
import { inputByteLength, validateInputSize } from "./input.js";
import { validateLabels } from "./labels.js";
import { DEFAULT_LIMITS } from "./limits.js";
import { validateName } from "./names.js";

function thrown(fn: () => void): Error {
  try {
    fn();
  } catch (err) {
    if (err instanceof Error) return err;
  }
  throw new Error("expected an error");
}

describe("validateLabels", () => {
  it("accepts well-formed labels", () => {
    expect(() =>
      validateLabels({ team: "search", "example.com/owner": "a-b", A9: "", [`k${"x".repeat(62)}`]: "v" }, "labels"),
    ).not.toThrow();
  });

  it("rejects more labels than maxLabels on the labels field", () => {
    const labels = Object.fromEntries(Array.from({ length: 3 }, (_, i) => [`k${i}`, "v"]));
    const err = thrown(() => validateLabels(labels, "nodes[0].labels", { ...DEFAULT_LIMITS, maxLabels: 2 }));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe("nodes[0].labels: at most 2 labels are allowed, got 3");
  });

  it("allows exactly maxLabels labels", () => {
    const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "v"]));
    expect(() => validateLabels(labels, "labels")).not.toThrow();
  });

  it.each(["", "-a", "_a", "a b", "a:b", `k${"x".repeat(63)}`])("rejects the key %j", (key) => {
    const err = thrown(() => validateLabels({ [key]: "v" }, "labels"));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe(`labels: label key ${JSON.stringify(key)} must match [A-Za-z0-9][A-Za-z0-9._/-]{0,62}`);
  });

  it("rejects a value longer than 256 characters on a field naming the key", () => {
    const err = thrown(() => validateLabels({ team: "v".repeat(257) }, "labels"));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe('labels["team"]: must be at most 256 characters');
  });

  it("counts a value's length in characters, not UTF-16 units", () => {
    expect(() => validateLabels({ team: "😀".repeat(256) }, "labels")).not.toThrow();
  });
});

describe("validateName", () => {
  it("accepts a name of 256 characters and rejects 257", () => {
    expect(() => validateName("n".repeat(256), "name")).not.toThrow();
    expect(() => validateName("😀".repeat(256), "name")).not.toThrow();
    const err = thrown(() => validateName("n".repeat(257), "nodes[0].name"));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe("nodes[0].name: must be at most 256 characters");
  });
});

describe("input size", () => {
  it("is the UTF-8 byte length of the input's JSON, 0 when unset", () => {
    expect(inputByteLength(undefined)).toBe(0);
    expect(inputByteLength({})).toBe(2);
    expect(inputByteLength({ a: "é" })).toBe('{"a":"é"}'.length + 1);
  });

  it("accepts an input of exactly maxInputBytes and rejects one byte more as RESOURCE_EXHAUSTED", () => {
    const limits = { ...DEFAULT_LIMITS, maxInputBytes: 10 };
    expect(() => validateInputSize({ a: "ab" }, "input", limits)).not.toThrow();
    const err = thrown(() => validateInputSize({ a: "abc" }, "nodes[0].input", limits));
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    expect(err.message).toBe("nodes[0].input: 11 bytes of JSON exceeds the limit of 10 bytes");
  });
});
