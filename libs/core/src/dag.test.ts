import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ErrorKind, type Node, NodeSchema, NodeStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { findCycle, topologicalOrder, validateWorkflowNodes } from "./dag.js";
import { InvalidArgumentError, ResourceExhaustedError } from "./errors.js";
import { DEFAULT_LIMITS } from "./limits.js";

type NodeInit = Parameters<typeof create<typeof NodeSchema>>[1];

function node(id: string, parentIds: string[] = [], extra: NodeInit = {}): Node {
  return create(NodeSchema, { id, capability: "cap", parentIds, ...extra });
}

function thrown(fn: () => void): Error {
  try {
    fn();
  } catch (err) {
    if (err instanceof Error) return err;
  }
  throw new Error("expected an error");
}

function invalid(fn: () => void): InvalidArgumentError {
  const err = thrown(fn);
  if (!(err instanceof InvalidArgumentError)) throw err;
  return err;
}

describe("validateWorkflowNodes", () => {
  it("accepts a diamond", () => {
    expect(() =>
      validateWorkflowNodes([node("a"), node("b", ["a"]), node("c", ["a"]), node("d", ["b", "c"])]),
    ).not.toThrow();
  });

  it("accepts nodes listed children first", () => {
    expect(() => validateWorkflowNodes([node("c", ["b"]), node("b", ["a"]), node("a")])).not.toThrow();
  });

  it("requires at least one node", () => {
    expect(invalid(() => validateWorkflowNodes([])).message).toBe("nodes: at least one node is required");
  });

  it("rejects more than maxNodes nodes as RESOURCE_EXHAUSTED", () => {
    const err = thrown(() =>
      validateWorkflowNodes([node("a"), node("b"), node("c")], { ...DEFAULT_LIMITS, maxNodes: 2 }),
    );
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    expect(err.message).toBe("nodes: at most 2 nodes are allowed, got 3");
  });

  it("names a malformed node id by its index", () => {
    const nodes = [node("a"), node("b"), node("c"), node("bad id")];
    const err = invalid(() => validateWorkflowNodes(nodes));
    expect(err.field).toBe("nodes[3].id");
  });

  it("requires a node id", () => {
    expect(invalid(() => validateWorkflowNodes([node("")])).message).toBe("nodes[0].id: required");
  });

  it("requires a capability", () => {
    const nodes = [node("a"), node("b"), node("c", [], { capability: "" })];
    expect(invalid(() => validateWorkflowNodes(nodes)).message).toBe("nodes[2].capability: required");
  });

  it("rejects a duplicate node id, naming the first occurrence", () => {
    const err = invalid(() => validateWorkflowNodes([node("a"), node("a")]));
    expect(err.message).toBe('nodes[1].id: duplicate node id "a" (also nodes[0])');
  });

  it("rejects a duplicate parent", () => {
    const err = invalid(() => validateWorkflowNodes([node("c", ["x", "x"]), node("x")]));
    expect(err.message).toBe('nodes[0].parent_ids[1]: duplicate parent "x"');
  });

  it("rejects a node that is its own parent", () => {
    const err = invalid(() => validateWorkflowNodes([node("a", ["a"])]));
    expect(err.message).toBe("nodes[0].parent_ids[0]: a node cannot be its own parent");
  });

  it("rejects an unknown parent", () => {
    const nodes = [node("a"), node("b"), node("c"), node("d", ["ghost"])];
    expect(invalid(() => validateWorkflowNodes(nodes)).message).toBe('nodes[3].parent_ids[0]: unknown node "ghost"');
  });

  it("rejects more than maxParents parents as INVALID_ARGUMENT", () => {
    const nodes = [node("a"), node("b"), node("c"), node("d", ["a", "b", "c"])];
    const err = invalid(() => validateWorkflowNodes(nodes, { ...DEFAULT_LIMITS, maxParents: 2 }));
    expect(err.message).toBe("nodes[3].parent_ids: at most 2 parents are allowed, got 3");
  });

  it("rejects a cycle on field nodes, printing the cycle's path", () => {
    const nodes = [node("a", ["c"]), node("b", ["a"]), node("c", ["b"])];
    const err = invalid(() => validateWorkflowNodes(nodes));
    expect(err.field).toBe("nodes");
    expect(err.message).toBe("nodes: cycle a -> b -> c -> a");
  });

  it("prints only the cycle, not the path leading into it", () => {
    const nodes = [node("start", ["x"]), node("x", ["y"]), node("y", ["x"])];
    expect(invalid(() => validateWorkflowNodes(nodes)).message).toBe("nodes: cycle x -> y -> x");
  });

  it("reports problems under the field it is given", () => {
    expect(invalid(() => validateWorkflowNodes([node("a", ["a"])], DEFAULT_LIMITS, "request.nodes")).field).toBe(
      "request.nodes[0].parent_ids[0]",
    );
  });

  it("reports the first problem in list order", () => {
    const nodes = [node("a"), node("b", [], { capability: "" }), node("bad id")];
    expect(invalid(() => validateWorkflowNodes(nodes)).field).toBe("nodes[1].capability");
  });

  it("ignores output-only fields set by the caller", () => {
    const withOutputs = node("a", [], {
      workflowId: "not-a-uuid",
      status: NodeStatus.FAIL,
      attempt: 7,
      error: { kind: ErrorKind.TASK_ERROR, message: "x" },
      output: { kind: { case: "stringValue", value: "out" } },
      createdAt: timestampFromMs(0),
      updatedAt: timestampFromMs(0),
      startedAt: timestampFromMs(0),
      finishedAt: timestampFromMs(0),
    });
    expect(() => validateWorkflowNodes([withOutputs])).not.toThrow();
  });

  it("checks a node's name, labels, input, retry policy and timeout", () => {
    expect(invalid(() => validateWorkflowNodes([node("a", [], { name: "n".repeat(257) })])).field).toBe(
      "nodes[0].name",
    );
    expect(invalid(() => validateWorkflowNodes([node("a", [], { labels: { "bad key": "v" } })])).field).toBe(
      "nodes[0].labels",
    );
    expect(
      thrown(() =>
        validateWorkflowNodes([node("a", [], { input: { big: "x".repeat(100) } })], {
          ...DEFAULT_LIMITS,
          maxInputBytes: 50,
        }),
      ),
    ).toBeInstanceOf(ResourceExhaustedError);
    expect(invalid(() => validateWorkflowNodes([node("a", [], { retryPolicy: { maxAttempts: 101 } })])).message).toBe(
      "nodes[0].retry_policy.max_attempts: must be between 0 and 100",
    );
    expect(invalid(() => validateWorkflowNodes([node("a", [], { timeout: durationFromMs(0) })])).message).toBe(
      "nodes[0].timeout: must be greater than 0",
    );
  });

  // Speed is measured by `npm run bench`; these prove the sizes work (no recursion, no stack overflow).
  it("validates a 10,000-node chain listed leaf first without overflowing the stack", () => {
    const nodes = Array.from({ length: 10_000 }, (_, i) => node(`n${9_999 - i}`, i === 9_999 ? [] : [`n${9_998 - i}`]));
    expect(() => validateWorkflowNodes(nodes)).not.toThrow();
  });

  it("validates 10,000 nodes with 1,000 parents each way", () => {
    const roots = Array.from({ length: 1_000 }, (_, i) => node(`r${i}`));
    const join = node(
      "join",
      roots.map((r) => r.id),
    );
    const fanOut = Array.from({ length: 8_999 }, (_, i) => node(`c${i}`, ["join"]));
    const nodes = [...roots, join, ...fanOut];
    expect(() => validateWorkflowNodes(nodes)).not.toThrow();
  });

  it("finds a cycle at the end of a 10,000-deep chain", () => {
    const nodes = Array.from({ length: 10_000 }, (_, i) => node(`n${i}`, i === 0 ? ["n9999"] : [`n${i - 1}`]));
    const err = invalid(() => validateWorkflowNodes(nodes));
    expect(err.reason.startsWith("cycle n0 -> n1 -> n2")).toBe(true);
    expect(err.reason.endsWith("n9998 -> n9999 -> n0")).toBe(true);
  });
});

