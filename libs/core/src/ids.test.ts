import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "./errors.js";
import { quoteForMessage } from "./text.js";
import { assertCapability, assertNodeId, assertWorkflowId, isUuid, isValidCapability, isValidNodeId } from "./ids.js";

function thrown(fn: () => void): InvalidArgumentError {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err;
    throw err;
  }
  throw new Error("expected an InvalidArgumentError");
}

describe("assertWorkflowId", () => {
  it.each([
    "0b7e7c6a-8a4e-4f4e-9c1d-2f5b8d3e1a90",
    "0B7E7C6A-8A4E-4F4E-9C1D-2F5B8D3E1A90",
    "018f3c2a-7b1e-7cde-8f00-0123456789ab",
    "00000000-0000-0000-0000-000000000000",
  ])("accepts the UUID %s whatever its version or case", (id) => {
    expect(() => assertWorkflowId(id)).not.toThrow();
    expect(isUuid(id)).toBe(true);
  });

  it("rejects a non-UUID on field workflow_id, quoting the value", () => {
    const err = thrown(() => assertWorkflowId("abc"));
    expect(err.field).toBe("workflow_id");
    expect(err.message).toBe('workflow_id: "abc" is not a UUID');
  });

  it("rejects an empty id", () => {
    expect(thrown(() => assertWorkflowId("")).message).toBe('workflow_id: "" is not a UUID');
  });

  it("reports the field it is given", () => {
    expect(thrown(() => assertWorkflowId("x", "request.workflow_id")).field).toBe("request.workflow_id");
  });

  it("rejects a UUID with extra characters around it", () => {
    expect(isUuid(" 0b7e7c6a-8a4e-4f4e-9c1d-2f5b8d3e1a90")).toBe(false);
    expect(isUuid("0b7e7c6a-8a4e-4f4e-9c1d-2f5b8d3e1a90\n")).toBe(false);
    expect(isUuid("0b7e7c6a8a4e4f4e9c1d2f5b8d3e1a90")).toBe(false);
  });

  it("shows at most 64 characters of a very long value", () => {
    const err = thrown(() => assertWorkflowId("x".repeat(10_000)));
    expect(err.reason).toBe(`"${"x".repeat(64)}…" is not a UUID`);
  });

  it("escapes unprintable characters in the message", () => {
    const err = thrown(() => assertWorkflowId("a\u0000b\nc"));
    expect(err.reason).toBe('"a\\u0000b\\nc" is not a UUID');
  });
});

describe("assertNodeId", () => {
  it.each(["a", "A-b_c.9", "x".repeat(128)])("accepts %s", (id) => {
    expect(() => assertNodeId(id)).not.toThrow();
    expect(isValidNodeId(id)).toBe(true);
  });

  it("says required for an empty id", () => {
    expect(thrown(() => assertNodeId("", "nodes[0].id")).message).toBe("nodes[0].id: required");
  });

  it.each(["a b", "a/b", "é", "x".repeat(129)])("rejects %s with the pattern in the reason", (id) => {
    const err = thrown(() => assertNodeId(id, "nodes[1].id"));
    expect(err.field).toBe("nodes[1].id");
    expect(err.reason).toMatch(/must match \[A-Za-z0-9_.-\]\{1,128\}$/);
  });
});

describe("assertCapability", () => {
  it.each(["a", "llm.chat", "gpu_1-x", `a${"b".repeat(63)}`])("accepts %s", (capability) => {
    expect(() => assertCapability(capability)).not.toThrow();
    expect(isValidCapability(capability)).toBe(true);
  });

  it("says required for an empty capability", () => {
    expect(thrown(() => assertCapability("", "nodes[2].capability")).message).toBe("nodes[2].capability: required");
  });

  it.each(["Chat", "-x", ".x", "a b", `a${"b".repeat(64)}`])("rejects %s", (capability) => {
    const err = thrown(() => assertCapability(capability, "c"));
    expect(err.reason).toBe(`${quoteForMessage(capability)} must match [a-z0-9][a-z0-9._-]{0,63}`);
  });
});
