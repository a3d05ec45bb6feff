import { create } from "@bufbuild/protobuf";
import { DurationSchema, durationFromMs } from "@bufbuild/protobuf/wkt";
import { type Limit, LimitSchema, NodeSchema } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { validateWorkflowNodes } from "./dag.js";
import { InvalidArgumentError } from "./errors.js";
import {
  type LimitSpec,
  limitSpecFromProto,
  validateBudget,
  validateLimitKey,
  validateLimitKeys,
  validateLimitSpec,
  validatePriority,
} from "./flow-control.js";

/** The message of the InvalidArgumentError `fn` throws, or "no error". */
function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err.message;
    throw err;
  }
  return "no error";
}

function limit(init: Partial<Omit<Limit, "$typeName">>): Limit {
  return create(LimitSchema, { key: "model:gpt-4o", ...init });
}

const spec = (init: Partial<LimitSpec>): LimitSpec => ({
  key: "model:gpt-4o",
  maxConcurrency: 0,
  rate: 10,
  periodMs: 1000,
  burst: 0,
  unit: "",
  ...init,
});

describe("validatePriority", () => {
  it("accepts 0..10 and refuses anything else, naming the field", () => {
    for (const p of [0, 5, 10]) expect(reason(() => validatePriority(p, "p"))).toBe("no error");
    expect(reason(() => validatePriority(11, "nodes[3].priority"))).toBe(
      "nodes[3].priority: must be between 0 and 10, got 11",
    );
    expect(reason(() => validatePriority(-1, "p"))).toBe("p: must be between 0 and 10, got -1");
  });
});

describe("validateLimitKeys", () => {
  it("accepts up to 16 distinct printable keys of 1..200 characters", () => {
    const keys = Array.from({ length: 16 }, (_, i) => `tenant:${i}`);
    expect(reason(() => validateLimitKeys(keys, "k"))).toBe("no error");
    expect(reason(() => validateLimitKeys(["x".repeat(200), "模型:ü 🙂"], "k"))).toBe("no error");
  });

  it("refuses too many, empty, long, control characters, duplicates and the reserved prefix", () => {
    const seventeen = Array.from({ length: 17 }, (_, i) => `k${i}`);
    expect(reason(() => validateLimitKeys(seventeen, "nodes[0].limit_keys"))).toBe(
      "nodes[0].limit_keys: at most 16 keys are allowed, got 17",
    );
    expect(reason(() => validateLimitKeys(["a", ""], "l"))).toBe("l[1]: required");
    expect(reason(() => validateLimitKeys(["x".repeat(201)], "l"))).toBe("l[0]: must be at most 200 characters");
    expect(reason(() => validateLimitKeys(["a\tb"], "l"))).toBe('l[0]: "a\\tb" must not contain control characters');
    expect(reason(() => validateLimitKeys(["a\u0000"], "l"))).toMatch(/^l\[0\]: .* must not contain control/);
    expect(reason(() => validateLimitKeys(["a\u0085"], "l"))).toMatch(/^l\[0\]: .* must not contain control/);
    expect(reason(() => validateLimitKeys(["a\ud800"], "l"))).toMatch(/^l\[0\]: .* must not contain control/);
    expect(reason(() => validateLimitKeys(["a", "b", "a"], "l"))).toBe('l[2]: duplicate key "a"');
    expect(reason(() => validateLimitKeys(["capability:echo"], "l"))).toBe(
      'l[0]: the prefix "capability:" is reserved: every node counts under "capability:<its capability>"',
    );
  });

  it("is part of a workflow's node validation", () => {
    const nodes = [
      create(NodeSchema, { id: "a", capability: "echo", priority: 3, limitKeys: ["tenant:acme"] }),
      create(NodeSchema, { id: "b", capability: "echo", priority: 12 }),
    ];
    expect(reason(() => validateWorkflowNodes(nodes))).toBe("nodes[1].priority: must be between 0 and 10, got 12");
  });
});

describe("validateLimitKey for SetLimit and DeleteLimit", () => {
  it("allows capability:<name> for a well-formed capability name only", () => {
    expect(reason(() => validateLimitKey("capability:llm.chat", "key", "allowed"))).toBe("no error");
    expect(reason(() => validateLimitKey("capability:", "key", "allowed"))).toBe(
      'key: "capability:" must name a capability',
    );
    expect(reason(() => validateLimitKey("capability:LLM", "key", "allowed"))).toBe(
      'key: "LLM" must match [a-z0-9][a-z0-9._-]{0,63}',
    );
  });
});

describe("validateBudget", () => {
  it("accepts units of 1..64 printable characters with finite amounts above 0", () => {
    expect(reason(() => validateBudget({ tokens: 200_000, cost_usd: 0.5 }, "budget"))).toBe("no error");
    expect(reason(() => validateBudget({}, "budget"))).toBe("no error");
  });

  it("refuses bad units and amounts that are zero, negative, NaN or infinite", () => {
    expect(reason(() => validateBudget({ tokens: 0 }, "budget"))).toBe(
      'budget["tokens"]: must be a finite number above 0, got 0',
    );
    expect(reason(() => validateBudget({ tokens: -1 }, "budget"))).toMatch(/^budget\["tokens"\]: .* got -1$/);
    expect(reason(() => validateBudget({ tokens: Number.NaN }, "budget"))).toMatch(/got NaN$/);
    expect(reason(() => validateBudget({ tokens: Number.POSITIVE_INFINITY }, "budget"))).toMatch(/got Infinity$/);
    expect(reason(() => validateBudget({ "": 1 }, "budget"))).toBe("budget: required");
    expect(reason(() => validateBudget({ ["u".repeat(65)]: 1 }, "budget"))).toBe(
      "budget: must be at most 64 characters",
    );
    expect(reason(() => validateBudget({ "a\nb": 1 }, "budget"))).toBe(
      'budget: "a\\nb" must not contain control characters',
    );
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`u${i}`, 1]));
    expect(reason(() => validateBudget(many, "budget"))).toBe("budget: at most 64 units are allowed, got 65");
  });
});

