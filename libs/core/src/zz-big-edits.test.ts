import { create } from "@bufbuild/protobuf";
import { EditType, type NodeEdit, NodeEditSchema, NodeSchema, NodeStatus } from "@trellis/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type GraphNode, UPDATABLE_NODE_FIELDS, planEdits } from "./edits.js";
import { FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError } from "./errors.js";
import { CAPABILITY_PATTERN, NODE_ID_PATTERN } from "./ids.js";

const STATUSES = [
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.PENDING,
  NodeStatus.QUEUED,
  NodeStatus.RUNNING,
  NodeStatus.PASS,
  NodeStatus.FAIL,
  NodeStatus.SKIPPED,
  NodeStatus.CANCELLED,
];

/** A random workflow graph g0..g{k-1}: acyclic (parents have lower numbers), mostly PENDING. */
const randomGraph = fc.integer({ min: 0, max: 12 }).chain((size) =>
  fc
    .tuple(
      ...Array.from({ length: size }, (_, i) =>
        fc.record({
          status: fc.constantFrom(...STATUSES),
          parents: fc.subarray(
            Array.from({ length: i }, (_, p) => `g${p}`),
            { maxLength: Math.min(3, i) },
          ),
        }),
      ),
    )
    .map(
      (specs) =>
        new Map<string, GraphNode>(
          specs.map((spec, i) => [`g${i}`, { id: `g${i}`, status: spec.status, parentIds: spec.parents }]),
        ),
    ),
);

const NEW_IDS = ["m0", "m1", "m2", "m3"];

/**
 * A random graph and a random batch of edits for it, each edit drawn on its own: mostly plausible edits (existing ids for
 * UPDATE and DELETE, new ids for INSERT, parents among both, so cycles and dangling parents come up),
 * with a sprinkling of malformed ones.
 */
const noisyScenario = randomGraph.chain((graph) => {
  const existing = [...graph.keys()];
  const oneOf = (ids: string[], fallback: string[]) => fc.constantFrom(...(ids.length > 0 ? ids : fallback));
  const existingId = oneOf(existing, NEW_IDS);
  const newId = fc.constantFrom(...NEW_IDS);
  const oddId = fc.constantFrom("ghost", "bad id", "");
  const anyId = fc.oneof(
    { weight: 6, arbitrary: existingId },
    { weight: 3, arbitrary: newId },
    { weight: 1, arbitrary: oddId },
  );
  const parents = fc.uniqueArray(fc.oneof({ weight: 3, arbitrary: existingId }, { weight: 2, arbitrary: newId }), {
    maxLength: 3,
  });
  const capability = fc.oneof(
    { weight: 12, arbitrary: fc.constant("cap") },
    { weight: 1, arbitrary: fc.constantFrom("", "Bad") },
  );
  const mask = fc.oneof(
    {
      weight: 10,
      arbitrary: fc.constantFrom(["parent_ids"], ["name"], ["parent_ids", "capability"], ["capability", "name"]),
    },
    {
      weight: 1,
      arbitrary: fc.option(fc.array(fc.constantFrom("parent_ids", "capability", "name", "status"), { maxLength: 3 }), {
        nil: undefined,
      }),
    },
  );
  /** Parents for node `id`: usually well-formed (no repeats, not itself), sometimes anything. */
  const parentsFor = (id: string) =>
    fc.oneof(
      { weight: 12, arbitrary: parents.map((ps) => ps.filter((p) => p !== id)) },
      { weight: 1, arbitrary: fc.array(anyId, { maxLength: 3 }) },
    );
  const insertEdit = fc
    .oneof({ weight: 8, arbitrary: newId }, { weight: 1, arbitrary: anyId })
    .chain((id) => fc.record({ id: fc.constant(id), parents: parentsFor(id), capability }))
    .map(({ id, parents, capability }) =>
      create(NodeEditSchema, { type: EditType.INSERT, node: { id, capability, parentIds: parents } }),
    );
  const updateEdit = fc
    .oneof({ weight: 8, arbitrary: existingId }, { weight: 1, arbitrary: anyId })
    .chain((id) => fc.record({ id: fc.constant(id), parents: parentsFor(id), capability, paths: mask }))
    .map(({ id, parents, capability, paths }) =>
      create(NodeEditSchema, {
        type: EditType.UPDATE,
        node: { id, capability, name: "renamed", parentIds: parents },
        updateMask: paths === undefined ? undefined : { paths: [...paths] },
      }),
    );
  const deleteEdit = fc
    .oneof({ weight: 8, arbitrary: existingId }, { weight: 1, arbitrary: anyId })
    .map((nodeId) => create(NodeEditSchema, { type: EditType.DELETE, nodeId }));
  const unspecifiedEdit = anyId.map((nodeId) => create(NodeEditSchema, { type: EditType.UNSPECIFIED, nodeId }));
  const edit: fc.Arbitrary<NodeEdit> = fc.oneof(
    { weight: 12, arbitrary: insertEdit },
    { weight: 10, arbitrary: updateEdit },
    { weight: 6, arbitrary: deleteEdit },
    { weight: 1, arbitrary: unspecifiedEdit },
  );
  return fc.tuple(fc.constant(graph), fc.array(edit, { maxLength: 6 }));
});

