import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { EditType, type Node, type NodeEdit, NodeEditSchema, NodeSchema, NodeStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { type GraphNode, UPDATABLE_NODE_FIELDS, planEdits, planNodeUpdate } from "./edits.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from "./errors.js";
import { DEFAULT_LIMITS } from "./limits.js";

type NodeInit = Parameters<typeof create<typeof NodeSchema>>[1];

const { PENDING, RUNNING, PASS, FAIL } = NodeStatus;

function graphOf(...nodes: [id: string, status: NodeStatus, parentIds?: string[]][]): Map<string, GraphNode> {
  return new Map(nodes.map(([id, status, parentIds = []]) => [id, { id, status, parentIds }]));
}

function node(id: string, parentIds: string[] = [], extra: NodeInit = {}): Node {
  return create(NodeSchema, { id, capability: "cap", parentIds, ...extra });
}

function insert(n: Node): NodeEdit {
  return create(NodeEditSchema, { type: EditType.INSERT, node: n });
}

function update(n: Node, paths: string[] | undefined): NodeEdit {
  return create(NodeEditSchema, {
    type: EditType.UPDATE,
    node: n,
    updateMask: paths === undefined ? undefined : { paths },
  });
}

function remove(nodeId: string): NodeEdit {
  return create(NodeEditSchema, { type: EditType.DELETE, nodeId });
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    if (err instanceof Error) return err;
  }
  throw new Error("expected an error");
}

function invalid(fn: () => unknown): InvalidArgumentError {
  const err = thrown(fn);
  if (!(err instanceof InvalidArgumentError)) throw err;
  return err;
}

/** a (PASS) -> b (PENDING) -> c (PENDING); r (RUNNING) under a. */
const base = () => graphOf(["a", PASS], ["b", PENDING, ["a"]], ["c", PENDING, ["b"]], ["r", RUNNING, ["a"]]);

describe("planEdits: the batch", () => {
  it("accepts an empty batch with an empty plan", () => {
    const plan = planEdits(base(), []);
    expect(plan).toEqual({ inserts: [], updates: [], deletes: [], parentsAfter: new Map() });
  });

  it("rejects more than maxEditsPerBatch edits as RESOURCE_EXHAUSTED", () => {
    const edits = [insert(node("x")), insert(node("y")), insert(node("z"))];
    const err = thrown(() => planEdits(base(), edits, { ...DEFAULT_LIMITS, maxEditsPerBatch: 2 }));
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    expect(err.message).toBe("edits: at most 2 edits are allowed per batch, got 3");
  });

  it("requires an edit type", () => {
    const edits = [insert(node("x")), insert(node("y")), create(NodeEditSchema, { node: node("z") })];
    expect(invalid(() => planEdits(base(), edits)).message).toBe("edits[2].type: required");
  });

  it("rejects an unknown edit type", () => {
    const edits = [create(NodeEditSchema, { type: 9 as EditType, node: node("z") })];
    expect(invalid(() => planEdits(base(), edits)).message).toBe("edits[0].type: unknown edit type 9");
  });

  it("reports the first problem in edit order", () => {
    const edits = [insert(node("x")), remove("ghost"), insert(node("bad id"))];
    expect(invalid(() => planEdits(base(), edits)).field).toBe("edits[1].node_id");
  });

  it("reports problems under the field it is given", () => {
    expect(invalid(() => planEdits(base(), [remove("")], DEFAULT_LIMITS, "response.edits")).message).toBe(
      "response.edits[0].node_id: required",
    );
  });

  it("returns inserts, updates and deletes each in the order given", () => {
    const g = graphOf(["p", PENDING], ["q", PENDING], ["s", PENDING], ["t", PENDING]);
    const plan = planEdits(g, [
      remove("t"),
      insert(node("y")),
      update(node("q", [], { name: "Q" }), ["name"]),
      remove("s"),
      insert(node("x")),
      update(node("p", [], { name: "P" }), ["name"]),
    ]);
    expect(plan.deletes).toEqual(["t", "s"]);
    expect(plan.inserts.map((n) => n.id)).toEqual(["y", "x"]);
    expect(plan.updates.map((u) => u.id)).toEqual(["q", "p"]);
  });

  it("rejects a batch that would take the workflow past maxNodes as RESOURCE_EXHAUSTED", () => {
    const limits = { ...DEFAULT_LIMITS, maxNodes: 5 };
    const err = thrown(() => planEdits(base(), [insert(node("x")), insert(node("y"))], limits));
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    expect(err.message).toBe("edits: the workflow would have 6 nodes; at most 5 are allowed");
    expect(() => planEdits(base(), [remove("c"), insert(node("x")), insert(node("y"))], limits)).not.toThrow();
  });

  it("lets one node be touched by only one edit", () => {
    const err = invalid(() => planEdits(base(), [update(node("c", [], { name: "n" }), ["name"]), remove("c")]));
    expect(err.message).toBe(
      'edits[1].node_id: node "c" is also touched by edits[0]; a node may be touched by only one edit per batch',
    );
    expect(invalid(() => planEdits(base(), [remove("c"), remove("c")])).field).toBe("edits[1].node_id");
  });

  it("does not mutate the graph or the edits", () => {
    const g = base();
    const edits = [insert(node("x", ["c"])), update(node("c", ["a"]), ["parent_ids"]), remove("x")];
    const before = structuredClone({ g, edits });
    expect(() => planEdits(g, edits)).toThrow();
    planEdits(g, edits.slice(0, 2));
    expect({ g, edits }).toEqual(before);
  });
});