describe("topologicalOrder", () => {
  const parents = (edges: Record<string, string[]>) => (id: string) => edges[id] ?? [];

  it("returns an already ordered list unchanged", () => {
    const edges = { b: ["a"], c: ["a"], d: ["b", "c"] };
    expect(topologicalOrder(["a", "b", "c", "d"], parents(edges))).toEqual(["a", "b", "c", "d"]);
    expect(topologicalOrder(["a", "c", "b", "d"], parents(edges))).toEqual(["a", "c", "b", "d"]);
  });

  it("puts parents before children and breaks ties by input order", () => {
    expect(topologicalOrder(["c", "a", "b"], parents({ c: ["b"] }))).toEqual(["a", "b", "c"]);
    expect(topologicalOrder(["d", "c", "b", "a"], parents({ d: ["c"], c: ["b"], b: ["a"] }))).toEqual([
      "a",
      "b",
      "c",
      "d",
    ]);
  });

  it("ignores parents that are not in the list", () => {
    expect(topologicalOrder(["b", "a"], parents({ b: ["outside"], a: ["gone"] }))).toEqual(["b", "a"]);
  });

  it("keeps a repeated id once", () => {
    expect(topologicalOrder(["a", "b", "a"], parents({ b: ["a"] }))).toEqual(["a", "b"]);
  });

  it("returns an empty list for no ids", () => {
    expect(topologicalOrder([], () => [])).toEqual([]);
  });

  it("throws InvalidArgumentError on field nodes with the cycle's path", () => {
    const err = invalid(() => topologicalOrder(["x", "a", "b"], parents({ a: ["b"], b: ["a"], x: [] })));
    expect(err.field).toBe("nodes");
    expect(err.reason).toBe("cycle a -> b -> a");
  });

  it("orders a 10,000-node chain listed leaf first without overflowing the stack", () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => `n${9_999 - i}`);
    const order = topologicalOrder(ids, (id) => {
      const i = Number(id.slice(1));
      return i === 0 ? [] : [`n${i - 1}`];
    });
    expect(order[0]).toBe("n0");
    expect(order[9_999]).toBe("n9999");
  });
});

describe("findCycle", () => {
  it("returns undefined for a DAG", () => {
    const edges: Record<string, string[]> = { a: [], b: ["a"], c: ["a", "b"] };
    expect(findCycle(["a", "b", "c"], (id) => edges[id])).toBeUndefined();
  });

  it("returns a closed path where each node is a parent of the next", () => {
    const edges: Record<string, string[]> = { a: ["c"], b: ["a"], c: ["b"] };
    expect(findCycle(["a"], (id) => edges[id])).toEqual(["a", "b", "c", "a"]);
  });

  it("skips parents it does not know", () => {
    const edges: Record<string, string[]> = { a: ["ghost"] };
    expect(findCycle(["a"], (id) => edges[id])).toBeUndefined();
  });
});
