import { InvalidArgumentError } from "@trellis/core";
import { describe, expect, it } from "vitest";
import { type ForkSourceNode, planFork } from "./fork.js";

function n(id: string, parentIds: string[] = [], insertedBy = "", status: ForkSourceNode["status"] = "PASS") {
  return { id, parentIds, insertedBy, status };
}

function summary(plan: ReturnType<typeof planFork>) {
  return {
    kept: plan.kept,
    rerun: Object.fromEntries([...plan.rerun].map(([id, r]) => [id, [r.parentIds, r.pendingParents]])),
    leftOut: plan.leftOut,
  };
}

describe("planFork", () => {
  it("re-runs the chosen nodes and everything downstream, keeping the rest", () => {
    const graph = [n("a"), n("b", ["a"]), n("c", ["a"]), n("d", ["b", "c"])];
    expect(summary(planFork(graph, ["c"]))).toEqual({
      kept: ["a", "b"],
      rerun: { c: [["a"], 0], d: [["b", "c"], 1] },
      leftOut: [],
    });
  });

  it("re-runs every node that is not PASS, and what depends on it", () => {
    const graph = [n("a"), n("b", ["a"], "", "FAIL"), n("c", ["b"], "", "SKIPPED"), n("x"), n("y", ["x"])];
    expect(summary(planFork(graph, ["y"])).kept).toEqual(["a", "x"]);
  });

  it("leaves out what a re-run node inserted, transitively, and rewires their dependents to the inserter", () => {
    // p inserted x; x inserted z (with no parent); report waits for z; side was inserted by keep, outside the re-run.
    const graph = [
      n("p"),
      n("keep"),
      n("side", ["keep"], "keep"),
      n("x", ["p"], "p"),
      n("z", [], "x"),
      n("report", ["z", "side"]),
    ];
    expect(summary(planFork(graph, ["p"]))).toEqual({
      kept: ["keep", "side"],
      rerun: { p: [[], 0], report: [["p", "side"], 1] },
      leftOut: ["x", "z"],
    });
    // From x: z is left out (it has no parent, so only its inserter says it goes), the report waits for x again.
    expect(summary(planFork(graph, ["x"]))).toEqual({
      kept: ["p", "keep", "side"],
      rerun: { x: [["p"], 0], report: [["x", "side"], 1] },
      leftOut: ["z"],
    });
  });

  it("names the field of an unknown node, an empty list and an input of a node that does not run again", () => {
    const graph = [n("a"), n("b", ["a"]), n("x", ["b"], "b")];
    const field = (f: () => unknown) => {
      try {
        f();
      } catch (error) {
        return error instanceof InvalidArgumentError ? [error.field, error.reason] : error;
      }
      return undefined;
    };
    expect(field(() => planFork(graph, []))).toEqual(["from_node_ids", "at least one node id is required"]);
    expect(field(() => planFork(graph, ["b", "nope"]))).toEqual(["from_node_ids[1]", 'no node "nope"']);
    expect(field(() => planFork(graph, ["b"], ["a"]))).toEqual([
      'inputs["a"]',
      'node "a" keeps its output and does not run again',
    ]);
    expect(field(() => planFork(graph, ["b"], ["x"]))).toEqual(['inputs["x"]', expect.stringContaining("left out")]);
    expect(field(() => planFork(graph, ["b"], ["zz"]))).toEqual(['inputs["zz"]', 'no node "zz"']);
  });
});
