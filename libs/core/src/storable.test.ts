import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "./errors.js";
import { MAX_JSON_DEPTH, jsonProblem, validateStorableJson, validateStorableText, valueProblem } from "./storable.js";

function nested(depth: number): unknown {
  let value: unknown = "leaf";
  for (let i = 0; i < depth; i++) value = i % 2 ? [value] : { a: value };
  return value;
}

describe("storable text and JSON", () => {
  it("refuses a NUL character in text, naming the field", () => {
    expect(() => validateStorableText("ok \u00e9\u{1F600}\t\n", "name")).not.toThrow();
    expect(() => validateStorableText("a\u0000b", "name")).toThrow(
      new InvalidArgumentError("name", "must not contain the NUL character (U+0000)"),
    );
  });

  it("finds a NUL in a string or key, a non-finite number, and too deep a nesting, with its path", () => {
    expect(jsonProblem({ a: [1, "x", { b: null }], "odd key": true })).toBeUndefined();
    expect(jsonProblem({ a: [1, "x\u0000"] })).toEqual({ path: ".a[1]", reason: expect.stringMatching(/NUL/) });
    expect(jsonProblem({ "k\u0000": 1 })?.reason).toMatch(/^key must not contain/);
    expect(jsonProblem({ n: Number.NaN })).toEqual({ path: ".n", reason: "NaN is not a JSON number" });
    expect(jsonProblem(nested(MAX_JSON_DEPTH) as never)).toBeUndefined();
    expect(jsonProblem(nested(MAX_JSON_DEPTH + 1) as never)?.reason).toBe(`nests deeper than ${MAX_JSON_DEPTH} levels`);
  });

  it("walks a million levels without overflowing the stack", () => {
    expect(jsonProblem(nested(1_000_000) as never)?.reason).toMatch(/nests deeper/);
  });

  it("names the field and path in the error", () => {
    expect(() => validateStorableJson({ doc: { text: "\u0000" } }, "nodes[2].input")).toThrow(
      /^nodes\[2\]\.input\.doc\.text: must not contain the NUL character/,
    );
  });

  it("checks a google.protobuf.Value the same way", () => {
    expect(valueProblem(fromJson(ValueSchema, { a: [1, "x"], b: null }))).toBeUndefined();
    expect(valueProblem(fromJson(ValueSchema, { a: ["x\u0000"] }))?.path).toBe(".a[0]");
    // Built by hand: fromJson itself refuses more than 100 levels.
    let deep = fromJson(ValueSchema, "leaf");
    for (let i = 0; i <= MAX_JSON_DEPTH; i++) {
      const list = fromJson(ValueSchema, []);
      if (list.kind.case === "listValue") list.kind.value.values.push(deep);
      deep = list;
    }
    expect(valueProblem(deep)?.reason).toMatch(/nests deeper/);
    const nan = fromJson(ValueSchema, 1);
    nan.kind = { case: "numberValue", value: Number.POSITIVE_INFINITY };
    expect(valueProblem(nan)?.reason).toBe("Infinity is not a JSON number");
    expect(valueProblem(undefined)).toBeUndefined();
  });
});