describe("planEdits: INSERT", () => {
  it("returns a copy of the new node with its name defaulted and output-only fields cleared", () => {
    const given = node("x", ["c"], { status: FAIL, attempt: 4, workflowId: "w", input: { q: 1 } });
    const plan = planEdits(base(), [insert(given)]);
    expect(plan.inserts).toEqual([node("x", ["c"], { name: "x", input: { q: 1 } })]);
    expect(plan.inserts[0]).not.toBe(given);
    expect(plan.parentsAfter.get("x")).toEqual(["c"]);
  });

  it("accepts a parent inserted later in the same batch", () => {
    const plan = planEdits(base(), [insert(node("y", ["x"])), insert(node("x", ["c"]))]);
    expect(plan.inserts.map((n) => n.id)).toEqual(["y", "x"]);
  });

  it("accepts a parent in any status", () => {
    expect(() => planEdits(base(), [insert(node("x", ["a", "r", "c"]))])).not.toThrow();
  });

  it("requires the node", () => {
    const edits = [create(NodeEditSchema, { type: EditType.INSERT })];
    expect(invalid(() => planEdits(base(), edits)).message).toBe("edits[0].node: required");
  });

  it("validates the node fully, with field paths under edits[i].node", () => {
    expect(invalid(() => planEdits(base(), [insert(node("x", [], { capability: "" }))])).message).toBe(
      "edits[0].node.capability: required",
    );
    expect(invalid(() => planEdits(base(), [insert(node("x", ["x"]))])).message).toBe(
      "edits[0].node.parent_ids[0]: a node cannot be its own parent",
    );
    expect(invalid(() => planEdits(base(), [insert(node("x", ["a", "a"]))])).message).toBe(
      'edits[0].node.parent_ids[1]: duplicate parent "a"',
    );
    expect(
      invalid(() => planEdits(base(), [insert(node("x", [], { timeout: durationFromMs(86_400_001) }))])).message,
    ).toBe("edits[0].node.timeout: must be at most 24h");
    const tooManyParents = { ...DEFAULT_LIMITS, maxParents: 1 };
    expect(invalid(() => planEdits(base(), [insert(node("x", ["a", "b"]))], tooManyParents)).field).toBe(
      "edits[0].node.parent_ids",
    );
  });

  it("validates an inserted node's priority and limit keys, and an update's when the mask names them", () => {
    expect(invalid(() => planEdits(base(), [insert(node("x", [], { priority: 11 }))])).message).toBe(
      "edits[0].node.priority: must be between 0 and 10, got 11",
    );
    expect(
      invalid(() => planEdits(base(), [insert(node("x", [], { limitKeys: ["tenant:a", "capability:cap"] }))])).field,
    ).toBe("edits[0].node.limit_keys[1]");
    expect(invalid(() => planEdits(base(), [update(node("c", [], { priority: -1 }), ["priority"])])).message).toBe(
      "edits[0].node.priority: must be between 0 and 10, got -1",
    );
    expect(
      invalid(() => planEdits(base(), [update(node("c", [], { limitKeys: ["k", "k"] }), ["limit_keys"])])).message,
    ).toBe('edits[0].node.limit_keys[1]: duplicate key "k"');
    // Not masked: not looked at.
    expect(planEdits(base(), [update(node("c", [], { priority: 99 }), ["name"])]).updates[0]?.changes).toEqual({
      name: "c",
    });
    const plan = planEdits(base(), [update(node("c"), ["priority", "limit_keys"])]);
    expect(plan.updates[0]?.changes).toEqual({ priority: 0, limitKeys: [] });
  });

  it("rejects an id already in the workflow", () => {
    expect(invalid(() => planEdits(base(), [insert(node("b"))])).message).toBe(
      'edits[0].node.id: node "b" already exists',
    );
  });

  it("rejects an id inserted twice", () => {
    expect(invalid(() => planEdits(base(), [insert(node("x")), insert(node("x"))])).message).toBe(
      'edits[1].node.id: duplicate node id "x" (also edits[0])',
    );
  });

  it("rejects reusing the id of a node deleted in the same batch, whichever comes first", () => {
    expect(invalid(() => planEdits(base(), [remove("c"), insert(node("c"))])).message).toBe(
      'edits[1].node.id: node "c" is deleted by edits[0]; an id cannot be reused in the same batch',
    );
    expect(invalid(() => planEdits(base(), [insert(node("c")), remove("c")])).message).toBe(
      'edits[0].node.id: node "c" is deleted by edits[1]; an id cannot be reused in the same batch',
    );
  });

  it("rejects an unknown parent", () => {
    expect(invalid(() => planEdits(base(), [insert(node("x", ["a", "ghost"]))])).message).toBe(
      'edits[0].node.parent_ids[1]: unknown node "ghost"',
    );
  });

  it("rejects a parent deleted in the same batch", () => {
    expect(invalid(() => planEdits(base(), [remove("c"), insert(node("x", ["c"]))])).message).toBe(
      'edits[1].node.parent_ids[0]: node "c" is deleted by edits[0]',
    );
  });

  it("rejects new nodes that form a cycle among themselves", () => {
    const err = invalid(() => planEdits(base(), [insert(node("x", ["y"])), insert(node("y", ["x"]))]));
    expect(err.field).toBe("edits");
    expect(err.message).toBe("edits: cycle x -> y -> x");
  });
});

