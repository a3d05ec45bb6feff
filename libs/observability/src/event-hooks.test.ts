import { describe, expect, it } from "vitest";
import { composeEventHooks } from "./event-hooks.js";

describe("composeEventHooks", () => {
  it("hands each batch to every hook in order", () => {
    const seen: string[] = [];
    const hook = composeEventHooks<number>(
      (events) => seen.push(`a:${events.join(",")}`),
      (events) => seen.push(`b:${events.join(",")}`),
    );
    hook([1, 2]);
    hook([3]);
    expect(seen).toEqual(["a:1,2", "b:1,2", "a:3", "b:3"]);
  });

  it("keeps going past a hook that throws, and never throws itself", () => {
    const seen: number[] = [];
    const hook = composeEventHooks<number>(
      () => {
        throw new Error("log sink closed");
      },
      (events) => seen.push(...events),
    );
    expect(() => hook([7])).not.toThrow();
    expect(seen).toEqual([7]);
  });

  it("does nothing with no hooks", () => {
    expect(() => composeEventHooks<number>()([1])).not.toThrow();
  });
});
