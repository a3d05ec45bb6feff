import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ErrorKind, NodeSchema, NodeStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "./errors.js";
import { normalizeNewNode, validateRetryPolicy, validateTimeout } from "./node-spec.js";

function reason(fn: () => void): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err.message;
    throw err;
  }
  return "no error";
}

const ms = durationFromMs;

describe("validateRetryPolicy", () => {
  it("accepts an unset policy and one with every field at its bounds", () => {
    expect(reason(() => validateRetryPolicy(undefined, "p"))).toBe("no error");
    expect(
      reason(() =>
        validateRetryPolicy({ $typeName: "workflow.v1.RetryPolicy", maxAttempts: 0, retryTaskErrors: true }, "p"),
      ),
    ).toBe("no error");
    expect(
      reason(() =>
        validateRetryPolicy(
          {
            $typeName: "workflow.v1.RetryPolicy",
            maxAttempts: 100,
            initialBackoff: ms(0),
            maxBackoff: ms(86_400_000),
            retryTaskErrors: false,
          },
          "p",
        ),
      ),
    ).toBe("no error");
  });

  it.each([-1, 101, 1.5])("rejects max_attempts %d", (maxAttempts) => {
    expect(
      reason(() =>
        validateRetryPolicy(
          { $typeName: "workflow.v1.RetryPolicy", maxAttempts, retryTaskErrors: false },
          "nodes[0].retry_policy",
        ),
      ),
    ).toBe("nodes[0].retry_policy.max_attempts: must be between 0 and 100");
  });

  it("rejects a negative backoff", () => {
    const base = { $typeName: "workflow.v1.RetryPolicy", maxAttempts: 0, retryTaskErrors: false } as const;
    expect(reason(() => validateRetryPolicy({ ...base, initialBackoff: ms(-1000) }, "p"))).toBe(
      "p.initial_backoff: must not be negative",
    );
    expect(reason(() => validateRetryPolicy({ ...base, maxBackoff: ms(-1) }, "p"))).toBe(
      "p.max_backoff: must not be negative",
    );
  });

  it("rejects a backoff over 24h", () => {
    const base = { $typeName: "workflow.v1.RetryPolicy", maxAttempts: 0, retryTaskErrors: false } as const;
    expect(reason(() => validateRetryPolicy({ ...base, maxBackoff: ms(86_400_001) }, "p"))).toBe(
      "p.max_backoff: must be at most 24h",
    );
  });

  it("rejects a malformed duration", () => {
    const base = { $typeName: "workflow.v1.RetryPolicy", maxAttempts: 0, retryTaskErrors: false } as const;
    const bad = { ...ms(0), seconds: 1n, nanos: -5 };
    expect(reason(() => validateRetryPolicy({ ...base, initialBackoff: bad }, "p"))).toBe(
      "p.initial_backoff: must be a valid duration",
    );
    const tooManyNanos = { ...ms(0), nanos: 1_000_000_000 };
    expect(reason(() => validateRetryPolicy({ ...base, maxBackoff: tooManyNanos }, "p"))).toBe(
      "p.max_backoff: must be a valid duration",
    );
  });

  it("rejects max_backoff below initial_backoff when both are set, and allows it when either is 0 (default)", () => {
    const base = { $typeName: "workflow.v1.RetryPolicy", maxAttempts: 0, retryTaskErrors: false } as const;
    expect(reason(() => validateRetryPolicy({ ...base, initialBackoff: ms(5000), maxBackoff: ms(1000) }, "p"))).toBe(
      "p.max_backoff: must not be less than initial_backoff",
    );
    expect(reason(() => validateRetryPolicy({ ...base, initialBackoff: ms(5000), maxBackoff: ms(5000) }, "p"))).toBe(
      "no error",
    );
    expect(reason(() => validateRetryPolicy({ ...base, initialBackoff: ms(5000), maxBackoff: ms(0) }, "p"))).toBe(
      "no error",
    );
    expect(reason(() => validateRetryPolicy({ ...base, initialBackoff: ms(120_000) }, "p"))).toBe("no error");
  });
});

describe("validateTimeout", () => {
  it("accepts unset, 1 ms and exactly 24h", () => {
    expect(reason(() => validateTimeout(undefined, "t"))).toBe("no error");
    expect(reason(() => validateTimeout(ms(1), "t"))).toBe("no error");
    expect(reason(() => validateTimeout(ms(86_400_000), "t"))).toBe("no error");
  });

  it("rejects zero and negative timeouts", () => {
    expect(reason(() => validateTimeout(ms(0), "nodes[0].timeout"))).toBe("nodes[0].timeout: must be greater than 0");
    expect(reason(() => validateTimeout(ms(-5), "t"))).toBe("t: must be greater than 0");
  });

  it("rejects a timeout over 24h, even by a nanosecond", () => {
    expect(reason(() => validateTimeout({ ...ms(0), seconds: 86_400n, nanos: 1 }, "t"))).toBe("t: must be at most 24h");
  });
});

describe("normalizeNewNode", () => {
  it("defaults the name to the id and clears output-only fields", () => {
    const given = create(NodeSchema, {
      id: "a",
      capability: "cap",
      parentIds: ["p"],
      workflowId: "w",
      status: NodeStatus.RUNNING,
      attempt: 3,
      error: { kind: ErrorKind.INFRA_ERROR, message: "boom" },
      output: { kind: { case: "numberValue", value: 1 } },
      createdAt: timestampFromMs(1),
      updatedAt: timestampFromMs(1),
      startedAt: timestampFromMs(1),
      finishedAt: timestampFromMs(1),
      input: { k: [1, 2] },
      labels: { team: "x" },
      timeout: ms(1000),
      retryPolicy: { maxAttempts: 5, initialBackoff: ms(10) },
      priority: 7,
      limitKeys: ["model:gpt-4o"],
      heldBy: "model:gpt-4o",
    });
    const stored = normalizeNewNode(given);
    expect(stored).toEqual(
      create(NodeSchema, {
        id: "a",
        name: "a",
        capability: "cap",
        parentIds: ["p"],
        input: { k: [1, 2] },
        labels: { team: "x" },
        timeout: ms(1000),
        retryPolicy: { maxAttempts: 5, initialBackoff: ms(10) },
        priority: 7,
        limitKeys: ["model:gpt-4o"],
      }),
    );
  });

  it("keeps a given name and copies deeply, so later changes to the request do not leak in", () => {
    const given = create(NodeSchema, { id: "a", name: "Alpha", capability: "cap", input: { k: { v: 1 } } });
    const stored = normalizeNewNode(given);
    expect(stored.name).toBe("Alpha");
    (given.input?.k as { v: number }).v = 2;
    given.parentIds.push("x");
    expect(stored.input).toEqual({ k: { v: 1 } });
    expect(stored.parentIds).toEqual([]);
  });
});
