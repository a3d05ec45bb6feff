import { create } from "@bufbuild/protobuf";
import { type Node, NodeSchema } from "@trellis/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { topologicalOrder, validateWorkflowNodes } from "./dag.js";
import { InvalidArgumentError } from "./errors.js";

/** A random DAG over n0..n{k-1} (parents always have lower numbers; n1 always has parent n0), listed in random order. */
const randomDag = fc.integer({ min: 2, max: 30 }).chain((size) => {
  const parentLists = Array.from({ length: size }, (_, i) =>
    i === 0
      ? fc.constant<number[]>([])
      : fc.subarray(
          Array.from({ length: i }, (_, p) => p),
          { maxLength: Math.min(4, i) },
        ),
  );
  return fc.record({
    parents: fc
      .tuple(...parentLists)
      .map((lists) => lists.map((ps, i) => (i === 1 && !ps.includes(0) ? [0, ...ps] : ps).map((p) => `n${p}`))),
    listing: fc.shuffledSubarray(
      Array.from({ length: size }, (_, i) => i),
      { minLength: size, maxLength: size },
    ),
    walk: fc.array(fc.nat(), { minLength: 1, maxLength: 10 }),
    pick: fc.nat(),
  });
});

function toNodes(parents: readonly string[][], listing: readonly number[]): Node[] {
  return listing.map((i) => create(NodeSchema, { id: `n${i}`, capability: "cap", parentIds: [...parents[i]!] }));
}

/** Checks that `reason` prints a real cycle of the graph: `cycle a -> b -> ... -> a`, each node a parent of the next. */
function expectRealCycle(reason: string, parentsOf: (id: string) => readonly string[]): void {
  expect(reason.startsWith("cycle ")).toBe(true);
  const path = reason.slice("cycle ".length).split(" -> ");
  expect(path.length).toBeGreaterThanOrEqual(3);
  expect(path[0]).toBe(path[path.length - 1]);
  expect(new Set(path.slice(1)).size).toBe(path.length - 1);
  for (let k = 0; k + 1 < path.length; k++) {
    expect(parentsOf(path[k + 1]!)).toContain(path[k]);
  }
}

describe("DAG validation properties", () => {
  it("accepts any acyclic graph, and topologicalOrder puts every parent before its children", () => {
    fc.assert(
      fc.property(randomDag, ({ parents, listing }) => {
        const nodes = toNodes(parents, listing);
        validateWorkflowNodes(nodes);
        const byId = new Map(nodes.map((n) => [n.id, n]));
        const order = topologicalOrder(
          nodes.map((n) => n.id),
          (id) => byId.get(id)!.parentIds,
        );
        expect([...order].sort()).toEqual(nodes.map((n) => n.id).sort());
        const position = new Map(order.map((id, i) => [id, i]));
        for (const node of nodes) {
          for (const parent of node.parentIds) expect(position.get(parent)!).toBeLessThan(position.get(node.id)!);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("topologicalOrder returns a list that is already in topological order unchanged", () => {
    fc.assert(
      fc.property(randomDag, ({ parents }) => {
        const ids = parents.map((_, i) => `n${i}`);
        expect(topologicalOrder(ids, (id) => parents[Number(id.slice(1))]!)).toEqual(ids);
      }),
      { numRuns: 5000 },
    );
  });

  it("rejects the graph once a back edge is added, printing a real cycle", () => {
    fc.assert(
      fc.property(randomDag, ({ parents, listing, walk, pick }) => {
        const withParents = parents.map((_, i) => i).filter((i) => parents[i]!.length > 0);
        const descendant = withParents[pick % withParents.length]!;
        // Walk up from the descendant to one of its ancestors, then make the ancestor its child.
        let ancestor = descendant;
        for (const step of walk) {
          const up = parents[ancestor]!;
          if (up.length === 0) break;
          ancestor = Number(up[step % up.length]!.slice(1));
        }
        const cyclic = parents.map((ps) => [...ps]);
        cyclic[ancestor]!.push(`n${descendant}`);
        const parentsOf = (id: string) => cyclic[Number(id.slice(1))]!;

        const nodes = toNodes(cyclic, listing);
        let error: unknown;
        try {
          validateWorkflowNodes(nodes);
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(InvalidArgumentError);
        const invalid = error as InvalidArgumentError;
        expect(invalid.field).toBe("nodes");
        expectRealCycle(invalid.reason, parentsOf);

        let orderError: unknown;
        try {
          topologicalOrder(
            nodes.map((n) => n.id),
            parentsOf,
          );
        } catch (err) {
          orderError = err;
        }
        expect(orderError).toBeInstanceOf(InvalidArgumentError);
        expectRealCycle((orderError as InvalidArgumentError).reason, parentsOf);
      }),
      { numRuns: 5000 },
    );
  });
});