describe("planEdits: UPDATE", () => {
  it("returns only the masked fields' new values", () => {
    const given = node("c", ["a"], { name: "C", capability: "other", input: { k: "v" }, labels: { t: "x" } });
    const plan = planEdits(base(), [update(given, ["capability", "input"])]);
    expect(plan.updates).toEqual([{ id: "c", changes: { capability: "other", input: { k: "v" } } }]);
    expect(plan.parentsAfter.size).toBe(0);
  });

  it("takes every updatable field", () => {
    const given = node("c", ["a"], {
      name: "C",
      capability: "other",
      input: { k: "v" },
      retryPolicy: { maxAttempts: 5 },
      timeout: durationFromMs(2000),
      labels: { t: "x" },
      priority: 4,
      limitKeys: ["tenant:acme"],
    });
    const plan = planEdits(base(), [update(given, [...UPDATABLE_NODE_FIELDS])]);
    expect(plan.updates[0]?.changes).toEqual({
      name: "C",
      capability: "other",
      parentIds: ["a"],
      input: { k: "v" },
      retryPolicy: given.retryPolicy,
      timeout: durationFromMs(2000),
      labels: { t: "x" },
      priority: 4,
      limitKeys: ["tenant:acme"],
    });
    expect(plan.parentsAfter.get("c")).toEqual(["a"]);
  });

  it("clears a masked field left empty: name back to the id, input and labels to {}, parents to none, policy and timeout to defaults", () => {
    const plan = planEdits(base(), [
      update(create(NodeSchema, { id: "c" }), ["name", "input", "labels", "parent_ids", "retry_policy", "timeout"]),
    ]);
    const changes = plan.updates[0]?.changes;
    expect(changes?.name).toBe("c");
    expect(changes?.input).toEqual({});
    expect(changes?.labels).toEqual({});
    expect(changes?.parentIds).toEqual([]);
    expect(changes?.retryPolicy).toEqual(create(NodeSchema, { retryPolicy: {} }).retryPolicy);
    expect(changes?.timeout).toEqual(durationFromMs(300_000));
    expect(plan.parentsAfter.get("c")).toEqual([]);
  });

  it("ignores invalid values in fields the mask does not name", () => {
    const given = node("c", ["ghost"], { capability: "", name: "N" });
    expect(planEdits(base(), [update(given, ["name"])]).updates[0]?.changes).toEqual({ name: "N" });
  });

  it("requires the node and its id", () => {
    expect(invalid(() => planEdits(base(), [create(NodeEditSchema, { type: EditType.UPDATE })])).message).toBe(
      "edits[0].node: required",
    );
    expect(invalid(() => planEdits(base(), [update(node(""), ["name"])])).message).toBe("edits[0].node.id: required");
  });

  it("rejects an unknown node", () => {
    expect(invalid(() => planEdits(base(), [update(node("x"), ["name"])])).message).toBe(
      'edits[0].node.id: unknown node "x"',
    );
  });

  it("requires a non-empty update mask", () => {
    expect(invalid(() => planEdits(base(), [update(node("c"), undefined)])).message).toBe(
      "edits[0].update_mask: required",
    );
    expect(invalid(() => planEdits(base(), [update(node("c"), [])])).message).toBe(
      "edits[0].update_mask: must name at least one field",
    );
  });

  it("rejects a mask path that is not updatable", () => {
    expect(invalid(() => planEdits(base(), [update(node("c"), ["name", "status"])])).message).toBe(
      'edits[0].update_mask.paths[1]: "status" cannot be updated',
    );
    expect(invalid(() => planEdits(base(), [update(node("c"), ["parentIds"])])).field).toBe(
      "edits[0].update_mask.paths[0]",
    );
  });

  it("rejects a repeated mask path", () => {
    expect(invalid(() => planEdits(base(), [update(node("c"), ["name", "name"])])).message).toBe(
      'edits[0].update_mask.paths[1]: duplicate path "name"',
    );
  });

  it("validates masked values with field paths under edits[i].node", () => {
    expect(invalid(() => planEdits(base(), [update(node("c", [], { capability: "" }), ["capability"])])).message).toBe(
      "edits[0].node.capability: required",
    );
    expect(invalid(() => planEdits(base(), [update(node("c", ["c"]), ["parent_ids"])])).message).toBe(
      "edits[0].node.parent_ids[0]: a node cannot be its own parent",
    );
    const bigInput = { ...DEFAULT_LIMITS, maxInputBytes: 5 };
    const err = thrown(() => planEdits(base(), [update(node("c", [], { input: { k: "vvvv" } }), ["input"])], bigInput));
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    expect(err.message).toMatch(/^edits\[0\]\.node\.input: /);
  });

  it("refuses to update a node that is not PENDING with FAILED_PRECONDITION", () => {
    const err = thrown(() => planEdits(base(), [update(node("r", [], { name: "n" }), ["name"])]));
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(err.message).toBe('node "r" is RUNNING; only PENDING nodes can be updated');
  });

  it("rejects new parents that are unknown", () => {
    expect(invalid(() => planEdits(base(), [update(node("c", ["b", "ghost"]), ["parent_ids"])])).message).toBe(
      'edits[0].node.parent_ids[1]: unknown node "ghost"',
    );
  });

  it("rejects a parent change that closes a cycle, printing it", () => {
    const g = graphOf(["a", PENDING], ["b", PENDING, ["a"]], ["c", PENDING, ["b"]]);
    const err = invalid(() => planEdits(g, [update(node("a", ["c"]), ["parent_ids"])]));
    expect(err.field).toBe("edits");
    expect(err.reason).toBe("cycle a -> b -> c -> a");
  });

  it("accepts a parent change that drops the edge a cycle would need", () => {
    const g = graphOf(["a", PENDING], ["b", PENDING, ["a"]]);
    const plan = planEdits(g, [update(node("a", ["b"]), ["parent_ids"]), update(node("b", []), ["parent_ids"])]);
    expect(plan.parentsAfter).toEqual(
      new Map([
        ["a", ["b"]],
        ["b", []],
      ]),
    );
  });
});

