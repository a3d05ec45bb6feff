import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { codePointLength, quoteForMessage, utf8ByteLength } from "./text.js";

const anyUtf16 = fc
  .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 40 })
  .map((units) => String.fromCharCode(...units));

describe("quoteForMessage", () => {
  it("JSON-quotes short values whole", () => {
    expect(quoteForMessage("ghost")).toBe('"ghost"');
    expect(quoteForMessage('a"b')).toBe('"a\\"b"');
  });

  it("cuts long values to 64 characters and marks the cut", () => {
    expect(quoteForMessage("y".repeat(65))).toBe(`"${"y".repeat(64)}…"`);
    expect(quoteForMessage("y".repeat(64))).toBe(`"${"y".repeat(64)}"`);
  });

  it("never splits a surrogate pair when cutting", () => {
    const quoted = quoteForMessage("😀".repeat(100));
    expect(JSON.parse(quoted)).toBe(`${"😀".repeat(64)}…`);
  });
});

describe("utf8ByteLength", () => {
  it("counts bytes like TextEncoder for any string, lone surrogates included", () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(anyUtf16, (s) => {
        expect(utf8ByteLength(s)).toBe(encoder.encode(s).length);
      }),
      { numRuns: 200 },
    );
  });

  it("counts 1, 2, 3 and 4 byte characters", () => {
    expect(utf8ByteLength("a")).toBe(1);
    expect(utf8ByteLength("é")).toBe(2);
    expect(utf8ByteLength("€")).toBe(3);
    expect(utf8ByteLength("😀")).toBe(4);
  });
});

describe("codePointLength", () => {
  it("counts code points like Array.from", () => {
    fc.assert(
      fc.property(anyUtf16, (s) => {
        expect(codePointLength(s)).toBe(Array.from(s).length);
      }),
      { numRuns: 200 },
    );
  });
});