/**
 * A random graph and a batch of well-formed edits for it: inserts of distinct new ids and at most one
 * UPDATE or DELETE per existing node, parents drawn from the nodes that exist or are inserted, in a
 * random order. What remains to reject is what needs the whole batch: non-PENDING targets, parents
 * deleted under their children, cycles.
 */
const cleanScenario = randomGraph.chain((graph) => {
  const existing = [...graph.keys()];
  return fc.integer({ min: 0, max: 4 }).chain((insertCount) => {
    const inserted = NEW_IDS.slice(0, insertCount);
    const universe = [...existing, ...inserted];
    const parentsFor = (id: string) =>
      fc.subarray(
        universe.filter((p) => p !== id),
        { maxLength: Math.min(3, universe.length - 1) },
      );
    const inserts = inserted.map((id) =>
      parentsFor(id).map((parentIds) =>
        create(NodeEditSchema, { type: EditType.INSERT, node: { id, capability: "cap", parentIds } }),
      ),
    );
    const touches = fc.shuffledSubarray(existing, { maxLength: Math.min(4, existing.length) }).chain((targets) =>
      fc.tuple(
        ...targets.map((id) =>
          fc.oneof(
            fc.constant(create(NodeEditSchema, { type: EditType.DELETE, nodeId: id })),
            fc
              .record({
                parentIds: parentsFor(id),
                paths: fc.constantFrom(["parent_ids"], ["name"], ["name", "parent_ids"]),
              })
              .map(({ parentIds, paths }) =>
                create(NodeEditSchema, {
                  type: EditType.UPDATE,
                  node: { id, capability: "cap", name: "renamed", parentIds },
                  updateMask: { paths: [...paths] },
                }),
              ),
          ),
        ),
      ),
    );
    return fc
      .tuple(fc.tuple(...inserts), touches)
      .chain(([ins, upd]) => {
        const all: NodeEdit[] = [...ins, ...upd];
        return fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length });
      })
      .map((edits) => [graph, edits] as const);
  });
});

/** Both kinds of batch; the clean kind gets accepted often enough to test what acceptance promises. */
const scenario = fc.oneof({ weight: 2, arbitrary: cleanScenario }, { weight: 1, arbitrary: noisyScenario });

function hasCycle(parents: ReadonlyMap<string, readonly string[]>): boolean {
  const pending = new Map([...parents].map(([id, ps]) => [id, ps.length]));
  const children = new Map<string, string[]>();
  for (const [id, ps] of parents) for (const p of ps) children.set(p, [...(children.get(p) ?? []), id]);
  const ready = [...pending].filter(([, n]) => n === 0).map(([id]) => id);
  let seen = 0;
  while (ready.length > 0) {
    const id = ready.pop()!;
    seen++;
    for (const c of children.get(id) ?? []) {
      pending.set(c, pending.get(c)! - 1);
      if (pending.get(c) === 0) ready.push(c);
    }
  }
  return seen < parents.size;
}

/** A naive, independent statement of the edit rules for the fields generated here. */
function batchIsValid(graph: ReadonlyMap<string, GraphNode>, edits: readonly NodeEdit[]): boolean {
  const touched = new Set<string>();
  const after = new Map([...graph].map(([id, n]) => [id, [...n.parentIds]]));
  const deletes: string[] = [];
  const parentsOk = (id: string, parents: readonly string[]) =>
    new Set(parents).size === parents.length && !parents.includes(id);
  for (const edit of edits) {
    if (edit.type === EditType.INSERT) {
      const node = edit.node!;
      if (!NODE_ID_PATTERN.test(node.id) || !CAPABILITY_PATTERN.test(node.capability)) return false;
      if (!parentsOk(node.id, node.parentIds) || graph.has(node.id) || touched.has(node.id)) return false;
      touched.add(node.id);
      after.set(node.id, [...node.parentIds]);
    } else if (edit.type === EditType.UPDATE) {
      const node = edit.node!;
      const paths = edit.updateMask?.paths ?? [];
      if (!graph.has(node.id) || touched.has(node.id) || paths.length === 0) return false;
      if (new Set(paths).size !== paths.length || paths.some((p) => !UPDATABLE_NODE_FIELDS.includes(p))) return false;
      if (paths.includes("capability") && !CAPABILITY_PATTERN.test(node.capability)) return false;
      if (paths.includes("parent_ids") && !parentsOk(node.id, node.parentIds)) return false;
      if (graph.get(node.id)!.status !== NodeStatus.PENDING) return false;
      touched.add(node.id);
      if (paths.includes("parent_ids")) after.set(node.id, [...node.parentIds]);
    } else if (edit.type === EditType.DELETE) {
      if (!graph.has(edit.nodeId) || touched.has(edit.nodeId)) return false;
      if (graph.get(edit.nodeId)!.status !== NodeStatus.PENDING) return false;
      touched.add(edit.nodeId);
      deletes.push(edit.nodeId);
    } else {
      return false;
    }
  }
  for (const id of deletes) after.delete(id);
  for (const parents of after.values()) if (parents.some((p) => !after.has(p))) return false;
  return !hasCycle(after);
}