describe("planEdits: DELETE", () => {
  it("removes a PENDING leaf", () => {
    expect(planEdits(base(), [remove("c")]).deletes).toEqual(["c"]);
  });

  it("requires node_id and a node that exists", () => {
    expect(invalid(() => planEdits(base(), [remove("")])).message).toBe("edits[0].node_id: required");
    expect(invalid(() => planEdits(base(), [remove("ghost")])).message).toBe('edits[0].node_id: unknown node "ghost"');
  });

  it("refuses to delete a node that is not PENDING with FAILED_PRECONDITION", () => {
    const err = thrown(() => planEdits(base(), [remove("a")]));
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(err.message).toBe('node "a" is PASS; only PENDING nodes can be deleted');
  });

  it("rejects deleting a parent that a remaining node keeps", () => {
    expect(invalid(() => planEdits(base(), [remove("b")])).message).toBe(
      'edits[0].node_id: node "b" is still a parent of "c"',
    );
  });

  it("accepts deleting a parent together with its children, in either order", () => {
    expect(planEdits(base(), [remove("b"), remove("c")]).deletes).toEqual(["b", "c"]);
    expect(planEdits(base(), [remove("c"), remove("b")]).deletes).toEqual(["c", "b"]);
  });

  it("accepts deleting a parent when its child is re-parented in the same batch", () => {
    expect(() => planEdits(base(), [remove("b"), update(node("c", ["a"]), ["parent_ids"])])).not.toThrow();
  });

  it("rejects re-parenting a child onto a node deleted in the batch", () => {
    const g = graphOf(["a", PENDING], ["b", PENDING], ["c", PENDING, ["a"]]);
    expect(invalid(() => planEdits(g, [remove("b"), update(node("c", ["b"]), ["parent_ids"])])).message).toBe(
      'edits[1].node.parent_ids[0]: node "b" is deleted by edits[0]',
    );
  });
});