describe("validateLimitSpec", () => {
  it("defaults the burst to the rate and keeps the rest", () => {
    expect(validateLimitSpec(spec({ rate: 5 }))).toEqual(spec({ rate: 5, burst: 5 }));
    expect(validateLimitSpec(spec({ rate: 5, burst: 2, unit: "tokens" }))).toEqual(
      spec({ rate: 5, burst: 2, unit: "tokens" }),
    );
    expect(validateLimitSpec(spec({ rate: 0, maxConcurrency: 3 }))).toEqual(spec({ rate: 0, maxConcurrency: 3 }));
  });

  it("refuses every bad field, naming it", () => {
    const cases: [Partial<LimitSpec>, string][] = [
      [{ key: "" }, "limit.key: required"],
      [{ key: "k\u0007" }, 'limit.key: "k\\u0007" must not contain control characters'],
      [{ key: "x".repeat(201) }, "limit.key: must be at most 200 characters"],
      [{ maxConcurrency: -1 }, "limit.max_concurrency: must be an integer of at least 0, got -1"],
      [{ maxConcurrency: 1.5 }, "limit.max_concurrency: must be an integer of at least 0, got 1.5"],
      [{ rate: -1 }, "limit.rate: must be a finite number of at least 0, got -1"],
      [{ rate: Number.NaN }, "limit.rate: must be a finite number of at least 0, got NaN"],
      [{ rate: Number.POSITIVE_INFINITY }, "limit.rate: must be a finite number of at least 0, got Infinity"],
      [{ periodMs: 0 }, "limit.period: must be greater than 0 and at most 24h"],
      [{ periodMs: 86_400_001 }, "limit.period: must be greater than 0 and at most 24h"],
      [{ periodMs: 1.5 }, "limit.period: must be a whole number of milliseconds, got 1.5ms"],
      [{ burst: -2 }, "limit.burst: must be a finite number of at least 0, got -2"],
      [{ burst: Number.NaN }, "limit.burst: must be a finite number of at least 0, got NaN"],
      [{ burst: 0.5 }, "limit.burst: must be at least 1 with a rate, got 0.5"],
      [{ rate: 0.5 }, "limit.burst: must be at least 1 with a rate (it defaults to the rate, 0.5)"],
      [{ unit: "a\nb" }, 'limit.unit: "a\\nb" must not contain control characters'],
      [{ unit: "u".repeat(65) }, "limit.unit: must be at most 64 characters"],
      [{ rate: 0, maxConcurrency: 0 }, "limit: set max_concurrency, rate or both (0 means no cap)"],
    ];
    for (const [init, message] of cases) expect(reason(() => validateLimitSpec(spec(init)))).toBe(message);
  });

  it("accepts the bounds: a 1 ms and a 24 h period, a burst of exactly 1", () => {
    expect(reason(() => validateLimitSpec(spec({ periodMs: 1 })))).toBe("no error");
    expect(reason(() => validateLimitSpec(spec({ periodMs: 86_400_000 })))).toBe("no error");
    expect(reason(() => validateLimitSpec(spec({ rate: 0.1, burst: 1 })))).toBe("no error");
  });
});

describe("limitSpecFromProto", () => {
  it("reads the period (default 1 s) and ignores the output-only fields", () => {
    expect(limitSpecFromProto(limit({ maxConcurrency: 3, running: 9, waiting: 4n, available: 2 }))).toEqual({
      key: "model:gpt-4o",
      maxConcurrency: 3,
      rate: 0,
      periodMs: 1000,
      burst: 0,
      unit: "",
    });
    expect(limitSpecFromProto(limit({ rate: 100, period: durationFromMs(60_000), unit: "tokens" }))).toEqual({
      key: "model:gpt-4o",
      maxConcurrency: 0,
      rate: 100,
      periodMs: 60_000,
      burst: 100,
      unit: "tokens",
    });
  });

  it("refuses a missing limit, a zero, negative, malformed or too long period", () => {
    expect(reason(() => limitSpecFromProto(undefined))).toBe("limit: required");
    expect(reason(() => limitSpecFromProto(limit({ rate: 1, period: durationFromMs(0) })))).toBe(
      "limit.period: must be greater than 0 and at most 24h",
    );
    expect(reason(() => limitSpecFromProto(limit({ rate: 1, period: durationFromMs(-1000) })))).toBe(
      "limit.period: must be greater than 0 and at most 24h",
    );
    expect(
      reason(() => limitSpecFromProto(limit({ rate: 1, period: create(DurationSchema, { seconds: 1n, nanos: -1 }) }))),
    ).toBe("limit.period: must be a valid duration");
    expect(
      reason(() => limitSpecFromProto(limit({ rate: 1, period: create(DurationSchema, { seconds: 86_401n }) }))),
    ).toBe("limit.period: must be greater than 0 and at most 24h");
  });
});
