import { describe, expect, it } from "vitest";
import { interleaveByWorkflow } from "./interleave.js";

describe("interleaveByWorkflow", () => {
  it("alternates between workflows, keeping each workflow's order, and loses nothing", () => {
    const items = [
      { workflowId: "a", n: 1 },
      { workflowId: "a", n: 2 },
      { workflowId: "a", n: 3 },
      { workflowId: "b", n: 1 },
      { workflowId: "c", n: 1 },
      { workflowId: "c", n: 2 },
    ];
    expect(interleaveByWorkflow(items).map((i) => `${i.workflowId}${i.n}`)).toEqual([
      "a1",
      "b1",
      "c1",
      "a2",
      "c2",
      "a3",
    ]);
  });

  it("leaves a single workflow's items as they are", () => {
    const items = [{ workflowId: "a" }, { workflowId: "a" }];
    expect(interleaveByWorkflow(items)).toEqual(items);
    expect(interleaveByWorkflow([])).toEqual([]);
  });
});