describe("edit batch properties", () => {
  it("an accepted batch leaves unique ids, no dangling parent and no cycle; a rejected one changes nothing", () => {
    fc.assert(
      fc.property(scenario, ([graph, edits]) => {
        const graphBefore = structuredClone(graph);
        const editsBefore = structuredClone(edits);
        let plan: ReturnType<typeof planEdits> | undefined;
        let error: unknown;
        try {
          plan = planEdits(graph, edits);
        } catch (err) {
          error = err;
        }
        expect(graph).toEqual(graphBefore);
        expect(edits).toEqual(editsBefore);
        expect(plan !== undefined).toBe(batchIsValid(graph, edits));
        if (plan === undefined) {
          expect(
            error instanceof InvalidArgumentError ||
              error instanceof FailedPreconditionError ||
              error instanceof ResourceExhaustedError,
          ).toBe(true);
          return;
        }
        // Apply the plan the way a store would.
        const after = new Map([...graph].map(([id, n]) => [id, { status: n.status, parentIds: [...n.parentIds] }]));
        for (const id of plan.deletes) {
          expect(after.get(id)?.status).toBe(NodeStatus.PENDING);
          after.delete(id);
        }
        for (const { id, changes } of plan.updates) {
          const current = after.get(id);
          expect(current?.status).toBe(NodeStatus.PENDING);
          if (changes.parentIds !== undefined) current!.parentIds = changes.parentIds;
        }
        for (const node of plan.inserts) {
          expect(after.has(node.id)).toBe(false);
          after.set(node.id, { status: NodeStatus.PENDING, parentIds: [...node.parentIds] });
        }
        for (const [id, parents] of plan.parentsAfter) expect(after.get(id)?.parentIds).toEqual(parents);
        for (const { parentIds } of after.values()) {
          for (const p of parentIds) expect(after.has(p)).toBe(true);
        }
        expect(hasCycle(new Map([...after].map(([id, n]) => [id, n.parentIds])))).toBe(false);
      }),
      { numRuns: 2000000 },
    );
  });

  it("a rejected cycle is printed as a real cycle of the graph the batch would leave", () => {
    fc.assert(
      fc.property(scenario, ([graph, edits]) => {
        let error: unknown;
        try {
          planEdits(graph, edits);
        } catch (err) {
          error = err;
        }
        if (!(error instanceof InvalidArgumentError) || !error.reason.startsWith("cycle ")) return;
        const after = new Map([...graph].map(([id, n]) => [id, n.parentIds]));
        for (const edit of edits) {
          if (edit.type === EditType.INSERT) after.set(edit.node!.id, edit.node!.parentIds);
          if (edit.type === EditType.UPDATE && edit.updateMask!.paths.includes("parent_ids")) {
            after.set(edit.node!.id, edit.node!.parentIds);
          }
        }
        const path = error.reason.slice("cycle ".length).split(" -> ");
        expect(path[0]).toBe(path[path.length - 1]);
        for (let k = 0; k + 1 < path.length; k++) expect(after.get(path[k + 1]!)).toContain(path[k]);
      }),
      { numRuns: 2000000 },
    );
  });
});

describe("edit batch on a graph built to invite cycles", () => {
  it("rejects every parent change that would close a loop and accepts every one that would not", () => {
    // A chain g0 <- g1 <- ... <- g5, all PENDING: re-parenting gi onto gj closes a loop exactly when j > i.
    const graph = new Map<string, GraphNode>(
      Array.from({ length: 6 }, (_, i) => [
        `g${i}`,
        { id: `g${i}`, status: NodeStatus.PENDING, parentIds: i === 0 ? [] : [`g${i - 1}`] },
      ]),
    );
    for (let i = 0; i < 6; i++) {
      for (let j = 0; j < 6; j++) {
        if (i === j) continue;
        const edit = create(NodeEditSchema, {
          type: EditType.UPDATE,
          node: create(NodeSchema, { id: `g${i}`, parentIds: [`g${j}`] }),
          updateMask: { paths: ["parent_ids"] },
        });
        if (j > i) expect(() => planEdits(graph, [edit]), `g${i} onto g${j}`).toThrow(/cycle/);
        else expect(() => planEdits(graph, [edit]), `g${i} onto g${j}`).not.toThrow();
      }
    }
  });
});
