import { NodeStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { countPendingParents, initialStatusForParents } from "./node-readiness.js";

const { PENDING, QUEUED, RUNNING, PASS, FAIL, SKIPPED, CANCELLED } = NodeStatus;

describe("initialStatusForParents", () => {
  it("is PENDING for a root node and for parents that can still pass", () => {
    expect(initialStatusForParents([])).toBe(PENDING);
    expect(initialStatusForParents([PASS, PENDING, QUEUED, RUNNING])).toBe(PENDING);
  });

  it("is SKIPPED when any parent is FAIL or SKIPPED", () => {
    expect(initialStatusForParents([PASS, FAIL])).toBe(SKIPPED);
    expect(initialStatusForParents([SKIPPED, PENDING])).toBe(SKIPPED);
  });

  it("is CANCELLED when a parent is CANCELLED and none FAIL or SKIPPED", () => {
    expect(initialStatusForParents([PASS, CANCELLED])).toBe(CANCELLED);
  });

  it("prefers SKIPPED over CANCELLED whatever the order", () => {
    expect(initialStatusForParents([CANCELLED, FAIL])).toBe(SKIPPED);
    expect(initialStatusForParents([SKIPPED, CANCELLED])).toBe(SKIPPED);
  });
});

describe("countPendingParents", () => {
  it("counts every parent that has not passed", () => {
    expect(countPendingParents([])).toBe(0);
    expect(countPendingParents([PASS, PASS])).toBe(0);
    expect(countPendingParents([PASS, PENDING, RUNNING, FAIL, SKIPPED, CANCELLED, QUEUED])).toBe(6);
  });
});