describe("planNodeUpdate", () => {
  it("plans a single update", () => {
    const mask = create(NodeEditSchema, { updateMask: { paths: ["capability"] } }).updateMask;
    const plan = planNodeUpdate(base(), node("c", [], { capability: "gpu" }), mask);
    expect(plan.updates).toEqual([{ id: "c", changes: { capability: "gpu" } }]);
    expect(plan.inserts).toEqual([]);
    expect(plan.deletes).toEqual([]);
  });

  it("uses field paths node.* and update_mask.*", () => {
    const mask = (paths: string[]) => create(NodeEditSchema, { updateMask: { paths } }).updateMask;
    expect(invalid(() => planNodeUpdate(base(), node("c", [], { capability: "" }), mask(["capability"]))).message).toBe(
      "node.capability: required",
    );
    expect(invalid(() => planNodeUpdate(base(), node("c"), mask(["status"]))).message).toBe(
      'update_mask.paths[0]: "status" cannot be updated',
    );
    expect(invalid(() => planNodeUpdate(base(), node("c"), undefined)).message).toBe("update_mask: required");
    expect(invalid(() => planNodeUpdate(base(), undefined, mask(["name"]))).message).toBe("node: required");
    expect(invalid(() => planNodeUpdate(base(), node("c", ["ghost"]), mask(["parent_ids"]))).message).toBe(
      'node.parent_ids[0]: unknown node "ghost"',
    );
  });

  it("reports an unknown node as NOT_FOUND", () => {
    const mask = create(NodeEditSchema, { updateMask: { paths: ["name"] } }).updateMask;
    const err = thrown(() => planNodeUpdate(base(), node("x"), mask));
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toBe('node "x" not found');
  });

  it("refuses a node that is not PENDING", () => {
    const mask = create(NodeEditSchema, { updateMask: { paths: ["name"] } }).updateMask;
    expect(thrown(() => planNodeUpdate(base(), node("r"), mask))).toBeInstanceOf(FailedPreconditionError);
  });

  it("reports a cycle on node.parent_ids", () => {
    const g = graphOf(["a", PENDING], ["b", PENDING, ["a"]]);
    const mask = create(NodeEditSchema, { updateMask: { paths: ["parent_ids"] } }).updateMask;
    expect(invalid(() => planNodeUpdate(g, node("a", ["b"]), mask)).message).toBe("node.parent_ids: cycle a -> b -> a");
  });
});

describe("planEdits: scale", () => {
  it("plans a 1,000-edit batch on a 10,000-node graph", () => {
    const nodes: [string, NodeStatus, string[]][] = [];
    for (let i = 0; i < 10_000; i++) {
      const parents = i === 0 ? [] : [`n${i - 1}`, ...(i > 10 ? [`n${i - 10}`] : [])];
      nodes.push([`n${i}`, i < 9_000 ? PASS : PENDING, parents]);
    }
    const g = graphOf(...nodes);
    const edits: NodeEdit[] = [];
    edits.push(remove("n9999"));
    for (let i = 0; i < 600; i++) edits.push(insert(node(`x${i}`, [`n${9_000 + i}`, `n${i}`])));
    for (let i = 0; i < 399; i++) {
      edits.push(
        update(node(`n${9_100 + i}`, [`n${9_099 + i}`, `n${1_000 + i}`], { name: "u" }), ["parent_ids", "name"]),
      );
    }
    const limits = { ...DEFAULT_LIMITS, maxNodes: 20_000 };
    const plan = planEdits(g, edits, limits);
    expect(plan.inserts).toHaveLength(600);
    expect(plan.updates).toHaveLength(399);
  });
});
